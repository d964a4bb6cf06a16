"""The reward model's export format: the files beside the backbone's, and the validated ``moslim_rm.json``.

:meth:`moslim_pl.models.reward_model.MultiHeadRewardModel.save_pretrained` writes it and ``from_pretrained``
reads it (``docs/user_guide.md``, "The exported reward model").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers.utils import logging as hf_logging

from moslim_pl.data.encoding import PairEncoding
from moslim_pl.errors import MoslimError
from moslim_pl.schema import check_dimensions

RM_CONFIG = "moslim_rm.json"
HEADS_FILE = "heads.safetensors"
FORMAT_VERSION = 1
RM_ARCHITECTURE = "MoslimMultiHeadRewardModel"
RM_NOTE = (
    "A MOSLIM multi-head reward model, not a sequence classifier: load it with "
    "moslim_pl.models.reward_model.MultiHeadRewardModel.from_pretrained (or, in TRL, "
    "moslim_pl.integrations.trl.reward_function); AutoModel loads the backbone alone."
)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' warnings (its loading report) off for the block; errors still show."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def read_config(folder: Path) -> dict:
    """The validated ``moslim_rm.json`` of an export; any problem is a one-line ValueError."""
    path = folder / RM_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        reason = " ".join(str(err).split())
        raise MoslimError(
            f"{str(folder)!r} is not a reward model export: cannot read {RM_CONFIG} ({reason})"
        ) from err
    required = ("format_version", "dimensions", "pooling", "encoding")
    missing = [key for key in required if not isinstance(config, dict) or key not in config]
    if missing:
        raise MoslimError(f"invalid {RM_CONFIG} in {str(folder)!r}: missing {', '.join(missing)}")
    if config["format_version"] != FORMAT_VERSION:
        raise MoslimError(
            f"invalid {RM_CONFIG} in {str(folder)!r}: format_version {config['format_version']!r}, "
            f"this version reads {FORMAT_VERSION}"
        )
    try:
        config["dimensions"] = check_dimensions(config["dimensions"])
        config["encoding"] = PairEncoding(**config["encoding"])
    except (TypeError, ValueError) as err:
        reason = " ".join(str(err).split())
        raise MoslimError(f"invalid {RM_CONFIG} in {str(folder)!r}: bad dimensions ({reason})") from err
    return config
