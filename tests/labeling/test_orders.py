"""Ranking orders: one set of checks and pairings for every door (plain data, no database)."""

from __future__ import annotations

import itertools
import re

import pytest
from django.core.exceptions import ValidationError

from labeling import orders


@pytest.mark.parametrize(
    ("order", "message"),
    [
        ([[1], [2]], "missing [3]"),
        ([[1], [2], [3], [1]], "placed twice"),
        ([[1], [2], [3, 9]], "not in this prompt [9]"),
        ([[1], [], [2, 3]], "non-empty groups"),
        ([1, 2, 3], "non-empty groups"),
        ([[True], [2], [3]], "non-empty groups"),
        ([], "non-empty groups"),
    ],
)
def test_an_order_must_place_every_completion_once(order, message):
    with pytest.raises(ValidationError, match=re.escape(message)) as caught:
        orders.check_order(order, [1, 2, 3])
    assert list(caught.value.message_dict) == ["order"]


def test_a_good_order_with_ties_passes():
    orders.check_order([[3], [1, 2]], [1, 2, 3])


@pytest.mark.parametrize(
    ("order", "message"),
    [
        ([["a"], ["x"]], "x not completions of this prompt; use a, b"),
        ([["a"], ["a"]], "Name every completion exactly once: a, b"),
        ([["a"]], "Name every completion exactly once"),
        ([["a"], [2]], "non-empty tie groups"),
        ("a > b", "non-empty tie groups"),
    ],
)
def test_a_named_order_names_each_completion_once(order, message):
    with pytest.raises(ValidationError, match=re.escape(message)) as caught:
        orders.check_named_order(order, ["a", "b"])
    assert list(caught.value.message_dict) == ["gold_order"]


def test_k_completions_make_k_choose_2_pairs_with_rank_distance_margins():
    assert sorted(orders.comparison_pairs([[3], [1, 2], [4]])) == [
        (1, 4, 1),
        (2, 4, 1),
        (3, 1, 1),
        (3, 2, 1),
        (3, 4, 2),
    ]
    nine = [[n] for n in range(9)]
    assert len(list(orders.comparison_pairs(nine))) == 9 * 8 // 2
    assert list(orders.comparison_pairs([[1, 2]])) == []  # a tie is no comparison


def test_ranks_become_tie_groups_best_first():
    assert orders.from_ranks({10: 2, 11: 1, 12: 2}) == [[11], [10, 12]]


def test_order_text_round_trips_and_refuses_gaps():
    order = [["c2"], ["c1", "c3"]]
    assert orders.as_text(order) == "c2 > c1 = c3"
    assert orders.from_text(" c2 >c1= c3 ") == order
    with pytest.raises(ValueError, match="separated by '>'"):
        orders.from_text("c2 > > c1")


# Every id of up to three characters from these: separators, quotes, backslashes, white space
# (a newline too), a control character and non-ASCII letters.
TRICKY_CHARACTERS = ["c", ">", "=", " ", '"', "'", "\\", "\n", "\x01", "é", "語"]
TRICKY_IDS = [
    "".join(characters)
    for length in range(4)
    for characters in itertools.product(TRICKY_CHARACTERS, repeat=length)
]


def test_order_text_round_trips_every_id():
    for position, name in enumerate(TRICKY_IDS):
        neighbour = TRICKY_IDS[(position * 7 + 1) % len(TRICKY_IDS)]
        for order in ([[name]], [[name], [neighbour]], [[neighbour, name]], [["c1"], [name, "c2"]]):
            assert orders.from_text(orders.as_text(order)) == order, order


def test_order_text_quotes_only_ids_that_need_it():
    assert orders.as_text([["c 1", 'say "hi"'], ["a>b"], ["é"]]) == (
        '"c 1" = "say \\"hi\\"" > "a>b" > é'
    )
    assert orders.from_text('"a = b" > c1=c2') == [["a = b"], ["c1", "c2"]]
    for bad in ['"a', '"a" b > c', "c1 >", '"a" "b"']:
        with pytest.raises(ValueError, match="double quotes"):
            orders.from_text(bad)


def test_unanimous_needs_two_identical_orders():
    assert orders.unanimous([[[1], [2]]]) is None
    assert orders.unanimous([[[1], [2]], [[2], [1]]]) is None
    assert orders.unanimous([[[1], [2]], [[1], [2]]]) == [[1], [2]]


def test_renamed_normalized_and_members():
    assert orders.renamed([[2], [1]], {1: "a", 2: "b"}) == [["b"], ["a"]]
    assert orders.normalized([[3, 1], [2]]) == [[1, 3], [2]]
    assert orders.members([[3], [1, 2]]) == [1, 2, 3]
