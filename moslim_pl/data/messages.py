"""Conversational rows (TRL's "conversational" formats): lists of ``{"role", "content"}`` messages.

A conversation is held as :data:`Messages`, a tuple of ``(role, content)`` pairs, so that it is hashable
(prompt-disjoint splits group rows by prompt) and compares by value. Roles are ``system``, ``user`` and
``assistant``. How a conversation becomes text (docs/user_guide.md, "TRL formats and conversations"):

- with a chat template (``chat_template: true``) the tokenizer renders it, system prompt and earlier
  turns included;
- without one (MiniLM and other encoders), :func:`render_plain`: a single user turn is its content alone
  (so it reads exactly as the standard format's prompt), anything else is HH-RLHF's layout, one
  ``System:`` / ``Human:`` / ``Assistant:`` paragraph per message, joined by blank lines.

A steering prefix (``<helpfulness 4> ...``) belongs at the start of the last user turn
(:func:`with_prefix`; :func:`add_prefix` and :func:`parse_prompt_prefix` write and read it on a
:data:`Prompt`, text or conversation alike).

The policy's prompts (docs/user_guide.md, "Prompt data, SFT data and predict files") are a
:data:`Prompt`: text, or a conversation that ends with a user turn. A conversation travels through the
DataLoader as its :data:`Messages` tuple; :func:`render_plain_prompt` is the policy's rendering without a
chat template.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from moslim_pl.errors import MoslimError
from moslim_pl.prefix import format_prefix, parse_prefix
from moslim_pl.schema import Dimension

Messages = tuple[tuple[str, str], ...]
"""``((role, content), ...)``: a conversation, oldest message first."""

Prompt = str | Messages
"""A policy prompt: text, or a conversation that ends with a user turn."""

MESSAGES_COLUMN = "messages"
"""TRL's column of whole conversations (its ``messages`` formats)."""

ROLES = ("system", "user", "assistant")
PLAIN_NAMES = {"system": "System", "user": "Human", "assistant": "Assistant"}


def is_conversation(value: Any) -> bool:
    """Whether a cell holds a conversation (a list, possibly read as a tuple) rather than text."""
    return isinstance(value, list | tuple) and not isinstance(value, str)


def to_messages(value: Any, where: str) -> Messages:
    """A cell's list of ``{"role", "content"}`` dicts as :data:`Messages`; anything else is a one-line
    ``MoslimError`` at ``where`` naming the message."""
    if not is_conversation(value) or not value:
        raise MoslimError(f"{where}: expected a non-empty list of messages")
    messages = []
    for j, message in enumerate(value):
        if isinstance(message, tuple) and len(message) == 2:  # already Messages
            role, content = message
        elif isinstance(message, dict):
            role, content = message.get("role"), message.get("content")
        else:
            raise MoslimError(f"{where}[{j}]: not a {{'role', 'content'}} message ({type(message).__name__})")
        if role not in ROLES:
            raise MoslimError(f"{where}[{j}].role: {role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise MoslimError(f"{where}[{j}].content: missing or empty text")
        messages.append((role, content))
    return tuple(messages)


def as_dicts(messages: Messages) -> list[dict[str, str]]:
    """The ``[{"role", "content"}]`` form that ``apply_chat_template`` takes."""
    return [{"role": role, "content": content} for role, content in messages]


def render_plain(messages: Messages) -> str:
    """Text of a conversation for a backbone without a chat template (see the module docstring)."""
    if len(messages) == 1 and messages[0][0] == "user":
        return messages[0][1]
    return "\n\n".join(f"{PLAIN_NAMES[role]}: {content}" for role, content in messages)


def last_user(messages: Messages, where: str) -> int:
    """Index of the last user message; a conversation without one is a ``MoslimError``."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i][0] == "user":
            return i
    raise MoslimError(f"{where}: the conversation has no user turn")


def with_prefix(messages: Messages, edit: Callable[[str], str], where: str = "prompt") -> Messages:
    """``messages`` with the last user turn's content replaced by ``edit(content)`` (e.g. prefixed)."""
    i = last_user(messages, where)
    return (*messages[:i], (messages[i][0], edit(messages[i][1])), *messages[i + 1 :])


def assistant_text(value: Any, where: str) -> str:
    """A completion cell: text, or a conversation of exactly one assistant message (its content)."""
    if not is_conversation(value):
        if not isinstance(value, str) or not value.strip():
            kind = (
                "missing"
                if value is None
                else "empty text"
                if isinstance(value, str)
                else f"not text ({type(value).__name__})"
            )
            raise MoslimError(f"{where}: {kind}")
        return value
    messages = to_messages(value, where)
    if len(messages) != 1 or messages[0][0] != "assistant":
        roles = ", ".join(role for role, _ in messages)
        raise MoslimError(f"{where}: expected one assistant message after the prompt, got [{roles}]")
    return messages[0][1]


def split_implicit(chosen: Any, rejected: Any, where: str) -> tuple[str | Messages, str, str]:
    """TRL's implicit-prompt preference row: the shared start of ``chosen`` and ``rejected`` is the prompt.

    Conversations: the longest common run of messages is the prompt and each side's remaining single
    assistant message its response. Text: the longest common prefix, cut back to a whitespace boundary
    (``"The sky is blue."`` / ``"The sky is green."`` -> ``"The sky is"``, ``"blue."``, ``"green."``).

    Returns:
        ``(prompt, chosen response, rejected response)``; a row with no shared prompt, identical sides
        or a mix of text and conversation is a ``MoslimError`` at ``where``.
    """
    if is_conversation(chosen) != is_conversation(rejected):
        raise MoslimError(f"{where}: 'chosen' and 'rejected' mix text and a conversation")
    if is_conversation(chosen):
        a, b = (
            to_messages(chosen, f"{where}, column 'chosen'"),
            to_messages(rejected, f"{where}, column 'rejected'"),
        )
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        if a == b:
            raise MoslimError(f"{where}: 'chosen' and 'rejected' are identical")
        if n == 0:
            raise MoslimError(
                f"{where}: 'chosen' and 'rejected' share no prompt message (no 'prompt' column)"
            )
        good = assistant_text(list(a[n:]) or None, f"{where}, column 'chosen'")
        bad = assistant_text(list(b[n:]) or None, f"{where}, column 'rejected'")
        return a[:n], good, bad
    for column, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, str) or not value.strip():
            raise MoslimError(f"{where}, column {column!r}: missing or empty text")
    if chosen == rejected:
        raise MoslimError(f"{where}: 'chosen' and 'rejected' are identical")
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    while n > 0 and not chosen[n - 1].isspace():  # back to a word boundary
        n -= 1
    prompt = chosen[:n].strip()
    if not prompt:
        raise MoslimError(f"{where}: 'chosen' and 'rejected' share no prompt text (no 'prompt' column)")
    return prompt, chosen[n:].strip(), rejected[n:].strip()


# --------------------------------------------------------------------------------- prompts of the policy


def is_messages(value: Any) -> bool:
    """Whether ``value`` is :data:`Messages` (a non-empty tuple of ``(role, content)`` string pairs)."""
    return (
        isinstance(value, tuple)
        and bool(value)
        and all(isinstance(m, tuple) and len(m) == 2 and all(isinstance(x, str) for x in m) for m in value)
    )


def add_prefix(targets: Mapping[str, int], prompt: Prompt) -> Prompt:
    """``format_prefix`` on text; on a conversation, at the start of its last user turn."""
    if isinstance(prompt, str):
        return format_prefix(targets, prompt)
    return with_prefix(prompt, lambda text: format_prefix(targets, text)) if targets else prompt


def parse_prompt_prefix(prompt: Prompt, dimensions: Sequence[Dimension]) -> tuple[dict[str, int], Prompt]:
    """``parse_prefix`` on text; on a conversation, on its last user turn: ``({name: level}, prompt
    without the tags)``. Malformed tags raise ``PrefixError``."""
    if isinstance(prompt, str):
        return parse_prefix(prompt, dimensions)
    i = last_user(prompt, "prompt")
    targets, text = parse_prefix(prompt[i][1], dimensions)
    return targets, (*prompt[:i], (prompt[i][0], text), *prompt[i + 1 :]) if targets else prompt


def strip_prompt_prefix(prompt: Prompt, dimensions: Sequence[Dimension]) -> Prompt:
    """The prompt without its tags (text, or a conversation whose last user turn loses them)."""
    return parse_prompt_prefix(prompt, dimensions)[1]


def prompt_cell(value: Any, where: str) -> Prompt:
    """A prompt cell: text as it is, a conversation as :data:`Messages` that must end with a user turn.

    Text is checked by the caller (its messages are the text cells' own); a bad conversation is a
    one-line ``MoslimError`` at ``where``.
    """
    if not is_conversation(value):
        return value
    messages = to_messages(value, where)
    if messages[-1][0] != "user":
        raise MoslimError(f"{where}: the conversation must end with a user turn, not {messages[-1][0]}")
    return messages


def messages_prompt(value: Any, where: str) -> Messages:
    """TRL's ``messages`` row read as a prompt: the conversation up to and including its last user turn
    (a trailing assistant answer is dropped)."""
    messages = to_messages(value, where)
    return messages[: last_user(messages, where) + 1]


def split_messages(value: Any, where: str) -> tuple[Messages, str]:
    """TRL's ``messages`` row read as SFT data: ``(prompt, completion)`` split at the last assistant turn.

    The row must end with that assistant turn, and the turn before it must be a user turn.
    """
    messages = to_messages(value, where)
    if messages[-1][0] != "assistant":
        raise MoslimError(f"{where}: the conversation must end with an assistant turn, not {messages[-1][0]}")
    if len(messages) < 2 or messages[-2][0] != "user":
        before = messages[-2][0] if len(messages) > 1 else "nothing"
        raise MoslimError(f"{where}: the last assistant turn must follow a user turn, not {before}")
    return messages[:-1], messages[-1][1]


def render_plain_prompt(messages: Messages) -> str:
    """The policy's text of a conversation without a chat template: :func:`render_plain`, and, after
    HH-RLHF's layout, an ``Assistant:`` line for the model to answer on (as HH-RLHF's prompts end). A
    single user turn is its content alone, exactly the standard format's prompt."""
    text = render_plain(messages)
    return text if len(messages) == 1 and messages[0][0] == "user" else f"{text}\n\nAssistant:"


def prompt_json(prompt: Prompt) -> str | list[dict[str, str]]:
    """A prompt as JSON writes it: text, or the ``[{"role", "content"}]`` list it was read from."""
    return prompt if isinstance(prompt, str) else as_dicts(prompt)


def prompt_text(prompt: Prompt) -> str:
    """A prompt as one readable text (logs, tables): text, or :func:`render_plain`."""
    return prompt if isinstance(prompt, str) else render_plain(prompt)
