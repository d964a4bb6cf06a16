"""Prompt encoding and KV-cached sampling of the policy: plain functions (no Lightning).

    batch = encode_prompts(tokenizer, prompts, max_prompt_length, chat_template, dimensions)
    rollout = generate(policy, tokenizer, batch, max_new_tokens=64, num_samples=4)

Shapes: ``B`` prompts, ``k`` samples per prompt, ``N = B * k`` rows (sample ``i`` of prompt ``b`` is row
``b * k + i``), ``P`` prompt tokens (left-padded), ``R`` response tokens, ``V`` vocabulary size.
Log-probs, KL and rewards of a rollout are in :mod:`moslim_pl.rollout`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from moslim_pl.data.messages import Prompt, as_dicts, last_user, render_plain_prompt
from moslim_pl.errors import MoslimError
from moslim_pl.models.sharding import any_rank, is_sharded
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


class Rollout(NamedTuple):
    """``k`` sampled responses per prompt; ordinary (not inference-mode) tensors on the policy's device."""

    sequences: Tensor
    """[N, P + R] long: prompt then response; tokens after a row's EOS are the pad id."""
    attention_mask: Tensor
    """[N, P + R] long: the prompt's mask, then ``response_mask``."""
    prompt_length: int
    """P: the response starts at this column."""
    response_mask: Tensor
    """[N, R] long, 1 for generated tokens up to and including the row's EOS."""
    responses: list[str]
    """N decoded responses, special tokens skipped."""
    prompt_index: Tensor
    """[N] long, the prompt (row of the :class:`PromptBatch`) of each row."""
    finished: Tensor
    """[N] bool, True where the row emitted EOS (False: cut at ``max_new_tokens``)."""


# --------------------------------------------------------------------------------------------- prompts


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


# ------------------------------------------------------------------------------------------ generation


def _base_model(model: nn.Module) -> nn.Module:
    """The model under PEFT, DDP and FSDP1 wrappers, whose ``forward`` names the real arguments."""
    while True:
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model


@functools.cache
def _accepted_arguments(model_type: type) -> frozenset[str]:
    """Which of ``position_ids``, ``logits_to_keep`` and ``cache`` the forward of ``model_type`` takes (warns once)."""
    optional = {"position_ids", "logits_to_keep", "cache"}
    names = frozenset(inspect.signature(model_type.forward).parameters) & optional
    if "position_ids" not in names:
        log.warning(
            "%s.forward takes no position_ids: left-padded prompts get shifted positions", model_type.__name__
        )
    return names


def _cache_name(model: nn.Module) -> str:
    # transformers 5.x renamed the KV cache argument and output field from past_key_values to cache.
    return "cache" if "cache" in _accepted_arguments(type(_base_model(model))) else "past_key_values"


def _forward_kwargs(
    model: nn.Module, attention_mask: Tensor, num_inputs: int, logits_to_keep: int
) -> dict[str, Any]:
    """Mask, position ids of the last ``num_inputs`` columns and, where supported, ``logits_to_keep``."""
    accepted = _accepted_arguments(type(_base_model(model)))
    kwargs: dict[str, Any] = {"attention_mask": attention_mask}
    if "position_ids" in accepted:
        kwargs["position_ids"] = positions_from_mask(attention_mask)[:, -num_inputs:]
    if "logits_to_keep" in accepted:
        kwargs["logits_to_keep"] = logits_to_keep  # 0 keeps every position
    return kwargs


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    """``[N, T]`` -> ``[N, T]`` long position ids counted from each row's first real token.

    Left padding would otherwise shift every position of a short row and change its logits.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _sample_next(
    logits: Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> Tensor:
    """``logits [N, V]`` -> next tokens ``[N]``: greedy at temperature 0, else nucleus sampling."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() if temperature == 1.0 else logits.float() / temperature
    if top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token once the tokens before it already hold top_p of the mass (the first always stays).
        drop = probs.cumsum(-1) - probs > top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits), without the softmax and
    # the inverse-CDF search of torch.multinomial (-log of an Exp(1) draw is Gumbel-distributed)
    noise = torch.empty_like(logits).exponential_(generator=generator).log_()
    return (logits - noise).argmax(-1)


def _prefill(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, num_samples: int
) -> tuple[Tensor, Any]:
    """Run the prompts once and copy their KV cache to the ``k`` samples: ``[B*k, V]`` logits and cache."""
    out = model(
        input_ids=input_ids, use_cache=True, **_forward_kwargs(model, attention_mask, input_ids.shape[1], 1)
    )
    logits, cache = out.logits[:, -1], getattr(out, _cache_name(model))
    if num_samples == 1:
        return logits, cache
    if hasattr(cache, "batch_repeat_interleave"):
        cache.batch_repeat_interleave(num_samples)  # in place; rows b*k .. b*k+k-1 copy prompt b
        return logits.repeat_interleave(num_samples, 0), cache
    # Legacy tuple caches (some remote-code models): prefill the repeated prompts instead.
    repeated = (t.repeat_interleave(num_samples, 0) for t in (input_ids, attention_mask))
    return _prefill(model, *repeated, 1)


def _sample(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    num_samples: int,
    eos_ids: Tensor,
    pad_token_id: int,
    generator: torch.Generator | None,
    lockstep: bool = False,
) -> tuple[Tensor, Tensor]:
    """The decoding loop: ``tokens [N, R]`` and ``response_mask [N, R]`` (run it without grad).

    ``lockstep``: the model is sharded, and every forward pass all-gathers weights with the other ranks:
    all ranks must stop at the same step, so the early stop waits until every row of every rank is done.
    """
    logits, cache = _prefill(model, input_ids, attention_mask, num_samples)
    cache_name = _cache_name(model)
    accepted = _accepted_arguments(type(_base_model(model)))
    prompt_mask = attention_mask.repeat_interleave(num_samples, 0)
    rows, width = prompt_mask.shape
    # The mask of every step is a prefix of one preallocated mask (no concatenation per step), and each
    # step's position is the previous one plus 1 (no cumulative sum over the whole mask).
    mask = torch.cat([prompt_mask, prompt_mask.new_ones((rows, max_new_tokens))], dim=1)
    position = positions_from_mask(prompt_mask)[:, -1:]
    finished = torch.zeros(rows, dtype=torch.bool, device=mask.device)
    pad = torch.full((rows,), pad_token_id, dtype=torch.long, device=mask.device)
    lean = _lean_decoder(model, lockstep)
    # Hugging Face's SDPA path passes no mask when nothing is padded, else this boolean one (True: attend)
    lean_mask = None if bool(prompt_mask.all()) else mask.bool()[:, None, None, :]
    tokens, alive = [], []
    for step in range(max_new_tokens):
        token = _sample_next(logits, temperature, top_p, generator)
        token = torch.where(finished, pad, token)
        tokens.append(token)
        alive.append(~finished)
        finished = finished | (token[:, None] == eos_ids).any(-1)
        if step == max_new_tokens - 1 or not any_rank(~finished.all(), lockstep):
            break
        # Finished rows keep decoding pad tokens (cheaper than compacting the cache); they are masked.
        position = position + 1
        if lean is not None:
            logits = lean(
                token, cache, position, None if lean_mask is None else lean_mask[..., : width + step + 1]
            )
            continue
        kwargs: dict[str, Any] = {"attention_mask": mask[:, : width + step + 1]}
        if "position_ids" in accepted:
            kwargs["position_ids"] = position
        if "logits_to_keep" in accepted:
            kwargs["logits_to_keep"] = 1
        out = model(input_ids=token[:, None], use_cache=True, **{cache_name: cache}, **kwargs)
        logits, cache = out.logits[:, -1], getattr(out, cache_name)
    return torch.stack(tokens, 1), torch.stack(alive, 1).long()


def _lean_decoder(model: nn.Module, lockstep: bool) -> Callable[..., Tensor] | None:
    """A decoding step that calls a Llama model's blocks directly: ``(token [N], cache, position [N, 1],
    mask [N, 1, 1, L] bool or None) -> logits [N, V]``; None where it does not apply.

    ``LlamaForCausalLM.forward`` spends about 0.7 ms per call around its blocks (building the 4-D mask,
    output-capturing and argument wrappers), a fifth of a small model's decoding step on a CPU. The
    blocks, the rotary embedding, the final norm and the LM head run exactly as there, with the boolean
    mask that Hugging Face's SDPA path builds, so the logits are the same bit for bit
    (``tests/test_rollout.py``). Only for Llama models (SmolLM2 is one) with SDPA attention, in one
    process or under DDP (sharded weights need the wrapper's hooks), LoRA adapters included.
    """
    from transformers import LlamaForCausalLM

    base = _base_model(model)
    # lockstep: sharded (FSDP1/FSDP2) weights are gathered by hooks on the wrapped forward
    if lockstep or type(base) is not LlamaForCausalLM or base.config._attn_implementation != "sdpa":
        return None
    cache_name = _cache_name(model)
    inner = base.model
    blocks = inner.layers[: base.config.num_hidden_layers]

    def step(token: Tensor, cache: Any, position: Tensor, mask: Tensor | None) -> Tensor:
        hidden = inner.embed_tokens(token[:, None])
        rotary = inner.rotary_emb(hidden, position_ids=position)
        for block in blocks:
            hidden = block(
                hidden,
                attention_mask=mask,
                position_ids=position,
                use_cache=True,
                position_embeddings=rotary,
                **{cache_name: cache},
            )
        return base.lm_head(inner.norm(hidden))[:, -1]

    return step


def _eos_ids(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, eos_token_id: int | Sequence[int] | None
) -> list[int]:
    if eos_token_id is None:
        # Chat models often end a turn with a token other than the tokenizer's eos (Llama 3's <|eot_id|>):
        # the generation config lists those, as model.generate would use them.
        config = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos_token_id = [*([] if config is None else [config] if isinstance(config, int) else config)]
        if tokenizer.eos_token_id is not None:
            eos_token_id.append(tokenizer.eos_token_id)
    ids = [eos_token_id] if isinstance(eos_token_id, int) else sorted(set(eos_token_id))
    if not ids:
        raise MoslimError("generate() needs an eos token: the tokenizer and generation config have none")
    return ids


def generate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: PromptBatch,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_samples: int = 1,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> Rollout:
    """Sample ``num_samples`` responses per prompt with a KV cache, prefilling each prompt once.

    Sample ``i`` of prompt ``b`` is row ``b * num_samples + i``. A row stops at its first EOS; later
    columns hold ``pad_token_id`` and are masked. The loop ends once every row has stopped, so
    ``R <= max_new_tokens``. The model runs in eval mode (restored afterwards) so that dropout does not
    perturb the sampling distribution.

    Args:
        model: a causal LM (``load_causal_lm``), possibly PEFT-wrapped; unwrap DDP/FSDP first.
        tokenizer: decodes ``responses``; supplies the default eos and pad ids.
        prompts: :func:`encode_prompts` output, moved to the model's device here.
        temperature: 0 decodes greedily.
        top_p: nucleus sampling mass (1 keeps the whole distribution).
        eos_token_id: id(s) ending a response; default: the generation config's and the tokenizer's.
        pad_token_id: filler after EOS; default: the tokenizer's pad id.
        generator: RNG for the sampling; default: torch's global RNG (``torch.manual_seed``).

    Returns:
        :class:`Rollout` of ordinary tensors (usable in a later autograd graph).
    """
    if max_new_tokens < 1 or num_samples < 1:
        raise MoslimError(f"max_new_tokens and num_samples must be >= 1, got {max_new_tokens}, {num_samples}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise MoslimError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    pad_token_id = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
    device = next(model.parameters()).device
    input_ids, attention_mask = (t.to(device) for t in prompts)
    eos_ids = torch.tensor(_eos_ids(model, tokenizer, eos_token_id), device=device)
    was_training = model.training
    model.eval()
    sharded = is_sharded(model)
    # FSDP2 keeps the buffers of the weights it gathers in the first forward pass: made under inference
    # mode, they could never serve a forward pass with grad again (and one rank's FSDP2 fails outright).
    try:
        with torch.inference_mode(not sharded), torch.no_grad():
            tokens, response_mask = _sample(
                model, input_ids, attention_mask, max_new_tokens, temperature, top_p, num_samples,
                eos_ids, pad_token_id, generator, lockstep=sharded,
            )  # fmt: skip
    finally:
        model.train(was_training)
    # clone() outside inference mode: inference tensors cannot be saved for backward, and the policy
    # loss embeds these ids and multiplies by these masks.
    tokens, response_mask = tokens.clone(), response_mask.clone()
    prompt_ids = input_ids.repeat_interleave(num_samples, 0)
    prompt_mask = attention_mask.repeat_interleave(num_samples, 0)
    finished = (torch.isin(tokens, eos_ids) & response_mask.bool()).any(-1)
    kept = [row[m.bool()].tolist() for row, m in zip(tokens.cpu(), response_mask.cpu(), strict=True)]
    return Rollout(
        sequences=torch.cat([prompt_ids, tokens], dim=1),
        attention_mask=torch.cat([prompt_mask, response_mask], dim=1),
        prompt_length=input_ids.shape[1],
        response_mask=response_mask,
        responses=tokenizer.batch_decode(kept, skip_special_tokens=True),
        prompt_index=torch.arange(input_ids.shape[0], device=device).repeat_interleave(num_samples),
        finished=finished,
    )
