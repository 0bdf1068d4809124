"""Reliability-weighted training: each comparison weighs as much as its labeler is reliable.

A labeler's reliability is the quality report's (`labeling.report.labeler_reliabilities`: their
agreement with the other labelers on shared prompts, pulled toward the dataset's rate by 20
pseudo-pairs, averaged with their accuracy on gold prompts when they have some). It is computed
here, in the training job, from each dataset's counted rankings up to its newest ranking when the
run starts loading, never read from a stored report, which may be older than the data.

Options (`check_weighting_options`): `weighting` turns reliabilities into weights (WEIGHTINGS),
`min_reliability` drops the labelers below it (weight 0). A labeler with fewer than
`labeling.report.MIN_EVIDENCE` compared plus gold pairs has no estimate worth the name: they get
the median weight of the dataset's labelers who have one (1 when nobody has) and are never
dropped. Adjudicated pairs (a reviewer's order) weigh 1. AI labelers (a run with `labelers` ai
or all) have no reliability here, since the report's figures are the humans': their comparisons
get that same default weight.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from django.core.exceptions import ValidationError
from django.db.models import Max

from labeling.models import Comparison, Dataset, Ranking
from labeling.report import MIN_EVIDENCE
from labeling.services.quality_report import compute_reliabilities

if TYPE_CHECKING:
    from labeling import report

CHUNK_SIZE = 20_000
# How a labeler's reliability r (0..1) becomes the weight of each of their comparisons.
WEIGHTINGS: dict[str, Callable[[float], float]] = {
    "none": lambda r: 1.0,
    "reliability": lambda r: r,
    # 0 for a labeler who agrees with the others no more than chance (0.5 on a pair), 1 for one
    # who always agrees: a random labeler's votes carry no signal, so they get no weight.
    "chance_corrected": lambda r: max(0.0, 2 * r - 1),
}
FORMULAS = {
    "none": "1",
    "reliability": "reliability",
    "chance_corrected": "max(0, 2 * reliability - 1)",
}
RELIABILITY_SOURCE = (
    "computed in the training job from each dataset's counted rankings (and gold orders) up to "
    "its cursor, by labeling.report.labeler_reliabilities, the quality report's labeler-table "
    "formula: mean of (agreement with the others, pulled toward the dataset's agreement rate by "
    "20 pseudo-pairs) and (gold accuracy, pulled toward the labelers' median by 20 pseudo-pairs; "
    "only with gold pairs); not a stored report"
)


def check_weighting_options(data: dict[str, Any]) -> dict[str, Any]:
    """The run's `weighting` and `min_reliability`, checked, with their defaults (none, 0)."""
    weighting = data.get("weighting", "none")
    if weighting not in WEIGHTINGS:
        raise ValidationError(
            {"weighting": f"Use one of {', '.join(WEIGHTINGS)} (or leave it out)."}
        )
    threshold = data.get("min_reliability", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise ValidationError({"min_reliability": "Must be a number from 0 to 1."})
    if not 0 <= threshold <= 1:
        raise ValidationError({"min_reliability": "Must be a number from 0 to 1."})
    return {"weighting": weighting, "min_reliability": float(threshold)}


def is_weighted(config: dict[str, Any]) -> bool:
    """Whether a run's comparisons get weights other than 1 (older runs have no such options)."""
    return config.get("weighting", "none") != "none" or config.get("min_reliability", 0) > 0


@dataclass
class LabelerWeights:
    """Each (dataset id, labeler id)'s weight, 0 for a dropped labeler; `default` per dataset
    for labelers without an estimate; `summary` for the model card."""

    by_labeler: dict[tuple[int, int], float] = field(default_factory=dict)
    default: dict[int, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def of(self, dataset_id: int, labeler_id: int | None) -> float:
        if labeler_id is None:
            return 1.0
        return self.by_labeler.get((dataset_id, labeler_id), self.default.get(dataset_id, 1.0))


@dataclass
class DatasetWeights:
    """One dataset's labelers' weights (0: dropped), and the weight of a labeler it has no
    reliability for."""

    weights: dict[int, float]
    default: float
    dropped: int
    defaulted: int


def weigh_labelers(
    reliabilities: dict[int, report.Reliability], weighting: str, min_reliability: float
) -> DatasetWeights:
    """Weights from one dataset's reliabilities (`labeling.report.labeler_reliabilities`): the
    formula of `weighting`, 0 under `min_reliability`, the default for too little evidence (see
    the module's docstring)."""
    to_weight = WEIGHTINGS[weighting]
    estimated = {pk: found for pk, found in reliabilities.items() if found.evidence >= MIN_EVIDENCE}
    weights = {pk: to_weight(found.reliability) for pk, found in estimated.items()}
    default = statistics.median(weights.values()) if weights else 1.0
    dropped = {pk for pk, found in estimated.items() if found.reliability < min_reliability}
    return DatasetWeights(
        weights={pk: 0.0 if pk in dropped else weights.get(pk, default) for pk in reliabilities},
        default=default,
        dropped=len(dropped),
        defaulted=len(reliabilities) - len(estimated),
    )


def labeler_weights(
    *, datasets: list[Dataset], weighting: str, min_reliability: float
) -> LabelerWeights:
    """Every labeler's weight in each dataset, from reliabilities computed now (module doc)."""
    result = LabelerWeights()
    cursors, dropped, defaulted = {}, 0, 0
    for dataset in datasets:
        cursor = Ranking.objects.filter(dataset=dataset).aggregate(top=Max("pk"))["top"] or 0
        cursors[dataset.slug] = cursor
        reliabilities, _ = compute_reliabilities(dataset=dataset, cursor=cursor)
        found = weigh_labelers(reliabilities, weighting, min_reliability)
        result.default[dataset.pk] = found.default
        result.by_labeler.update(((dataset.pk, pk), w) for pk, w in found.weights.items())
        dropped, defaulted = dropped + found.dropped, defaulted + found.defaulted
    kept = [w for w in result.by_labeler.values() if w > 0]
    result.summary = {
        "weighting": weighting,
        "min_reliability": min_reliability,
        "formula": FORMULAS[weighting],
        "source": RELIABILITY_SOURCE,
        "cursors": cursors,
        "labelers": len(result.by_labeler),
        "dropped": dropped,
        "default_weight": (
            f"median weight of the dataset's labelers with {MIN_EVIDENCE}+ compared and gold "
            "pairs (1 if none); never dropped"
        ),
        "defaulted": defaulted,
        "weights": _distribution(kept),
    }
    return result


def comparison_weights(
    *, comparison_ids: np.ndarray, datasets: list[Dataset], weights: LabelerWeights
) -> np.ndarray:
    """The weight of each comparison of `comparison_ids` (in any order), by its labeler.

    Reads the datasets' comparisons in primary key chunks (8 bytes a comparison for the sort
    order, plus the float64 weights); negative ids, adjudicated pairs, weigh 1."""
    order = np.argsort(comparison_ids, kind="stable")
    sorted_ids = comparison_ids[order]
    result = np.ones(len(comparison_ids))
    rows = Comparison.objects.filter(dataset__in=datasets).order_by("pk")
    last = 0
    while chunk := list(
        rows.filter(pk__gt=last).values_list("pk", "dataset_id", "labeler_id")[:CHUNK_SIZE]
    ):
        last = chunk[-1][0]
        ids = np.fromiter((row[0] for row in chunk), dtype=np.int64, count=len(chunk))
        positions = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        loaded = sorted_ids[positions] == ids
        chunk_weights = np.fromiter(
            (weights.of(dataset_id, labeler_id) for _, dataset_id, labeler_id in chunk),
            dtype=np.float64,
            count=len(chunk),
        )
        result[order[positions[loaded]]] = chunk_weights[loaded]
    return result


def training_summary(summary: dict[str, Any], train_weights: np.ndarray) -> dict[str, Any]:
    """The card's record of the weighting: the labelers' summary plus what the training pairs
    weigh (how many were dropped, their total weight)."""
    return summary | {
        "train_pairs_dropped": int(np.count_nonzero(train_weights == 0)),
        "train_weight_total": float(train_weights.sum()),
    }


def weighted_accuracy(differences: np.ndarray, sample_weight: np.ndarray) -> float | None:
    """Pairwise accuracy (a tie counts half) with each pair counting its weight."""
    total = float(sample_weight.sum())
    if total == 0:
        return None
    right = (differences > 0) + 0.5 * (differences == 0)
    return float(sample_weight @ right) / total


def _distribution(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}
