"""How a (prompt, response) pair becomes reward-model input ids: one function for training and scoring."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


def _chat(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str) -> list[int]:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    out = tokenizer.apply_chat_template(messages, tokenize=True)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


def encode_prompt_response(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    response: str,
    max_length: int,
    chat_template: bool = False,
) -> list[int]:
    """Token ids of the pair, at most ``max_length`` long, cutting the prompt first.

    Without a chat template the tokenizer's pair encoding is used (``[CLS] p [SEP] r [SEP]`` for BERT,
    the tiny tokenizer's ``p [SEP] r [EOS]``). When truncation is needed the prompt is shortened from
    its end; the response is only cut when it alone does not fit.
    """
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
