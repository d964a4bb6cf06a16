"""The policy's prompts as token ids: chat template or not, prefix kept, left-padded (no Lightning).

    batch = encode_prompts(tokenizer, prompts, max_prompt_length, chat_template, dimensions)

Used by the RL stages before :func:`moslim_pl.generation.generate`, and by the SFT datamodule so that SFT
prompts are cut as the RL stages cut them.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from moslim_pl.data.messages import Prompt, as_dicts, last_user, render_plain_prompt
from moslim_pl.errors import MoslimError
from moslim_pl.prefix import parse_prefix
from moslim_pl.schema import Dimension

log = logging.getLogger(__name__)

# Well-formed leading tags, used when no schema is given to tell the prefix from the prompt text.
_TAGS = re.compile(r"(?:<[A-Za-z0-9_\-]+ -?\d+>(?: |$))+")


class PromptBatch(NamedTuple):
    """Policy prompts, left-padded so that every row's generation starts at the same column."""

    input_ids: Tensor
    """[B, P] long, padded on the left with the tokenizer's pad id."""
    attention_mask: Tensor
    """[B, P] long, 1 for real tokens."""


def _split_prefix(prompt: str, dimensions: Sequence[Dimension] | None) -> tuple[str, str]:
    """``(prefix, text)`` with ``prefix + text == prompt``; the prefix keeps its trailing space."""
    if dimensions is not None:
        _, text = parse_prefix(prompt, dimensions)  # validates the tags too
        return prompt[: len(prompt) - len(text)], text
    match = _TAGS.match(prompt)
    end = match.end() if match else 0
    return prompt[:end], prompt[end:]


def resolve_chat_template(tokenizer: PreTrainedTokenizerBase, requested: bool | None, model: str) -> bool:
    """Whether prompts go through ``tokenizer``'s chat template: ``requested``, or (``None``) whether it has one.

    A chat model prompted with raw text answers off the distribution it was tuned on (and may never emit
    its end-of-turn token), so an explicit ``False`` for a tokenizer that has a template logs a warning
    naming it; an explicit ``True`` for a tokenizer without one is a ``MoslimError``.
    """
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if requested is None:
        return has_template
    if requested and not has_template:
        raise MoslimError(f"chat_template=true but the tokenizer of {model!r} has no chat template")
    if not requested and has_template:
        log.warning(
            "%s is a chat model (its tokenizer has a chat template) but chat_template=false: its prompts are "
            "raw text, not the user turns it was tuned on; leave chat_template unset to use the template",
            model,
        )
    return bool(requested)


def _render(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, chat_template: bool) -> list[int]:
    if isinstance(prompt, str):
        if not chat_template:
            return tokenizer(prompt)["input_ids"]  # special tokens on: a BOS where the model expects one
        turns = [{"role": "user", "content": prompt}]
    elif not chat_template:  # docs/user_guide.md, "Prompt data, SFT data and predict files"
        return tokenizer(render_plain_prompt(prompt))["input_ids"]
    else:
        turns = as_dicts(prompt)  # system prompt and earlier turns included
    text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    # The rendered template already holds its BOS and control tokens.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    prompt: Prompt,
    max_length: int,
    chat_template: bool,
    dimensions: Sequence[Dimension] | None,
) -> list[int]:
    if isinstance(prompt, str):
        prefix, text = _split_prefix(prompt, dimensions)  # parsed even when it fits: malformed tags raise
        ids = _render(tokenizer, prompt, chat_template)
        if len(ids) <= max_length:
            return ids
        render_text = functools.partial(_render, tokenizer, chat_template=chat_template)
        return _cut_text(tokenizer, prefix, text, ids, max_length, render_text)
    i = last_user(prompt, "prompt")
    role, content = prompt[i]
    prefix, text = _split_prefix(content, dimensions)
    ids = _render(tokenizer, prompt, chat_template)
    if len(ids) <= max_length:
        return ids
    # Too long: the earlier turns go first, oldest first (a leading system prompt stays), then the last
    # user turn loses the start of its text as a text prompt does (docs/user_guide.md).
    head = prompt[:1] if prompt[0][0] == "system" and i > 0 else ()
    for start in range(len(head) + 1, i + 1):
        if prompt[start][0] != "user":  # templates may insist that a conversation alternate from a user turn
            continue
        ids = _render(tokenizer, (*head, *prompt[start:]), chat_template)
        if len(ids) <= max_length:
            return ids
    rest = prompt[i + 1 :]

    def render(content: str) -> list[int]:
        return _render(tokenizer, (*head, (role, content), *rest), chat_template)

    return _cut_text(tokenizer, prefix, text, render(content), max_length, render)


def _cut_text(
    tokenizer: PreTrainedTokenizerBase,
    prefix: str,
    text: str,
    ids: list[int],
    max_length: int,
    render: Callable[[str], list[int]],
) -> list[int]:
    """``render(prefix + the end of text)`` in at most ``max_length`` ids (``ids``: ``render(prefix + text)``,
    too long): the start of ``text`` is cut."""
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    keep = len(text_ids) - (len(ids) - max_length)
    while keep > 0:
        # The prefix text is kept verbatim: decoding its tokens may not give it back (the word tokenizer
        # would turn "<a 1>" into "< a 1 >"). The kept end of the text is decoded and re-rendered.
        tail = tokenizer.decode(text_ids[-keep:])
        ids = render(prefix + tail.lstrip() if prefix else tail)
        if len(ids) <= max_length:
            return ids
        # Re-tokenizing the joined text can differ from the parts by a token: shrink until it fits.
        keep -= len(ids) - max_length
    raise MoslimError(
        f"max_prompt_length={max_length} cannot hold the prefix {prefix.strip()!r} and the template of "
        f"prompt {(prefix + text)[:60]!r}: raise max_prompt_length"
    )


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    max_prompt_length: int,
    chat_template: bool = False,
    dimensions: Sequence[Dimension] | None = None,
) -> PromptBatch:
    """Tokenize the policy's prompts (prefix included: the policy must read it) and left-pad them.

    With ``chat_template`` each prompt is the user turn of the tokenizer's template, followed by the
    generation prompt; without, the tokenizer's own special tokens are added (e.g. Llama's BOS).
    A conversation (:data:`moslim_pl.data.messages.Messages`) is rendered whole by the template, or
    without one as ``render_plain_prompt`` text. A prompt longer than ``max_prompt_length`` keeps its
    ``<name level>`` prefix and the END of its text (where the question usually is); the text right after
    the prefix is cut. A conversation's prefix is read in its last user turn; over the budget it first
    loses its earlier turns (oldest first, a leading system prompt kept), then the start of that turn.
    ``dimensions`` parses the prefix with the schema (malformed tags raise ``PrefixError``); without it,
    leading well-formed ``<word integer>`` tags count as the prefix.

    Returns:
        :class:`PromptBatch` with ``input_ids [B, P]`` and ``attention_mask [B, P]`` on the CPU,
        ``P = min(longest prompt, max_prompt_length)``.
    """
    if max_prompt_length < 1:
        raise MoslimError(f"max_prompt_length must be >= 1, got {max_prompt_length}")
    encoded = [_encode_prompt(tokenizer, p, max_prompt_length, chat_template, dimensions) for p in prompts]
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise MoslimError(f"prompt(s) {empty} encode to no tokens: the policy has nothing to continue")
    width = max((len(ids) for ids in encoded), default=0)
    input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return PromptBatch(input_ids, attention_mask)
