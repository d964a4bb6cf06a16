"""The prompts a user asks ``moslim-pl predict`` to answer: a text file, one prompt per line, or JSONL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moslim_pl.data.messages import MESSAGES_COLUMN, Prompt, messages_prompt, parse_prompt_prefix, prompt_cell
from moslim_pl.data.rows import DataError
from moslim_pl.errors import MoslimError
from moslim_pl.schema import Dimension


def _jsonl_prompt(row: Any, column: str, where: str) -> Prompt:
    """A JSONL row's prompt: text or a conversation under ``column``, else TRL's ``messages``."""
    if isinstance(row, dict) and row.get(column) is None and row.get(MESSAGES_COLUMN) is not None:
        return messages_prompt(row[MESSAGES_COLUMN], f"{where}, column {MESSAGES_COLUMN!r}")
    prompt = row.get(column) if isinstance(row, dict) else None
    prompt = prompt_cell(prompt, f"{where}, column {column!r}")
    if isinstance(prompt, str) and prompt.strip():
        return prompt
    if isinstance(prompt, tuple):
        return prompt
    raise MoslimError(f"{where}, column {column!r}: missing or empty prompt")


def read_prompt_file(file: str | Path, column: str, dimensions: Sequence[Dimension]) -> list[Prompt]:
    """Non-empty prompts of ``file``, in order; each may start with a prefix of ``dimensions``.

    A ``.jsonl`` / ``.json`` file holds one JSON object per line with the prompt under ``column``: text,
    or a conversation (a list of ``{"role", "content"}`` messages ending with a user turn, whose last
    user turn may start with the prefix); a row without ``column`` may hold TRL's ``messages`` instead
    (read up to its last user turn). Any other file holds one prompt per line. Blank lines are skipped.
    A missing file, a line that is not JSON, a missing or empty prompt, a bad message, a malformed
    prefix, or no prompt at all is a one-line ``DataError`` naming the file and the line.
    """
    path = Path(file)
    if not path.is_file():
        raise DataError(f"predict_file {str(path)!r}: no such file")
    prompts: list[Prompt] = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        where = f"predict_file {str(path)!r} line {i + 1}"
        if not line.strip():
            continue
        if path.suffix in (".jsonl", ".json"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not JSON ({err.msg})") from None
            try:
                prompt = _jsonl_prompt(row, column, where)
            except MoslimError as err:
                raise DataError(str(err)) from None
        else:
            prompt = line
        try:
            parse_prompt_prefix(prompt, dimensions)
        except MoslimError as err:  # PrefixError
            turn = "" if isinstance(prompt, str) else ", last user turn"
            raise DataError(f"{where}{turn}: {err}") from None
        prompts.append(prompt)
    if not prompts:
        raise DataError(f"predict_file {str(path)!r}: no prompts")
    return prompts
