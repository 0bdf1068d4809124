"""The Bradley-Terry fit and its bootstrap on synthetic battles of models of known strength
(plain arrays, no database)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from labeling import leaderboard

TRUE_THETAS = np.linspace(-1.2, 1.2, 8)
NAMES = [f"model-{i}" for i in range(8)]


def simulate(thetas: np.ndarray, per_pair: int, rng: np.random.Generator) -> np.ndarray:
    """wins[i, j]: how often i beat j in `per_pair` battles of every pair, by Bradley-Terry."""
    n = len(thetas)
    wins = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(i + 1, n):
            won = rng.binomial(per_pair, 1 / (1 + np.exp(thetas[j] - thetas[i])))
            wins[i, j], wins[j, i] = won, per_pair - won
    return wins


def true_scores() -> np.ndarray:
    return leaderboard.scores(TRUE_THETAS - TRUE_THETAS.mean())


def test_fit_recovers_the_order_and_the_scores():
    wins = simulate(TRUE_THETAS, 400, np.random.default_rng(1))
    board = leaderboard.standings(NAMES, wins, np.zeros_like(wins), rounds=200)
    assert [row["model"] for row in board["models"]] == NAMES[::-1]
    fitted = {row["model"]: row["score"] for row in board["models"]}
    for name, truth in zip(NAMES, true_scores(), strict=True):
        assert abs(fitted[name] - truth) < 20  # points; 0.43 logits (75 points) apart
    assert np.mean([row["score"] for row in board["models"]]) == pytest.approx(1000)


def test_bootstrap_intervals_cover_the_truth_at_about_their_rate():
    rng = np.random.default_rng(2)
    truth = true_scores()
    covered = total = 0
    for seed in range(150):
        wins = simulate(TRUE_THETAS, 30, rng)
        board = leaderboard.standings(NAMES, wins, np.zeros_like(wins), rounds=200, seed=seed)
        for row in board["models"]:
            covered += row["low"] <= truth[NAMES.index(row["model"])] <= row["high"]
            total += 1
    assert 0.88 <= covered / total <= 0.99


def test_newton_agrees_with_lbfgs_on_the_same_likelihood():
    wins = simulate(TRUE_THETAS, 25, np.random.default_rng(3)).astype(float)

    def loss(theta: np.ndarray) -> float:
        gap = theta[:, None] - theta[None, :]
        fit = (wins * -np.logaddexp(0, -gap)).sum()
        return float(-fit + leaderboard.PRIOR_PRECISION / 2 * (theta**2).sum())

    reference = minimize(loss, np.zeros(8), method="L-BFGS-B", options={"gtol": 1e-10}).x
    reference -= reference.mean()
    assert np.allclose(leaderboard.fit_thetas(wins), reference, atol=1e-4)


def test_a_tie_is_half_a_win_each_way():
    ties = np.array([[0, 2], [2, 0]])
    with_ties = leaderboard.standings(["a", "b"], [[0, 3], [0, 0]], ties, rounds=0)
    as_halves = leaderboard.fit_thetas(np.array([[0.0, 4.0], [1.0, 0.0]]))
    assert with_ties["models"][0]["score"] == pytest.approx(leaderboard.scores(as_halves)[0])
    assert with_ties["models"][0] | {"score": 0} == {
        "model": "a",
        "score": 0,
        "low": with_ties["models"][0]["score"],
        "high": with_ties["models"][0]["score"],
        "rank": 1,
        "comparisons": 5,
        "wins": 3,
        "losses": 0,
        "ties": 2,
    }
    assert with_ties["win_rates"][0][1] == {"share": 4 / 5, "battles": 5}
    assert with_ties["win_rates"][1][0] == {"share": 1 / 5, "battles": 5}
    assert with_ties["battles"] == 5


def test_only_ties_make_equal_scores():
    board = leaderboard.standings(["a", "b"], [[0, 0], [0, 0]], [[0, 6], [6, 0]], rounds=100)
    assert [row["score"] for row in board["models"]] == pytest.approx([1000, 1000])
    assert [row["rank"] for row in board["models"]] == [1, 1]


def test_a_model_that_never_lost_gets_a_finite_score_on_top():
    wins = np.array([[0, 12, 9], [0, 0, 6], [0, 4, 0]])
    board = leaderboard.standings(["a", "b", "c"], wins, np.zeros((3, 3)), rounds=200)
    top = board["models"][0]
    assert top["model"] == "a"
    assert np.isfinite([top["score"], top["low"], top["high"]]).all()
    assert top["score"] < 1000 + 10 * leaderboard.SCALE


def test_models_never_compared_through_others_are_reported():
    wins = np.array([[0, 5, 0, 0], [3, 0, 0, 0], [0, 0, 0, 4], [0, 0, 2, 0]])
    board = leaderboard.standings(list("abcd"), wins, np.zeros((4, 4)), rounds=100)
    assert board["components"] == 2


def test_the_bootstrap_is_seeded_and_brackets_the_score():
    wins = simulate(TRUE_THETAS, 20, np.random.default_rng(4))
    first = leaderboard.standings(NAMES, wins, np.zeros_like(wins), rounds=300, seed=5)
    again = leaderboard.standings(NAMES, wins, np.zeros_like(wins), rounds=300, seed=5)
    other = leaderboard.standings(NAMES, wins, np.zeros_like(wins), rounds=300, seed=6)
    assert first == again
    assert first != other
    for row in first["models"]:
        assert row["low"] < row["score"] < row["high"]


def test_rounds_are_fitted_in_chunks_without_changing_the_result(monkeypatch):
    wins = simulate(TRUE_THETAS, 20, np.random.default_rng(5))
    whole = leaderboard.bootstrap_thetas(wins, np.zeros_like(wins), rounds=50, seed=1)
    monkeypatch.setattr(leaderboard, "CHUNK_ROUNDS", 7)
    chunked = leaderboard.bootstrap_thetas(wins, np.zeros_like(wins), rounds=50, seed=1)
    assert chunked.shape == (50, 8)
    assert np.allclose(whole, chunked, atol=1e-6)


def test_overlapping_intervals_share_a_rank():
    assert leaderboard.interval_ranks([1100, 1050, 900], [1200, 1150, 1000]) == [1, 1, 3]


def test_no_models_is_an_empty_board():
    board = leaderboard.standings([], [], [], rounds=100)
    assert board["models"] == [] and board["win_rates"] == [] and board["battles"] == 0
