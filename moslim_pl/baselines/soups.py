"""Rewarded Soups (Ramé et al. 2023): interpolate the weights of policies fine-tuned from one start.

One policy is trained per dimension; at inference a preference vector ``lambda`` (non-negative, summing
to 1) picks the weighted average of their weights. ``python -m moslim_pl.baselines.soups --policies A B C
--lambdas 0.5 0.3 0.2 --out DIR`` writes the soup as a Hugging Face folder.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from moslim_pl.errors import MoslimError
from moslim_pl.models.backbone import load_causal_lm, load_tokenizer
from moslim_pl.models.io import save_pretrained_atomic


def check_lambdas(lambdas: Sequence[float], count: int) -> list[float]:
    """Validate an interpolation vector: ``count`` finite non-negative weights summing to 1 (to 1e-6)."""
    values = [float(v) for v in lambdas]
    if len(values) != count:
        raise MoslimError(f"need one lambda per policy ({count}), got {len(values)}")
    if any(not math.isfinite(v) or v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
        raise MoslimError(f"lambdas must be non-negative and sum to 1, got {values}")
    return values


def interpolate(state_dicts: Sequence[Mapping[str, Tensor]], lambdas: Sequence[float]) -> dict[str, Tensor]:
    """``sum_i lambda_i * theta_i`` for every floating-point tensor (computed in float64, stored in the
    tensor's dtype); other tensors (integer buffers) must be equal across the policies and are copied.

    A one-hot ``lambdas`` returns the selected state dict's tensors exactly.
    """
    weights = check_lambdas(lambdas, len(state_dicts))
    keys = list(state_dicts[0])
    for i, other in enumerate(state_dicts[1:], start=1):
        if list(other) != keys:
            missing = sorted(set(keys) ^ set(other))
            raise MoslimError(f"policy {i} has other parameters than policy 0: {missing[:3]}")
    chosen = [i for i, w in enumerate(weights) if w == 1.0]
    soup: dict[str, Tensor] = {}
    for key in keys:
        tensors = [sd[key] for sd in state_dicts]
        if any(t.shape != tensors[0].shape for t in tensors):
            raise MoslimError(f"parameter {key!r} differs in shape across the policies")
        if chosen:  # exact, whatever the others hold
            soup[key] = tensors[chosen[0]].clone()
        elif tensors[0].is_floating_point():
            mixed = sum(w * t.double() for w, t in zip(weights, tensors, strict=True))
            soup[key] = mixed.to(tensors[0].dtype)
        elif all(torch.equal(t, tensors[0]) for t in tensors):
            soup[key] = tensors[0].clone()
        else:
            raise MoslimError(f"non-float tensor {key!r} differs across the policies; cannot interpolate")
    return soup


def soup_exports(policies: Sequence[str], lambdas: Sequence[float], out: str | Path) -> Path:
    """Interpolate exported policies (Hugging Face folders) and export the soup to ``out`` atomically.

    The first policy's config and tokenizer are kept; all must share the architecture (one SFT start).
    """
    if not policies:
        raise MoslimError("need at least one policy to interpolate")
    check_lambdas(lambdas, len(policies))
    models = [load_causal_lm(p) for p in policies]
    soup = interpolate([m.state_dict() for m in models], lambdas)
    models[0].load_state_dict(soup)
    return save_pretrained_atomic(out, models[0], load_tokenizer(policies[0]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rewarded Soups: interpolate exported policies")
    parser.add_argument("--policies", nargs="+", required=True, help="exported policy folders")
    parser.add_argument("--lambdas", nargs="+", type=float, required=True, help="one weight per policy")
    parser.add_argument("--out", required=True, help="folder of the interpolated export")
    args = parser.parse_args(argv)
    try:
        folder = soup_exports(args.policies, args.lambdas, args.out)
    except MoslimError as err:
        sys.stderr.write(f"moslim-pl soups: error: {err}\n")
        raise SystemExit(2) from None
    sys.stdout.write(f"wrote {folder}\n")


if __name__ == "__main__":
    main()
