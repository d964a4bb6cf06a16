"""Prefix grammar: ``<name level>`` tags at the very start of a prompt (``docs/user_guide.md``, "Prefixes").

``<helpfulness 4> <verbosity 1> Explain ...`` requests level 4 of helpfulness and level 1 of
verbosity; the text after the tags is the prompt. Tags are separated by one space and one space
separates the last tag from the prompt. A leading ``<...>`` counts as a tag attempt when its name is
a configured dimension or its body looks like ``word level``; anything else (``<div>``) is prompt text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from moslim_pl.errors import MoslimError
from moslim_pl.schema import Dimension

_TAG = re.compile(r"<([^<>]*)>")
_WELL_FORMED = re.compile(r"([A-Za-z0-9_\-]+) (-?\d+)")
_TAG_LIKE = re.compile(r"[A-Za-z0-9_\-]+\s+\S+")


class PrefixError(MoslimError):
    """A malformed prefix tag. ``tag`` is the offending text, ``position`` its character offset."""

    def __init__(self, reason: str, tag: str, position: int) -> None:
        super().__init__(f"bad prefix tag {tag!r} at position {position}: {reason}")
        self.tag = tag
        self.position = position


def _is_tag_attempt(body: str, names: Mapping[str, Dimension]) -> bool:
    head = body.split(maxsplit=1)[0] if body.split() else ""
    return head in names or bool(_TAG_LIKE.fullmatch(body.strip()))


def parse_prefix(text: str, dimensions: Sequence[Dimension]) -> tuple[dict[str, int], str]:
    """Split ``text`` into its requested levels and the prompt.

    Returns ``({name: level}, prompt)`` with the tags' order kept; ``({}, text)`` when there is no
    prefix. Raises ``PrefixError`` for an unknown name, a level out of range, a duplicate name or bad
    syntax.
    """
    names = {d.name: d for d in dimensions}
    targets: dict[str, int] = {}
    pos = 0
    while True:
        match = _TAG.match(text, pos)
        if match is None or not _is_tag_attempt(match.group(1), names):
            break
        tag, body = match.group(0), match.group(1)
        well_formed = _WELL_FORMED.fullmatch(body)
        if well_formed is None:
            raise PrefixError("expected '<name level>' with one space and an integer level", tag, pos)
        name = well_formed.group(1)
        try:
            level = int(well_formed.group(2))
        except ValueError:  # more digits than int() converts
            raise PrefixError("the level has too many digits", tag, pos) from None
        if name not in names:
            raise PrefixError(f"unknown dimension {name!r}; known: {', '.join(names)}", tag, pos)
        dim = names[name]
        if not dim.min_level <= level <= dim.max_level:
            raise PrefixError(f"level {level} outside {dim.min_level}..{dim.max_level}", tag, pos)
        if name in targets:
            raise PrefixError(f"dimension {name!r} requested twice", tag, pos)
        targets[name] = level
        pos = match.end()
        if pos == len(text):
            break
        if text[pos] != " ":
            raise PrefixError("a tag must be followed by one space", tag, match.start())
        pos += 1
    if not targets:
        return {}, text
    return targets, text[pos:]


def format_prefix(targets: Mapping[str, int], prompt: str) -> str:
    """Inverse of :func:`parse_prefix`: ``{"a": 1, "b": 2}, "Hi"`` -> ``"<a 1> <b 2> Hi"``."""
    tags = " ".join(f"<{name} {level}>" for name, level in targets.items())
    if not tags:
        return prompt
    return f"{tags} {prompt}" if prompt else tags


def strip_prefix(text: str, dimensions: Sequence[Dimension]) -> str:
    """The prompt without its tags (what the reward model sees)."""
    return parse_prefix(text, dimensions)[1]
