"""Rewarded Soups: weight interpolation by hand, one-hot exactness, export round trip, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moslim_pl.baselines.soups import interpolate, main, soup_exports
from moslim_pl.errors import MoslimError
from moslim_pl.models.backbone import load_causal_lm, load_tokenizer

TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}


def test_interpolate_by_hand_and_one_hot_is_exact() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "steps": torch.tensor([3])}
    b = {"w": torch.tensor([3.0, -2.0]), "steps": torch.tensor([3])}
    soup = interpolate([a, b], [0.25, 0.75])
    torch.testing.assert_close(soup["w"], torch.tensor([2.5, -1.0]))  # 0.25*1+0.75*3, 0.25*2-0.75*2
    assert torch.equal(soup["steps"], torch.tensor([3]))
    # one-hot returns the original weights bit for bit, even next to values that would not cancel
    weird = {"w": torch.tensor([1e30, float("nan")]), "steps": torch.tensor([3])}
    one_hot = interpolate([a, weird], [1.0, 0.0])
    assert torch.equal(one_hot["w"], a["w"]) and one_hot["w"].data_ptr() != a["w"].data_ptr()


@pytest.mark.parametrize(
    ("lambdas", "message"),
    [([0.5], "one lambda per policy"), ([0.7, 0.7], "sum to 1"), ([1.5, -0.5], "non-negative")],
)
def test_bad_lambdas(lambdas, message) -> None:
    a = {"w": torch.zeros(2)}
    with pytest.raises(MoslimError, match=message):
        interpolate([a, a], lambdas)


def test_mismatched_policies() -> None:
    with pytest.raises(MoslimError, match="differs in shape"):
        interpolate([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}], [0.5, 0.5])
    with pytest.raises(MoslimError, match="other parameters"):
        interpolate([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}], [0.5, 0.5])
    with pytest.raises(MoslimError, match="non-float tensor 'n'"):
        interpolate([{"n": torch.tensor([1])}, {"n": torch.tensor([2])}], [0.5, 0.5])


def test_soup_of_exports_round_trips(tmp_path: Path, capsys) -> None:
    tokenizer = load_tokenizer("moslim/tiny-llama")
    folders = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = load_causal_lm("moslim/tiny-llama", tokenizer=tokenizer, tiny_config=TINY)
        folder = tmp_path / f"p{seed}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(str(folder))
    out = soup_exports(folders, [0.5, 0.5], tmp_path / "soup")
    p0, p1, soup = (load_causal_lm(f).state_dict() for f in (*folders, out))
    for key in soup:
        torch.testing.assert_close(soup[key], (p0[key] + p1[key]) / 2)
    main(["--policies", *folders, "--lambdas", "0", "1", "--out", str(tmp_path / "one")])
    assert "wrote" in capsys.readouterr().out
    assert all(torch.equal(t, p1[k]) for k, t in load_causal_lm(str(tmp_path / "one")).state_dict().items())
    with pytest.raises(SystemExit) as exit_info:
        main(["--policies", *folders, "--lambdas", "1", "--out", str(tmp_path / "bad")])
    assert exit_info.value.code == 2 and "one lambda per policy" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
