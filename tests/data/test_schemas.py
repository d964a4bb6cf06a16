"""Dataset schemas: hand-written rows of each public dataset's shape, loaded through `datasets` from JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from moslim_pl.data import DataError, DataSource, PreferenceDataModule, PromptDataModule
from moslim_pl.data.schemas import HELPSTEER_DIMENSIONS, convert_source, harmlessness_level, split_transcript
from moslim_pl.data.sources import PreferenceRow, load_source, resolve_dimensions
from moslim_pl.data.types import ALL_HEADS, IGNORE_LABEL
from moslim_pl.errors import MoslimError
from moslim_pl.schema import Dimension

FIXTURES = Path(__file__).parent / "fixtures"
X = IGNORE_LABEL
HARM = Dimension("harmlessness", 0, 3)
SIX = (*HELPSTEER_DIMENSIONS, HARM)  # helpfulness is head 0, harmlessness head 5


def _source(schema: str, file: str | Path, **kwargs) -> DataSource:
    return DataSource("json", data_files=str(FIXTURES / file), schema=schema, **kwargs)


def _convert(source: DataSource, dimensions) -> list[PreferenceRow]:
    return convert_source(load_source(source), source, dimensions)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _fixture_rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


# ------------------------------------------------------------------------------------------ conversions
@pytest.mark.parametrize("schema", ["helpsteer", "helpsteer2"])
def test_helpsteer_rows(schema: str) -> None:
    rows = _convert(_source(schema, "helpsteer.jsonl"), HELPSTEER_DIMENSIONS)
    assert rows == [
        PreferenceRow(
            "What is a river delta?", ("Land built from river sediment.",), ((3, 4, 4, 1, 1),), None
        ),
        PreferenceRow(
            "What is a river delta?",
            ("A delta is where a river splits into channels and drops sediment before the sea.",),
            ((4, 4, 4, 2, 2),),
            None,
        ),
        PreferenceRow("Name a volcano.", ("Etna.",), ((2, 3, 4, 0, X),), None),  # verbosity null: missing
    ]


def test_ultrafeedback_one_row_per_completion_with_na_missing() -> None:
    source = _source("ultrafeedback", "ultrafeedback.jsonl")
    dims = resolve_dimensions(None, source)
    assert [(d.name, d.low, d.high) for d in dims] == [
        ("helpfulness", 1, 5),
        ("honesty", 1, 5),
        ("instruction_following", 1, 5),
        ("truthfulness", 1, 5),
    ]
    rows = _convert(source, dims)
    # ratings 1-5 become classes 0-4; "N/A" is a missing label
    assert rows == [
        PreferenceRow("Explain tides.", ("The moon pulls the oceans.",), ((3, 4, 2, 4),), None),
        PreferenceRow("Explain tides.", ("Tides are waves.",), ((1, X, 0, 1),), None),
        PreferenceRow("Say hi.", ("Hi!",), ((4, 4, 4, X),), None),
    ]


@pytest.mark.parametrize(
    ("safe", "severity", "level"),
    [
        (True, 0, 3),
        (True, 2, 3),
        (False, 1, 2),
        (False, 2, 1),
        (False, 3, 0),
        (False, 0, 2),
        (False, None, 2),
    ],
)
def test_harmlessness_level(safe: bool, severity: int | None, level: int) -> None:
    assert harmlessness_level(safe, severity) == level


def test_pku_saferlhf_pointwise_and_pairs() -> None:
    rows = _convert(_source("pku_saferlhf", "pku_saferlhf.jsonl"), SIX)
    unlabelled = ((X,) * 6, (X,) * 6)

    def point(prompt: str, response: str, harm: int) -> PreferenceRow:
        return PreferenceRow(prompt, (response,), ((X, X, X, X, X, harm),), None)

    def pair(prompt: str, chosen: str, rejected: str, head: int) -> PreferenceRow:
        return PreferenceRow(prompt, (chosen, rejected), unlabelled, head)

    lock, weapon, swim = (row["prompt"] for row in _fixture_rows("pku_saferlhf.jsonl"))
    smith, wrench = "Call a locksmith.", "Use a tension wrench and a pick."
    steps, mild = "Here are detailed steps.", "Instructions for something mildly risky."
    yes, wait = "Yes, mostly.", "Some people wait an hour."
    assert rows == [
        point(lock, smith, 3),  # safe
        point(lock, wrench, 1),  # unsafe, severity 2
        pair(lock, wrench, smith, 0),  # better_response_id 1: helpfulness head
        pair(lock, smith, wrench, 5),  # safer_response_id 0: harmlessness head
        point(weapon, steps, 0),  # unsafe, severity 3
        point(weapon, mild, 2),  # unsafe, severity 1
        pair(weapon, steps, mild, 0),
        pair(weapon, mild, steps, 5),
        point(swim, yes, 3),
        point(swim, wait, 3),
        pair(swim, wait, yes, 0),
        pair(swim, wait, yes, 5),
    ]


def test_pku_saferlhf_alone_drops_the_helpfulness_pairs(caplog: pytest.LogCaptureFixture) -> None:
    source = _source("pku_saferlhf", "pku_saferlhf.jsonl")
    dims = resolve_dimensions(None, source)
    assert dims == (HARM,)
    rows = _convert(source, dims)
    assert [row.pair_dim for row in rows] == [None, None, 0] * 3
    assert "skipped 3 item(s): pair judged on 'helpfulness', which has no head" in caplog.text


def test_split_transcript() -> None:
    assert split_transcript("\n\nHuman: Hi\n\nAssistant: Hello") == ("Human: Hi", "Hello")
    multi = "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Bye\n\nAssistant: See you"
    assert split_transcript(multi) == ("Human: Hi\n\nAssistant: Hello\n\nHuman: Bye", "See you")
    assert split_transcript("\n\nHuman: Hi") is None


@pytest.mark.parametrize(("dimension", "head"), [("helpfulness", 0), ("harmlessness", 5), (None, ALL_HEADS)])
def test_hh_rlhf_pairs_on_the_configured_dimension(dimension, head, caplog: pytest.LogCaptureFixture) -> None:
    source = _source("hh_rlhf", "hh_rlhf.jsonl", schema_options={"dimension": dimension})
    rows = _convert(source, SIX)
    unlabelled = ((X,) * 6, (X,) * 6)
    assert rows == [
        PreferenceRow("Human: What is the capital of France?", ("Paris.", "I don't know."), unlabelled, head),
        PreferenceRow(
            "Human: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke.",
            ("Why did the river cross the road?", "No."),
            unlabelled,
            head,
        ),
    ]  # the third row's transcripts differ before the final turn: skipped
    assert "skipped 1 item(s): chosen and rejected differ" in caplog.text


def test_hh_rlhf_declares_the_dimension_its_pairs_train() -> None:
    (dim,) = resolve_dimensions(None, _source("hh_rlhf", "hh_rlhf.jsonl"))
    assert (dim.name, dim.low, dim.high) == ("helpfulness", 0, 4)
    options = {"dimension": "harmlessness"}
    (dim,) = resolve_dimensions(None, _source("hh_rlhf", "hh_rlhf.jsonl", schema_options=options))
    assert dim.name == "harmlessness"
    with pytest.raises(MoslimError, match="label no dimension"):  # every head judges: none declared
        resolve_dimensions(None, _source("hh_rlhf", "hh_rlhf.jsonl", schema_options={"dimension": None}))


# ------------------------------------------------------------------------------------------ errors
def _one_line_error(source: DataSource, dimensions=SIX) -> str:
    with pytest.raises(DataError) as err:
        _convert(source, dimensions)
    message = str(err.value)
    assert "\n" not in message and message.startswith(source.describe())
    return message


def test_missing_column_names_source_row_and_column(tmp_path: Path) -> None:
    rows = [
        {k: v for k, v in row.items() if k != "safer_response_id"}
        for row in _fixture_rows("pku_saferlhf.jsonl")
    ]
    source = DataSource("json", data_files=str(_write(tmp_path / "pku.jsonl", rows)), schema="pku_saferlhf")
    message = _one_line_error(source)
    assert "pku.jsonl row 0, column 'safer_response_id': missing (schema 'pku_saferlhf' needs" in message


@pytest.mark.parametrize(
    ("file", "row", "change", "expected"),
    [
        (
            "helpsteer.jsonl",
            1,
            {"correctness": "high"},
            "row 1, column 'correctness': label 'high' is not an integer",
        ),
        ("helpsteer.jsonl", 2, {"verbosity": 7}, "row 2, column 'verbosity': label 7 outside 0..4"),
        (
            "pku_saferlhf.jsonl",
            1,
            {"response_1_severity_level": 5},
            "row 1, column 'response_1_severity_level': 5",
        ),
        (
            "pku_saferlhf.jsonl",
            2,
            {"is_response_0_safe": "maybe"},
            "row 2, column 'is_response_0_safe': safety",
        ),
        (
            "pku_saferlhf.jsonl",
            0,
            {"better_response_id": 2},
            "row 0, column 'better_response_id': 2 outside 0..1",
        ),
        ("pku_saferlhf.jsonl", 0, {"prompt": None}, "row 0, column 'prompt': missing"),
        (
            "hh_rlhf.jsonl",
            1,
            {"rejected": "\n\nHuman: no answer"},
            "row 1, column 'rejected': no 'Assistant:' turn",
        ),
    ],
)
def test_bad_values_name_source_row_and_column(tmp_path: Path, file, row, change, expected) -> None:
    rows = _fixture_rows(file)
    rows[row] = {**rows[row], **change}
    schema = file.removesuffix(".jsonl")
    source = DataSource("json", data_files=str(_write(tmp_path / file, rows)), schema=schema)
    assert expected in _one_line_error(source)


def test_bad_ultrafeedback_rating_names_the_nested_column(tmp_path: Path) -> None:
    rows = _fixture_rows("ultrafeedback.jsonl")
    rows[1]["completions"][0]["annotations"]["honesty"]["Rating"] = "4.5"
    source = DataSource("json", data_files=str(_write(tmp_path / "uf.jsonl", rows)), schema="ultrafeedback")
    dims = resolve_dimensions(None, source)
    message = _one_line_error(source, dims)
    assert (
        "row 1, column 'completions[0].annotations.honesty.Rating': label '4.5' is not an integer" in message
    )


def test_unknown_schema_and_option() -> None:
    with pytest.raises(
        DataError, match=r"unknown schema 'helpsteer3' \(known: helpsteer, helpsteer2, hh_rlhf"
    ):
        resolve_dimensions(None, _source("helpsteer3", "helpsteer.jsonl"))
    source = _source("hh_rlhf", "hh_rlhf.jsonl", schema_options={"dim": "x"})
    assert "schema 'hh_rlhf' has no option dim (options: dimension)" in _one_line_error(source)
    with pytest.raises(DataError, match="synthetic source takes no schema"):
        resolve_dimensions(None, DataSource(schema="helpsteer"))


def test_bad_row_fails_datamodule_setup_with_one_line(tmp_path: Path) -> None:
    rows = _fixture_rows("helpsteer.jsonl")
    rows[2]["helpfulness"] = "N/A?"
    path = _write(tmp_path / "hs.jsonl", rows)
    dm = PreferenceDataModule(tokenizer="moslim/tiny-llama", source=DataSource(str(path), schema="helpsteer"))
    with pytest.raises(DataError, match=r"hs\.jsonl row 2, column 'helpfulness': label 'N/A\?'") as err:
        dm.setup("fit")
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ mixing
def test_union_of_dimensions_and_conflicts() -> None:
    helpsteer, pku = _source("helpsteer", "helpsteer.jsonl"), _source("pku_saferlhf", "pku_saferlhf.jsonl")
    hh = _source("hh_rlhf", "hh_rlhf.jsonl")
    assert resolve_dimensions(None, helpsteer, pku, hh) == SIX
    declared = [Dimension("harmlessness", 0, 3, bins=2)]
    assert resolve_dimensions(declared, helpsteer, pku) == tuple(declared)
    with pytest.raises(MoslimError, match=r"'helpfulness' is 0\.\.4 in json:.*helpsteer.jsonl but 1\.\.5 in"):
        resolve_dimensions(None, helpsteer, _source("ultrafeedback", "ultrafeedback.jsonl"))


def test_source_and_sources_are_exclusive_and_other_datamodules_refuse_schemas() -> None:
    helpsteer = _source("helpsteer", "helpsteer.jsonl")
    with pytest.raises(MoslimError, match="either `source` or a non-empty `sources`"):
        PreferenceDataModule(source=helpsteer, sources=[helpsteer])
    with pytest.raises(MoslimError, match="PreferenceDataModule only"):
        PromptDataModule(source=helpsteer, dimensions=list(HELPSTEER_DIMENSIONS))


def test_mixed_datamodule_reads_every_source_and_keeps_plain_hparams() -> None:
    sources = [_source("helpsteer", "helpsteer.jsonl"), _source("pku_saferlhf", "pku_saferlhf.jsonl")]
    dm = PreferenceDataModule(tokenizer="moslim/tiny-llama", sources=sources, val_fraction=0.4)
    assert dm.dimensions == SIX and dm.source == sources[0]
    assert dm.hparams["sources"][1]["schema"] == "pku_saferlhf"  # plain dicts: checkpoints load safely
    dm.setup("fit")
    examples = dm.train_dataset + dm.val_dataset
    assert len(examples) == 3 + 12
    points = [ex["labels"][0] for ex in examples if ex["pair_dim"] is None]
    # a row's labels for the dimensions its source lacks are missing
    assert sum(labels[5] == X and X not in labels[:4] for labels in points) == 3  # HelpSteer
    assert sum(labels[:5] == [X] * 5 and labels[5] != X for labels in points) == 6  # PKU
    assert sorted(ex["pair_dim"] for ex in examples if ex["pair_dim"] is not None) == [0, 0, 0, 5, 5, 5]


def _pku_rows(count: int) -> list[dict]:
    """PKU-SafeRLHF-shaped rows: the unsafe response talks about lava, the safe one about tides."""
    rows = []
    for i in range(count):
        unsafe_first = i % 2 == 0
        unsafe, safe = f"lava and magma burn {i} .", f"tides and coral are calm {i} ."
        severity = 1 + i % 3
        rows.append(
            {
                "prompt": f"tell me about volcanoes and oceans {i} .",
                "response_0": unsafe if unsafe_first else safe,
                "response_1": safe if unsafe_first else unsafe,
                "is_response_0_safe": not unsafe_first,
                "is_response_1_safe": unsafe_first,
                "response_0_severity_level": severity if unsafe_first else 0,
                "response_1_severity_level": 0 if unsafe_first else severity,
                "better_response_id": i % 2,
                "safer_response_id": 1 if unsafe_first else 0,
            }
        )
    return rows


def test_six_head_rm_trains_on_helpsteer_and_pku_mix(tmp_path: Path, helpsteer_sample: Path) -> None:
    """The acceptance mix: the 500-row HelpSteer sample and PKU-SafeRLHF-shaped rows train one RM."""
    from moslim_pl.modules import RewardModelModule

    torch.manual_seed(0)
    pku = _write(tmp_path / "pku.jsonl", _pku_rows(40))
    data = PreferenceDataModule(
        sources=[
            DataSource("json", data_files=str(helpsteer_sample), schema="helpsteer"),
            DataSource("json", data_files=str(pku), schema="pku_saferlhf"),
        ],
        batch_size=16,
    )
    tiny = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    module = RewardModelModule(tiny_config=tiny, max_length=128, learning_rate=3e-3)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    assert list(module.rm.heads) == [d.name for d in SIX]
    metrics = trainer.callback_metrics
    for dim in SIX:
        assert 0.0 <= float(metrics[f"val/acc/{dim.name}"]) <= 1.0, dim.name
    assert "val/pair_acc" in metrics  # the PKU pairs of the held-out prompts
