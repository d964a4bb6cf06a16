"""Model exports written atomically (:mod:`moslim_pl.utils.io`), and the guard that keeps a reward model
export from loading as a sequence classifier."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from moslim_pl.models.sharding import full_state_dict
from moslim_pl.utils.distributed import is_rank_zero
from moslim_pl.utils.io import atomic_folder


def save_pretrained_atomic(
    folder: str | Path,
    *parts: object,
    fsdp_root: object | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """``part.save_pretrained`` of every part (model, tokenizer, ...) into ``folder``, atomically.

    A model sharded with FSDP is gathered first: every rank must then call this (a collective); in a
    distributed run only rank 0 writes. ``fsdp_root``: the FSDP1 wrapper holding the models, if any
    (``moslim_pl.models.sharding.fsdp1_root``). ``extra(staging)`` writes more files (a model card, an
    adapter folder) into the staging folder before it replaces ``folder``.
    """
    states = [
        full_state_dict(part, root=fsdp_root) if isinstance(part, nn.Module) else None for part in parts
    ]
    if not is_rank_zero():
        return Path(folder)
    with atomic_folder(folder) as staging:
        for part, state in zip(parts, states, strict=True):
            if state is None:
                part.save_pretrained(staging)
            else:
                part.save_pretrained(staging, state_dict=state)
        if extra is not None:
            extra(staging)
    return Path(folder)


REFUSAL_SHARD = "moslim-no-sequence-classification.safetensors"


def refuse_sequence_classification(folder: str | Path, architecture: str, note: str) -> list[str]:
    """Make ``AutoModelForSequenceClassification.from_pretrained(folder)`` fail instead of silently adding a
    random classification head to the backbone saved in ``folder`` (``AutoModel`` still loads it).

    ``config.json`` gets ``architectures: [architecture]`` and ``moslim_note: note``; the weights get an
    empty (shape ``[0]``) tensor under each name of the backbone family's sequence-classification head
    (``score.weight`` for Llama-like models, ``classifier.*`` for BERT-like ones), so transformers stops
    with a size-mismatch error on that head (unless a caller passes ``ignore_mismatched_sizes=True``).
    ``AutoModel`` reports the extra names as unexpected and ignores them. Returns the names added (none
    when transformers has no sequence-classification class for the backbone: nothing to refuse).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModelForSequenceClassification

    folder = Path(folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["architectures"] = [architecture]
    config["moslim_note"] = note
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    try:
        hf_config = AutoConfig.from_pretrained(folder)
        with torch.device("meta"):
            classifier = AutoModelForSequenceClassification.from_config(hf_config)
    except (ValueError, KeyError, OSError, TypeError):
        return []
    prefix = f"{classifier.base_model_prefix}."
    names = [name for name in classifier.state_dict() if not name.startswith(prefix)]
    if not names:
        return []
    empty = {name: torch.zeros(0) for name in names}
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        with safe_open(single, framework="pt") as file:
            metadata = file.metadata() or {"format": "pt"}
        save_file({**load_file(single), **empty}, single, metadata=metadata)
    elif index.is_file():  # a sharded backbone: one more small shard, listed in the index
        save_file(empty, folder / REFUSAL_SHARD, metadata={"format": "pt"})
        content = json.loads(index.read_text())
        content.setdefault("weight_map", {}).update(dict.fromkeys(names, REFUSAL_SHARD))
        index.write_text(json.dumps(content, indent=2) + "\n")
    else:
        return []
    return names
