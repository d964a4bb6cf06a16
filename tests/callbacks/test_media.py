"""Figures, images and text through every logger that takes them; one note for those that cannot
(``moslim_pl.callbacks.media``); the progress helper and the epoch display of ``max_steps`` runs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from moslim_pl.callbacks import media
from moslim_pl.callbacks.progress import fix_epoch_display, progress
from moslim_pl.evaluation import controllability
from moslim_pl.evaluation.plots import plt
from moslim_pl.schema import Dimension

IMAGE = np.zeros((4, 5, 3), dtype=np.uint8)


class FakeWandb(WandbLogger):
    """WandbLogger's media methods, recorded (no wandb installed)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def log_image(self, **kwargs: Any) -> None:
        self.calls.append(("log_image", kwargs))

    def log_table(self, **kwargs: Any) -> None:
        self.calls.append(("log_table", kwargs))


class FakeMlflowClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        self.calls.append(("log_figure", run_id, artifact_file))

    def log_image(self, run_id: str, image: Any, artifact_file: str) -> None:
        self.calls.append(("log_image", run_id, artifact_file))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.calls.append(("log_text", run_id, artifact_file))


class FakeMlflow(MLFlowLogger):
    """MLFlowLogger over a recording client (no mlflow installed)."""

    def __init__(self) -> None:
        self.client = FakeMlflowClient()

    @property
    def experiment(self) -> FakeMlflowClient:
        return self.client

    @property
    def run_id(self) -> str:
        return "run-1"


def _log_everything(loggers: list, step: int) -> None:
    figure, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    media.log_figure(loggers, "sweep/controllability", figure, step)
    plt.close(figure)
    media.log_image(loggers, "val/confusion/verbosity", IMAGE, step)
    media.log_table(loggers, "rollout/samples", ["prompt", "response", "reward"], [["p", "r", "0.5"]], step)


def test_wandb_and_mlflow_get_figures_images_and_tables() -> None:
    wandb, mlflow = FakeWandb(), FakeMlflow()
    _log_everything([wandb, mlflow], 7)
    assert [name for name, _ in wandb.calls] == ["log_image", "log_image", "log_table"]
    figure_call, image_call, table_call = (kwargs for _, kwargs in wandb.calls)
    assert figure_call["key"] == "sweep/controllability" and figure_call["step"] == 7
    assert figure_call["images"][0].ndim == 3 and figure_call["images"][0].dtype == np.uint8
    assert image_call["images"][0] is IMAGE
    assert table_call == {
        "key": "rollout/samples",
        "columns": ["prompt", "response", "reward"],
        "data": [["p", "r", "0.5"]],
        "step": 7,
    }
    assert mlflow.client.calls == [
        ("log_figure", "run-1", "sweep/controllability/step_7.png"),
        ("log_image", "run-1", "val/confusion/verbosity/step_7.png"),
        ("log_text", "run-1", "rollout/samples/step_7.md"),
    ]


def test_tensorboard_gets_them_and_csv_gets_one_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tensorboard, csv = TensorBoardLogger(tmp_path / "tb"), CSVLogger(tmp_path / "csv")
    with caplog.at_level(logging.WARNING, logger="moslim_pl.callbacks.media"):
        for step in range(3):
            _log_everything([tensorboard, csv], step)
    notes = [r.getMessage() for r in caplog.records if r.name == "moslim_pl.callbacks.media"]
    assert len(notes) == 1 and notes[0].startswith("CSVLogger takes scalars only")
    tensorboard.experiment.flush()
    (events,) = (tmp_path / "tb").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0, "tensors": 0})
    accumulator.Reload()
    assert set(accumulator.Tags()["images"]) == {"sweep/controllability", "val/confusion/verbosity"}
    assert "rollout/samples/text_summary" in accumulator.Tags()["tensors"]


def test_progress_is_off_with_the_trainers_bar_and_counts_the_sweep(capsys: pytest.CaptureFixture) -> None:
    off = Trainer(accelerator="cpu", enable_progress_bar=False, logger=False)
    with progress(off, 3, "sweep") as advance:
        advance(3)
    with progress(None, 3, "sweep") as advance:
        advance(3)
    assert "sweep" not in capsys.readouterr().err
    on = Trainer(accelerator="cpu", callbacks=[TQDMProgressBar()], logger=False)
    with progress(on, 4, "controllability sweep") as advance:
        advance(2)
        advance(2)
    assert "controllability sweep" in capsys.readouterr().err


def test_sweep_advances_once_per_level() -> None:
    import torch

    dimensions = [Dimension("verbosity", 0, 2), Dimension("formality", 0, 1)]
    counted: list[int] = []
    records = controllability.sweep_records(
        dimensions,
        ["a", "b"],
        lambda prompts: ["x"] * len(prompts),
        lambda prompts, responses: torch.zeros(len(prompts), 2),
        advance=counted.append,
    )
    assert counted == [2] * 5 and records.shape == (10, 4)


def test_max_steps_runs_show_the_epoch_without_minus_two() -> None:
    bar = RichProgressBar(leave=True)
    # fit() sets max_epochs to -1 when only max_steps bounds the run
    trainer = Trainer(accelerator="cpu", max_steps=40, max_epochs=-1, callbacks=[bar], logger=False)
    bar._trainer = trainer  # as the bar's setup() does
    assert bar._get_train_description(0).strip() == "Epoch 0/-2"  # Lightning's own display
    fix_epoch_display(trainer)
    assert trainer.progress_bar_callback is bar and bar._leave  # the same bar, its settings kept
    assert bar._get_train_description(3).strip() == "Epoch 3 (max_steps 40)"
    epochs = Trainer(accelerator="cpu", max_epochs=5, callbacks=[RichProgressBar()], logger=False)
    epochs.progress_bar_callback._trainer = epochs
    fix_epoch_display(epochs)
    assert epochs.progress_bar_callback._get_train_description(1).strip() == "Epoch 1/4"


def test_progress_is_a_task_of_a_live_rich_display() -> None:
    bar = RichProgressBar()
    trainer = Trainer(accelerator="cpu", callbacks=[bar], logger=False)
    bar._trainer = trainer
    bar._init_progress(trainer)
    try:
        with progress(trainer, 3, "reward statistics") as advance:
            advance(2)
            (task,) = [t for t in bar.progress.tasks if t.description == "reward statistics"]
            assert (task.completed, task.total) == (2, 3)
        assert not [t for t in bar.progress.tasks if t.description == "reward statistics"]
    finally:
        bar._stop_progress()
