"""What the RL stages do outside training: validation (reward and hit rates), the controllability sweep
(the test loop) and generation for users (the predict loop).

A mixin of :class:`moslim_pl.modules.policy.PolicyModule`, which provides ``rm``, ``sampling``, ``reward``,
``_prompts``, ``_rollout`` and ``_score``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from moslim_pl.callbacks.controllability import report as report_controllability
from moslim_pl.callbacks.progress import progress
from moslim_pl.data.messages import prompt_json
from moslim_pl.evaluation import controllability


class PolicyEvaluation:
    """Validation, test (controllability sweep) and predict hooks of the RL stages."""

    def on_validation_epoch_start(self) -> None:
        # reward sum, row count, then hits and requested rows per head
        self._val_totals = torch.zeros(2 + 2 * len(self.rm.names), device=self.device)

    def validation_step(self, batch: Sequence[str], batch_idx: int) -> None:
        prompts = self._prompts(batch)
        rollout = self._rollout(prompts, 1, self.sampling.val_temperature)
        scores = self._score(prompts, rollout)
        requested = scores.requested >= 0
        totals = torch.cat(
            [
                torch.stack([scores.reward.sum(), scores.reward.new_tensor(float(len(prompts)))]),
                scores.hit.sum(0).float(),
                requested.sum(0).float(),
            ]
        )
        self._val_totals += totals

    def on_validation_epoch_end(self) -> None:
        totals = self.trainer.strategy.reduce(self._val_totals, reduce_op="sum")
        num_heads = len(self.rm.names)
        if totals[1] > 0:
            self.log("val/reward", totals[0] / totals[1])
        hits, requested = totals[2 : 2 + num_heads], totals[2 + num_heads :]
        for k, name in enumerate(self.rm.names):
            if requested[k] > 0:
                self.log(f"val/hit_rate/{name}", hits[k] / requested[k])

    # ------------------------------------------------------------------ controllability sweep (test loop)
    def _answer(self, prompts: list[str]) -> list[str]:
        """One response per prompt at ``sampling.val_temperature`` (0: greedy), in ``reward.batch_size``
        chunks."""
        size = self.reward.batch_size
        responses: list[str] = []
        for start in range(0, len(prompts), size):
            responses += self._rollout(
                prompts[start : start + size], 1, self.sampling.val_temperature
            ).responses
        return responses

    def _rm_levels(self, prompts: list[str], responses: list[str]) -> Tensor:
        probs = self.rm.score(prompts, responses, batch_size=self.reward.batch_size).probs
        return controllability.rm_expected_levels(probs, self.rm.dimensions)

    def sweep_records(self, prompts: Sequence[str], oracle: controllability.Oracle | None = None) -> Tensor:
        """The controllability sweep's ``[M, 4]`` records for prompts without prefix (see ``evaluation``)."""
        total = len(prompts) * sum(d.max_level - d.min_level + 1 for d in self.rm.dimensions)
        with progress(self._trainer, total, "controllability sweep") as advance:
            return controllability.sweep_records(
                self.rm.dimensions, list(prompts), self._answer, self._rm_levels, oracle, advance
            )

    def _datamodule_oracle(self) -> controllability.Oracle | None:
        datamodule = getattr(self.trainer, "datamodule", None)
        return getattr(datamodule, "oracle", None)

    def on_test_epoch_start(self) -> None:
        self._test_records: list[Tensor] = []

    def test_step(self, batch: Sequence[str], batch_idx: int) -> None:
        """A batch of held-out prompts WITHOUT prefix, swept over every dimension and level."""
        records = self.sweep_records(self._prompts(batch), self._datamodule_oracle())
        self._test_records.append(records.to(self.device))

    def on_test_epoch_end(self) -> None:
        local = torch.cat(self._test_records) if self._test_records else torch.zeros(0, 4, device=self.device)
        report_controllability(self, local, "test", "controllability")

    # ------------------------------------------------------------------ generation for users (predict)
    def predict_step(self, batch: Sequence[Any], batch_idx: int) -> list[dict[str, Any]]:
        """Rows ``{"index", "prompt"}`` (or plain prompt strings) -> ``{"index", "prompt", "response",
        "reward", "levels"}``: the response at ``sampling.val_temperature`` and what the RM reads in it."""
        rows = [row if isinstance(row, dict) else {"index": None, "prompt": row} for row in batch]
        prompts = self._prompts([row["prompt"] for row in rows])
        rollout = self._rollout(prompts, 1, self.sampling.val_temperature)
        scores = self._score(prompts, rollout)
        levels = controllability.rm_expected_levels(scores.probs, self.rm.dimensions)
        return [
            {
                "index": row["index"],
                "prompt": prompt_json(row["prompt"]),  # a conversation: its list of messages
                "response": response,
                "reward": float(scores.reward[i]),
                "levels": {name: round(float(levels[i, k]), 3) for k, name in enumerate(self.rm.names)},
            }
            for i, (row, response) in enumerate(zip(rows, rollout.responses, strict=True))
        ]
