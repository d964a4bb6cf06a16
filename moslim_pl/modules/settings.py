"""The settings every policy stage shares, as typed groups: ``sampling``, ``reward``, ``optim`` and ``kl``.

Each group is a frozen dataclass and one constructor argument of :class:`~moslim_pl.modules.RLOOModule`,
:class:`~moslim_pl.modules.PPOModule` and :class:`~moslim_pl.modules.OnlineDPOModule` (Online-DPO has no
``kl`` group: its KL is DPO's ``beta``). On the command line and in YAML a group's fields are nested keys,
as ``lora``'s are::

    --model.sampling.temperature 0.7 --model.optim.learning_rate 2e-4 --model.kl.coef 0.05

    model:
      init_args:
        sampling: {max_new_tokens: 64, max_prompt_length: 32}
        optim: {learning_rate: 0.0002, warmup_steps: 10}

A group given in part keeps the defaults of its other fields; ``--model.sampling.help`` lists a group's
fields. The module's ``hparams`` (hence ``hparams.yaml``, checkpoints and exact resume) hold each group as
a plain dict; the constructor takes the dataclass or such a dict. Each field is checked when its group is
built: a bad value ends with one ``MoslimError`` line naming ``<group>.<field>``. The flat keys these
groups replace (``--model.learning_rate``...) are listed in ``docs/user_guide.md``, "Changelog".
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from moslim_pl.errors import MoslimError, require
from moslim_pl.losses.kl import AdaptiveKLController, FixedKLController, kl_controller
from moslim_pl.rewards.mapping import MAPPINGS, parse_aggregation
from moslim_pl.utils.hparams import as_dataclass

__all__ = [
    "GROUPS",
    "KLConfig",
    "OptimConfig",
    "RewardConfig",
    "SamplingConfig",
    "null_field_args",
    "settings_group",
]


@dataclass(frozen=True)
class SamplingConfig:
    """How the policy samples: the training rollouts, and one response per prompt in validation, the
    controllability sweep and predict.

    Args:
        max_new_tokens: response tokens at most; a response cut there has not finished
            (``reward.missing_eos_penalty``).
        temperature: temperature of the training rollouts (> 0); the training log-probs (policy and
            reference) are taken at the same temperature, those of the distribution that sampled.
        top_p: nucleus sampling of the training rollouts (1: off).
        max_prompt_length: prompt tokens kept (the prefix and the end of the prompt survive a cut).
        chat_template: render each prompt as the user turn of the policy tokenizer's chat template;
            ``None`` (default): whenever the tokenizer has one (an explicit ``false`` for a chat model
            warns). The module stores what it resolved to.
        val_temperature: temperature of validation, the sweep and predict (one response per prompt;
            0 = greedy).
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    max_prompt_length: int = 256
    chat_template: bool | None = None
    val_temperature: float = 0.0

    def __post_init__(self) -> None:
        require(self.temperature > 0, "sampling.temperature", "> 0", self.temperature)
        require(self.val_temperature >= 0, "sampling.val_temperature", ">= 0", self.val_temperature)


@dataclass(frozen=True)
class RewardConfig:
    """How the frozen reward model's outputs become one scalar reward per response.

    Args:
        mapping: the reward mapping (``moslim_pl.rewards.mapping``): ``gaussian`` (the paper's),
            ``expected_level``, ``log_prob`` or ``linear``.
        mapping_weights: the ``linear`` mapping's weights, one per head (required there).
        sigma_floor: guard of the ``gaussian`` mapping: a floor on each running statistic's sigma (>= 0;
            0: the paper's formula).
        z_clip: guard of the ``gaussian`` mapping: each z-term clamped to ``[-z_clip, z_clip]`` (> 0;
            ``None``: the paper's formula); ``moslim_pl.rewards.mapping.gaussian_mapping``.
        aggregation: how the named dimensions' terms become one reward: ``mean`` (the paper's), ``min``
            (the worst named dimension decides: a hit cannot buy off a miss) or ``softmin[:tau]`` (a smooth
            minimum, temperature ``tau``, default 1; ``docs/concepts.md``).
        missing_eos_penalty: subtracted from the reward of responses cut at ``sampling.max_new_tokens``
            (before Online-DPO ranks a pair); ``None``: off.
        empty_penalty: subtracted from the reward of responses with nothing in them (no non-whitespace
            character): an RM never trained on an empty answer may score it well (``docs/concepts.md``,
            "The empty answer"); ``None``: off.
        batch_size: (prompt, response) pairs per reward-model forward pass; also the chunk size of the
            controllability sweep's generation.
    """

    mapping: str = "gaussian"
    mapping_weights: list[float] | None = None
    sigma_floor: float = 0.0
    z_clip: float | None = None
    aggregation: str = "mean"
    missing_eos_penalty: float | None = None
    empty_penalty: float | None = None
    batch_size: int = 16

    def __post_init__(self) -> None:
        require(self.mapping in MAPPINGS, "reward.mapping", f"one of {', '.join(MAPPINGS)}", self.mapping)
        require(self.sigma_floor >= 0, "reward.sigma_floor", ">= 0", self.sigma_floor)
        require(self.z_clip is None or self.z_clip > 0, "reward.z_clip", "> 0 or None", self.z_clip)
        require(self.batch_size >= 1, "reward.batch_size", ">= 1", self.batch_size)
        try:
            parse_aggregation(self.aggregation)
        except ValueError as err:
            raise MoslimError(f"reward.aggregation: {err}") from None

    def score_options(self) -> dict[str, Any]:
        """The keyword arguments of ``MultiHeadRewardModel.score`` these settings fix."""
        return {
            "mapping": self.mapping,
            "weights": self.mapping_weights,
            "batch_size": self.batch_size,
            "sigma_floor": self.sigma_floor,
            "z_clip": self.z_clip,
            "aggregation": self.aggregation,
        }


@dataclass(frozen=True)
class OptimConfig:
    """The policy's optimizer: AdamW (no decay on biases and norms), linear warm-up then constant.

    Args:
        learning_rate: the peak learning rate (> 0).
        weight_decay: AdamW's decoupled weight decay (>= 0).
        warmup_steps: optimizer steps of the linear warm-up (>= 0); set 0 with ``--lr_scheduler``, which
            brings its own (``moslim_pl.modules.optim.WarmupDecayLR``).
        max_grad_norm: gradient norm clipping (> 0; ``None``: off). The Trainer's ``gradient_clip_val``
            (with its ``gradient_clip_algorithm``), when set, replaces it.
    """

    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0

    def __post_init__(self) -> None:
        require(self.learning_rate > 0, "optim.learning_rate", "> 0", self.learning_rate)
        require(self.weight_decay >= 0, "optim.weight_decay", ">= 0", self.weight_decay)
        require(self.warmup_steps >= 0, "optim.warmup_steps", ">= 0", self.warmup_steps)
        ok = self.max_grad_norm is None or self.max_grad_norm > 0
        require(ok, "optim.max_grad_norm", "> 0 or None", self.max_grad_norm)


@dataclass(frozen=True)
class KLConfig:
    """The KL penalty towards the reference (the initial policy): ``beta`` and how it moves.

    Args:
        coef: ``beta`` (>= 0): RLOO shapes each sequence's reward as ``r - beta * KL_seq``, PPO puts
            ``-beta * KL_t`` on every token; the initial value when adaptive.
        target: with a target, ``beta`` adapts towards this per-sequence KL (Ziegler et al.; > 0);
            ``None`` keeps ``beta`` fixed.
        horizon: the adaptive controller's horizon, counted in samples (> 0).
    """

    coef: float = 0.05
    target: float | None = None
    horizon: float = 10000.0

    def __post_init__(self) -> None:
        require(self.coef >= 0, "kl.coef", ">= 0", self.coef)
        require(self.target is None or self.target > 0, "kl.target", "> 0 or None", self.target)
        require(self.horizon > 0, "kl.horizon", "> 0", self.horizon)

    def controller(self) -> FixedKLController | AdaptiveKLController:
        """A fresh KL controller (``moslim_pl.losses.kl``) starting at ``coef``."""
        return kl_controller(self.coef, self.target, self.horizon)


GROUPS: dict[str, type] = {
    "sampling": SamplingConfig,
    "reward": RewardConfig,
    "optim": OptimConfig,
    "kl": KLConfig,
}
"""Every settings group by its constructor argument's name."""

_NULL_FIELD = re.compile(rf"^--model\.({'|'.join(GROUPS)})\.([A-Za-z_][A-Za-z0-9_]*)(=(null|None))?$")


def null_field_args(args: Sequence[str]) -> list[str]:
    """``args`` with each ``--model.<group>.<field> null`` turned into ``--model.<group> {"<field>": null}``.

    jsonargparse (4.x) rejects ``null`` in the dotted form of a dataclass field under a ``class_path``
    model ("Expected a <class 'float'>"), so ``--model.reward.missing_eos_penalty null`` could not turn a
    penalty off. The group's JSON form sets the same field, merged into the group's other values.
    """
    out: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        match = _NULL_FIELD.match(arg)
        inline = bool(match and match.group(3))
        if match and not inline and rest and rest[0] in ("null", "None"):
            rest.pop(0)
        elif not inline:
            out.append(arg)
            continue
        out += [f"--model.{match.group(1)}", json.dumps({match.group(2): None})]
    return out


T = TypeVar("T")


def settings_group(cls: type[T], value: T | dict[str, Any] | None, name: str) -> T:
    """The group ``name`` as ``cls``: ``value`` itself, ``cls(**value)`` for the plain dict a checkpoint's
    hparams (or a caller) give, the defaults for ``None``."""
    try:
        group = as_dataclass(cls, value)
    except TypeError as err:  # a key the group does not have
        raise MoslimError(f"{name}: {err}") from None
    if group is None:
        return cls()
    if not isinstance(group, cls):
        raise MoslimError(
            f"{name}: expected {cls.__name__} or a dict of its fields, got {type(value).__name__}"
        )
    return group
