"""Sample weights in the Bradley-Terry fit, on small arrays without the database."""

from __future__ import annotations

import numpy as np
import pytest

from rewards import fitting
from tests.rewards.test_model_math import random_problem

# The weights `fit_bradley_terry` returns for `random_problem()` with the default options, as
# before sample weights existed (commit 17d0597), to 10 places: the unweighted path must not move.
# Not a hash of the bits: BLAS kernels differ between CPUs (the hash taken on one machine failed
# on an AMD EPYC) and move the last bits of each iteration; a change to the fit moves far more.
UNWEIGHTED = [
    0.1065033326, 0.1282046664, 1.1770595387, 0.4840299619, -1.2312625835, -1.1607454215,
    1.7568701201, 0.4812274077, -1.8557042767, -2.0865192276, -0.0230251998, -1.9670572618,
]  # fmt: skip


def test_unweighted_fit_is_the_fit_before_weights():
    matrix, chosen, rejected = random_problem()
    weights = fitting.fit_bradley_terry(matrix, chosen, rejected, fitting.FitConfig())
    assert np.allclose(weights, UNWEIGHTED, rtol=0, atol=1e-6)


def test_weights_of_one_give_the_unweighted_optimum():
    matrix, chosen, rejected = random_problem()
    config = fitting.FitConfig(tol=1e-10)
    plain = fitting.fit_bradley_terry(matrix, chosen, rejected, config)
    ones = fitting.fit_bradley_terry(
        matrix, chosen, rejected, config, sample_weight=np.ones(len(chosen))
    )
    assert np.allclose(plain, ones, atol=1e-8)


def test_a_weight_of_two_counts_as_the_pair_twice():
    matrix, chosen, rejected = random_problem()
    config = fitting.FitConfig(tol=1e-10)
    doubled = np.ones(len(chosen))
    doubled[:40] = 2.0
    weighted = fitting.fit_bradley_terry(matrix, chosen, rejected, config, sample_weight=doubled)
    repeated = fitting.fit_bradley_terry(
        matrix,
        np.concatenate([chosen, chosen[:40]]),
        np.concatenate([rejected, rejected[:40]]),
        config,
    )
    assert np.allclose(weighted, repeated, atol=1e-7)


def test_weighted_gradient_matches_finite_differences():
    matrix, chosen, rejected = random_problem()
    sample_weight = np.random.default_rng(2).random(len(chosen))
    weights = np.random.default_rng(1).normal(size=matrix.shape[1])

    def loss(at: np.ndarray) -> float:
        return fitting.loss_and_gradient(at, matrix, chosen, rejected, 0.1, sample_weight)[0]

    value, gradient = fitting.loss_and_gradient(
        weights, matrix, chosen, rejected, 0.1, sample_weight
    )
    step = 1e-6
    numeric = [
        (loss(weights + step * e) - loss(weights - step * e)) / (2 * step)
        for e in np.eye(len(weights))
    ]
    assert np.allclose(gradient, numeric, atol=1e-7)
    margin = (matrix @ weights)[chosen] - (matrix @ weights)[rejected]
    expected = np.average(np.log1p(np.exp(-margin)), weights=sample_weight)
    assert value == pytest.approx(expected + 0.05 * weights @ weights)


def test_down_weighting_a_random_labelers_votes_brings_the_fit_back_to_the_truth():
    """Half the votes come from a labeler who answers at random: weighted near zero, the fit
    lands near the fit on the reliable votes alone, and predicts the true order better."""
    matrix, chosen, rejected = random_problem(rows=60, pairs=600)
    rng = np.random.default_rng(5)
    noisy = rng.random(len(chosen)) < 0.5
    flip = noisy & (rng.random(len(chosen)) < 0.5)
    noisy_chosen = np.where(flip, rejected, chosen)
    noisy_rejected = np.where(flip, chosen, rejected)
    config = fitting.FitConfig()

    def fit(sample_weight: np.ndarray | None) -> np.ndarray:
        return fitting.fit_bradley_terry(
            matrix, noisy_chosen, noisy_rejected, config, sample_weight=sample_weight
        )

    def true_log_loss(weights: np.ndarray) -> float:
        scores = fitting.rewards(matrix, weights)
        return float(fitting.pairwise_metrics(scores[chosen], scores[rejected])["log_loss"])

    reliable_only = fitting.fit_bradley_terry(matrix, chosen[~noisy], rejected[~noisy], config)
    unweighted, weighted = fit(None), fit(np.where(noisy, 0.05, 1.0))
    assert np.linalg.norm(weighted - reliable_only) < 0.5 * np.linalg.norm(
        unweighted - reliable_only
    )
    assert true_log_loss(weighted) < true_log_loss(unweighted) - 0.05


@pytest.mark.parametrize(
    ("sample_weight", "message"),
    [
        (np.ones(3), "one weight per pair"),
        (np.full(147, -1.0), "0 or more"),
        (np.full(147, np.nan), "finite"),
        (np.zeros(147), "every sample weight is 0"),
    ],
)
def test_sample_weights_are_checked(sample_weight: np.ndarray, message: str) -> None:
    matrix, chosen, rejected = random_problem()
    assert len(chosen) == 147
    with pytest.raises(ValueError, match=message):
        fitting.fit_bradley_terry(
            matrix, chosen, rejected, fitting.FitConfig(), sample_weight=sample_weight
        )
