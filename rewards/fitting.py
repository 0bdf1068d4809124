"""Fitting a Bradley-Terry reward model and measuring it on pairs.

The model: P(a beats b) = sigmoid(r(a) - r(b)) with r(x) = features(x) . w and no intercept (it
would cancel in every difference). `fit_bradley_terry` finds the w minimizing, over the n
training pairs,

    sum_i log(1 + exp(-(r(chosen_i) - r(rejected_i)))) + l2_penalty / 2 * |w|^2,

the maximum a posteriori fit under a Gaussian prior on w that does not depend on n, with scipy's
L-BFGS-B: one exact path for every number of pairs. It minimizes that divided by n,

    L(w) = mean_i log(1 + exp(-d_i)) + lambda / 2 * |w|^2,   lambda = l2_penalty / n,

(same optimum, better scaled for L-BFGS's tolerances). So the penalty's pull fades as pairs
accumulate: a fixed lambda (per pair) tuned on 1,000 pairs gave 0.78 held-out accuracy on 1M
synthetic comparisons where l2_penalty = 1 gave 0.83 (bench/reward_scale.py data).

It works on the matrix X of the distinct completions (each featurized once) and two arrays of
row numbers, never on a matrix of pair differences: with d = (X w)[chosen] - (X w)[rejected]
and g_i = -sigmoid(-d_i) / n,

    grad L(w) = X^T (bincount(chosen, g) - bincount(rejected, g)) + lambda * w,

so memory is the completions' features plus a few numbers per pair, and each iteration costs
two passes over the completions' nonzeros, however many pairs share a completion. The pairs are
walked in blocks of PAIR_BLOCK: besides the pairs' row numbers (int32 from the training data, used
as they are), an iteration holds one float64 per pair, each pair's loss, whose mean is then summed
over the whole array exactly as before blocks (numpy's pairwise summation), and g is added onto
the rows by `np.add.at` in pair order, the very sums `np.bincount` made: the same bits, not an
approximation.

With sample weights s_i (a labeler's reliability, `rewards.services.reliability`), the mean
becomes sum_i s_i log(1 + exp(-d_i)) / S and lambda = l2_penalty / S, S = sum_i s_i: a pair of
weight s counts as s pairs. That path is a function of its own, so the unweighted fit keeps its
bits.

This is the same optimum as a logistic regression without intercept on the differences
x_chosen - x_rejected, all labelled 1, or on randomly sign-flipped differences with labels
sign > 0 (the classic recipe): log(1 + exp(-d)) is the loss of a pair either way round, so the
flips change nothing and are left out. The scikit-learn (and liblinear) equivalent is
`LogisticRegression(C=1 / l2_penalty, fit_intercept=False)` on those differences.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy import optimize, sparse
from scipy.special import expit
from threadpoolctl import threadpool_limits  # installed with (and required by) scikit-learn

logger = logging.getLogger(__name__)

# Options of the liblinear/SGD fit, kept in the configs of earlier runs (a retry reuses them):
# `regularization` was liblinear's C, the inverse of l2_penalty; the others only chose between
# the exact and the out-of-core solver for the same objective, so they are dropped.
RETIRED_OPTIONS = ("regularization", "exact_limit", "epochs", "chunk_size")
# Pairs handled at once by the loss and the metrics: their float64 temporaries are a few times
# 512 KiB, whatever the number of pairs.
PAIR_BLOCK = 1 << 16


@dataclass(frozen=True)
class FitConfig:
    """Options of `fit_bradley_terry`.

    - `l2_penalty`: the weight of |w|^2 / 2 against the pairs' summed loss (1 / C in
      scikit-learn's and liblinear's terms); bigger is smoother. The default, 1, lies within
      the best range found by prompt-grouped cross-validation on real preferences (0.7 to 2, on
      ~900 training pairs) and on synthetic comparisons (1 to 3 at 100k, 0.25 to 8 at 1M).
    - `max_iter`: L-BFGS iterations at most; each costs about one pass over the features.
    - `tol`: stop when an iteration lowers the objective by less than tol * max(1, objective),
      or when no gradient entry is above tol in size (L-BFGS-B's `ftol` and `gtol`).
    """

    l2_penalty: float = 1.0
    max_iter: int = 150
    tol: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("l2_penalty", "tol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            if not 0 < value < math.inf:
                raise ValueError(f"{name} must be above 0")
            object.__setattr__(self, name, float(value))
        if type(self.max_iter) is not int or self.max_iter < 1:
            raise ValueError("max_iter must be a whole number, 1 or more")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitConfig:
        """The options in `data`; those of earlier versions (RETIRED_OPTIONS) are translated."""
        data = {k: v for k, v in data.items() if k not in RETIRED_OPTIONS[1:]}
        if "regularization" in data:
            c = data.pop("regularization")
            if isinstance(c, bool) or not isinstance(c, int | float) or not 0 < c < math.inf:
                raise ValueError("regularization (liblinear's C) must be a number above 0")
            data.setdefault("l2_penalty", 1 / c)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fit options {sorted(unknown)}; use {sorted(known)}")
        return cls(**data)


def loss_and_gradient(
    weights: np.ndarray,
    matrix: sparse.csr_matrix,
    chosen: np.ndarray,
    rejected: np.ndarray,
    penalty: float,
    sample_weight: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """L(w) of the module's docstring (lambda = `penalty`) and its gradient, without a matrix
    of differences; with `sample_weight`, its weighted form (`_weighted_loss_and_gradient`).

    The two products run in the matrix's precision (float32 from `features.featurize`: scipy
    would otherwise copy the whole matrix to float64 on every product); the rest is float64.
    Memory per pair is one float64, the pair's loss (see the module's docstring); the margins and
    per-pair gradients exist a block of pairs at a time.
    """
    chosen, rejected = _row_numbers(chosen), _row_numbers(rejected)
    if sample_weight is not None:
        return _weighted_loss_and_gradient(
            weights, matrix, chosen, rejected, penalty, sample_weight
        )
    scores = np.asarray(matrix @ weights.astype(matrix.dtype), dtype=np.float64)
    losses = np.empty(len(chosen))
    chosen_sums, rejected_sums = np.zeros(matrix.shape[0]), np.zeros(matrix.shape[0])
    for start in range(0, len(chosen), PAIR_BLOCK):
        block = slice(start, start + PAIR_BLOCK)
        margin = reward_differences(scores, chosen[block], rejected[block])
        np.negative(margin, out=margin)
        np.logaddexp(0, margin, out=losses[block])
        per_pair = -expit(margin) / len(chosen)
        np.add.at(chosen_sums, chosen[block], per_pair)
        np.add.at(rejected_sums, rejected[block], per_pair)
    loss = float(losses.mean()) + penalty / 2 * float(weights @ weights)
    per_row = chosen_sums - rejected_sums
    gradient = np.asarray(matrix.T @ per_row.astype(matrix.dtype), dtype=np.float64)
    return loss, gradient + penalty * weights


def _weighted_loss_and_gradient(
    weights: np.ndarray,
    matrix: sparse.csr_matrix,
    chosen: np.ndarray,
    rejected: np.ndarray,
    penalty: float,
    sample_weight: np.ndarray,
) -> tuple[float, np.ndarray]:
    """The weighted L(w): sum_i s_i log(1 + exp(-d_i)) / S + lambda / 2 * |w|^2 with S = sum_i
    s_i, and its gradient (g_i = -s_i sigmoid(-d_i) / S). A pair of weight s counts as s pairs,
    so weights of 1 give L(w) itself; kept apart from the unweighted path, whose bits must not
    change."""
    total = float(sample_weight.sum())
    scores = np.asarray(matrix @ weights.astype(matrix.dtype), dtype=np.float64)
    loss_sum = 0.0
    chosen_sums, rejected_sums = np.zeros(matrix.shape[0]), np.zeros(matrix.shape[0])
    for start in range(0, len(chosen), PAIR_BLOCK):
        block = slice(start, start + PAIR_BLOCK)
        margin = reward_differences(scores, chosen[block], rejected[block])
        np.negative(margin, out=margin)
        block_weight = sample_weight[block]
        loss_sum += float(block_weight @ np.logaddexp(0, margin))
        per_pair = -expit(margin) * block_weight / total
        np.add.at(chosen_sums, chosen[block], per_pair)
        np.add.at(rejected_sums, rejected[block], per_pair)
    loss = loss_sum / total + penalty / 2 * float(weights @ weights)
    per_row = chosen_sums - rejected_sums
    gradient = np.asarray(matrix.T @ per_row.astype(matrix.dtype), dtype=np.float64)
    return loss, gradient + penalty * weights


def check_sample_weight(sample_weight: np.ndarray, pairs: int) -> np.ndarray:
    """`sample_weight` as float64, one finite weight of 0 or more per pair and some above 0."""
    sample_weight = np.asarray(sample_weight, dtype=np.float64)
    if sample_weight.shape != (pairs,):
        raise ValueError("sample_weight must hold one weight per pair")
    if not np.isfinite(sample_weight).all() or (sample_weight < 0).any():
        raise ValueError("sample weights must be finite and 0 or more")
    if not sample_weight.any():
        raise ValueError("every sample weight is 0: no comparison to fit")
    return sample_weight


def fit_bradley_terry(
    features: sparse.csr_matrix,
    chosen: np.ndarray,
    rejected: np.ndarray,
    config: FitConfig,
    on_progress: Callable[[float], None] | None = None,
    sample_weight: np.ndarray | None = None,
) -> np.ndarray:
    """The float64 weights minimizing L(w) (the module's docstring) for the pairs "row chosen[i]
    of `features` beat row rejected[i]", by L-BFGS-B from w = 0.

    `sample_weight` (one per pair, 0 or more) weighs each pair's loss: a pair of weight s
    counts as s pairs, in the loss and in lambda = l2_penalty / (sum of the weights). None is
    the unweighted fit, bit for bit as before weights existed.

    Deterministic: nothing is random, so there is no seed. Rows that no pair uses are dropped
    first when they are the majority (the learning curve's subsets), so a small fit does not pay
    for the whole matrix. `on_progress` gets the share of `max_iter` done after each iteration.

    Row numbers in int32 (the training data's) are used as they are, in place: an int64 copy
    would cost 16 bytes a pair for the whole fit.
    """
    matrix, chosen, rejected, sample_weight = _fit_inputs(features, chosen, rejected, sample_weight)
    # Only the weights of columns that some row uses can move: any other has gradient
    # lambda * w, 0 from w = 0 on. Leaving them out changes nothing but L-BFGS's own work
    # per iteration, which is proportional to the number of weights.
    touched = np.zeros(matrix.shape[1], dtype=bool)
    touched[matrix.indices] = True
    active = np.flatnonzero(touched)
    weights = np.zeros(matrix.shape[1])
    pairs = len(chosen) if sample_weight is None else float(sample_weight.sum())
    per_pair_penalty = config.l2_penalty / pairs  # lambda

    def objective(active_weights: np.ndarray) -> tuple[float, np.ndarray]:
        weights[active] = active_weights
        loss, gradient = loss_and_gradient(
            weights, matrix, chosen, rejected, per_pair_penalty, sample_weight
        )
        return loss, gradient[active]

    result = _minimize(objective, len(active), config, on_progress)
    logger.info(
        "Bradley-Terry fit on %d pairs, %d rows, %d active columns: %d iterations, loss %.6f (%s)",
        len(chosen),
        matrix.shape[0],
        len(active),
        result.nit,
        result.fun,
        result.message,
    )
    if on_progress:
        on_progress(1.0)
    weights[:] = 0.0
    weights[active] = result.x
    return weights


def _fit_inputs(
    features: sparse.csr_matrix,
    chosen: np.ndarray,
    rejected: np.ndarray,
    sample_weight: np.ndarray | None,
) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray, np.ndarray | None]:
    """The fit's inputs checked: row numbers as they are (int32 in place), a float matrix
    without the rows no pair uses (the pairs renumbered), and the sample weights checked."""
    chosen, rejected = _row_numbers(chosen), _row_numbers(rejected)
    if len(chosen) == 0:
        raise ValueError("no comparisons to fit")
    if len(chosen) != len(rejected):
        raise ValueError("chosen and rejected must be as long as each other")
    matrix = sparse.csr_matrix(features)  # the same arrays, not a copy
    if matrix.dtype not in (np.float32, np.float64):
        matrix = matrix.astype(np.float64)
    if sample_weight is not None:
        sample_weight = check_sample_weight(sample_weight, len(chosen))
    matrix, chosen, rejected = _without_unused_rows(matrix, chosen, rejected)
    return matrix, chosen, rejected, sample_weight


def _minimize(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]],
    size: int,
    config: FitConfig,
    on_progress: Callable[[float], None] | None,
) -> optimize.OptimizeResult:
    """L-BFGS-B from 0 over `size` weights, reporting the share of `max_iter` done after each
    iteration to `on_progress`."""
    iterations = 0

    def after_iteration(_: np.ndarray) -> None:
        nonlocal iterations
        iterations += 1
        if on_progress:
            on_progress(iterations / config.max_iter)

    if on_progress:
        on_progress(0.0)
    # L-BFGS's vector operations are too small for threads: BLAS threads make them 2-6x slower
    # on an idle machine and far slower on a busy one (they spin while waiting for each other).
    with threadpool_limits(limits=1, user_api="blas"):
        return optimize.minimize(
            objective,
            np.zeros(size),
            jac=True,
            method="L-BFGS-B",
            callback=after_iteration,
            options={"maxiter": config.max_iter, "ftol": config.tol, "gtol": config.tol},
        )


def _without_unused_rows(
    matrix: sparse.csr_matrix, chosen: np.ndarray, rejected: np.ndarray
) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
    """The matrix without the rows no pair uses, and the pairs renumbered, when those rows are
    the majority; otherwise all three as they are."""
    # A flag per row, not np.unique of the pairs' rows: nothing as long as the pairs.
    is_used = np.zeros(matrix.shape[0], dtype=bool)
    is_used[chosen] = True
    is_used[rejected] = True
    used = np.flatnonzero(is_used)
    if len(used) > matrix.shape[0] // 2:
        return matrix, chosen, rejected
    new_row = np.zeros(len(is_used), dtype=chosen.dtype)
    new_row[used] = np.arange(len(used))
    return matrix[used], new_row[chosen], new_row[rejected]


def _row_numbers(rows: np.ndarray) -> np.ndarray:
    """`rows` as they are if int32 or intp (what indexing takes without a copy), else as intp."""
    rows = np.asarray(rows)
    if rows.dtype in (np.int32, np.intp):
        return rows
    return rows.astype(np.intp)


def reward_differences(scores: np.ndarray, chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """scores[chosen] - scores[rejected] (float64), a block at a time: no temporary as long as
    the pairs beside the result."""
    differences = np.empty(len(chosen))
    for start in range(0, len(chosen), PAIR_BLOCK):
        block = slice(start, start + PAIR_BLOCK)
        np.subtract(scores[chosen[block]], scores[rejected[block]], out=differences[block])
    return differences


def rewards(features: sparse.csr_matrix, weights: np.ndarray) -> np.ndarray:
    """features @ weights, in the matrix's precision (no float64 copy of a float32 matrix)."""
    dtype = features.dtype if features.dtype in (np.float32, np.float64) else np.float64
    return np.asarray(features @ np.asarray(weights, dtype=dtype), dtype=np.float64)


def pairwise_metrics(
    reward_chosen: np.ndarray,
    reward_rejected: np.ndarray,
    margins: np.ndarray | None = None,
    bins: int = 10,
) -> dict[str, Any]:
    """`difference_metrics` of the pairs whose completions' rewards these are."""
    return difference_metrics(
        np.asarray(reward_chosen) - np.asarray(reward_rejected), margins, bins
    )


def difference_metrics(
    differences: np.ndarray, margins: np.ndarray | None = None, bins: int = 10
) -> dict[str, Any]:
    """Accuracy (a tie counts half), log loss, reliability curve and expected calibration error
    (and accuracy by margin if `margins` are given) of pairs, from reward(chosen) -
    reward(rejected) of each (`reward_differences`).

    Calibration: each pair gives two predictions, p = sigmoid(difference) that its labelled
    order holds (observed: 1) and 1 - p for the other order (observed: 0), binned by value.

    Memory, besides `differences`: per pair one float64 (the loss, then p) and four bytes (win,
    tie and the two bins), plus one bin's predictions at a time. Shares of outcomes are counted,
    not averaged over arrays of 0, 1/2 and 1: those sums are exact, so the figures are the same
    to the bit as such means.
    """
    diff = np.asarray(differences)
    if len(diff) == 0:
        return {"accuracy": None, "log_loss": None, "ece": None, "reliability": [], "pairs": 0}
    wins, ties = diff > 0, diff == 0
    accuracy = (np.count_nonzero(wins) + 0.5 * np.count_nonzero(ties)) / len(diff)
    work = np.negative(diff)
    log_loss = float(np.logaddexp(0, work, out=work).mean())
    probability = np.negative(diff, out=work)  # 1 / (1 + exp(-diff)), in place
    np.exp(probability, out=probability)
    probability += 1
    np.divide(1, probability, out=probability)
    curve, ece = _reliability(probability, bins)
    result: dict[str, Any] = {
        "accuracy": float(accuracy),
        "log_loss": log_loss,
        "ece": ece,
        "reliability": curve,
        "pairs": len(diff),
    }
    if margins is not None:
        result["by_margin"] = _accuracy_by_margin(wins, ties, np.asarray(margins))
    return result


def _reliability(probability: np.ndarray, bins: int) -> tuple[list[dict[str, Any]], float]:
    """The reliability curve and expected calibration error of the predictions p (observed:
    1) and 1 - p (observed: 0) for each pair (`difference_metrics`)."""
    edges = np.linspace(0, 1, bins + 1)
    bin_of_p = _bin_numbers(probability, edges, complement=False)
    bin_of_complement = _bin_numbers(probability, edges, complement=True)
    predictions = 2 * len(probability)
    curve, ece = [], 0.0
    for b in range(bins):
        in_p, in_complement = bin_of_p == b, bin_of_complement == b
        observed = int(np.count_nonzero(in_p))  # predictions of the labelled order: outcome 1
        count = observed + int(np.count_nonzero(in_complement))
        if count:
            values = np.concatenate([probability[in_p], 1 - probability[in_complement]])
            mean_p, share = float(values.mean()), observed / count
        else:
            mean_p, share = (edges[b] + edges[b + 1]) / 2, 0.0
        curve.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "predicted": mean_p,
                "observed": share,
                "count": count,
            }
        )
        ece += count / predictions * abs(mean_p - share)
    return curve, float(ece)


def _accuracy_by_margin(
    wins: np.ndarray, ties: np.ndarray, margins: np.ndarray
) -> dict[str, dict[str, Any]]:
    by_margin = {}
    for m in np.unique(margins):
        at = margins == m
        count = int(np.count_nonzero(at))
        right = np.count_nonzero(wins & at) + 0.5 * np.count_nonzero(ties & at)
        by_margin[str(int(m))] = {"accuracy": float(right / count), "count": count}
    return by_margin


def _bin_numbers(probability: np.ndarray, edges: np.ndarray, complement: bool) -> np.ndarray:
    """clip(digitize(v, edges) - 1, 0, bins - 1) of v = `probability` (or 1 - it), a block at a
    time into the smallest integer type that holds the bins (one byte up to 256 bins)."""
    bins = len(edges) - 1
    numbers = np.empty(len(probability), dtype=np.min_scalar_type(bins))
    for start in range(0, len(probability), PAIR_BLOCK):
        values = probability[start : start + PAIR_BLOCK]
        if complement:
            values = 1 - values
        numbers[start : start + PAIR_BLOCK] = np.clip(np.digitize(values, edges) - 1, 0, bins - 1)
    return numbers


def group_split(groups: np.ndarray, test_share: float, seed: int) -> np.ndarray:
    unique = np.unique(groups)
    shuffled = np.random.default_rng(seed).permutation(unique)
    held = (
        set(shuffled[: max(1, round(len(unique) * test_share))].tolist())
        if len(unique) > 1
        else set()
    )
    return np.isin(groups, list(held))
