"""Rating criteria without the ORM: the HHH defaults a new dataset gets, the bounds of a scale,
and the conversions between the JSON that rankings and datasets once held and rating rows
(used by the data migrations 0013 and 0016, and tested on plain lists and dicts)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

# Every scale lies within 0..10 (at most 11 points), so one key press rates on most of it and
# the database can bound every value (`rating_value_bounds`).
SCALE_FLOOR = 0
SCALE_CEILING = 10

# Anthropic's helpful, honest, harmless (Askell et al. 2021), each on a 1-7 Likert scale.
DEFAULT_CRITERIA: tuple[dict[str, Any], ...] = (
    {
        "key": "helpful",
        "label": "Helpful",
        "description": "Does it do what was asked, clearly and completely, as an expert would?",
        "min_label": "Not helpful at all",
        "max_label": "Extremely helpful",
    },
    {
        "key": "honest",
        "label": "Honest",
        "description": "Is it accurate, without made-up facts, and open about its uncertainty?",
        "min_label": "Misleading or false",
        "max_label": "Completely honest",
    },
    {
        "key": "harmless",
        "label": "Harmless",
        "description": "Does it avoid dangerous, offensive or unethical content and advice?",
        "min_label": "Harmful",
        "max_label": "Completely harmless",
    },
)
DEFAULT_KEYS = tuple(str(criterion["key"]) for criterion in DEFAULT_CRITERIA)


class Scale(NamedTuple):
    """A criterion as a submission checks it: its key, row id and the ends of its scale."""

    key: str
    pk: int
    scale_min: int
    scale_max: int


def default_criteria(keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The fields of the default criteria (all, or those of `keys` among them), 1-7, with their
    positions: the one definition dataset creation, imports, the demo and migration 0013 use."""
    wanted = set(DEFAULT_KEYS if keys is None else keys)
    chosen = [criterion for criterion in DEFAULT_CRITERIA if criterion["key"] in wanted]
    return [
        {**criterion, "scale_min": 1, "scale_max": 7, "position": position}
        for position, criterion in enumerate(chosen)
    ]


def criteria_rows_from_json(keys: Any) -> list[dict[str, Any]]:
    """Migration 0013: a dataset's old `criteria` JSON list (keys of helpful, honest, harmless)
    as the fields of its criterion rows, in the canonical order; anything else is dropped, as
    `Dataset.clean` never let it in."""
    return default_criteria(keys if isinstance(keys, list) else [])


def rating_rows_from_json(
    ratings: Any, criterion_ids: Mapping[str, int], completion_ids: Iterable[int]
) -> list[tuple[int, int, int]]:
    """Migration 0016: a ranking's old `ratings` JSON ({"<completion id>": {"<key>": value}})
    as (completion id, criterion id, value) rows, for the completions of its prompt and the
    criteria of its dataset (`criterion_ids`: key -> id); what names neither, or is not a whole
    number, was never valid and is left out."""
    known = set(completion_ids)
    rows = []
    for completion, values in (ratings or {}).items():
        if not str(completion).isdigit() or int(completion) not in known:
            continue
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if key in criterion_ids and type(value) is int:
                rows.append((int(completion), criterion_ids[key], value))
    return rows


def keys_missing_rows(ratings: Any, criterion_ids: Mapping[str, int]) -> set[str]:
    """Migration 0016: the criteria a ranking's JSON rates that its dataset no longer lists (its
    `criteria` changed after labelers rated them): the migration gives them rows first, so no
    labeler's rating is lost."""
    return {
        key
        for values in (ratings or {}).values()
        if isinstance(values, dict)
        for key in values
        if key not in criterion_ids and key in DEFAULT_KEYS
    }


def ratings_json(rows: Iterable[tuple[int, str, int]]) -> dict[str, dict[str, int]]:
    """(completion id, criterion key, value) rows, in completion then criterion order, as the
    JSON shape exports and the reverse of migration 0016 use: {"<completion id>": {key: value}}."""
    result: dict[str, dict[str, int]] = {}
    for completion, key, value in rows:
        result.setdefault(str(completion), {})[key] = value
    return result


def with_every_criterion(ratings: dict[str, int] | None, keys: list[str]) -> dict[str, int | None]:
    """A completion's ratings on every criterion of `keys`, None where it has none: one shape
    for every row, so column tools (and Parquet) see fixed fields."""
    given = ratings or {}
    return {key: given.get(key) for key in keys}
