"""Log-probs, KL and rewards of rollouts, shared by the policy modules (RLOO, PPO, Online-DPO): plain functions.

One RL step reads top to bottom::

    batch = encode_prompts(tokenizer, prompts, max_prompt_length, chat_template, dimensions)
    rollout = generate(policy, tokenizer, batch, max_new_tokens=64, num_samples=4)
    texts = [prompts[i] for i in rollout.prompt_index.tolist()]  # the ORIGINAL prompts, prefix included
    rewards = score_responses(rm, texts, rollout.responses)
    logprobs = sequence_logprobs(policy, *rollout_inputs(rollout))             # with grad
    ref_logprobs = sequence_logprobs(reference, *rollout_inputs(rollout))     # under no_grad
    kl = kl_estimate(logprobs, ref_logprobs, rollout.response_mask)  # moslim_pl.losses.kl

Shapes: ``B`` prompts, ``k`` samples per prompt, ``N = B * k`` rows (sample ``i`` of prompt ``b`` is row
``b * k + i``), ``P`` prompt tokens (left-padded), ``R`` response tokens, ``V`` vocabulary size, ``K`` reward
heads, ``L`` levels. No Lightning here: pure torch and transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from moslim_pl.data.messages import Prompt
from moslim_pl.errors import MoslimError
from moslim_pl.generation import PromptBatch, Rollout, encode_prompts, generate
from moslim_pl.models.compat import cache_name, forward_kwargs
from moslim_pl.models.reward_model import MultiHeadRewardModel, ScoreOutput

# The generation names are named here too: one import serves a whole RL step (the docstring's example).
__all__ = [
    "PromptBatch",
    "RewardOutput",
    "Rollout",
    "encode_prompts",
    "entropy_from_logits",
    "generate",
    "masked_logprobs",
    "penalize",
    "response_logits",
    "rollout_inputs",
    "score_responses",
    "sequence_logprobs",
    "token_logprobs",
]


RewardOutput = ScoreOutput
"""What :func:`score_responses` returns: the reward model's :class:`ScoreOutput` (one result type)."""


# ------------------------------------------------------------------------------------------- log-probs


def response_logits(
    model: nn.Module,
    sequences: Tensor,
    attention_mask: Tensor,
    prompt_length: int,
    temperature: float = 1.0,
    group_size: int = 1,
) -> Tensor:
    """Float32 logits predicting each response token, divided by ``temperature``: ``[N, R, V]``.

    ``sequences [N, P + R]`` and ``attention_mask [N, P + R]`` as in :class:`Rollout`. Position ids come
    from the mask, so a left-padded row gives the logits of its unpadded sequence. Grad follows the
    caller's mode.

    ``group_size = k > 1`` says that rows ``b * k .. b * k + k - 1`` share their prompt columns (a rollout of
    ``k`` samples per prompt): each prompt then runs once and its KV cache is repeated for the ``k`` rows,
    which run only their response tokens, as :func:`generate` does. The logits are those of the full
    sequences up to float rounding, and the gradient flows through the shared prompt too. Rows that do not
    share their prompt, or a model without a repeatable cache, take the full-sequence pass.
    """
    if temperature <= 0:
        raise MoslimError(f"log-probs need a temperature > 0, got {temperature}")
    logits = None
    if group_size > 1:
        logits = _shared_prompt_logits(model, sequences, attention_mask, prompt_length, group_size)
    if logits is None:
        num_response = sequences.shape[1] - prompt_length
        # Only the last R + 1 positions predict response tokens: skip the LM head on the prompt.
        kwargs = forward_kwargs(model, attention_mask, sequences.shape[1], num_response + 1)
        out = model(input_ids=sequences, use_cache=False, **kwargs)
        logits = out.logits[:, -(num_response + 1) : -1]
    logits = logits.float()
    # At temperature 1 the division would only copy [N, R, V] floats.
    return logits if temperature == 1.0 else logits / temperature


def _shared_prompt_logits(
    model: nn.Module, sequences: Tensor, attention_mask: Tensor, prompt_length: int, group_size: int
) -> Tensor | None:
    """:func:`response_logits` with one prompt pass per group of ``group_size`` rows; None where it cannot."""
    rows, width = sequences.shape
    if rows % group_size or prompt_length < 1 or width == prompt_length:
        return None
    prompt_ids, prompt_mask = sequences[:, :prompt_length], attention_mask[:, :prompt_length]
    first_ids, first_mask = prompt_ids[::group_size], prompt_mask[::group_size]
    shared = torch.equal(prompt_ids, first_ids.repeat_interleave(group_size, 0)) and torch.equal(
        prompt_mask, first_mask.repeat_interleave(group_size, 0)
    )
    if not shared:
        return None
    out = model(input_ids=first_ids, use_cache=True, **forward_kwargs(model, first_mask, prompt_length, 1))
    cache_arg = cache_name(model)
    cache = getattr(out, cache_arg)
    if not hasattr(cache, "batch_repeat_interleave"):
        return None  # a legacy tuple cache (some remote-code models)
    first = out.logits[:, -1:].repeat_interleave(group_size, 0)  # predicts the first response token
    if width - prompt_length == 1:
        return first
    cache.batch_repeat_interleave(group_size)
    # The last response token is only a target: the pass reads the R - 1 tokens before it.
    mask = attention_mask[:, :-1]
    out = model(
        input_ids=sequences[:, prompt_length:-1],
        use_cache=True,
        **{cache_arg: cache},
        **forward_kwargs(model, mask, width - 1 - prompt_length, 0),
    )
    return torch.cat([first, out.logits], dim=1)


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """``log_softmax(logits)[..., token]``: ``logits [N, R, V]``, ``tokens [N, R]`` -> ``[N, R]``.

    Gather minus logsumexp never materializes the full ``[N, R, V]`` log-softmax.
    """
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of ``softmax(logits)`` over the last axis: ``[..., V]`` -> ``[...]``."""
    return logits.logsumexp(-1) - (logits.softmax(-1) * logits).sum(-1)


def sequence_logprobs(
    model: nn.Module,
    sequences: Tensor,
    attention_mask: Tensor,
    prompt_length: int,
    response_mask: Tensor,
    temperature: float = 1.0,
    group_size: int = 1,
) -> Tensor:
    """Per-token log-probs ``[N, R]`` of the response tokens under ``model``, 0 where ``response_mask`` is 0.

    Use the sampling temperature, so that the log-probs are those of the distribution that sampled.
    Works with grad (policy) and under ``no_grad``/``inference_mode`` (reference). ``group_size``: see
    :func:`response_logits` (``num_samples`` of a rollout runs each prompt once).
    """
    logits = response_logits(model, sequences, attention_mask, prompt_length, temperature, group_size)
    return masked_logprobs(logits, sequences, prompt_length, response_mask)


def masked_logprobs(logits: Tensor, sequences: Tensor, prompt_length: int, response_mask: Tensor) -> Tensor:
    """The response tokens' log-probs ``[N, R]`` under ``logits [N, R, V]`` (:func:`response_logits`), 0
    where ``response_mask`` is 0."""
    logprobs = token_logprobs(logits, sequences[:, prompt_length:])
    return torch.where(response_mask.bool(), logprobs, torch.zeros_like(logprobs))


def rollout_inputs(rollout: Rollout) -> tuple[Tensor, Tensor, int, Tensor]:
    """``(sequences, attention_mask, prompt_length, response_mask)``: the arguments of :func:`sequence_logprobs`."""
    return rollout.sequences, rollout.attention_mask, rollout.prompt_length, rollout.response_mask


# -------------------------------------------------------------------------------------------- rewards


def score_responses(
    rm: MultiHeadRewardModel, prompts: Sequence[Prompt], responses: Sequence[str], **options: Any
) -> RewardOutput:
    """Reward ``N`` (prompt, response) pairs with the RM; targets come from each prompt's prefix.

    ``prompts`` must be the ORIGINAL prompt texts, prefix included, one per response (repeat them with
    ``Rollout.prompt_index``), never the policy's chat-templated text: the RM strips the prefix and
    re-tokenizes with its own tokenizer and encoding. A prompt without prefix gets the RM's default
    targets. A conversation (``Messages``) carries its prefix in its last user turn; the RM reads it there,
    strips it and encodes the conversation as it encodes conversational training rows. ``options``: the
    keyword arguments of :meth:`MultiHeadRewardModel.score` (``mapping``, ``weights``, ``batch_size``,
    ``sigma_floor``, ``z_clip``, ``aggregation``).

    Returns:
        :class:`ScoreOutput` of ordinary CPU tensors (float32 where float), requested classes and hits
        included.
    """
    out = rm.score(prompts, responses, **options)
    # clone(): score runs under inference_mode, and rewards feed the policy loss's autograd graph.
    return ScoreOutput(*(t.clone() for t in out))


def penalize(
    reward: Tensor, rollout: Rollout, missing_eos_penalty: float | None, empty_penalty: float | None
) -> Tensor:
    """``reward [N]`` less ``missing_eos_penalty`` where a response was cut at ``max_new_tokens`` and less
    ``empty_penalty`` where it has no non-whitespace character (either ``None``: off; ``docs/concepts.md``)."""
    if missing_eos_penalty is not None:
        reward = reward - missing_eos_penalty * (~rollout.finished).to(reward.dtype)
    if empty_penalty is not None:
        empty = torch.tensor([not text.strip() for text in rollout.responses], device=reward.device)
        reward = reward - empty_penalty * empty.to(reward.dtype)
    return reward
