"""How a (prompt, response) pair becomes reward-model input ids: one definition for training and scoring."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from transformers import PreTrainedTokenizerBase

from moslim_pl.data.messages import Messages, as_dicts, render_plain
from moslim_pl.errors import MoslimError


def _chat(tokenizer: PreTrainedTokenizerBase, prompt: str | Messages, response: str) -> list[int]:
    turns = as_dicts(prompt) if isinstance(prompt, tuple) else [{"role": "user", "content": prompt}]
    messages = [*turns, {"role": "assistant", "content": response}]
    out = tokenizer.apply_chat_template(messages, tokenize=True)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


def encode_prompt_response(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str | Messages,
    response: str,
    max_length: int,
    chat_template: bool = False,
    max_prompt_length: int | None = None,
) -> list[int]:
    """Token ids of the pair, at most ``max_length`` long, cutting the prompt first.

    Without a chat template the tokenizer's pair encoding is used (``[CLS] p [SEP] r [SEP]`` for BERT,
    the tiny tokenizer's ``p [SEP] r [EOS]``). ``max_prompt_length`` first keeps only the prompt's first
    tokens, so that long contexts do not crowd out the response. When the pair is still too long the
    prompt is shortened from its end; the response is only cut when it alone does not fit.

    A conversation (``Messages``, docs/user_guide.md "TRL formats and conversations") is rendered by the
    chat template with all its turns, or without one as :func:`moslim_pl.data.messages.render_plain`
    text that is then read like a text prompt. Over ``max_length``, a templated conversation keeps its
    last ``max_length`` tokens (the response and the latest turns).
    """
    if isinstance(prompt, tuple):
        if chat_template:
            ids = _chat(tokenizer, prompt, response)
            return ids if len(ids) <= max_length else ids[-max_length:]
        prompt = render_plain(prompt)
    if max_prompt_length is not None:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(prompt_ids) > max_prompt_length:
            prompt = tokenizer.decode(prompt_ids[:max_prompt_length], skip_special_tokens=True)
    if not chat_template:
        kwargs = {"max_length": max_length, "add_special_tokens": True}
        try:
            return tokenizer(prompt, response, truncation="only_first", **kwargs)["input_ids"]
        except Exception:  # the fast tokenizer raises a bare Exception when the response alone is too long
            return tokenizer(prompt, response, truncation="longest_first", **kwargs)["input_ids"]
    ids = _chat(tokenizer, prompt, response)
    if len(ids) <= max_length:
        return ids
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    overhead = len(ids) - len(prompt_ids) - len(response_ids)
    room = max(max_length - overhead - len(response_ids), 0)
    if room == 0:
        response = tokenizer.decode(response_ids[: max(max_length - overhead, 1)])
    prompt = tokenizer.decode(prompt_ids[:room])
    return _chat(tokenizer, prompt, response)[:max_length]


@dataclass(frozen=True)
class PairEncoding:
    """The reward model's reading settings; saved with every export so scoring reads as training did.

    Args:
        max_length: token budget of one (prompt, response) pair.
        chat_template: encode the pair as a user and an assistant turn of the tokenizer's chat template.
        max_prompt_length: keep at most this many prompt tokens (``None``: no cap beyond ``max_length``).
    """

    max_length: int = 256
    chat_template: bool = False
    max_prompt_length: int | None = None

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise MoslimError(f"max_length must be at least 2, got {self.max_length}")
        if self.max_prompt_length is not None and not 0 <= self.max_prompt_length < self.max_length:
            raise MoslimError(
                f"max_prompt_length must be in [0, max_length={self.max_length}), got {self.max_prompt_length}"
            )

    def encode(self, tokenizer: PreTrainedTokenizerBase, prompt: str | Messages, response: str) -> list[int]:
        return encode_prompt_response(
            tokenizer, prompt, response, self.max_length, self.chat_template, self.max_prompt_length
        )

    def to_dict(self) -> dict:
        return asdict(self)
