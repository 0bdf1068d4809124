"""The blocked loss, the counted metrics and int32 row numbers, which keep training's memory per
comparison small, give the very bits of the whole-array formulas they replaced. What they
allocate per pair is measured by bench/training_memory.py."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pytest
from scipy import sparse
from scipy.special import expit

from labeling.quality import comparison_agreement
from rewards import fitting


def whole_array_loss_and_gradient(
    weights: np.ndarray,
    matrix: sparse.csr_matrix,
    chosen: np.ndarray,
    rejected: np.ndarray,
    penalty: float,
) -> tuple[float, np.ndarray]:
    """The formula before blocks: every per-pair quantity as one array, int64 rows."""
    scores = np.asarray(matrix @ weights.astype(matrix.dtype), dtype=np.float64)
    margin = scores[chosen] - scores[rejected]
    loss = float(np.logaddexp(0, -margin).mean()) + penalty / 2 * float(weights @ weights)
    per_pair = -expit(-margin) / len(chosen)
    per_row = np.bincount(chosen, per_pair, minlength=matrix.shape[0])
    per_row -= np.bincount(rejected, per_pair, minlength=matrix.shape[0])
    gradient = np.asarray(matrix.T @ per_row.astype(matrix.dtype), dtype=np.float64)
    return loss, gradient + penalty * weights


def whole_array_metrics(
    diff: np.ndarray, margins: np.ndarray | None = None, bins: int = 10
) -> dict[str, Any]:
    """The metrics before counting: means over arrays of outcomes and of all predictions."""
    correct = (diff > 0) + 0.5 * (diff == 0)
    probability = 1 / (1 + np.exp(-diff))
    log_loss = float(np.mean(np.logaddexp(0, -diff)))
    predicted = np.concatenate([probability, 1 - probability])
    observed = np.concatenate([np.ones_like(diff), np.zeros_like(diff)])
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(predicted, edges) - 1, 0, bins - 1)
    curve, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        mean_p = float(predicted[mask].mean()) if count else (edges[b] + edges[b + 1]) / 2
        share = float(observed[mask].mean()) if count else 0.0
        curve.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "predicted": mean_p,
                "observed": share,
                "count": count,
            }
        )
        ece += count / len(predicted) * abs(mean_p - share)
    result: dict[str, Any] = {
        "accuracy": float(correct.mean()),
        "log_loss": log_loss,
        "ece": float(ece),
        "reliability": curve,
        "pairs": len(diff),
    }
    if margins is not None:
        result["by_margin"] = {
            str(int(m)): {
                "accuracy": float(correct[margins == m].mean()),
                "count": int((margins == m).sum()),
            }
            for m in np.unique(margins)
        }
    return result


def problem(
    pairs: int, rows: int = 300, columns: int = 40
) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
    """A float32 matrix (as featurize makes) and int32 pairs of distinct rows."""
    rng = np.random.default_rng(0)
    matrix = sparse.random(
        rows, columns, density=0.3, format="csr", dtype=np.float32, random_state=1
    )
    chosen = rng.integers(0, rows, pairs)
    rejected = (chosen + rng.integers(1, rows, pairs)) % rows
    return matrix, chosen.astype(np.int32), rejected.astype(np.int32)


@pytest.mark.parametrize("block", [7, 1 << 16])
def test_blocked_loss_and_gradient_are_the_whole_array_formula_to_the_bit(monkeypatch, block):
    monkeypatch.setattr(fitting, "PAIR_BLOCK", block)
    matrix, chosen, rejected = problem(5000)
    weights = np.random.default_rng(1).normal(size=matrix.shape[1])
    loss, gradient = whole_array_loss_and_gradient(
        weights, matrix, chosen.astype(np.intp), rejected.astype(np.intp), 0.01
    )
    for rows in (np.int32, np.int64):
        got = fitting.loss_and_gradient(
            weights, matrix, chosen.astype(rows), rejected.astype(rows), 0.01
        )
        assert got[0] == loss
        assert np.array_equal(got[1], gradient)


def test_int32_rows_fit_the_very_weights_of_int64_rows():
    matrix, chosen, rejected = problem(3000)
    config = fitting.FitConfig()
    # All rows used; then 40 pairs on at most 80 of 300 rows, which the fit cuts out first.
    for pairs in (slice(None), slice(0, 40)):
        weights = fitting.fit_bradley_terry(matrix, chosen[pairs], rejected[pairs], config)
        int64 = fitting.fit_bradley_terry(
            matrix, chosen[pairs].astype(np.int64), rejected[pairs].astype(np.int64), config
        )
        assert np.array_equal(weights, int64)
    used = np.unique(np.concatenate([chosen[:40], rejected[:40]]))
    cut_out = fitting.fit_bradley_terry(
        matrix[used],
        np.searchsorted(used, chosen[:40]),
        np.searchsorted(used, rejected[:40]),
        config,
    )
    assert np.array_equal(weights, cut_out)


@pytest.mark.parametrize("block", [5, 1 << 16])
def test_counted_metrics_are_the_means_to_the_bit(monkeypatch, block):
    monkeypatch.setattr(fitting, "PAIR_BLOCK", block)
    rng = np.random.default_rng(2)
    diff = np.round(rng.normal(scale=3, size=2001), 1)
    diff[::50] = 0.0  # ties count half
    margins = rng.integers(1, 4, size=len(diff)).astype(np.int16)
    assert fitting.difference_metrics(diff, margins) == whole_array_metrics(diff, margins)
    assert fitting.difference_metrics(diff[:3], bins=4) == whole_array_metrics(diff[:3], bins=4)
    scores = rng.normal(size=50)
    chosen, rejected = rng.integers(0, 50, size=(2, 700)).astype(np.int32)
    differences = fitting.reward_differences(scores, chosen, rejected)
    assert np.array_equal(differences, scores[chosen] - scores[rejected])


def test_labeler_agreement_on_row_numbers_is_that_on_ids():
    rng = np.random.default_rng(4)
    prompts = rng.integers(0, 30, size=2000)
    first, second = np.array(list(combinations(range(4), 2)))[rng.integers(0, 6, 2000)].T
    flip = rng.random(2000) < 0.3
    chosen = 1_000_003 * prompts + np.where(flip, second, first)
    rejected = 1_000_003 * prompts + np.where(flip, first, second)
    completion_ids = np.unique(np.concatenate([chosen, rejected]))
    on_rows = comparison_agreement(
        np.searchsorted(np.unique(prompts), prompts).astype(np.int32),
        np.searchsorted(completion_ids, chosen).astype(np.int32),
        np.searchsorted(completion_ids, rejected).astype(np.int32),
    )
    assert on_rows == comparison_agreement(prompts, chosen, rejected)
