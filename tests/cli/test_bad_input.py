"""Bad input ends with one ``moslim-pl: error: ...`` line, exit code 2 and no traceback (docs/bad_input.md).

Every row of the table in ``docs/bad_input.md`` is a case here: the real CLI (``moslim_pl.cli.main``) runs
on tiny offline models and fails before training starts. A few cases also run as a subprocess, where an
escaped exception would print a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from moslim_pl.cli import main
from moslim_pl.data.synthetic import DIMENSIONS
from moslim_pl.models.backbone import load_backbone, load_tokenizer
from moslim_pl.models.reward_model import MultiHeadRewardModel

ROOT = Path(__file__).resolve().parents[2]
RM_CONFIG = str(ROOT / "configs" / "reward_model" / "quickstart.yaml")
RLOO_CONFIG = str(ROOT / "configs" / "policy" / "rloo_quickstart.yaml")
TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
GOOD_ROWS = [{"prompt": f"q{i}", "response": "a", "verbosity": 1} for i in range(4)]


@dataclass
class Workspace:
    """Files the cases point at: a tiny RM export, a checkpoint, a tokenizer without pad token, ..."""

    dir: Path
    rm_export: Path
    checkpoint: Path
    no_pad_tokenizer: Path

    def write(self, name: str, text: str) -> str:
        path = self.dir / name
        path.write_text(text)
        return str(path)

    def rows(self, name: str, *rows: dict) -> str:
        return self.write(name, "".join(json.dumps(row) + "\n" for row in rows))

    def trainer(self) -> list[str]:
        return [
            f"--trainer.logger.init_args.save_dir={self.dir / 'runs'}",
            "--trainer.enable_progress_bar=false",
            "--trainer.max_steps=1",
            "--trainer.num_sanity_val_steps=0",
        ]

    def rm_fit(self, *extra: str, subcommand: str = "fit") -> list[str]:
        """The reward-model quickstart, shrunk."""
        return [
            subcommand,
            "--config",
            RM_CONFIG,
            *self.trainer(),
            "--data.init_args.synthetic.num_prompts=10",
            "--data.init_args.synthetic.responses_per_prompt=2",
            f"--model.init_args.tiny_config={json.dumps(TINY)}",
            *extra,
        ]

    def rm_rows(self, name: str, *rows: dict, dimension: str = "verbosity", extra: tuple = ()) -> list[str]:
        """The RM fit on a local jsonl file of ``rows`` with one declared dimension."""
        return self.rm_fit(
            "--data.init_args.source.path=json",
            f"--data.init_args.source.data_files={self.rows(name, *rows)}",
            f'--data.init_args.dimensions=[{{"name": "{dimension}", "low": 0, "high": 3}}]',
            *extra,
        )

    def predict(self, *extra: str) -> list[str]:
        """``moslim-pl predict`` with the RLOO quickstart config, a tiny policy and the tiny RM export."""
        return [
            "predict",
            "--config",
            RLOO_CONFIG,
            *self.trainer(),
            "--model.init_args.policy=moslim/tiny-llama",
            f"--model.init_args.reward_model={self.rm_export}",
            f"--model.init_args.tiny_config={json.dumps(TINY)}",
            *extra,
        ]

    def predict_file(self, name: str, text: str, *extra: str) -> list[str]:
        return self.predict(f"--data.init_args.predict_file={self.write(name, text)}", *extra)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    folder = tmp_path_factory.mktemp("bad_input")
    tokenizer = load_tokenizer("moslim/tiny-llama")
    backbone = load_backbone("moslim/tiny-llama", tokenizer=tokenizer, tiny_config=TINY)
    rm_export = folder / "rm"
    MultiHeadRewardModel(backbone, DIMENSIONS, tokenizer=tokenizer).save_pretrained(rm_export)
    # a tokenizer with neither a pad nor an eos token
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    no_pad = folder / "no_pad_tokenizer"
    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "word": 1}, unk_token="[UNK]"))
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(no_pad)
    (folder / "empty_folder").mkdir()
    ws = Workspace(
        folder, rm_export, folder / "runs" / "ckpt" / "version_0" / "checkpoints" / "last.ckpt", no_pad
    )
    # a real checkpoint of the synthetic world's three heads (one step, ~2 s)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["moslim-pl"])
        main(
            ws.rm_fit(
                "--trainer.limit_val_batches=1",
                "--trainer.logger.init_args.name=ckpt",
                "--trainer.logger.init_args.version=0",
            )
        )
    assert ws.checkpoint.is_file()
    return ws


KNOWN = "verbosity, formality, helpfulness"
HEADS = "verbosity 0..3, formality 0..2, helpfulness 0..3"
DIMS_VERBOSITY5 = (
    '--data.init_args.dimensions=[{"name": "verbosity", "low": 0, "high": 5}, '
    '{"name": "formality", "low": 0, "high": 2}, {"name": "helpfulness", "low": 0, "high": 3}]'
)

# id -> (arguments given the workspace, the error line after "moslim-pl: error: ").
# "{w}" stands for the workspace folder; a message ending in "..." is checked by its start.
CASES = {
    # ---- prefixes (a predict_file line; the same PrefixError reasons come from parse_prefix anywhere)
    "prefix_bad_syntax": (
        lambda ws: ws.predict_file("p1.txt", "<verbosity three> tell me about rivers .\n"),
        "predict_file '{w}/p1.txt' line 1: bad prefix tag '<verbosity three>' at position 0: "
        "expected '<name level>' with one space and an integer level",
    ),
    "prefix_unknown_dimension": (
        lambda ws: ws.predict_file("p2.txt", "<verbosty 2> tell me about rivers .\n"),
        f"predict_file '{{w}}/p2.txt' line 1: bad prefix tag '<verbosty 2>' at position 0: "
        f"unknown dimension 'verbosty'; known: {KNOWN}",
    ),
    "prefix_level_out_of_range": (
        lambda ws: ws.predict_file("p3.txt", "rivers .\n<formality 3> tell me about rivers .\n"),
        "predict_file '{w}/p3.txt' line 2: bad prefix tag '<formality 3>' at position 0: level 3 outside 0..2",
    ),
    "prefix_duplicate_dimension": (
        lambda ws: ws.predict_file("p4.txt", "<verbosity 1> <verbosity 2> tell me .\n"),
        "predict_file '{w}/p4.txt' line 1: bad prefix tag '<verbosity 2>' at position 14: "
        "dimension 'verbosity' requested twice",
    ),
    "prefix_missing_space": (
        lambda ws: ws.predict_file("p5.txt", "<verbosity 1><formality 2> tell me .\n"),
        "predict_file '{w}/p5.txt' line 1: bad prefix tag '<verbosity 1>' at position 0: "
        "a tag must be followed by one space",
    ),
    # ---- predict_file
    "predict_file_missing": (
        lambda ws: ws.predict(f"--data.init_args.predict_file={ws.dir / 'nope.txt'}"),
        "predict_file '{w}/nope.txt': no such file",
    ),
    "predict_file_line_not_json": (
        lambda ws: ws.predict_file("bad.jsonl", '{"prompt": "rivers ."}\n{oops\n'),
        "predict_file '{w}/bad.jsonl' line 2: not JSON (Expecting property name enclosed in double quotes)",
    ),
    "predict_file_line_without_prompt": (
        lambda ws: ws.predict_file("noprompt.jsonl", '{"text": "rivers ."}\n'),
        "predict_file '{w}/noprompt.jsonl' line 1, column 'prompt': missing or empty prompt",
    ),
    "predict_file_empty": (
        lambda ws: ws.predict_file("blank.txt", "\n  \n"),
        "predict_file '{w}/blank.txt': no prompts",
    ),
    "predict_file_unset": (
        lambda ws: ws.predict(),
        "moslim-pl predict needs data.predict_file: a .txt or .jsonl file of prompts",
    ),
    "predict_file_conversation_ends_with_assistant": (
        lambda ws: ws.predict_file(
            "c1.jsonl",
            '{"prompt": [{"role": "user", "content": "rivers ?"}, {"role": "assistant", "content": "a"}]}\n',
        ),
        "predict_file '{w}/c1.jsonl' line 1, column 'prompt': the conversation must end with a user turn, "
        "not assistant",
    ),
    "predict_file_messages_without_user_turn": (
        lambda ws: ws.predict_file(
            "c2.jsonl", '{"messages": [{"role": "system", "content": "be brief ."}]}\n'
        ),
        "predict_file '{w}/c2.jsonl' line 1, column 'messages': the conversation has no user turn",
    ),
    "predict_file_conversation_bad_prefix": (
        lambda ws: ws.predict_file(
            "c3.jsonl", '{"prompt": [{"role": "user", "content": "<formality 3> rivers ?"}]}\n'
        ),
        "predict_file '{w}/c3.jsonl' line 1, last user turn: bad prefix tag '<formality 3>' at position 0: "
        "level 3 outside 0..2",
    ),
    # ---- rows and columns
    "missing_prompt_column": (
        lambda ws: ws.rm_rows("r1.jsonl", {"question": "q", "response": "a", "verbosity": 1}),
        "json:{w}/r1.jsonl: missing column 'prompt'; columns are question, response, verbosity",
    ),
    "missing_response_column": (
        lambda ws: ws.rm_rows("r2.jsonl", {"prompt": "q", "verbosity": 1}),
        "json:{w}/r2.jsonl: missing column 'response' (pointwise rows) or 'chosen' and 'rejected' "
        "(pairwise rows); columns are prompt, verbosity",
    ),
    "empty_prompt": (
        lambda ws: ws.rm_rows("r3.jsonl", *GOOD_ROWS, {"prompt": " ", "response": "a", "verbosity": 1}),
        "json:{w}/r3.jsonl row 4, column 'prompt': empty text",
    ),
    "empty_response": (
        lambda ws: ws.rm_rows("r4.jsonl", *GOOD_ROWS, {"prompt": "q", "response": "", "verbosity": 1}),
        "json:{w}/r4.jsonl row 4, column 'response': empty text",
    ),
    "response_not_text": (
        lambda ws: ws.rm_rows("r5.jsonl", *GOOD_ROWS, {"prompt": "q", "response": 5, "verbosity": 1}),
        "json:{w}/r5.jsonl row 4, column 'response': not text (int)",
    ),
    "label_out_of_range": (
        lambda ws: ws.rm_rows("r6.jsonl", *GOOD_ROWS, {"prompt": "q", "response": "a", "verbosity": 9}),
        "json:{w}/r6.jsonl row 4, column 'verbosity': label 9 outside 0..3",
    ),
    "label_not_an_integer": (
        lambda ws: ws.rm_rows("r7.jsonl", *GOOD_ROWS, {"prompt": "q", "response": "a", "verbosity": "lots"}),
        "json:{w}/r7.jsonl row 4, column 'verbosity': label 'lots' is not an integer",
    ),
    "unknown_dimension_no_column": (
        lambda ws: ws.rm_rows("r8.jsonl", *GOOD_ROWS, dimension="verbosty"),
        "json:{w}/r8.jsonl: no dimension column found (expected at least one of 'verbosty'); "
        "columns are prompt, response, verbosity",
    ),
    "dimension_without_labels": (
        lambda ws: ws.rm_rows(
            "r9.jsonl", *({"prompt": f"q{i}", "response": "a", "verbosity": None} for i in range(4))
        ),
        "json:{w}/r9.jsonl: dimension 'verbosity' has no label and no pair in the training rows "
        "(column 'verbosity' missing or empty, and no pair judged on it)",
    ),
    "pair_missing_side": (
        lambda ws: ws.rm_rows(
            "r11.jsonl", {"prompt": "q", "chosen": "a"}, {"prompt": "q", "chosen": "a", "rejected": None}
        ),
        "json:{w}/r11.jsonl row 0, column 'rejected': missing",
    ),
    "pair_identical_sides": (
        lambda ws: ws.rm_rows(
            "r12.jsonl",
            {"prompt": "q", "chosen": "a", "rejected": "b"},
            {"prompt": "q", "chosen": "same", "rejected": "same"},
        ),
        "json:{w}/r12.jsonl row 1: 'chosen' and 'rejected' are identical",
    ),
    "unknown_pair_dimension": (
        lambda ws: ws.rm_rows(
            "r10.jsonl",
            {"prompt": "q", "chosen": "a", "rejected": "b", "judged_on": "verbosty"},
            extra=("--data.init_args.pair_dimension_column=judged_on",),
        ),
        "json:{w}/r10.jsonl row 0, column 'judged_on': unknown dimension 'verbosty' (known: verbosity)",
    ),
    "empty_dataset": (
        lambda ws: ws.rm_rows("empty.jsonl"),
        "json:{w}/empty.jsonl: data file '{w}/empty.jsonl' is empty (no rows)",
    ),
    "missing_data_file": (
        lambda ws: ws.rm_fit(
            "--data.init_args.source.path=json",
            f"--data.init_args.source.data_files={ws.dir / 'nope.jsonl'}",
            '--data.init_args.dimensions=[{"name": "verbosity", "low": 0, "high": 3}]',
        ),
        "cannot load json:{w}/nope.jsonl: FileNotFoundError: Unable to find '{w}/nope.jsonl'",
    ),
    "unknown_schema": (
        lambda ws: ws.rm_fit('--data.init_args.source={"path": "synthetic", "schema": "helpstear"}'),
        "synthetic: unknown schema 'helpstear' (known: helpsteer, helpsteer2, hh_rlhf, pku_saferlhf, "
        "ultrafeedback)",
    ),
    "unknown_schema_option": (
        lambda ws: ws.rm_fit(
            '--data.init_args.source={"path": "json", "data_files": "'
            + ws.rows("hh.jsonl", {"chosen": "Human: hi", "rejected": "Human: ho"})
            + '", "schema": "hh_rlhf", "schema_options": {"dimenson": "verbosity"}}',
            '--data.init_args.dimensions=[{"name": "verbosity", "low": 0, "high": 3}]',
        ),
        "json:{w}/hh.jsonl: schema 'hh_rlhf' has no option dimenson (options: dimension)",
    ),
    # ---- config values
    "dimension_high_not_above_low": (
        lambda ws: ws.rm_fit('--data.init_args.dimensions=[{"name": "verbosity", "low": 3, "high": 1}]'),
        "dimension 'verbosity': high (1) must exceed low (3)",
    ),
    "dimension_declared_twice": (
        lambda ws: ws.rm_fit('--data.init_args.dimensions=[{"name": "verbosity"}, {"name": "verbosity"}]'),
        "duplicate dimension name(s): verbosity",
    ),
    "dimension_bad_name": (
        lambda ws: ws.rm_fit('--data.init_args.dimensions=[{"name": "verbosity level"}]'),
        "dimension name 'verbosity level' must be non-empty letters, digits, '_' or '-' (ASCII)",
    ),
    "batch_size_zero": (
        lambda ws: ws.rm_fit("--data.init_args.batch_size=0"),
        "batch_size must be at least 1, got 0",
    ),
    "unknown_pooling": (
        lambda ws: ws.rm_fit("--model.init_args.pooling=max"),
        "unknown pooling 'max'; expected one of auto, last, cls, mean, mean_sqrt",
    ),
    # ---- models
    "backbone_missing_folder": (
        lambda ws: ws.rm_fit(f"--model.init_args.backbone={ws.dir / 'no' / 'model'}"),
        "cannot load tokenizer '{w}/no/model': no such folder",
    ),
    "backbone_folder_not_a_model": (
        lambda ws: ws.rm_fit(f"--model.init_args.backbone={ws.dir / 'empty_folder'}"),
        "cannot load tokenizer '{w}/empty_folder': ...",
    ),
    "tokenizer_without_pad_token": (
        lambda ws: ws.rm_fit(f"--model.init_args.backbone={ws.no_pad_tokenizer}"),
        "tokenizer '{w}/no_pad_tokenizer' has neither a pad token nor an eos token to pad with",
    ),
    "reward_model_missing_folder": (
        lambda ws: ws.predict_file(
            "ok1.txt", "rivers .", f"--model.init_args.reward_model={ws.dir / 'no_rm'}"
        ),
        "cannot load reward model '{w}/no_rm': no such folder",
    ),
    "reward_model_not_an_export": (
        lambda ws: ws.predict_file(
            "ok2.txt", "rivers .", f"--model.init_args.reward_model={ws.dir / 'empty_folder'}"
        ),
        "'{w}/empty_folder' is not a reward model export: cannot read moslim_rm.json ([Errno 2] ...",
    ),
    "reward_model_unset": (
        lambda ws: ws.predict_file("ok3.txt", "rivers .", "--model.init_args.reward_model=null"),
        "RLOOModule needs reward_model: the folder of a reward model export",
    ),
    "policy_is_an_encoder": (
        lambda ws: ws.predict_file("ok4.txt", "rivers .", "--model.init_args.policy=moslim/tiny-bert"),
        "moslim/tiny-bert is an encoder, not a decoder: a causal LM needs moslim/tiny-llama",
    ),
    "policy_setting_out_of_range": (
        lambda ws: ws.predict_file("ok6.txt", "rivers .", "--model.init_args.sampling.temperature=0"),
        "sampling.temperature must be > 0, got 0.0",
    ),
    "rm_heads_differ_from_data": (
        lambda ws: ws.rm_fit('--model.init_args.dimensions=[{"name": "verbosity", "low": 0, "high": 3}]'),
        f"the reward model's heads (verbosity 0..3) do not match the data's dimensions ({HEADS}): leave "
        "model.dimensions unset (a ckpt_path sets them to the checkpoint's)",
    ),
    "policy_data_dimensions_differ_from_rm": (
        lambda ws: ws.predict_file("ok5.txt", "rivers .", DIMS_VERBOSITY5),
        "data dimension 'verbosity' (levels 0..5) does not match the reward model (levels 0..3; its "
        f"heads: {HEADS})",
    ),
    # ---- checkpoints
    "ckpt_path_missing": (
        lambda ws: ws.rm_fit(f"--ckpt_path={ws.dir / 'nope.ckpt'}", subcommand="test"),
        "ckpt_path '{w}/nope.ckpt': no such file",
    ),
    "ckpt_path_not_a_checkpoint": (
        lambda ws: ws.rm_fit(f"--ckpt_path={ws.write('notes.ckpt', 'not a checkpoint')}", subcommand="test"),
        "ckpt_path '{w}/notes.ckpt' is not a checkpoint (not a torch.save archive)",
    ),
    "ckpt_from_another_schema": (
        lambda ws: ws.rm_fit(
            f"--ckpt_path={ws.checkpoint}",
            '--data.init_args.dimensions=[{"name": "verbosity", "low": 0, "high": 5}, '
            '{"name": "formality", "low": 0, "high": 2}]',
            subcommand="test",
        ),
        f"the reward model's heads ({HEADS}) do not match the data's dimensions (verbosity 0..5, "
        "formality 0..2): leave model.dimensions unset (a ckpt_path sets them to the checkpoint's)",
    ),
    # Lightning's own knobs (docs/user_guide.md, "Lightning's own knobs")
    "optimizer_with_own_head_rate": (
        lambda ws: ws.rm_fit("--optimizer=torch.optim.SGD", "--model.init_args.head_learning_rate=0.1"),
        "--optimizer replaces the stage's AdamW, which sets the heads' own learning rate "
        "(head_learning_rate=0.1): unset --model.head_learning_rate or drop --optimizer",
    ),
    "lr_scheduler_with_warmup": (
        lambda ws: ws.rm_fit("--lr_scheduler=torch.optim.lr_scheduler.ConstantLR"),
        "--lr_scheduler replaces the stage's warm-up (warmup_steps=20): set --model.warmup_steps 0 and the "
        "warm-up in the scheduler (moslim_pl.modules.optim.WarmupDecayLR --lr_scheduler.warmup_steps N)",
    ),
    "warmup_decay_without_total_steps": (
        lambda ws: ws.rm_fit(
            "--model.init_args.warmup_steps=0",
            "--lr_scheduler=moslim_pl.modules.optim.WarmupDecayLR",
            "--lr_scheduler.decay=cosine",
        ),
        "WarmupDecayLR: decay 'cosine' needs total_steps > warmup_steps, got None, 0",
    ),
    "accumulate_with_several_updates": (
        lambda ws: [
            "fit",
            *ws.predict("--trainer.accumulate_grad_batches=2", "--model.init_args.updates_per_rollout=2")[1:],
        ],
        "accumulate_grad_batches=2 needs one optimizer step per rollout, got 2 (updates_per_rollout=2): each "
        "rollout's later steps need the step before them",
    ),
    "nested_help_of_a_plain_value": (
        lambda ws: ["fit", "--config", RM_CONFIG, "--model.learning_rate.help"],
        "--model.learning_rate.help: learning_rate of RewardModelModule is a plain value (<class 'float'>); "
        "see moslim-pl fit --model.help RewardModelModule",
    ),
}

# Errors of the config's syntax come from jsonargparse; moslim_pl.cli.OneLineErrorParser prints them as one line.
PARSER_CASES = {
    "config_key_typo": (
        lambda ws: ws.rm_fit("--model.init_args.learnin_rate=0.1"),
        ['Parser key "model":', "Option 'learnin_rate' is not accepted"],
    ),
    "config_key_typo_in_yaml": (
        lambda ws: [
            "fit",
            "--config",
            RM_CONFIG,
            "--config",
            ws.write("typo.yaml", "data:\n  init_args:\n    batch_sise: 4\n"),
        ],
        ['Parser key "data":', "Option 'batch_sise' is not accepted"],
    ),
    "policy_flat_key_of_a_group": (  # the keys the policy stages' settings groups replaced
        lambda ws: ["fit", *ws.predict("--model.init_args.learning_rate=0.001")[1:]],
        ['Parser key "model":', "Option 'learning_rate' is not accepted"],
    ),
    "config_file_missing": (
        lambda ws: ["fit", "--config", str(ws.dir / "nope.yaml")],
        ['Parser key "config":', "File does not exist: '{w}/nope.yaml'"],
    ),
    "unknown_trainer_option": (
        lambda ws: ws.rm_fit("--trainer.max_stepz=3"),
        ["unrecognized arguments: --trainer.max_stepz=3"],
    ),
    "unknown_class_path": (
        lambda ws: ws.rm_fit("--model=moslim_pl.modules.RewardModule"),
        ['Parser key "model":', "moslim_pl.modules.RewardModule"],
    ),
}


@pytest.fixture(autouse=True)
def _no_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """LightningCLI warns when ``args`` and ``sys.argv`` (pytest's here) are both given."""
    monkeypatch.setattr(sys, "argv", ["moslim-pl"])


def _run(args: list[str], capsys: pytest.CaptureFixture) -> list[str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_ends_with_one_line(ws: Workspace, capsys: pytest.CaptureFixture, case: str) -> None:
    make_args, expected = CASES[case]
    last = _run(make_args(ws), capsys)[-1]
    prefix = "moslim-pl: error: "
    assert last.startswith(prefix), last
    message, expected = last.removeprefix(prefix), expected.replace("{w}", str(ws.dir))
    if expected.endswith("..."):
        assert message.startswith(expected.removesuffix("...")), message
    else:
        assert message == expected


@pytest.mark.parametrize("case", list(PARSER_CASES))
def test_config_errors_name_the_key(ws: Workspace, capsys: pytest.CaptureFixture, case: str) -> None:
    make_args, expected = PARSER_CASES[case]
    lines = _run(make_args(ws), capsys)
    assert len(lines) == 1, lines  # not jsonargparse's usage text
    (err,) = lines
    assert err.startswith("moslim-pl: error: ") and err.endswith("(options: moslim-pl fit --help)"), err
    for part in expected:
        assert part.replace("{w}", str(ws.dir)) in err, err


@pytest.mark.parametrize("case", ["missing_data_file", "config_key_typo"])
def test_the_console_command_prints_no_traceback(ws: Workspace, case: str) -> None:
    make_args = CASES[case][0] if case in CASES else PARSER_CASES[case][0]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("MOSLIM_DEBUG", None)
    done = subprocess.run(
        [sys.executable, "-m", "moslim_pl.cli", *make_args(ws)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    if case in CASES:
        expected = "moslim-pl: error: " + CASES[case][1].replace("{w}", str(ws.dir))
        assert done.stderr.strip().splitlines()[-1] == expected
