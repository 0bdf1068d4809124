"""Per-criterion reward heads: Bradley-Terry fits on the pairs that labelers' ratings order.

A ranking's ratings give each rated completion a score per criterion of its dataset, on the
criterion's scale (read as its place on the scale, 0 to 1, so scales of 1-5 and 1-7 compare).
For one criterion, every two completions of the same ranking whose ratings differ
are a pair, the higher-rated one chosen; equal ratings are ties and make no pair, as tie groups
make no comparison. A head is then fitted on those pairs exactly as the overall head is on the
comparisons (`fitting.fit_bradley_terry`: same features, same penalty), and evaluated on the
pairs of the same held-out prompts.

Arrays and dicts in and out, no ORM: `rewards.services.heads` reads the ratings from the
database, and `bench/criterion_heads.py` calls the same functions on synthetic ratings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
from scipy import sparse

from labeling.quality import comparison_agreement
from rewards import fitting

# The metrics of a head kept in the run's metrics and the model card: the reliability curve and
# accuracy by margin are left to the overall head, so the card stays small with three heads.
HEAD_METRICS = ("accuracy", "log_loss", "ece", "pairs")


@dataclass
class RatingPairs:
    """One criterion's pairs, by database ids: pair i says completion chosen[i] was rated above
    rejected[i] on the criterion by one labeler, in a ranking of prompt prompts[i]; margins[i]
    is the difference of the two ratings (in the units they were given: share of the scale)."""

    prompts: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray
    margins: np.ndarray


def pairs_from_ratings(
    rankings: Iterable[tuple[int, dict[str, dict[str, float]]]], criteria: list[str]
) -> dict[str, RatingPairs]:
    """The pairs each criterion's ratings order, from (prompt id, {"<completion id>":
    {criterion: rating}}) of each ranking: every two completions whose ratings on the
    criterion differ, higher-rated chosen; ties and completions not rated on it make no pair."""
    columns: dict[str, list[list[Any]]] = {c: [[], [], [], []] for c in criteria}
    for prompt_id, ratings in rankings:
        for criterion in criteria:
            rated = sorted(
                (int(completion), values[criterion])
                for completion, values in ratings.items()
                if isinstance(values, dict) and isinstance(values.get(criterion), int | float)
            )
            prompts, chosen, rejected, margins = columns[criterion]
            for (first, first_rating), (second, second_rating) in combinations(rated, 2):
                if first_rating == second_rating:
                    continue
                higher, lower = (first, second) if first_rating > second_rating else (second, first)
                prompts.append(prompt_id)
                chosen.append(higher)
                rejected.append(lower)
                margins.append(abs(first_rating - second_rating))
    return {
        criterion: RatingPairs(
            prompts=np.array(prompts, dtype=np.int64),
            chosen=np.array(chosen, dtype=np.int64),
            rejected=np.array(rejected, dtype=np.int64),
            margins=np.array(margins, dtype=np.float32),
        )
        for criterion, (prompts, chosen, rejected, margins) in columns.items()
    }


@dataclass
class HeadRows:
    """A criterion's pairs as row numbers of the training data: prompts index `prompt_ids`,
    chosen and rejected index the feature matrix. `left_out` counts the pairs of a completion or
    prompt that no comparison uses (every labeler tied it, say), which have no feature row."""

    prompts: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray
    margins: np.ndarray
    left_out: int


def to_rows(pairs: RatingPairs, completion_ids: np.ndarray, prompt_ids: np.ndarray) -> HeadRows:
    """`pairs` as row numbers into the sorted `completion_ids` and `prompt_ids`."""
    chosen, chosen_known = _positions(completion_ids, pairs.chosen)
    rejected, rejected_known = _positions(completion_ids, pairs.rejected)
    prompts, prompt_known = _positions(prompt_ids, pairs.prompts)
    known = chosen_known & rejected_known & prompt_known
    return HeadRows(
        prompts=prompts[known],
        chosen=chosen[known],
        rejected=rejected[known],
        margins=pairs.margins[known],
        left_out=int(np.count_nonzero(~known)),
    )


def _positions(sorted_ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The index of each value in `sorted_ids` (int32) and whether it is there at all."""
    index = np.searchsorted(sorted_ids, values)
    clipped = np.minimum(index, max(len(sorted_ids) - 1, 0))
    found = (
        (index < len(sorted_ids)) & (sorted_ids[clipped] == values)
        if len(sorted_ids)
        else (np.zeros(len(values), dtype=bool))
    )
    return clipped.astype(np.int32), found


def best_possible_accuracy(
    prompts: np.ndarray, chosen: np.ndarray, rejected: np.ndarray
) -> float | None:
    """The held-out accuracy a perfect scorer would reach on these pairs: where labelers
    conflict on a pair (a votes one way, b the other), no scorer gets more than max(a, b) of its
    a + b votes right. An upper bound (it ignores cycles over three completions)."""
    if len(prompts) == 0:
        return None
    low, high = np.minimum(chosen, rejected), np.maximum(chosen, rejected)
    keys = np.stack([prompts, low, high], axis=1)
    _, pair_of_vote = np.unique(keys, axis=0, return_inverse=True)
    pair_of_vote = pair_of_vote.ravel()
    forward = np.bincount(pair_of_vote, weights=(chosen == low).astype(np.float64))
    votes = np.bincount(pair_of_vote).astype(np.float64)
    return float(np.maximum(forward, votes - forward).sum() / len(prompts))


def fit_head(
    criterion: str,
    rows: HeadRows,
    matrix: sparse.csr_matrix,
    held_out_prompts: np.ndarray,
    fit_config: fitting.FitConfig,
    on_progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit one criterion's head on its pairs of training prompts (those not flagged in
    `held_out_prompts`, a flag per prompt index) and measure it on the held-out ones; returns
    its weights and its metrics (what the card lists). Raises ValueError when no training pair
    is left: a head asked for must have data."""
    held_out = held_out_prompts[rows.prompts]
    train = ~held_out
    if not train.any():
        raise ValueError(
            f"no two completions of a training prompt were rated differently on {criterion!r}"
        )
    weights = fitting.fit_bradley_terry(
        matrix, rows.chosen[train], rows.rejected[train], fit_config, on_progress=on_progress
    )
    scores = fitting.rewards(matrix, weights)

    def metrics_of(mask: np.ndarray) -> dict[str, Any]:
        differences = fitting.reward_differences(scores, rows.chosen[mask], rows.rejected[mask])
        figures = fitting.difference_metrics(differences)
        return {name: figures[name] for name in HEAD_METRICS}

    agreement = comparison_agreement(rows.prompts, rows.chosen, rows.rejected)
    return weights, {
        "criterion": criterion,
        "pairs": {
            "total": len(rows.prompts),
            "train": int(np.count_nonzero(train)),
            "held_out": int(np.count_nonzero(held_out)),
            "left_out": rows.left_out,
        },
        "train": metrics_of(train),
        "held_out": metrics_of(held_out),
        "labeler_agreement": agreement,
        "held_out_best": best_possible_accuracy(
            rows.prompts[held_out], rows.chosen[held_out], rows.rejected[held_out]
        ),
    }
