"""Ranking orders: their shape, their checks, and the pairs they make.

An order lists a prompt's completions best first in tie groups: `[[3], [1, 2]]` says 3 is best
and 1 and 2 tie. Labelers' rankings name completions by database id (`Order`); gold orders and
files name them by external id (`NamedOrder`). Everything here is plain data in and out; every
door (the ranking page, the API, gold prompts, imports, statistics, exports) checks and pairs
orders through these functions, so an order means the same everywhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Hashable, Iterator, Mapping
from itertools import combinations
from typing import Any, TypeAlias, TypeVar

from django.core.exceptions import ValidationError

Order: TypeAlias = list[list[int]]
NamedOrder: TypeAlias = list[list[str]]

Item = TypeVar("Item", bound=Hashable)


def is_order_of(order: Any, item_type: type) -> bool:
    """Whether `order` has the shape of an order: a non-empty list of non-empty lists whose
    members are all exactly of `item_type` (so True is no int and 1 is no str)."""
    return (
        isinstance(order, list)
        and bool(order)
        and all(
            isinstance(group, list) and group and all(type(item) is item_type for item in group)
            for group in order
        )
    )


def placement_problems(order: list[list[Item]], expected: Collection[Item]) -> list[str]:
    """What is wrong with where `order` puts the `expected` items: those it leaves out, those it
    names that are not expected, and items placed twice. Empty when it is exactly right."""
    placed = [item for group in order for item in group]
    problems = []
    missing = set(expected) - set(placed)
    unknown = set(placed) - set(expected)
    if missing:
        problems.append(f"missing {first_few(missing)}")
    if unknown:
        problems.append(f"not in this prompt {first_few(unknown)}")
    if len(placed) != len(set(placed)):
        problems.append("a completion is placed twice")
    return problems


def first_few(items: Collection[Any], shown: int = 5) -> str:
    """`[1, 2, 3]`, or the first `shown` and how many more: an error never echoes a whole
    request back."""
    ordered = sorted(items)
    if len(ordered) <= shown:
        return str(ordered)
    return f"{str(ordered[:shown])[:-1]}, ... and {len(ordered) - shown} more]"


def check_order(order: Any, completion_ids: Collection[int]) -> None:
    """Refuse, naming the field `order`, anything but tie groups placing each of
    `completion_ids` exactly once."""
    if not is_order_of(order, int):
        raise ValidationError({"order": "Must be a list of non-empty groups of completion ids."})
    problems = placement_problems(order, completion_ids)
    if problems:
        raise ValidationError(
            {"order": "Rank every completion exactly once: " + ", ".join(problems) + "."}
        )


def check_named_order(order: Any, external_ids: list[str], *, field: str = "gold_order") -> None:
    """Refuse, naming `field`, anything but tie groups naming each of `external_ids` once."""
    if not is_order_of(order, str):
        raise ValidationError(
            {field: 'Give the order as non-empty tie groups: [["c2"], ["c1", "c3"]].'}
        )
    named = [name for group in order for name in group]
    unknown = sorted(set(named) - set(external_ids))
    if unknown:
        raise ValidationError(
            {
                field: f"{', '.join(unknown)} not completions of this prompt; "
                f"use {', '.join(external_ids)}."
            }
        )
    if placement_problems(order, external_ids):
        raise ValidationError(
            {field: f"Name every completion exactly once: {', '.join(external_ids)}."}
        )


def normalized(order: list[list[Item]]) -> list[list[Item]]:
    """Members of each tie group sorted, so one judgment has one representation."""
    return [sorted(group) for group in order]  # type: ignore[type-var]


def from_ranks(ranks: Mapping[Item, int]) -> list[list[Item]]:
    """{completion: rank number} -> order; completions with the same number tie."""
    return [
        [item for item, rank in ranks.items() if rank == value]
        for value in sorted(set(ranks.values()))
    ]


def members(order: list[list[Item]]) -> list[Item]:
    """The completions an order places, sorted."""
    return sorted(item for group in order for item in group)  # type: ignore[type-var]


def renamed(order: list[list[Any]], names: Mapping[Any, Item]) -> list[list[Item]]:
    """The order with each completion replaced by its name in `names` (ids <-> external ids)."""
    return [[names[item] for item in group] for group in order]


def comparison_pairs(order: Order) -> Iterator[tuple[int, int, int]]:
    """(chosen, rejected, margin) for every pair in different tie groups; margin = rank distance."""
    for better_rank, better in enumerate(order):
        for worse_rank in range(better_rank + 1, len(order)):
            for chosen in better:
                for rejected in order[worse_rank]:
                    yield chosen, rejected, worse_rank - better_rank


def pair_relations(order: Order) -> dict[tuple[int, int], int]:
    """The relation of every two completion ids a < b in `order`.

    +1 if a is in an earlier (better) tie group than b, -1 if in a later one, 0 if in the same.
    Raises ValueError if an id appears twice.
    """
    group_of: dict[int, int] = {}
    for position, group in enumerate(order):
        for completion_id in group:
            if completion_id in group_of:
                raise ValueError(f"completion {completion_id} appears twice in {order}")
            group_of[completion_id] = position
    return {
        (a, b): (group_of[a] < group_of[b]) - (group_of[a] > group_of[b])
        for a, b in combinations(sorted(group_of), 2)
    }


def unanimous(orders: list[Order]) -> Order | None:
    """The order every one of `orders` is, if there are two or more and all are the same."""
    if len(orders) < 2 or any(order != orders[0] for order in orders):
        return None
    return orders[0]


# In an order's text, an id holding a separator, a quote, a backslash, white space or a control
# character (or an empty one) is written as a JSON string, so every id an import accepts can be
# typed back.
NEEDS_QUOTES = re.compile(r'[>="\\\s\x00-\x1f\x7f]|^$')
HOW_TO_WRITE = (
    "Write completion ids separated by '>' (better) or '=' (tie), e.g. 'c2 > c1 = c3'; "
    'put an id holding one of these, a space or a quote in double quotes: "a > b" > c1 '
    '(\\" for a quote inside, \\\\ for a backslash).'
)
DECODER = json.JSONDecoder()


def name_as_text(name: str) -> str:
    """An id as an order's text writes it: as it is, or quoted when it needs to be."""
    return json.dumps(name, ensure_ascii=False) if NEEDS_QUOTES.search(name) else name


def as_text(order: NamedOrder) -> str:
    """[["c2"], ["c1", "c3"]] -> 'c2 > c1 = c3': best first, `=` ties; ids that hold a
    separator, a quote, a backslash or white space are quoted (`name_as_text`)."""
    return " > ".join(" = ".join(name_as_text(name) for name in group) for group in order)


def from_text(text: str) -> NamedOrder:
    """The inverse of `as_text`; a ValueError says how to write an order.

    An unquoted id runs to the next separator, less the white space around it; a quoted one is
    a JSON string."""
    groups: NamedOrder = [[]]
    position = 0
    while True:
        position = after_space(text, position)
        if text.startswith('"', position):
            try:
                name, position = DECODER.raw_decode(text, position)
            except json.JSONDecodeError:
                raise ValueError(HOW_TO_WRITE) from None
        else:
            end = position
            while end < len(text) and text[end] not in ">=":
                end += 1
            name, position = text[position:end].strip(), end
            if not name:
                raise ValueError(HOW_TO_WRITE)
        groups[-1].append(name)
        position = after_space(text, position)
        if position == len(text):
            return groups
        if text[position] == ">":
            groups.append([])
        elif text[position] != "=":
            raise ValueError(HOW_TO_WRITE)
        position += 1


def after_space(text: str, position: int) -> int:
    """The position of the first character at or after `position` that is not white space."""
    return len(text) - len(text[position:].lstrip())
