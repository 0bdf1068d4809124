"""One prompt's figures for the review queue, and how much it needs a reviewer. Plain data in and
out, like `labeling.quality`; `labeling.services.prompt_stats` reads the rankings and stores them.

Need (`need_score`) adds four signs that the labels may be wrong, each 0 to 1, weighted by
NEED_WEIGHTS:

- disagreement: 1 - the prompt's pairwise agreement (two or more labels);
- thin margin: 1 - the smallest vote margin over a completion pair, where a pair's margin is
  (winner votes - loser votes) / voters (two or more labels): a 2-1 split is 1/3, a 1-1 split 0;
- safety: 1 when any labeler gave a safety flag (SAFETY_FLAGS) to any completion;
- model contradiction: how confidently the active reward model goes against a pair the consensus
  orders, (p - 0.5) * 2 for its largest probability p of the consensus loser beating the winner,
  0 when p <= 0.5 (the model agrees, or barely disagrees).

A prompt with need 0 (one label and nothing flagged, or unanimous labelers whom the model does
not contradict) is not in the queue.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TypedDict

from labeling import consensus
from labeling.models import Flag
from labeling.orders import Order

SAFETY_FLAGS = (
    Flag.HARMFUL_ADVICE,
    Flag.SEXUAL_CONTENT,
    Flag.VIOLENT_CONTENT,
    Flag.DENIGRATES_GROUP,
)
NEED_WEIGHTS = {"disagreement": 1.0, "thin_margin": 0.5, "safety": 1.0, "contradiction": 1.0}


class Figures(TypedDict):
    labels: int
    agreement: float | None
    consensus: Order
    min_margin: float | None
    flags: dict[str, int]
    safety_flags: int


def prompt_figures(
    completion_ids: list[int], orders: list[Order], flags: Iterable[Mapping[str, list[str]]]
) -> Figures:
    """The figures of one prompt from its counted rankings' orders and flags."""
    counts: Counter[str] = Counter(
        name for ranking_flags in flags for names in ranking_flags.values() for name in names
    )
    figures: Figures = {
        "labels": len(orders),
        "agreement": None,
        "consensus": [],
        "min_margin": None,
        "flags": dict(sorted(counts.items())),
        "safety_flags": sum(counts[flag.value] for flag in SAFETY_FLAGS),
    }
    if not orders:
        return figures
    result = consensus.ranked_pairs(completion_ids, orders)
    figures["consensus"] = result["order"]
    if len(orders) >= 2:
        from labeling import quality  # numpy: the worker's, not every web process's

        total, count = quality.prompt_agreement([(0, order) for order in orders])
        figures["agreement"] = total / count if count else None
        margins = [
            abs(pair["a_votes"] - pair["b_votes"]) / pair["voters"]
            for pair in result["pairs"]
            if pair["voters"] >= 2
        ]
        figures["min_margin"] = min(margins) if margins else None
    return figures


def model_contradiction(consensus_order: Order, scores: Mapping[int, float]) -> float | None:
    """The largest probability, under the reward model's Bradley-Terry reading
    P(a beats b) = sigmoid(r(a) - r(b)), that a completion the consensus puts lower beats one it
    puts higher; None when the consensus separates no scored pair."""
    worst = None
    for better_rank, better in enumerate(consensus_order):
        for worse in consensus_order[better_rank + 1 :]:
            for winner in better:
                for loser in worse:
                    if winner in scores and loser in scores:
                        p = sigmoid(scores[loser] - scores[winner])
                        worst = p if worst is None else max(worst, p)
    return worst


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1 / (1 + math.exp(-x))
    return math.exp(x) / (1 + math.exp(x))


def need_parts(
    *,
    agreement: float | None,
    min_margin: float | None,
    safety_flags: int,
    model_contradiction: float | None,
) -> dict[str, float]:
    """Each sign of need (see the module's docstring), 0 to 1, before weighting."""
    return {
        "disagreement": 1 - agreement if agreement is not None else 0.0,
        "thin_margin": 1 - min_margin if min_margin is not None else 0.0,
        "safety": 1.0 if safety_flags else 0.0,
        "contradiction": max(0.0, 2 * (model_contradiction or 0.0) - 1),
    }


def need_score(
    *,
    agreement: float | None,
    min_margin: float | None,
    safety_flags: int,
    model_contradiction: float | None,
) -> float:
    """The weighted sum of `need_parts`: 0 to 3.5, more is more needed."""
    parts = need_parts(
        agreement=agreement,
        min_margin=min_margin,
        safety_flags=safety_flags,
        model_contradiction=model_contradiction,
    )
    return round(sum(NEED_WEIGHTS[name] * value for name, value in parts.items()), 6)


def reasons(
    *,
    agreement: float | None,
    min_margin: float | None,
    flags: Mapping[str, int],
    model_contradiction: float | None,
    model_version: int | None,
) -> list[str]:
    """Why a prompt is in the queue, in words, strongest signs as need_parts has them."""
    found = []
    if agreement is not None and agreement < 1:
        found.append(f"agreement {agreement:.0%}")
    if min_margin is not None and min_margin < 1:
        found.append(f"thin margin {min_margin:.2f}")
    safety = [
        f"{flag.label.lower()} x{flags[flag.value]}"
        for flag in SAFETY_FLAGS
        if flags.get(flag.value)
    ]
    if safety:
        found.append("flagged: " + ", ".join(safety))
    if model_contradiction is not None and model_contradiction > 0.5:
        found.append(
            f"reward model v{model_version} contradicts it (p = {model_contradiction:.2f})"
        )
    return found
