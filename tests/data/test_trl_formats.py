"""TRL's dataset formats read without a schema: standard and conversational, explicit and implicit prompt."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch
from lightning.pytorch import Trainer

from moslim_pl.data import PreferenceDataModule
from moslim_pl.data.encoding import PairEncoding
from moslim_pl.data.messages import render_plain, split_implicit, with_prefix
from moslim_pl.data.sources import Columns, DataError, read_rows
from moslim_pl.data.types import ALL_HEADS, IGNORE_LABEL
from moslim_pl.models.backbone import load_tokenizer
from moslim_pl.modules import RewardModelModule
from moslim_pl.schema import Dimension

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DIMS = [Dimension("helpfulness", 0, 4), Dimension("harmlessness", 0, 4)]
X = IGNORE_LABEL


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def rows_of(records: list[dict], columns: Columns = Columns(pair_dimension="dimension")) -> list:  # noqa: B008
    return read_rows(datasets.Dataset.from_list(records), DIMS, columns, "src")


def test_standard_explicit_prompt_with_margin() -> None:
    (row,) = rows_of([{"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green.", "margin": 2}], Columns())
    assert (row.prompt, row.responses, row.pair_dim, row.margin) == (
        "Sky?",
        ("Blue.", "Green."),
        ALL_HEADS,
        2.0,
    )


def test_standard_implicit_prompt_is_the_shared_start() -> None:
    (row,) = rows_of([{"chosen": "The sky is blue.", "rejected": "The sky is green."}], Columns())
    assert (row.prompt, row.responses) == ("The sky is", ("blue.", "green."))


def test_conversational_explicit_prompt_keeps_system_and_turns() -> None:
    prompt = [{"role": "system", "content": "Be brief."}, user("Hi"), assistant("Hello!"), user("Sky?")]
    records = [{"prompt": prompt, "chosen": [assistant("Blue.")], "rejected": [assistant("Green.")]}]
    (row,) = rows_of(records, Columns())
    assert row.prompt == (("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "Sky?"))
    assert row.responses == ("Blue.", "Green.")


def test_conversational_implicit_prompt_is_the_shared_messages() -> None:
    chosen = [user("Hi"), assistant("Hello!"), user("Sky?"), assistant("Blue.")]
    rejected = [user("Hi"), assistant("Hello!"), user("Sky?"), assistant("Green.")]
    (row,) = rows_of([{"chosen": chosen, "rejected": rejected, "dimension": "harmlessness"}])
    assert row.prompt == (("user", "Hi"), ("assistant", "Hello!"), ("user", "Sky?"))
    assert (row.responses, row.pair_dim) == (("Blue.", "Green."), 1)


def test_conversational_pointwise_row() -> None:
    (row,) = rows_of([{"prompt": [user("Sky?")], "response": [assistant("Blue.")], "helpfulness": 3}])
    assert (row.prompt, row.responses, row.labels) == ((("user", "Sky?"),), ("Blue.",), ((3, X),))


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"prompt": "p", "chosen": "a", "rejected": None}, "src row 0, column 'rejected': missing"),
        (
            {"prompt": "p", "chosen": "same", "rejected": "same"},
            "src row 0: 'chosen' and 'rejected' are identical",
        ),
        (
            {"prompt": "p", "chosen": "a", "rejected": "b", "dimension": "honesty"},
            "src row 0, column 'dimension': unknown dimension 'honesty' (known: helpfulness, harmlessness)",
        ),
        ({"chosen": "same", "rejected": "same"}, "src row 0: 'chosen' and 'rejected' are identical"),
        ({"chosen": "Yes.", "rejected": "No."}, "src row 0: 'chosen' and 'rejected' share no prompt text"),
        (
            {"prompt": [user("q"), assistant("a")], "chosen": "x", "rejected": "y"},
            "src row 0, column 'prompt': the conversation must end with a user turn, not assistant",
        ),
        (
            {"prompt": [{"role": "bot", "content": "q"}], "chosen": "x", "rejected": "y"},
            "src row 0, column 'prompt'[0].role: 'bot' is not one of system, user, assistant",
        ),
        (
            {"prompt": [user("q")], "chosen": [user("x")], "rejected": "y"},
            "src row 0, column 'chosen': expected one assistant message after the prompt, got [user]",
        ),
        (
            {"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"},
            "column 'margin': margin 'big' is not",
        ),
    ],
)
def test_bad_pair_rows_are_one_line_errors_naming_the_row(record: dict, message: str) -> None:
    records = [record] if "dimension" in record else [{**record, "dimension": None}]
    with pytest.raises(DataError) as err:
        rows_of(records)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_plain_rendering_and_prefix_in_the_last_user_turn() -> None:
    single = (("user", "Sky?"),)
    assert render_plain(single) == "Sky?"  # reads as the standard format's prompt
    convo = (("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "Sky?"))
    assert render_plain(convo) == "System: Be brief.\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Sky?"
    prefixed = with_prefix(convo, lambda text: "<helpfulness 4> " + text)
    assert prefixed[1] == ("user", "Hi") and prefixed[-1] == ("user", "<helpfulness 4> Sky?")
    assert split_implicit([user("Q"), assistant("A")], [user("Q"), assistant("B")], "r")[0] == (
        ("user", "Q"),
    )


def test_conversations_go_through_the_chat_template() -> None:
    tokenizer = load_tokenizer("moslim/tiny-llama")
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} . {% endfor %}"
    convo = (("system", "tell"), ("user", "rivers"), ("assistant", "me"), ("user", "computers"))
    ids = PairEncoding(max_length=64, chat_template=True).encode(tokenizer, convo, "about")
    text = tokenizer.decode(ids)  # the synthetic world's words are in the tiny tokenizer's vocabulary
    assert text.index("tell") < text.index("rivers") < text.index("computers") < text.index("about")
    plain = PairEncoding(max_length=64).encode(tokenizer, convo, "about")
    assert plain == PairEncoding(max_length=64).encode(tokenizer, render_plain(convo), "about")


def test_conversational_preference_fixture_trains_a_reward_model(tmp_path: Path) -> None:
    # a system prompt and two user turns per row (TRL's conversational preference format)
    first = json.loads((FIXTURES / "trl_conversational_preference.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in first["prompt"]] == ["system", "user", "assistant", "user"]
    data = PreferenceDataModule(
        source={"path": "json", "data_files": str(FIXTURES / "trl_conversational_preference.jsonl")},
        dimensions=[Dimension("helpfulness", 0, 4)],
        val_fraction=0.34,
        batch_size=2,
    )
    torch.manual_seed(0)
    module = RewardModelModule(tiny_config={"hidden_size": 32, "num_hidden_layers": 1}, max_length=96)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    metrics = trainer.callback_metrics
    assert "val/pair_acc/helpfulness" in metrics and torch.isfinite(metrics["train/loss"])
    assert isinstance(data.train_dataset[0]["input_ids"][0], list)
