"""The consensus of several labelers' orders of one prompt: votes per completion pair and the
consensus order by ranked pairs (Tideman). Plain data in and out, like `labeling.quality`.

Every consensus PrefLab shows or exports (the quality pages, the report's disputed prompts,
`consensus=true` exports) is `ranked_pairs` of the counted labelers' orders.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, TypedDict

from labeling.orders import Order, as_text, pair_relations, renamed


class PairVotes(TypedDict):
    a: int
    b: int
    a_votes: float
    b_votes: float
    voters: int


class Consensus(TypedDict):
    order: Order
    pairs: list[PairVotes]


class ConsensusPair(TypedDict):
    chosen: int
    rejected: int
    vote_share: float
    voters: int


def pair_votes(completion_ids: list[int], orders: list[Order]) -> list[PairVotes]:
    relations = [pair_relations(order) for order in orders]
    pairs: list[PairVotes] = []
    for a, b in combinations(sorted(set(completion_ids)), 2):
        a_votes = b_votes = 0.0
        voters = 0
        for relation in (r[(a, b)] for r in relations if (a, b) in r):
            voters += 1
            a_votes += (1 + relation) / 2
            b_votes += (1 - relation) / 2
        pairs.append({"a": a, "b": b, "a_votes": a_votes, "b_votes": b_votes, "voters": voters})
    return pairs


def _reaches(edges: dict[int, set[int]], start: int, target: int) -> bool:
    """Whether a path of locked edges leads from start to target."""
    seen, stack = {start}, [start]
    while stack:
        node = stack.pop()
        if node == target:
            return True
        for following in edges[node] - seen:
            seen.add(following)
            stack.append(following)
    return False


def ranked_pairs(completion_ids: list[int], orders: list[Order]) -> Consensus:
    """Consensus order of several labelers' orders by ranked pairs (Tideman).

    Votes: for each pair a < b of `completion_ids`, a_votes counts the orders that put a above
    b plus half of those that tie them, b_votes likewise, so a_votes + b_votes = voters = the
    orders that contain both.

    Ranked pairs: the pairs whose winner has strictly more votes are sorted by margin (winner
    votes - loser votes) descending, then winner votes descending, then winner id and loser id
    ascending. In that order each pair is locked (an edge winner -> loser) unless a path of
    locked edges already leads from the loser to the winner (it would close a cycle).

    Order: repeatedly take, among the remaining completions, those with no locked edge from
    another remaining completion (the sources) as the next tie group, best first. So
    completions with equal votes (e.g. 50/50 on a two-completion prompt) share a tie group, and
    so do completions with no locked path between them that become sources together (one that
    nobody ranked joins the first group). Ids in a group are sorted.
    """
    pairs = pair_votes(completion_ids, orders)
    majorities: list[tuple[float, float, int, int]] = []
    for pair in pairs:
        a, b, a_votes, b_votes = pair["a"], pair["b"], pair["a_votes"], pair["b_votes"]
        if a_votes > b_votes:
            majorities.append((a_votes - b_votes, a_votes, a, b))
        elif b_votes > a_votes:
            majorities.append((b_votes - a_votes, b_votes, b, a))
    majorities.sort(key=lambda m: (-m[0], -m[1], m[2], m[3]))
    edges: dict[int, set[int]] = {completion_id: set() for completion_id in completion_ids}
    for _, _, winner, loser in majorities:
        if not _reaches(edges, loser, winner):
            edges[winner].add(loser)
    remaining = set(completion_ids)
    order: Order = []
    while remaining:
        beaten = {loser for winner in remaining for loser in edges[winner]}
        group = sorted(remaining - beaten)
        order.append(group)
        remaining -= set(group)
    return {"order": order, "pairs": pairs}


def consensus_pairs(completion_ids: list[int], orders: list[Order]) -> list[ConsensusPair]:
    """The pairs that the consensus order (`consensus`) puts one above the other and that a
    strict majority of the voters ordered that way too, in that direction.

    vote_share = winner votes / voters. A majority that the order goes against (the weakest
    link of a cycle, which ranked pairs skipped) is left out, so the pairs never form a cycle.
    Pairs are in (a, b) order.
    """
    result = ranked_pairs(completion_ids, orders)
    place = {cid: index for index, group in enumerate(result["order"]) for cid in group}
    pairs: list[ConsensusPair] = []
    for pair in result["pairs"]:
        a, b, a_votes, b_votes = pair["a"], pair["b"], pair["a_votes"], pair["b_votes"]
        if a_votes == b_votes:
            continue
        chosen, rejected, votes = (a, b, a_votes) if a_votes > b_votes else (b, a, b_votes)
        if place[chosen] >= place[rejected]:
            continue
        pairs.append(
            {
                "chosen": chosen,
                "rejected": rejected,
                "vote_share": votes / pair["voters"],
                "voters": pair["voters"],
            }
        )
    return pairs


def named_votes(names: dict[int, str], counted: list[Order]) -> dict[str, Any]:
    """What a prompt's pages show of its votes (`labeling/_votes.html`): the consensus order of
    the `counted` orders as text, each pair's vote split with the completions' `names`, and the
    consensus `order` itself (ids)."""
    result = ranked_pairs(sorted(names), counted)
    return {
        "order": result["order"],
        "consensus": as_text(renamed(result["order"], names)) if counted else "",
        "pairs": [
            pair | {"a_name": names[pair["a"]], "b_name": names[pair["b"]]}
            for pair in result["pairs"]
        ],
    }
