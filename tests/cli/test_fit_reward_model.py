"""The real CLI on the quickstart config, shrunk to seconds."""

from __future__ import annotations

import json

import pytest
import torch

from moslim_pl.cli import main
from moslim_pl.models.reward_model import MultiHeadRewardModel

SMALL = [
    "--data.init_args.synthetic.num_prompts=30",
    "--data.init_args.synthetic.responses_per_prompt=2",
    "--data.init_args.batch_size=8",
    "--trainer.max_epochs=2",
    "--trainer.enable_progress_bar=false",
]


def _fit(config, tmp_path, *extra):
    main(["fit", "--config", str(config), *SMALL, f"--trainer.logger.init_args.save_dir={tmp_path}", *extra])
    (run,) = (tmp_path / "reward_model_quickstart").iterdir()
    return run


def test_fit_logs_every_head_and_exports(quickstart_config, tmp_path, read_scalars, read_image_tags):
    run = _fit(quickstart_config, tmp_path)
    scalars = read_scalars(run)
    heads = ("verbosity", "formality", "helpfulness")
    for head in heads:
        for metric in ("acc", "acc_within1", "mae"):
            assert len(scalars[f"val/{metric}/{head}"]) == 2, metric
        assert f"val/confusion/{head}" in read_image_tags(run)
    assert scalars["train/loss"]
    rm = MultiHeadRewardModel.from_pretrained(run / "export")
    assert [d.name for d in rm.dimensions] == list(heads)
    # the callback wrote real statistics: counted rows and non-initial values
    assert rm.stats_count.item() > 0
    assert not torch.allclose(rm.stats_std, torch.ones_like(rm.stats_std))
    saved = json.loads((run / "export" / "moslim_rm.json").read_text())
    assert saved["encoding"] == {"max_length": 128, "chat_template": False, "max_prompt_length": None}
    # safe loading works: hyperparameters hold plain values only
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert torch.equal(last["state_dict"]["rm.stats_mean"], rm.stats_mean)


def test_test_subcommand_reports_per_head_accuracy(quickstart_config, tmp_path, read_scalars):
    run = _fit(quickstart_config, tmp_path)
    ckpt = run / "checkpoints" / "last.ckpt"
    out = tmp_path / "test"
    main(
        [
            "test",
            "--config",
            str(quickstart_config),
            *SMALL,
            f"--trainer.logger.init_args.save_dir={out}",
            f"--ckpt_path={ckpt}",
        ]
    )
    scalars = read_scalars(out)
    assert {f"test/acc/{h}" for h in ("verbosity", "formality", "helpfulness")} <= set(scalars)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"prompt": "p", "response": "r", "verbosity": 9}, "row 1, column 'verbosity': label 9 outside 0..3"),
        ({"prompt": "p", "response": "r", "verbosity": "lots"}, "row 1, column 'verbosity'"),
        ({"prompt": "p", "verbosity": 1}, "'response'"),
    ],
)
def test_bad_data_ends_with_one_line(quickstart_config, tmp_path, capsys, row, expected):
    data = tmp_path / "rows.jsonl"
    good = {"prompt": "q", "response": "a", "verbosity": 1}
    data.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    _expect_one_line_error(quickstart_config, tmp_path, capsys, data, "verbosity", expected)


def test_unknown_dimension_ends_with_one_line(quickstart_config, tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    rows = [{"prompt": f"q{i}", "response": "a", "verbosity": 1} for i in range(4)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    expected = "no dimension column found (expected at least one of 'verbosty'); columns are prompt, response"
    _expect_one_line_error(quickstart_config, tmp_path, capsys, data, "verbosty", expected)


def _expect_one_line_error(quickstart_config, tmp_path, capsys, data, dimension, expected):
    args = [
        "fit",
        "--config",
        str(quickstart_config),
        *SMALL,
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--data.init_args.source.path=json",
        f"--data.init_args.source.data_files={data}",
        f'--data.init_args.dimensions=[{{"name": "{dimension}", "low": 0, "high": 3}}]',
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("moslim-pl: error: ") and expected in err[-1]
    assert "Traceback" not in "\n".join(err)


@pytest.mark.slow
def test_full_quickstart_reaches_090_on_every_head(quickstart_config, tmp_path, read_scalars):
    run = _fit_full(quickstart_config, tmp_path)
    scalars = read_scalars(run)
    for head in ("verbosity", "formality", "helpfulness"):
        assert scalars[f"val/acc/{head}"][-1] >= 0.9, head


def _fit_full(config, tmp_path):
    main(["fit", "--config", str(config), f"--trainer.logger.init_args.save_dir={tmp_path}"])
    (run,) = (tmp_path / "reward_model_quickstart").iterdir()
    return run


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("--data.init_args.val_fraction=1.5", "val_fraction must be in (0, 1)"),
        ('--data.init_args.source={"path": "synthetic", "schema": "no_such_schema"}', "no_such_schema"),
    ],
)
def test_errors_while_the_cli_builds_the_datamodule_end_with_one_line(
    quickstart_config, tmp_path, capsys, override, expected
):
    # jsonargparse wraps what the datamodule's constructor raises; the CLI finds the user error inside
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                str(quickstart_config),
                f"--trainer.logger.init_args.save_dir={tmp_path}",
                override,
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("moslim-pl: error: ") and expected in err[-1]
    assert "Traceback" not in "\n".join(err)
