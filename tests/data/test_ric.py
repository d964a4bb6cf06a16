"""RiC: SFT prompts carry a prefix built from each row's own labels."""

from __future__ import annotations

import pytest

from moslim_pl.data.prompts import PromptDataModule
from moslim_pl.data.sft import SFTDataModule, _with_prefix, label_targets
from moslim_pl.data.sources import DataError, SyntheticConfig
from moslim_pl.data.synthetic import DIMENSIONS
from moslim_pl.prefix import parse_prefix, strip_prefix
from moslim_pl.schema import Dimension


def test_label_targets_by_hand() -> None:
    dims = [
        Dimension("helpfulness", 0, 4),
        Dimension("verbosity", 0, 4, bins=2),
        Dimension("safe", 1, 3, column="s"),
    ]
    # verbosity 3 of 0..4 in 2 bins: 3 * 2 // 5 = 1; safe's raw 2 of 1..3 is level 2; "N/A" is missing
    assert label_targets({"helpfulness": 4, "verbosity": 3, "s": "2"}, dims) == {
        "helpfulness": 4,
        "verbosity": 1,
        "safe": 2,
    }
    assert label_targets({"helpfulness": "N/A", "verbosity": None, "s": 3.0}, dims) == {"safe": 3}
    with pytest.raises(DataError, match=r"row 7, column 'helpfulness': label 9 .* outside 0..4"):
        label_targets({"helpfulness": 9}, dims, "row 7")
    with pytest.raises(DataError, match=r"column 's': label 'high' is not an integer"):
        label_targets({"s": "high"}, dims)


def test_synthetic_rows_get_their_own_labels_as_prefix() -> None:
    data = SFTDataModule(label_prefix=True, synthetic=SyntheticConfig(num_prompts=5, responses_per_prompt=2))
    rows = data._read(data.source)
    plain = SFTDataModule(synthetic=SyntheticConfig(num_prompts=5, responses_per_prompt=2))
    plain_rows = plain._read(plain.source)
    assert len(rows) == len(plain_rows) == 10
    from moslim_pl.data.synthetic import oracle

    for row, base, prefixed in zip(rows, plain_rows, _with_prefix(rows), strict=True):
        assert row.prompt == base.prompt and row.response == base.response and base.targets is None
        targets, text = parse_prefix(prefixed.prompt, DIMENSIONS)
        assert text == base.prompt and prefixed.response == base.response
        # the synthetic labels are the oracle's levels: the prefix states what the response is
        assert targets == row.targets == oracle(base.prompt, base.response)


def test_ric_split_is_on_the_raw_prompt(monkeypatch) -> None:
    """One question under different label prefixes stays on one side of the split (issue 14, item 2):
    splitting the prefixed prompts put most questions on both sides, so RiC trained on held-out ones."""
    data = SFTDataModule(
        label_prefix=True,
        synthetic=SyntheticConfig(num_prompts=20, responses_per_prompt=4),
        val_fraction=0.25,
    )
    seen: list[list] = []
    monkeypatch.setattr(data, "_encode", lambda rows: seen.append(list(rows)) or [])
    data.setup("fit")
    train, val = ({strip_prefix(r.prompt, DIMENSIONS) for r in rows} for rows in seen)
    assert len(train) == 15 and len(val) == 5 and not train & val
    # every row is prefixed with its own labels
    assert all(parse_prefix(r.prompt, DIMENSIONS)[0] for rows in seen for r in rows)
    # the same held-out questions as a plain SFT run and the policy's prompt split with the same seed
    plain = SFTDataModule(
        synthetic=SyntheticConfig(num_prompts=20, responses_per_prompt=4), val_fraction=0.25
    )
    assert {r.prompt for r in plain.split_rows()[1]} == val
    prompts = PromptDataModule(
        synthetic=SyntheticConfig(num_prompts=20), val_fraction=0.25, num_test_prompts=None
    )
    assert set(prompts.sweep_prompts()) == val
