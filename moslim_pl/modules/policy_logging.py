"""What the RL stages log about a training step: the rollout's reward, KL, entropy, lengths and hit rates,
the per-head rewards, and text samples; with Lightning's per-step logging skipped on steps nothing reads.

A mixin of :class:`moslim_pl.modules.policy.PolicyModule`, which provides ``rm`` and
``hparams.log_samples_every_n_steps``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from moslim_pl.callbacks import media
from moslim_pl.data.messages import prompt_text
from moslim_pl.rollout import RewardOutput, Rollout

_SAMPLE_ROWS = 8  # rows of the text table logged (callbacks/media.py)
_CELL_CHARS = 300  # long prompts (documents to summarize...) keep their start and their end


def _markdown_cell(text: str) -> str:
    if len(text) > 2 * _CELL_CHARS:
        text = f"{text[:_CELL_CHARS]} [...] {text[-_CELL_CHARS:]}"
    return text.replace("|", "\\|").replace("\n", " ")


class PolicyLogging:
    """Logging of the RL stages' training steps."""

    @property
    def _step_metrics_read(self) -> bool:
        """Whether anything reads this training step's metrics: the logger (Lightning writes every
        ``log_every_n_steps`` steps), or a progress bar (every step)."""
        trainer = self._trainer
        if trainer is None or not self.training:
            return True
        return trainer.progress_bar_callback is not None or trainer._logger_connector.should_update_logs

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """``LightningModule.log``, except that a training step's per-step metrics are dropped on steps
        whose metrics nothing reads (no progress bar, and not a logging step of the logger): each call
        costs about a millisecond, a few percent of a small model's RL step. ``trainer.callback_metrics``
        then hold the values of the last logging step."""
        if kwargs.get("on_epoch") or self._step_metrics_read:
            super().log(name, value, *args, **kwargs)

    def _log_train(self, metrics: dict[str, Any], batch_size: int, prog_bar: tuple[str, ...] = ()) -> None:
        """``train/<name>`` for each metric, in order; the names in ``prog_bar`` also on the progress bar."""
        for name, value in metrics.items():
            self.log(f"train/{name}", value, prog_bar=name in prog_bar, batch_size=batch_size)

    def _log_step_end(
        self,
        prompts: list[Any],
        rollout: Rollout,
        scores: RewardOutput,
        kl: Tensor,
        entropy: Tensor,
        rollout_number: int,
    ) -> None:
        """The end of every RL training step: the rollout's metrics (:meth:`_log_rollout`), the KL
        controller's update with the per-sequence ``kl [N]`` (RLOO, PPO), and every
        ``log_samples_every_n_steps`` rollouts a table of text samples."""
        self._log_rollout(scores, rollout, kl, entropy)
        if self.kl_controller is not None:
            self._update_kl_controller(kl, len(rollout.responses))
        every = self.hparams.log_samples_every_n_steps
        if every and rollout_number % every == 0:
            self._log_samples(prompts, rollout, scores.reward)

    def _log_rollout(self, scores: RewardOutput, rollout: Rollout, kl: Tensor, entropy: Tensor) -> None:
        if not self._step_metrics_read:
            return
        size = len(rollout.responses)
        self.log("rollout/reward", scores.reward.mean(), prog_bar=True, batch_size=size)
        self.log("rollout/kl", kl.mean(), prog_bar=True, batch_size=size)
        self.log("rollout/entropy", entropy, batch_size=size)
        self.log("rollout/response_length", rollout.response_mask.sum(-1).float().mean(), batch_size=size)
        self.log("rollout/finished", rollout.finished.float().mean(), batch_size=size)
        requested = scores.requested >= 0
        per_head = {}
        for k, name in enumerate(self.rm.names):
            if scores.mask[:, k].any():
                per_head[f"reward/{name}"] = float(scores.components[scores.mask[:, k], k].mean())
            if requested[:, k].any():
                per_head[f"rollout/hit_rate/{name}"] = float(scores.hit[requested[:, k], k].float().mean())
        self._log_present(per_head)

    def _log_present(self, metrics: dict[str, float]) -> None:
        """Write metrics that exist on some steps only (a head no prompt of the batch named has no reward)
        straight to the loggers, on rank 0 at Lightning's logging steps. Through ``self.log`` Lightning
        would write a key's last value again on every later step of the epoch, inventing a measurement."""
        trainer = self._trainer
        if trainer is None or not self.training:
            for name, value in metrics.items():
                self.log(name, value)
            return
        if not trainer._logger_connector.should_update_logs or not trainer.is_global_zero or not metrics:
            return
        step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the step Lightning logs scalars at
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def _log_samples(self, prompts: list[Any], rollout: Rollout, reward: Tensor) -> None:
        if self.global_rank != 0:
            return
        rows = [
            [
                _markdown_cell(prompt_text(prompts[int(rollout.prompt_index[i])])),
                _markdown_cell(rollout.responses[i]),
                f"{float(reward[i]):.3f}",
            ]
            for i in range(min(len(rollout.responses), _SAMPLE_ROWS))
        ]
        media.log_table(
            self.loggers, "rollout/samples", ["prompt", "response", "reward"], rows, self.global_step
        )

    def _update_kl_controller(self, kl: Tensor, size: int) -> None:
        """Feed the rollout's per-sequence KL ``[N]`` to ``self.kl_controller`` (RLOO, PPO).

        Every rank must hold the same beta: the controller sees the KL averaged over all ranks.
        """
        mean_kl = self.trainer.strategy.reduce(kl.mean().detach(), reduce_op="mean")
        self.kl_controller.update(float(mean_kl), n_steps=size * self.trainer.world_size)
