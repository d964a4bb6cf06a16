"""RiC: SFT prompts carry a prefix built from each row's own labels."""

from __future__ import annotations

import pytest

from moslim_pl.data.sft import SFTDataModule, label_targets
from moslim_pl.data.sources import DataError, SyntheticConfig
from moslim_pl.data.synthetic import DIMENSIONS
from moslim_pl.prefix import parse_prefix
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

    for row, base in zip(rows, plain_rows, strict=True):
        targets, text = parse_prefix(row.prompt, DIMENSIONS)
        assert text == base.prompt and row.response == base.response
        # the synthetic labels are the oracle's levels: the prefix states what the response is
        assert targets == oracle(base.prompt, base.response)
