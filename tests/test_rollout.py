"""Rollout helpers: prompt encoding, cached sampling, log-probs, KL estimators and RM scoring."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerFast
from transformers.cache_utils import Cache

from moslim_pl.data.encoding import PairEncoding
from moslim_pl.data.synthetic import DIMENSIONS
from moslim_pl.errors import MoslimError
from moslim_pl.generation import PromptBatch, _sample_next, encode_prompts, generate
from moslim_pl.losses.kl import kl_estimate, token_kl
from moslim_pl.models.backbone import load_backbone, load_causal_lm, load_tokenizer
from moslim_pl.models.reward_model import MultiHeadRewardModel
from moslim_pl.prefix import PrefixError
from moslim_pl.rollout import (
    entropy_from_logits,
    response_logits,
    rollout_inputs,
    score_responses,
    sequence_logprobs,
)

PROMPTS = ["<verbosity 2> tell me about rivers .", "explain bees ."]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return load_tokenizer("moslim/tiny-llama")


@pytest.fixture(scope="module")
def policy(tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    torch.manual_seed(0)
    return load_causal_lm("moslim/tiny-llama", tokenizer=tokenizer).eval()


def _prompts(tokenizer: PreTrainedTokenizerFast) -> PromptBatch:
    return encode_prompts(tokenizer, PROMPTS, max_prompt_length=32, dimensions=DIMENSIONS)


def _eos_biased_policy(tokenizer: PreTrainedTokenizerFast, eos_logit: float) -> PreTrainedModel:
    """A policy whose next-token distribution ignores the input: EOS has logit ``eos_logit``, others 0."""
    model = load_causal_lm("moslim/tiny-llama", tokenizer=tokenizer).eval()
    head = nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    with torch.no_grad():
        head.bias[tokenizer.eos_token_id] = eos_logit
    model.lm_head = head
    return model


# ----------------------------------------------------------------------------------------------- prompts


def test_encode_prompts_left_pads(tokenizer: PreTrainedTokenizerFast) -> None:
    batch = _prompts(tokenizer)
    first = tokenizer(PROMPTS[0])["input_ids"]
    second = tokenizer(PROMPTS[1])["input_ids"]
    assert batch.input_ids.shape == batch.attention_mask.shape == (2, len(first))
    assert batch.input_ids[0].tolist() == first
    pad = len(first) - len(second)
    assert batch.input_ids[1].tolist() == [tokenizer.pad_token_id] * pad + second
    assert batch.attention_mask[1].tolist() == [0] * pad + [1] * len(second)


@pytest.mark.parametrize("dimensions", [DIMENSIONS, None], ids=["schema", "no-schema"])
def test_encode_prompts_truncation_keeps_prefix_and_end(
    tokenizer: PreTrainedTokenizerFast, dimensions
) -> None:
    prompt = "<verbosity 1> <formality 2> i want to learn about tea , tell me about rivers ."
    batch = encode_prompts(tokenizer, [prompt], max_prompt_length=12, dimensions=dimensions)
    assert batch.input_ids.shape == (1, 12)
    text = tokenizer.decode(batch.input_ids[0])
    assert text == "< verbosity 1 > < formality 2 > me about rivers ."


def test_encode_prompts_chat_template_keeps_prefix(tokenizer: PreTrainedTokenizerFast) -> None:
    chat = load_tokenizer("moslim/tiny-llama")
    chat.chat_template = (
        "{% for m in messages %}[SEP] {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}[SEP] {% endif %}"
    )
    prompt = "<helpfulness 3> i want to learn about tea , tell me about rivers ."
    full = encode_prompts(chat, [prompt], max_prompt_length=64, chat_template=True)
    assert chat.decode(full.input_ids[0]) == f"[SEP] {chat.decode(chat(prompt)['input_ids'])} [SEP]"
    cut = encode_prompts(chat, [prompt], max_prompt_length=9, chat_template=True, dimensions=DIMENSIONS)
    assert chat.decode(cut.input_ids[0]) == "[SEP] < helpfulness 3 > about rivers . [SEP]"


def test_encode_prompts_errors(tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(PrefixError):
        encode_prompts(tokenizer, ["<verbosity 9> hi"], max_prompt_length=8, dimensions=DIMENSIONS)
    with pytest.raises(MoslimError, match="cannot hold the prefix"):
        encode_prompts(tokenizer, ["<verbosity 1> <formality 2> explain bees ."], max_prompt_length=6)
    with pytest.raises(MoslimError, match="no tokens"):
        encode_prompts(tokenizer, [""], max_prompt_length=6)


# -------------------------------------------------------------------------------------------- generation


def test_greedy_generation_matches_hf_generate(
    policy: PreTrainedModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    batch = _prompts(tokenizer)
    rollout = generate(policy, tokenizer, batch, max_new_tokens=6, temperature=0.0)
    reference = policy.generate(
        **batch._asdict(),
        max_new_tokens=6,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    width = min(rollout.sequences.shape[1], reference.shape[1])
    assert torch.equal(rollout.sequences[:, :width], reference[:, :width])
    assert rollout.prompt_length == batch.input_ids.shape[1]


def test_num_samples_layout_and_cache_expansion(
    policy: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = _prompts(tokenizer)
    single = generate(policy, tokenizer, batch, max_new_tokens=5, temperature=0.0)
    repeated = generate(policy, tokenizer, batch, max_new_tokens=5, temperature=0.0, num_samples=3)
    assert repeated.prompt_index.tolist() == [0, 0, 0, 1, 1, 1]
    assert repeated.sequences.shape[0] == 6 and len(repeated.responses) == 6
    # Greedy samples of one prompt are identical, so the expanded KV cache must reproduce k = 1.
    assert torch.equal(repeated.sequences, single.sequences.repeat_interleave(3, 0))
    assert repeated.responses == [r for r in single.responses for _ in range(3)]
    # Without Cache.batch_repeat_interleave (legacy caches) the repeated prompts are prefilled instead.
    monkeypatch.delattr(Cache, "batch_repeat_interleave")
    fallback = generate(policy, tokenizer, batch, max_new_tokens=5, temperature=0.0, num_samples=3)
    assert torch.equal(fallback.sequences, repeated.sequences)


def test_sampling_is_reproducible(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerFast) -> None:
    batch = _prompts(tokenizer)

    def sample(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return generate(policy, tokenizer, batch, max_new_tokens=8, num_samples=2, top_p=0.9).sequences

    first = sample(0)
    assert torch.equal(first, sample(0))
    assert not torch.equal(first, sample(1))
    assert not torch.equal(first[0], first[1])  # two samples of one prompt differ


def test_top_p_keeps_the_smallest_nucleus() -> None:
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log().expand(400, -1)
    torch.manual_seed(0)
    assert set(_sample_next(logits, 1.0, 0.6, None).tolist()) == {0, 1}
    assert set(_sample_next(logits, 1.0, 0.4, None).tolist()) == {0}
    assert set(_sample_next(logits, 1.0, 1.0, None).tolist()) == {0, 1, 2}
    assert set(_sample_next(logits, 0.0, 1.0, None).tolist()) == {0}  # temperature 0: greedy


def test_eos_stops_rows_and_masks_the_rest(tokenizer: PreTrainedTokenizerFast) -> None:
    torch.manual_seed(0)
    model = _eos_biased_policy(tokenizer, eos_logit=math.log((len(tokenizer) - 1) / 9))  # p(EOS) = 0.1
    batch = _prompts(tokenizer)
    rollout = generate(model, tokenizer, batch, max_new_tokens=10, num_samples=4)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    response = rollout.sequences[:, rollout.prompt_length :]
    lengths = rollout.response_mask.sum(-1)
    assert 0 < int(rollout.finished.sum()) < 8  # some rows stopped early, some ran to the end
    for row in range(8):
        n = int(lengths[row])
        assert rollout.response_mask[row].tolist() == [1] * n + [0] * (response.shape[1] - n)
        assert (response[row, n:] == pad).all()
        assert (response[row, : n - 1] != eos).all()
        assert bool(rollout.finished[row]) == (response[row, n - 1] == eos)
        assert rollout.responses[row] == tokenizer.decode(response[row, :n], skip_special_tokens=True)
    assert torch.equal(rollout.attention_mask[:, rollout.prompt_length :], rollout.response_mask)
    # Rows stop on any of several eos ids.
    torch.manual_seed(0)
    unk = tokenizer.unk_token_id
    several = generate(model, tokenizer, batch, max_new_tokens=10, num_samples=4, eos_token_id=[eos, unk])
    assert several.finished.sum() >= rollout.finished.sum()

    certain = _eos_biased_policy(tokenizer, eos_logit=100.0)
    stopped = generate(certain, tokenizer, batch, max_new_tokens=10, num_samples=2)
    assert stopped.response_mask.shape == (4, 1)  # the loop ends once every row has stopped
    assert stopped.finished.all() and stopped.responses == ["", "", "", ""]


# ---------------------------------------------------------------------------------------------- logprobs


def test_left_padding_gives_the_unpadded_logprobs(
    policy: PreTrainedModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    torch.manual_seed(0)
    rollout = generate(policy, tokenizer, _prompts(tokenizer), max_new_tokens=6)
    with torch.no_grad():
        batched = sequence_logprobs(policy, *rollout_inputs(rollout), temperature=0.7)
        for row in range(rollout.sequences.shape[0]):
            keep = rollout.attention_mask[row].bool()
            keep[rollout.prompt_length :] = True  # the response columns stay aligned
            alone = rollout.sequences[row, keep][None]
            prompt_length = int(rollout.attention_mask[row, : rollout.prompt_length].sum())
            single = sequence_logprobs(
                policy,
                alone,
                torch.ones_like(alone),
                prompt_length,
                rollout.response_mask[row][None],
                temperature=0.7,
            )
            torch.testing.assert_close(batched[row][None], single, atol=1e-5, rtol=0)
    assert (batched[rollout.response_mask == 0] == 0).all()
    assert (batched[rollout.response_mask == 1] < 0).all()


def test_greedy_tokens_have_the_max_logprob(
    policy: PreTrainedModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    rollout = generate(policy, tokenizer, _prompts(tokenizer), max_new_tokens=5, temperature=0.0)
    with torch.no_grad():
        logits = response_logits(policy, rollout.sequences, rollout.attention_mask, rollout.prompt_length)
        logprobs = sequence_logprobs(policy, *rollout_inputs(rollout))
    best = logits.log_softmax(-1).max(-1).values
    mask = rollout.response_mask.bool()
    torch.testing.assert_close(logprobs[mask], best[mask], atol=1e-5, rtol=0)


def test_logprobs_backpropagate_through_a_rollout(
    policy: PreTrainedModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    torch.manual_seed(0)
    rollout = generate(policy, tokenizer, _prompts(tokenizer), max_new_tokens=4, num_samples=2)
    assert not rollout.sequences.is_inference() and not rollout.response_mask.is_inference()
    policy.zero_grad()
    logprobs = sequence_logprobs(policy, *rollout_inputs(rollout))
    (-(logprobs * rollout.response_mask).sum()).backward()
    assert policy.lm_head.weight.grad is not None and policy.lm_head.weight.grad.abs().sum() > 0
    policy.zero_grad()


def test_shared_prompt_pass_gives_the_full_sequence_logprobs_and_gradients(
    policy: PreTrainedModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    """group_size = k runs each prompt once for its k samples: same log-probs and gradients as full rows."""
    torch.manual_seed(0)
    rollout = generate(policy, tokenizer, _prompts(tokenizer), max_new_tokens=6, num_samples=3)
    inputs = rollout_inputs(rollout)
    results = []
    for group_size in (1, 3):
        policy.zero_grad()
        logprobs = sequence_logprobs(policy, *inputs, group_size=group_size)
        (-(logprobs * rollout.response_mask).sum()).backward()
        results.append((logprobs.detach(), [p.grad.clone() for p in policy.parameters()]))
    policy.zero_grad()
    (full, full_grads), (shared, shared_grads) = results
    torch.testing.assert_close(shared, full, rtol=1e-5, atol=1e-5)
    for a, b in zip(shared_grads, full_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # rows that do not share their prompt fall back to the full pass
    mixed = (rollout.sequences.flip(0), rollout.attention_mask.flip(0), rollout.prompt_length)
    with torch.no_grad():
        torch.testing.assert_close(
            response_logits(policy, *mixed, group_size=2), response_logits(policy, *mixed), rtol=0, atol=0
        )


def test_entropy_from_logits() -> None:
    uniform = torch.zeros(2, 3, 5)
    torch.testing.assert_close(entropy_from_logits(uniform), torch.full((2, 3), math.log(5)))
    peaked = torch.tensor([[100.0, 0.0, 0.0]])
    assert entropy_from_logits(peaked).item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------------- KL


def test_kl_estimators_hand_computed() -> None:
    logprobs = torch.tensor([[-1.0, -2.0, -3.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    # k1 = logp - ref; k3 = exp(ref - logp) - (ref - logp) - 1; the masked third token is ignored.
    k1 = 0.5 + -1.0
    k3 = (math.exp(-0.5) + 0.5 - 1) + (math.exp(1.0) - 1.0 - 1)
    assert kl_estimate(logprobs, ref, mask, "k1").item() == pytest.approx(k1)
    assert kl_estimate(logprobs, ref, mask, "k3").item() == pytest.approx(k3)
    assert token_kl(logprobs, ref, "k3").shape == (1, 3)
    for kind in ("k1", "k3"):
        assert kl_estimate(logprobs, logprobs, mask, kind).tolist() == [0.0]
    with pytest.raises(MoslimError, match="k2"):
        kl_estimate(logprobs, ref, mask, "k2")


# ----------------------------------------------------------------------------------------------- rewards


@pytest.fixture(scope="module")
def reward_model(tokenizer: PreTrainedTokenizerFast) -> MultiHeadRewardModel:
    torch.manual_seed(0)
    backbone = load_backbone("moslim/tiny-llama", tokenizer=tokenizer)
    return MultiHeadRewardModel(backbone, DIMENSIONS, tokenizer=tokenizer, encoding=PairEncoding(64)).eval()


def test_score_responses(reward_model: MultiHeadRewardModel) -> None:
    prompts = [
        "<verbosity 2> tell me about rivers .",
        "tell me about rivers .",
        "<formality 0> tell me about rivers .",
    ]
    responses = ["the delta is wide ."] * 3
    out = score_responses(reward_model, prompts, responses)
    assert out.probs.shape == (3, 3, 4) and out.reward.shape == (3,)
    # The RM never sees the prefix: the same pair scores the same probabilities with or without it.
    torch.testing.assert_close(out.probs[0], out.probs[1])
    torch.testing.assert_close(out.probs[0], out.probs[2])
    assert out.requested.tolist() == [[2, -1, -1], [1, 2, 3], [-1, 0, -1]]  # defaults: 1, 2, 3
    assert out.mask.tolist() == (out.requested >= 0).tolist()
    expected_hit = (out.probs.argmax(-1) == out.requested) & (out.requested >= 0)
    assert torch.equal(out.hit, expected_hit) and not out.hit[0, 1:].any()
    direct = reward_model.score(prompts, responses)
    torch.testing.assert_close(out.reward, direct.reward)
    assert not out.reward.is_inference()  # usable as advantages in the policy loss
    # aggregation="min": the reward is the smallest named term (row 1 names all three via the defaults)
    worst = score_responses(reward_model, prompts, responses, aggregation="min")
    torch.testing.assert_close(worst.components, out.components)
    expected = torch.where(out.mask, out.components, torch.full_like(out.components, torch.inf)).amin(-1)
    torch.testing.assert_close(worst.reward, expected)
    torch.testing.assert_close(worst.reward[[0, 2]], out.reward[[0, 2]])  # one named term: min == mean


def test_sampling_draws_from_the_softmax() -> None:
    # Gumbel-max sampling: the frequencies of 40,000 draws match softmax(logits / T) within 0.01
    probs = torch.tensor([0.6, 0.25, 0.1, 0.05])
    generator = torch.Generator().manual_seed(0)
    for temperature in (1.0, 0.5):
        logits = (probs.log() * temperature).expand(40_000, -1)  # softmax(logits / T) == probs
        draws = _sample_next(logits, temperature, 1.0, generator)
        freq = torch.bincount(draws, minlength=4).float() / draws.numel()
        torch.testing.assert_close(freq, probs, atol=0.01, rtol=0)
    # top_p 0.8 keeps tokens 0 and 1 (0.6 < 0.8 <= 0.85), renormalized: 0.6 / 0.85 and 0.25 / 0.85
    draws = _sample_next(probs.log().expand(40_000, -1), 1.0, 0.8, generator)
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    torch.testing.assert_close(freq, torch.tensor([0.6, 0.25, 0.0, 0.0]) / 0.85, atol=0.01, rtol=0)


@pytest.mark.parametrize("padded", [True, False])
def test_lean_decoding_step_gives_the_same_tokens_as_the_model_forward(
    policy: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, monkeypatch, padded: bool
) -> None:
    import moslim_pl.generation as generation

    assert generation.lean_decoder(policy, lockstep=False) is not None  # a Llama with SDPA
    batch = _prompts(tokenizer)
    if not padded:  # the same prompt twice: no padding, so no mask at all
        batch = encode_prompts(
            tokenizer, ["the cat sat on the mat"] * 2, max_prompt_length=32, dimensions=DIMENSIONS
        )
        assert bool(batch.attention_mask.all())

    def sample() -> torch.Tensor:
        torch.manual_seed(0)
        rollout = generate(policy, tokenizer, batch, max_new_tokens=12, num_samples=3, top_p=0.9)
        return rollout.sequences

    lean = sample()
    monkeypatch.setattr(generation, "lean_decoder", lambda model, lockstep: None)
    assert torch.equal(lean, sample())  # bit for bit: the same logits, hence the same draws


def test_chat_template_defaults_on_when_the_tokenizer_has_one(
    tokenizer: PreTrainedTokenizerFast, caplog: pytest.LogCaptureFixture
) -> None:
    from moslim_pl.generation import resolve_chat_template

    chat = copy.deepcopy(tokenizer)
    chat.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with caplog.at_level(logging.WARNING, logger="moslim_pl.data.prompt_encoding"):
        assert resolve_chat_template(chat, None, "chat-model") is True
        assert resolve_chat_template(tokenizer, None, "plain-model") is False
        assert resolve_chat_template(chat, True, "chat-model") is True
        assert resolve_chat_template(tokenizer, False, "plain-model") is False
    assert not caplog.records  # none of these is a problem
    with caplog.at_level(logging.WARNING, logger="moslim_pl.data.prompt_encoding"):
        assert resolve_chat_template(chat, False, "chat-model") is False
    (record,) = caplog.records
    assert (
        "chat-model is a chat model" in record.getMessage() and "chat_template=false" in record.getMessage()
    )
    with pytest.raises(MoslimError, match="plain-model.*no chat template"):
        resolve_chat_template(tokenizer, True, "plain-model")
