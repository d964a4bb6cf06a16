"""A MOSLIM reward model as a TRL reward function (``RLOOTrainer``, ``GRPOTrainer``, ``OnlineDPOTrainer``...).

TRL calls every reward function as ``func(prompts=..., completions=..., **kwargs) -> list[float]``, with
one entry per completion. :func:`reward_function` returns such a callable over a reward-model export:
each prompt's ``<name level>`` prefix sets the targets the reward mapping scores against, exactly as in
``MultiHeadRewardModel.score`` (``docs/user_guide.md``, "Using a MOSLIM reward model with TRL")::

    from trl import RLOOConfig, RLOOTrainer
    from moslim_pl.integrations.trl import reward_function

    trainer = RLOOTrainer(
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        reward_funcs=[reward_function("runs/reward_model_helpsteer_minilm/version_0/export")],
        train_dataset=Dataset.from_dict({"prompt": ["<helpfulness 4> <verbosity 1> Explain tides."]}),
        args=RLOOConfig(output_dir="trl_rloo"),
    )

Prompts and completions may be standard (strings) or conversational (lists of ``{"role", "content"}``
messages). A conversational prompt is read as its last user message, which must carry the prefix; a
conversational completion is the text of its messages joined with newlines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from moslim_pl.errors import MoslimError
from moslim_pl.models.reward_model import MultiHeadRewardModel
from moslim_pl.rewards.mapping import MAPPINGS

Message = dict[str, Any]


def _content_text(content: Any) -> str:
    """A message's ``content``: a string, or a list of parts of which the ``text`` ones are joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    raise MoslimError(
        f"reward_function: a message's content must be a string or a list of parts, got {content!r}"
    )


def prompt_text(prompt: str | Sequence[Message]) -> str:
    """The prompt the reward model reads: a string as it is, a conversation's last user message."""
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise MoslimError(f"reward_function: a conversational prompt needs a user message, got {prompt!r}")
    return _content_text(users[-1].get("content", ""))


def completion_text(completion: str | Sequence[Message]) -> str:
    """The response the reward model reads: a string as it is, else its messages' texts joined."""
    if isinstance(completion, str):
        return completion
    return "\n".join(_content_text(m.get("content", "")) for m in completion if isinstance(m, dict))


class MoslimRewardFunction:
    """TRL's reward-function protocol over a :class:`MultiHeadRewardModel` (see :func:`reward_function`).

    ``__name__`` (``"moslim_reward"`` unless given) names TRL's ``rewards/<name>/mean`` metrics. With
    ``log_components``, the mean per-head reward term of each call is passed to TRL's ``log_metric``
    (``moslim/<head>``) when the trainer offers it.
    """

    def __init__(
        self,
        model: MultiHeadRewardModel,
        mapping: str = "gaussian",
        batch_size: int = 32,
        weights: Sequence[float] | None = None,
        name: str = "moslim_reward",
        log_components: bool = True,
    ) -> None:
        self.model = model
        self.mapping = mapping
        self.batch_size = batch_size
        self.weights = None if weights is None else list(weights)
        self.__name__ = name
        self.log_components = log_components

    def __call__(
        self,
        prompts: Sequence[str | Sequence[Message]],
        completions: Sequence[str | Sequence[Message]],
        **kwargs: Any,
    ) -> list[float]:
        """One reward per completion: ``MultiHeadRewardModel.score(prompts, completions).reward`` ``[N]``."""
        if len(prompts) != len(completions):
            raise MoslimError(
                f"reward_function got {len(prompts)} prompts and {len(completions)} completions; they must match"
            )
        out = self.model.score(
            [prompt_text(p) for p in prompts],
            [completion_text(c) for c in completions],
            mapping=self.mapping,
            weights=self.weights,
            batch_size=self.batch_size,
        )
        log_metric = kwargs.get("log_metric")
        if self.log_components and callable(log_metric) and len(prompts):
            for k, name in enumerate(self.model.names):
                used = out.mask[:, k]
                if bool(used.any()):
                    log_metric(f"moslim/{name}", float(out.components[used, k].mean()))
        return out.reward.tolist()


def reward_function(
    path_or_model: str | Path | MultiHeadRewardModel,
    mapping: str = "gaussian",
    batch_size: int = 32,
    *,
    weights: Sequence[float] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    name: str = "moslim_reward",
) -> Callable[..., list[float]]:
    """A TRL reward function ``(prompts, completions, **kwargs) -> list[float]`` over a MOSLIM reward model.

    Args:
        path_or_model: a reward-model export folder (``RewardModelModule``'s ``export/``) or a loaded
            :class:`MultiHeadRewardModel`.
        mapping: the reward mapping (``gaussian``, ``expected_level``, ``log_prob``, ``linear``).
        batch_size: (prompt, completion) pairs per forward pass of the reward model.
        weights: the ``linear`` mapping's weight per head.
        device: where the reward model runs (default: where it is; an export loads on the CPU).
        dtype: the dtype an export's backbone loads in (default: as saved).
        name: the callable's ``__name__``, which TRL uses in its metric names.

    The model is frozen and put in eval mode. Rewards are float32 values, equal to
    ``MultiHeadRewardModel.score(prompts, completions, mapping=mapping).reward``.
    """
    if mapping not in MAPPINGS:
        raise MoslimError(f"unknown reward mapping {mapping!r}; expected one of {', '.join(MAPPINGS)}")
    if batch_size < 1:
        raise MoslimError(f"reward_function: batch_size must be >= 1, got {batch_size}")
    if isinstance(path_or_model, MultiHeadRewardModel):
        model = path_or_model
    elif isinstance(path_or_model, (str, Path)):
        model = MultiHeadRewardModel.from_pretrained(path_or_model, dtype=dtype)
    else:
        raise MoslimError(
            "reward_function needs a reward model export folder or a MultiHeadRewardModel, "
            f"got {type(path_or_model).__name__}"
        )
    if mapping == "linear" and (weights is None or len(weights) != len(model.names)):
        raise MoslimError(
            f"the linear mapping needs weights with one weight per head {model.names}, got {weights}"
        )
    model = model.requires_grad_(False).eval()
    if device is not None:
        model = model.to(device)
    return MoslimRewardFunction(model, mapping, batch_size, weights, name)
