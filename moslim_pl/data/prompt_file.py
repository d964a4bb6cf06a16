"""The prompts a user asks ``moslim-pl predict`` to answer: a text file, one prompt per line, or JSONL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from moslim_pl.data.sources import DataError
from moslim_pl.prefix import PrefixError, parse_prefix
from moslim_pl.schema import Dimension


def read_prompt_file(file: str | Path, column: str, dimensions: Sequence[Dimension]) -> list[str]:
    """Non-empty prompts of ``file``, in order; each may start with a prefix of ``dimensions``.

    A ``.jsonl`` / ``.json`` file holds one JSON object per line with the prompt under ``column``; any
    other file holds one prompt per line. Blank lines are skipped. A missing file, a line that is not
    JSON, a missing or empty prompt, a malformed prefix, or no prompt at all is a one-line
    ``DataError`` naming the file and the line.
    """
    path = Path(file)
    if not path.is_file():
        raise DataError(f"predict_file {str(path)!r}: no such file")
    prompts = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        where = f"predict_file {str(path)!r} line {i + 1}"
        if not line.strip():
            continue
        if path.suffix in (".jsonl", ".json"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not JSON ({err.msg})") from None
            prompt = row.get(column) if isinstance(row, dict) else None
            if not isinstance(prompt, str) or not prompt.strip():
                raise DataError(f"{where}, column {column!r}: missing or empty prompt")
        else:
            prompt = line
        try:
            parse_prefix(prompt, dimensions)
        except PrefixError as err:
            raise DataError(f"{where}: {err}") from None
        prompts.append(prompt)
    if not prompts:
        raise DataError(f"predict_file {str(path)!r}: no prompts")
    return prompts
