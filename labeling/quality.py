"""Label-quality statistics: pairwise agreement and Krippendorff's alpha.

Plain data in and out (lists, dicts, numpy arrays); reading rankings from the database is the
caller's business. Shapes:

- an `Order` is a list of tie groups of completion ids, best first: `[[3], [1, 2]]` means 3 is
  best and 1 and 2 tie;
- a prompt's rankings are a list of `(labeler_id, order)`;
- a pair relation (`orders.pair_relations`) is +1, -1 or 0 for a completion pair `(a, b)`
  with a < b.

The consensus of several orders is `labeling.consensus`'s.

Bootstraps resample clusters (prompts) with replacement, are seeded and deterministic, and give
percentile intervals.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, combinations
from math import sqrt
from statistics import NormalDist
from typing import Any, Literal, TypeAlias, TypedDict

import numpy as np

from labeling.orders import Order, pair_relations

Rankings: TypeAlias = list[tuple[int, Order]]
Metric: TypeAlias = Literal["nominal", "ordinal", "interval"]

METRICS: tuple[Metric, ...] = ("nominal", "ordinal", "interval")
# Bootstrap draws per batch: a batch holds a few int64/float64 arrays of this many entries.
DRAWS_PER_BATCH = 2**22
# Largest clusters x values x values matrix `alpha` accepts (about 400 MB of float64).
MAX_COINCIDENCE_CELLS = 50_000_000


class AlphaResult(TypedDict):
    alpha: float | None
    low: float | None
    high: float | None
    units: int
    values: int


class RatioResult(TypedDict):
    rate: float | None
    low: float | None
    high: float | None
    count: int


# Pairwise agreement ---------------------------------------------------------------------------


def pair_score(x: int, y: int) -> float:
    """Agreement of two relations on one completion pair, ties counted as half.

    1.0 if equal (both a>b, both a<b or both tied), 0.0 if strictly opposite, 0.5 if exactly one
    of them is a tie.
    """
    if x == y:
        return 1.0
    if x == 0 or y == 0:
        return 0.5
    return 0.0


def _relations_agreement(
    x: dict[tuple[int, int], int], y: dict[tuple[int, int], int]
) -> tuple[float, int]:
    """(sum of pair_score, count) over the completion pairs present in both."""
    common = x.keys() & y.keys()
    return sum(pair_score(x[pair], y[pair]) for pair in common), len(common)


def prompt_agreement(rankings: Rankings) -> tuple[float, int]:
    """(sum, count) of pair_score over one prompt's rankings.

    Sums over every two labelers who ranked the prompt and every completion pair that both
    ordered; the agreement rate is sum / count. Count 0 when fewer than two labelers.
    """
    relations = [pair_relations(order) for _, order in rankings]
    total, count = 0.0, 0
    for x, y in combinations(relations, 2):
        pair_sum, pair_count = _relations_agreement(x, y)
        total += pair_sum
        count += pair_count
    return total, count


def agreement_by_labeler(prompts: Iterable[Rankings]) -> dict[int, tuple[float, int]]:
    """Per labeler, (sum, count) of pair_score against every other labeler on the same prompts.

    Each comparison of two labelers on a prompt (as in `prompt_agreement`) is added to both
    labelers. A labeler who never shared a completion pair with another gets (0.0, 0).
    """
    totals: dict[int, tuple[float, int]] = {}
    for rankings in prompts:
        relations = [(labeler, pair_relations(order)) for labeler, order in rankings]
        for labeler, _ in relations:
            totals.setdefault(labeler, (0.0, 0))
        for (first, x), (second, y) in combinations(relations, 2):
            pair_sum, pair_count = _relations_agreement(x, y)
            for labeler in (first, second):
                old_sum, old_count = totals[labeler]
                totals[labeler] = (old_sum + pair_sum, old_count + pair_count)
    return totals


def gold_agreement(order: Order, gold_order: Order) -> tuple[float, int]:
    """(sum, count) of pair_score between `order` and `gold_order` over pairs in both.

    `gold_order` uses completion ids and tie groups like `order`.
    """
    return _relations_agreement(pair_relations(order), pair_relations(gold_order))


def comparison_agreement(
    prompts: np.ndarray, chosen: np.ndarray, rejected: np.ndarray
) -> dict[str, Any]:
    """Agreement on comparisons: over every two labelers who both preferred one completion of
    the same pair, the share who preferred the same one. The reward model's ceiling, since it
    is scored on comparisons.

    Each comparison is one labeler's vote on an unordered pair {chosen, rejected}; a pair with
    a votes one way and b the other has C(a, 2) + C(b, 2) agreeing labeler pairs out of
    C(a + b, 2). Ties make no comparison, so a pair a labeler tied is left out here, where the
    dashboard's pairwise agreement (`prompt_agreement`) counts it half; without ties the two
    are the same figure. Completions may be given
    by id or by any other number that tells them apart (the training data's int32 row numbers),
    prompts likewise. Array operations only (a Counter of tuples took ~300 bytes a comparison):
    with int32 inputs, a sort order (8 bytes a comparison) and sorted int32 copies (12), then a
    few bytes a comparison and a few numbers per distinct pair.
    """
    if len(prompts) == 0:
        return {"rate": None, "labeler_pairs": 0}
    # Sort the votes by (prompt, lower, higher completion): each run of equal keys is one pair.
    order = np.lexsort((np.maximum(chosen, rejected), np.minimum(chosen, rejected), prompts))
    prompts, chosen, rejected = prompts[order], chosen[order], rejected[order]
    del order
    low, high = np.minimum(chosen, rejected), np.maximum(chosen, rejected)
    lower_won = chosen == low
    del chosen, rejected
    new = prompts[1:] != prompts[:-1]
    new |= low[1:] != low[:-1]
    new |= high[1:] != high[:-1]
    starts = np.flatnonzero(np.concatenate([[True], new]))
    votes = np.diff(np.append(starts, len(prompts)))
    forward = np.add.reduceat(lower_won, starts, dtype=np.int64)
    backward = votes - forward
    agreeing = int((forward * (forward - 1) // 2 + backward * (backward - 1) // 2).sum())
    total = int((votes * (votes - 1) // 2).sum())
    return {"rate": agreeing / total if total else None, "labeler_pairs": total}


def wilson(successes: float, trials: int, confidence: float = 0.95) -> RatioResult:
    """A share of independent trials, successes / trials, with its Wilson score interval
    (Wilson 1927): better than the normal approximation near 0 and 1 and for few trials, and
    never outside 0..1. rate, low and high are None without trials; `count` is `trials`."""
    _check_bootstrap(0, confidence)
    if trials <= 0:
        return {"rate": None, "low": None, "high": None, "count": 0}
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    rate = successes / trials
    spread = z * z / trials
    centre = (rate + spread / 2) / (1 + spread)
    half = z * sqrt(rate * (1 - rate) / trials + spread / (4 * trials)) / (1 + spread)
    # At 0 and at `trials` successes an end is exactly 0 or 1: rounding would leave it off.
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= trials else min(1.0, centre + half)
    return {"rate": rate, "low": low, "high": high, "count": trials}


# Bootstrap ------------------------------------------------------------------------------------


def _check_bootstrap(bootstrap: int, confidence: float) -> None:
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, not {bootstrap}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")


def _resample_counts(clusters: int, bootstrap: int, seed: int) -> Iterator[np.ndarray]:
    """Batches of (replicates, clusters) float arrays: how often each cluster was drawn.

    Each replicate draws `clusters` clusters uniformly with replacement.
    """
    rng = np.random.default_rng(seed)
    batch = max(1, min(bootstrap, DRAWS_PER_BATCH // clusters))
    for start in range(0, bootstrap, batch):
        size = min(batch, bootstrap - start)
        picks = rng.integers(0, clusters, size=(size, clusters))
        picks += np.arange(size)[:, np.newaxis] * clusters
        counts = np.bincount(picks.ravel(), minlength=size * clusters)
        yield counts.reshape(size, clusters).astype(np.float64)


def _interval(replicates: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """Percentile interval of the finite replicates; (None, None) if there are none."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return None, None
    tail = (1 - confidence) / 2
    low, high = np.quantile(finite, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_ratio(
    sums: np.ndarray,
    counts: np.ndarray,
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> RatioResult:
    """A ratio of sums, sum(sums) / sum(counts), with a cluster percentile bootstrap.

    Each row is a cluster (for the pairwise agreement rate: one prompt's (sum, count) from
    `prompt_agreement`). A replicate draws as many rows as there are with replacement and
    recomputes the ratio; replicates whose counts sum to 0 are left out. `count` is
    sum(counts); rate, low and high are None when it is 0, low and high when bootstrap is 0.
    """
    _check_bootstrap(bootstrap, confidence)
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if sums.ndim != 1 or sums.shape != counts.shape:
        raise ValueError("sums and counts must be 1-D arrays of the same length")
    total = float(counts.sum())
    if total == 0:
        return {"rate": None, "low": None, "high": None, "count": 0}
    rate = float(sums.sum()) / total
    replicates = [np.empty(0)]
    for weights in _resample_counts(len(counts), bootstrap, seed):
        numerators = weights @ sums
        denominators = weights @ counts
        ratios = np.full(len(weights), np.nan)
        np.divide(numerators, denominators, out=ratios, where=denominators > 0)
        replicates.append(ratios)
    low, high = _interval(np.concatenate(replicates), confidence)
    return {"rate": rate, "low": low, "high": high, "count": round(total)}


# Krippendorff's alpha -------------------------------------------------------------------------


def _ordinal_delta(n_g: np.ndarray) -> np.ndarray:
    """Krippendorff's ordinal delta for each row of value counts n_g (B, V) -> (B, V, V).

    delta_ck = (sum_{g=c..k} n_g - (n_c + n_k) / 2) ** 2 over the sorted value domain.
    """
    values = n_g.shape[1]
    cumulative = np.concatenate([np.zeros((len(n_g), 1)), np.cumsum(n_g, axis=1)], axis=1)
    index = np.arange(values)
    low = np.minimum(index[:, np.newaxis], index[np.newaxis, :])
    high = np.maximum(index[:, np.newaxis], index[np.newaxis, :])
    between = cumulative[:, high + 1] - cumulative[:, low]
    halves = (n_g[:, :, np.newaxis] + n_g[:, np.newaxis, :]) / 2
    return np.asarray((between - halves) ** 2)


def _alphas(coincidences: np.ndarray, domain: np.ndarray, metric: Metric) -> np.ndarray:
    """Alpha of each coincidence matrix in (B, V, V); nan where D_e is 0 or n < 2."""
    n_c = coincidences.sum(axis=2)
    n = n_c.sum(axis=1)
    if metric == "ordinal":
        delta = _ordinal_delta(n_c)
    elif metric == "interval":
        delta = ((domain[:, np.newaxis] - domain[np.newaxis, :]) ** 2)[np.newaxis]
    else:
        delta = (1.0 - np.eye(len(domain)))[np.newaxis]
    observed = (coincidences * delta).sum(axis=(1, 2))  # n * D_o
    expected = np.einsum("bc,bk,bck->b", n_c, n_c, delta)  # n * (n - 1) * D_e
    result = np.full(len(coincidences), np.nan)
    defined = (expected > 0) & (n >= 2)
    result[defined] = 1 - (n[defined] - 1) * observed[defined] / expected[defined]
    return result


def _cluster_coincidences(
    units: Sequence[Sequence[float]], clusters: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Per-cluster coincidence matrices of the pairable units.

    Returns (matrices of shape (K, V * V), sorted value domain (V,), pairable units, pairable
    values); K is the number of clusters with a pairable unit.
    """
    lengths = np.fromiter((len(unit) for unit in units), dtype=np.int64, count=len(units))
    pairable = np.flatnonzero(lengths >= 2)
    lengths = lengths[pairable]
    flat = np.fromiter(
        chain.from_iterable(unit for unit in units if len(unit) >= 2),
        dtype=np.float64,
        count=int(lengths.sum()),
    )
    if flat.size == 0:
        return np.zeros((0, 0)), np.zeros(0), 0, 0
    domain, value_index = np.unique(flat, return_inverse=True)
    _, cluster_index = np.unique(np.asarray(clusters)[pairable], return_inverse=True)
    n_clusters, n_values = int(cluster_index.max()) + 1, len(domain)
    cells = n_clusters * n_values * n_values
    if cells > MAX_COINCIDENCE_CELLS:
        raise ValueError(
            f"{n_clusters} clusters x {n_values}^2 values is too large: alpha is meant for "
            "small value domains (ratings, ranks)"
        )
    starts = np.cumsum(lengths) - lengths
    matrices = np.zeros(cells)
    for m in np.unique(lengths):
        rows = np.flatnonzero(lengths == m)
        values = value_index[starts[rows, np.newaxis] + np.arange(m)]  # (units, m)
        first, second = np.nonzero(~np.eye(m, dtype=bool))  # every ordered pair of coders
        cell = (cluster_index[rows, np.newaxis] * n_values + values[:, first]) * n_values
        cell += values[:, second]
        matrices += np.bincount(cell.ravel(), minlength=cells) / (m - 1)
    return matrices.reshape(n_clusters, n_values**2), domain, len(pairable), int(lengths.sum())


def alpha(
    units: Sequence[Sequence[float]],
    metric: Metric,
    clusters: Sequence[int] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> AlphaResult:
    """Krippendorff's alpha with a cluster percentile bootstrap.

    `units[i]` holds the values the coders gave unit i (missing values left out); only
    pairable units (two values or more) count. Coincidence-matrix formulation (Krippendorff
    2011, "Computing Krippendorff's alpha-reliability"): over the sorted domain of pairable
    values, o_ck = sum over units of (number of ordered c-k value pairs from different coders)
    / (m_u - 1); n_c = sum_k o_ck; n = sum_c n_c; D_o = sum o_ck delta_ck / n;
    D_e = sum n_c n_k delta_ck / (n (n - 1)); alpha = 1 - D_o / D_e, None when D_e is 0 or
    fewer than two values are pairable. delta_ck is 0/1 (nominal), (c - k)^2 (interval) or
    (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2 (ordinal).

    Bootstrap: `clusters[i]` is unit i's cluster (all units of one prompt; default each unit
    its own). Each replicate draws as many clusters as there are (with pairable units) with
    replacement, sums their coincidence matrices and recomputes alpha on the full data's value
    domain, the ordinal delta from the replicate's own n_g. Replicates with D_e = 0 are left
    out; low and high are the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles (None
    when bootstrap is 0). `units` and `values` count the pairable units and values.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
    _check_bootstrap(bootstrap, confidence)
    if clusters is None:
        clusters = range(len(units))
    elif len(clusters) != len(units):
        raise ValueError(f"{len(clusters)} cluster ids for {len(units)} units")
    matrices, domain, n_units, n_values = _cluster_coincidences(units, clusters)
    undefined: AlphaResult = {
        "alpha": None,
        "low": None,
        "high": None,
        "units": n_units,
        "values": n_values,
    }
    if n_values < 2:
        return undefined
    shape = (len(domain), len(domain))
    point = _alphas(matrices.sum(axis=0).reshape(1, *shape), domain, metric)[0]
    if np.isnan(point):
        return undefined
    replicates = [np.empty(0)]
    for weights in _resample_counts(len(matrices), bootstrap, seed):
        resampled = (weights @ matrices).reshape(len(weights), *shape)
        replicates.append(_alphas(resampled, domain, metric))
    low, high = _interval(np.concatenate(replicates), confidence)
    return {"alpha": float(point), "low": low, "high": high, "units": n_units, "values": n_values}


def _fractional_ranks(order: Order) -> dict[int, float]:
    """1-based rank of each completion; a tie group shares the mean of the positions it takes.

    [[3], [1, 2]] -> {3: 1.0, 1: 2.5, 2: 2.5}.
    """
    ranks: dict[int, float] = {}
    taken = 0
    for group in order:
        for completion_id in group:
            ranks[completion_id] = taken + (len(group) + 1) / 2
        taken += len(group)
    return ranks


def ranking_units(
    prompts: Iterable[tuple[list[int], Rankings]],
) -> tuple[list[list[float]], list[int]]:
    """Rankings as alpha units: one unit per (prompt, completion), cluster id = prompt index.

    Each prompt is (its completion ids, its rankings). A unit holds, for each labeler whose
    order contains the completion, the completion's fractional rank in that order.
    """
    units: list[list[float]] = []
    clusters: list[int] = []
    for index, (completion_ids, rankings) in enumerate(prompts):
        ranks = [_fractional_ranks(order) for _, order in rankings]
        for completion_id in completion_ids:
            units.append([r[completion_id] for r in ranks if completion_id in r])
            clusters.append(index)
    return units, clusters
