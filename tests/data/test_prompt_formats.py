"""TRL's formats for the policy's data: prompt-only rows (standard, conversational, ``messages``), predict
files and SFT rows (prompt/response, prompt-completion, ``messages``); bad rows are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moslim_pl.data import PromptDataModule
from moslim_pl.data.messages import parse_prompt_prefix
from moslim_pl.data.prompt_file import read_prompt_file
from moslim_pl.data.sft import SFTDataModule, SFTEncoding, SFTRow
from moslim_pl.data.sources import DataError, DataSource
from moslim_pl.data.synthetic import DIMENSIONS
from moslim_pl.data.types import IGNORE_LABEL
from moslim_pl.generation import encode_prompts
from moslim_pl.models.backbone import load_tokenizer


def system(text: str) -> dict:
    return {"role": "system", "content": text}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


# a system prompt and two user turns
CONVERSATION = [
    system("give few details ."),
    user("tell me about rivers ."),
    assistant("rivers have a delta ."),
    user("explain bees ."),
]
MESSAGES = (
    ("system", "give few details ."),
    ("user", "tell me about rivers ."),
    ("assistant", "rivers have a delta ."),
    ("user", "explain bees ."),
)


def _jsonl(tmp_path: Path, name: str, rows: list[dict]) -> DataSource:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return DataSource(str(path))


def _one_line(err: pytest.ExceptionInfo, message: str) -> None:
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


# ----------------------------------------------------------------------------------------- prompt data


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"prompt": "explain bees ."}, "explain bees ."),
        ({"prompt": CONVERSATION}, MESSAGES),
        ({"messages": [*CONVERSATION, assistant("bees make honey .")]}, MESSAGES),
    ],
    ids=["standard", "conversational", "messages"],
)
def test_prompt_data_formats_and_the_prefix_in_the_last_user_turn(
    tmp_path: Path, row: dict, expected: str | tuple
) -> None:
    dm = PromptDataModule(
        source=_jsonl(tmp_path, "train", [row]),
        val_source=_jsonl(tmp_path, "val", [row]),  # the same prompt: a warning, and fixed prefixes
        dimensions=DIMENSIONS,
        no_prefix_prob=0.0,
        batch_size=1,
    )
    dm.setup("fit")
    assert dm.train_prompts == [expected]
    (batch,) = list(dm.train_dataloader())
    (prompt,) = batch
    targets, bare = parse_prompt_prefix(prompt, DIMENSIONS)
    assert targets and bare == expected  # the prefix, and nothing else, was added
    if isinstance(expected, tuple):
        assert prompt[:-1] == expected[:-1]  # system prompt and earlier turns untouched
        assert prompt[-1][1].startswith("<") and prompt[-1][1].endswith(" explain bees .")
    (val,) = dm.val_prompts
    assert parse_prompt_prefix(val, DIMENSIONS)[1] == expected


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"prompt": [user("q ."), assistant("a .")]},
            "row 1, column 'prompt': the conversation must end with a user turn, not assistant",
        ),
        (
            {"prompt": [{"role": "bot", "content": "q ."}]},
            "row 1, column 'prompt'[0].role: 'bot' is not one of",
        ),
        ({"prompt": [user(" ")]}, "row 1, column 'prompt'[0].content: missing or empty text"),
        (
            {"prompt": [system("s ."), user("<formality 1> explain bees .")]},
            "row 1, column 'prompt', last user turn: the prompt already starts with a prefix",
        ),
        (
            {"prompt": [user("<formality 9> explain bees .")]},
            "row 1, column 'prompt', last user turn: bad prefix tag '<formality 9>' at position 0: level 9 "
            "outside 0..2",
        ),
        (
            {"messages": [system("s ."), assistant("a .")]},
            "row 1, column 'messages': the conversation has no user turn",
        ),
    ],
    ids=[
        "ends-with-assistant",
        "bad-role",
        "empty-content",
        "already-prefixed",
        "bad-prefix",
        "no-user-turn",
    ],
)
def test_bad_prompt_rows_are_one_line_data_errors(tmp_path: Path, row: dict, message: str) -> None:
    good = {"messages": CONVERSATION} if "messages" in row else {"prompt": CONVERSATION}
    dm = PromptDataModule(source=_jsonl(tmp_path, "bad", [good, row]), dimensions=DIMENSIONS)
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    _one_line(err, message)


# ------------------------------------------------------------------------------------------ predict files


def test_predict_file_reads_text_conversations_and_messages(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": "<formality 0> explain bees ."},
        {"prompt": [system("give few details ."), user("<formality 2> explain bees .")]},
        {
            "messages": [
                user("hi ."),
                assistant("hello ."),
                user("<formality 1> explain bees ."),
                assistant("x ."),
            ]
        },
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert read_prompt_file(path, "prompt", DIMENSIONS) == [
        "<formality 0> explain bees .",
        (("system", "give few details ."), ("user", "<formality 2> explain bees .")),
        (("user", "hi ."), ("assistant", "hello ."), ("user", "<formality 1> explain bees .")),
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"prompt": [user("<formality 3> explain bees .")]},
            "line 1, last user turn: bad prefix tag '<formality 3>' at position 0: level 3 outside 0..2",
        ),
        (
            {"prompt": [user("q ."), assistant("a .")]},
            "line 1, column 'prompt': the conversation must end with a user turn, not assistant",
        ),
        ({"prompt": [{"role": "user"}]}, "line 1, column 'prompt'[0].content: missing or empty text"),
        ({"messages": [assistant("a .")]}, "line 1, column 'messages': the conversation has no user turn"),
        ({"prompt": []}, "line 1, column 'prompt': expected a non-empty list of messages"),
    ],
    ids=["bad-prefix", "ends-with-assistant", "no-content", "no-user-turn", "empty-list"],
)
def test_bad_predict_file_rows_are_one_line_data_errors(tmp_path: Path, row: dict, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError) as err:
        read_prompt_file(path, "prompt", DIMENSIONS)
    _one_line(err, f"predict_file {str(path)!r} {message}")


# ---------------------------------------------------------------------------------------------- SFT data


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"prompt": "explain bees .", "response": "hive ."}, SFTRow("explain bees .", "hive .")),
        ({"prompt": "explain bees .", "completion": "hive ."}, SFTRow("explain bees .", "hive .")),
        ({"prompt": CONVERSATION, "completion": [assistant("hive .")]}, SFTRow(MESSAGES, "hive .")),
        ({"messages": [*CONVERSATION, assistant("hive .")]}, SFTRow(MESSAGES, "hive .")),
    ],
    ids=["prompt-response", "prompt-completion", "conversational-prompt-completion", "messages"],
)
def test_sft_formats(tmp_path: Path, row: dict, expected: SFTRow) -> None:
    dm = SFTDataModule(tokenizer="moslim/tiny-llama", source=_jsonl(tmp_path, "sft", [row]))
    assert dm._read(dm.source) == [expected]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"messages": [user("q ."), assistant("a ."), user("more .")]},
            "row 1, column 'messages': the conversation must end with an assistant turn, not user",
        ),
        (
            {"messages": [system("s ."), assistant("a .")]},
            "row 1, column 'messages': the last assistant turn must follow a user turn, not system",
        ),
        (
            {"prompt": CONVERSATION, "completion": [user("a .")]},
            "row 1, column 'completion': expected one assistant message after the prompt, got [user]",
        ),
        (
            {"prompt": [user("q ."), assistant("a .")], "completion": [assistant("b .")]},
            "row 1, column 'prompt': the conversation must end with a user turn, not assistant",
        ),
        ({"prompt": "explain bees .", "completion": " "}, "row 1, column 'completion': empty text"),
    ],
    ids=[
        "messages-end-with-user",
        "no-user-before-answer",
        "completion-not-assistant",
        "prompt-ends-with-answer",
        "empty-completion",
    ],
)
def test_bad_sft_rows_are_one_line_data_errors(tmp_path: Path, row: dict, message: str) -> None:
    # a good row of the same shape first (one file: Arrow needs one type per column)
    if "messages" in row:
        good = {"messages": [*CONVERSATION, assistant("ok .")]}
    elif isinstance(row["completion"], str):
        good = {"prompt": "q .", "completion": "ok ."}
    else:
        good = {"prompt": CONVERSATION, "completion": [assistant("ok .")]}
    dm = SFTDataModule(tokenizer="moslim/tiny-llama", source=_jsonl(tmp_path, "bad", [good, row]))
    with pytest.raises(DataError) as err:
        dm._read(dm.source)
    _one_line(err, message)


def test_sft_conversation_is_encoded_as_the_policy_reads_it() -> None:
    tok = load_tokenizer("moslim/tiny-llama")
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %} [SEP] {{ m['content'] }} [EOS]\n"
        "{% else %}[SEP] {{ m['content'] }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %} [SEP]{% endif %}"
    )
    prompt = (*MESSAGES[:-1], ("user", "<formality 2> explain bees ."))
    for chat_template in (True, False):
        (example,) = SFTEncoding(chat_template=chat_template).encode(tok, [prompt], ["hive ."])
        policy = encode_prompts(tok, [prompt], 128, chat_template=chat_template).input_ids[0].tolist()
        response = [*tok("hive .", add_special_tokens=False)["input_ids"], tok.eos_token_id]
        assert example.input_ids == policy + response
        assert example.labels == [IGNORE_LABEL] * len(policy) + response
