"""Dataset schemas: converters from public preference datasets to the framework's rows.

A source with ``schema: <name>`` (see ``DataSource``) is read by that schema's converter instead of the
generic column detection of ``sources.read_rows``. A new schema is a converter decorated with
``register`` (:mod:`moslim_pl.data.schema_registry`) in this module. A converter turns the dataset's own columns into
``PreferenceRow``s: pointwise rows (one response, a label per head) and pairwise rows (chosen, rejected,
the head that judges the pair).

| schema | dataset | rows | dimensions (levels) |
|---|---|---|---|
| ``helpsteer``, ``helpsteer2`` | ``nvidia/HelpSteer``, ``nvidia/HelpSteer2`` | pointwise | helpfulness, correctness, coherence, complexity, verbosity (0-4) |
| ``ultrafeedback`` | ``openbmb/UltraFeedback`` | pointwise, one per completion | helpfulness, honesty, instruction_following, truthfulness (1-5) |
| ``pku_saferlhf`` | ``PKU-Alignment/PKU-SafeRLHF`` | pointwise + pairwise | harmlessness (0-3); pairs on helpfulness and harmlessness |
| ``hh_rlhf`` | ``Anthropic/hh-rlhf`` | pairwise | the judged ``dimension`` (option; 0-4, trained by its pairs) |

Each schema declares the dimensions its rows label; the reward model's heads are the union over its
sources unless the config declares ``dimensions``. Converters name labels by the schema's dimension
names and a head takes the label named by its ``source_column`` (its ``column``, else its name), so a
declared ``{name: harmless, column: harmlessness}`` renames a head. Labels without a head are dropped,
and so are pairs judged on a dimension the reward model has no head for (logged).

Known quirks of the public datasets are skipped and counted (an empty final response, an HH-RLHF pair
whose two transcripts differ before the final turn); anything else that does not fit is a one-line
``DataError`` naming the source, the row and the column.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets

from moslim_pl.data.rows import PreferenceRow, parse_label
from moslim_pl.data.schema_registry import (
    SCHEMAS,
    Heads,
    Schema,
    convert_source,
    get_schema,
    read_columns,
    register,
)
from moslim_pl.schema import Dimension

# The registry lives in moslim_pl.data.schema_registry; importing this module registers the schemas below.
__all__ = ["SCHEMAS", "Heads", "Schema", "convert_source", "get_schema", "register"]


# ---------------------------------------------------------------------------------------------- HelpSteer
HELPSTEER_DIMENSIONS = tuple(
    Dimension(name, 0, 4) for name in ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
)


@register("helpsteer", "helpsteer2", dimensions=HELPSTEER_DIMENSIONS)
def helpsteer(dataset: datasets.Dataset, heads: Heads) -> list[PreferenceRow]:
    """``nvidia/HelpSteer`` and ``nvidia/HelpSteer2``.

    Input columns: ``prompt``, ``response`` and the integer attributes ``helpfulness``,
    ``correctness``, ``coherence``, ``complexity``, ``verbosity`` (0-4).
    Output: one pointwise row per input row, labelled on the five dimensions at the given levels.
    """
    names = [dim.name for dim in HELPSTEER_DIMENSIONS]
    table = read_columns(dataset, heads, "helpsteer", ["prompt", "response", *names])
    rows = []
    for i, (prompt, response) in enumerate(zip(table["prompt"], table["response"], strict=True)):
        prompt = heads.text(prompt, i, "prompt")
        text = heads.response(response, i, "response")
        if text is not None:
            labels = heads.labels(i, {name: (table[name][i], name) for name in names})
            rows.append(PreferenceRow(prompt, (text,), (labels,), None))
    return rows


# ------------------------------------------------------------------------------------------ UltraFeedback
ULTRAFEEDBACK_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")


@register("ultrafeedback", dimensions=tuple(Dimension(name, 1, 5) for name in ULTRAFEEDBACK_ASPECTS))
def ultrafeedback(dataset: datasets.Dataset, heads: Heads) -> list[PreferenceRow]:
    """``openbmb/UltraFeedback`` with its fine-grained ratings.

    Input columns: ``instruction`` (the prompt) and ``completions``, a list of
    ``{"response": str, "annotations": {aspect: {"Rating": "1".."5" or "N/A", ...}}}`` for the aspects
    ``helpfulness``, ``honesty``, ``instruction_following``, ``truthfulness``.
    Output: one pointwise row per completion, labelled on the four aspects (levels 1-5); a rating of
    ``"N/A"`` or a missing aspect is a missing label, ignored by that head.
    """
    table = read_columns(dataset, heads, "ultrafeedback", ["instruction", "completions"])
    rows = []
    for i, (instruction, completions) in enumerate(
        zip(table["instruction"], table["completions"], strict=True)
    ):
        prompt = heads.text(instruction, i, "instruction")
        if not isinstance(completions, list):
            raise heads.error(i, "completions", f"not a list ({type(completions).__name__})")
        for j, completion in enumerate(completions):
            column = f"completions[{j}]"
            if not isinstance(completion, dict):
                raise heads.error(i, column, f"not a mapping ({type(completion).__name__})")
            text = heads.response(completion.get("response"), i, f"{column}.response")
            if text is None:
                continue
            annotations = completion.get("annotations") or {}
            if not isinstance(annotations, dict):
                raise heads.error(i, f"{column}.annotations", "not a mapping")
            values = {}
            for aspect in ULTRAFEEDBACK_ASPECTS:
                annotation = annotations.get(aspect) or {}
                where = f"{column}.annotations.{aspect}"
                if not isinstance(annotation, dict):
                    raise heads.error(i, where, "not a mapping")
                values[aspect] = (annotation.get("Rating"), f"{where}.Rating")
            rows.append(PreferenceRow(prompt, (text,), (heads.labels(i, values),), None))
    return rows


# ----------------------------------------------------------------------------------------- PKU-SafeRLHF
PKU_COLUMNS = (
    "prompt",
    "response_0",
    "response_1",
    "is_response_0_safe",
    "is_response_1_safe",
    "response_0_severity_level",
    "response_1_severity_level",
    "better_response_id",
    "safer_response_id",
)
SAFE_LEVEL = 3
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


def harmlessness_level(safe: bool, severity: int | None) -> int:
    """PKU-SafeRLHF's safety flag and severity (0-3) as a harmlessness level (0-3, higher is safer).

    A safe response is level 3 whatever its severity; an unsafe one is ``3 - severity``, with a
    severity of 0 or none read as 1 (an unsafe response never reaches the safe level): minor harm is
    level 2, moderate 1, severe 0.
    """
    if safe:
        return SAFE_LEVEL
    return SAFE_LEVEL - max(severity or 0, 1)


def _flag(value: Any, heads: Heads, row: int, column: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise heads.error(row, column, f"safety flag {value!r} is not true or false")


def _integer(value: Any, allowed: range, heads: Heads, row: int, column: str) -> int | None:
    try:
        number = parse_label(value)
    except ValueError as err:
        raise heads.error(row, column, str(err)) from None
    if number is not None and number not in allowed:
        raise heads.error(row, column, f"{number} outside {allowed.start}..{allowed.stop - 1}")
    return number


@register("pku_saferlhf", dimensions=(Dimension("harmlessness", 0, SAFE_LEVEL),))
def pku_saferlhf(dataset: datasets.Dataset, heads: Heads) -> list[PreferenceRow]:
    """``PKU-Alignment/PKU-SafeRLHF``.

    Input columns: ``prompt``, ``response_0``, ``response_1``, ``is_response_{0,1}_safe`` (bool),
    ``response_{0,1}_severity_level`` (0-3), ``better_response_id`` and ``safer_response_id`` (0 or 1).
    Output per input row: two pointwise rows, one per response, labelled on ``harmlessness``
    (:func:`harmlessness_level`: safe 3, unsafe minor 2, moderate 1, severe 0; no flag: missing), then
    a pair judged on ``helpfulness`` (chosen: the better response) and one judged on ``harmlessness``
    (chosen: the safer response). A missing response id gives no pair; a pair whose dimension has no
    head is dropped (the helpfulness pairs need a helpfulness head from another source).
    """
    table = read_columns(dataset, heads, "pku_saferlhf", PKU_COLUMNS)
    rows = []
    for i, prompt in enumerate(table["prompt"]):
        prompt = heads.text(prompt, i, "prompt")
        responses = [heads.response(table[f"response_{r}"][i], i, f"response_{r}") for r in (0, 1)]
        for r, text in enumerate(responses):
            safe_column, severity_column = f"is_response_{r}_safe", f"response_{r}_severity_level"
            safe = _flag(table[safe_column][i], heads, i, safe_column)
            severity = _integer(table[severity_column][i], range(4), heads, i, severity_column)
            if text is None:
                continue
            level = None if safe is None else harmlessness_level(safe, severity)
            labels = heads.labels(i, {"harmlessness": (level, safe_column)})
            rows.append(PreferenceRow(prompt, (text,), (labels,), None))
        for column, dimension in (
            ("better_response_id", "helpfulness"),
            ("safer_response_id", "harmlessness"),
        ):
            best = _integer(table[column][i], range(2), heads, i, column)
            if best is None or None in responses:
                continue
            pair = heads.pair(prompt, responses[best], responses[1 - best], dimension)
            if pair is not None:
                rows.append(pair)
    return rows


# -------------------------------------------------------------------------------------------- HH-RLHF
ASSISTANT = "\n\nAssistant:"


def split_transcript(transcript: str) -> tuple[str, str] | None:
    """``(prompt, response)`` of an HH-RLHF transcript, split at its final ``"\\n\\nAssistant:"``.

    The prompt is everything before that turn (earlier turns included, e.g. ``"Human: Hi"``), the
    response the final turn's text; both are stripped. ``None`` when there is no assistant turn.
    """
    cut = transcript.rfind(ASSISTANT)
    if cut < 0:
        return None
    return transcript[:cut].strip(), transcript[cut + len(ASSISTANT) :].strip()


PAIR_ONLY_LEVELS = (0, 4)
"""Levels of a head that only pairs train (as HelpSteer's 0-4, so that the two mix into one head)."""


def _hh_dimensions(options: Mapping[str, Any]) -> tuple[Dimension, ...]:
    dimension = options.get("dimension", "helpfulness")
    return () if dimension is None else (Dimension(str(dimension), *PAIR_ONLY_LEVELS),)


@register("hh_rlhf", declare=_hh_dimensions)
def hh_rlhf(
    dataset: datasets.Dataset, heads: Heads, *, dimension: str | None = "helpfulness"
) -> list[PreferenceRow]:
    """``Anthropic/hh-rlhf`` (any of its subsets).

    Input columns: ``chosen`` and ``rejected``, two transcripts
    ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` that share everything before the final assistant turn.
    Output: one pairwise row per input row: the shared prompt (see :func:`split_transcript`), the
    chosen and the rejected final responses, judged on ``dimension`` (option; ``null``: every head).
    The schema declares that dimension with levels 0-4 (``PAIR_ONLY_LEVELS``), which the pairs train
    through the Bradley-Terry loss on its expected level; ``null`` declares none. Rows whose
    transcripts differ before the final turn, and rows whose two final responses are identical (a
    quirk of the public data), are skipped and counted.
    """
    table = read_columns(dataset, heads, "hh_rlhf", ["chosen", "rejected"])
    rows = []
    for i, (chosen, rejected) in enumerate(zip(table["chosen"], table["rejected"], strict=True)):
        parts = []
        for column, transcript in (("chosen", chosen), ("rejected", rejected)):
            split = split_transcript(heads.text(transcript, i, column))
            if split is None:
                raise heads.error(i, column, f"no {ASSISTANT.strip()!r} turn in the transcript")
            parts.append(split)
        (prompt, good), (other_prompt, bad) = parts
        if prompt != other_prompt:
            heads.skipped["chosen and rejected differ before the final assistant turn"] += 1
        elif not prompt:
            raise heads.error(i, "chosen", "empty prompt before the final assistant turn")
        elif good and bad and good == bad:
            heads.skipped["chosen and rejected responses are identical"] += 1
        elif good and bad:
            pair = heads.pair(prompt, good, bad, dimension)
            if pair is not None:
                rows.append(pair)
        else:
            heads.skipped["empty response"] += 1
    return rows
