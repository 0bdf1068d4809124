"""A Chatbot Arena style leaderboard of source models: a Bradley-Terry fit over how often each
model's completions were preferred to another's, with bootstrap 95% intervals.

Plain data in and out, numpy and scipy only: `labeling.services.leaderboard` reads the counts
from the database (aggregated by SQL) and this module never sees a comparison row, only the
model-by-model count matrices. That keeps the fit independent of the number of comparisons: a
million battles over 50 models are a 50 x 50 matrix.

The model: P(a beats b) = sigmoid(theta_a - theta_b). A tie is half a win each way (as Arena
counts them). Scores are on the Elo scale Arena uses: 1000 + 400 / ln(10) * theta, with theta
of mean zero over the models shown, so a gap of 400 points is odds of 10 to 1.

The bootstrap resamples battles with replacement. Battles are exchangeable within a cell (a pair
of models and an outcome), so a resample is one multinomial draw over the cells with the
observed shares: each round costs a draw over at most 3 x n(n-1)/2 cells and a fit of an n x n
matrix, whatever the number of battles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.special import expit, log_expit

SCALE = 400 / math.log(10)
BASE = 1000.0
# A Gaussian prior on theta with standard deviation 10 (1737 points): too weak to matter for
# any model with a few dozen battles, but it keeps the score of a model that never lost (or
# never won) finite, and it fixes the mean of theta at zero (the prior's gradient is the only
# term that does not sum to zero over the models).
PRIOR_PRECISION = 0.01
NEWTON_ITERATIONS = 100
TOLERANCE = 1e-6  # logits: 0.0002 points
# Bootstrap rounds are fitted this many at a time: a chunk holds a few arrays of
# chunk x n x n floats (50 models: 4 MiB each), so memory stays flat however many rounds.
CHUNK_ROUNDS = 200
LEVEL = 0.95


class ModelRow(TypedDict):
    model: str
    score: float
    low: float
    high: float
    rank: int
    comparisons: int
    wins: int
    losses: int
    ties: int


class WinRate(TypedDict):
    share: float | None
    battles: int


class Standings(TypedDict):
    models: list[ModelRow]
    win_rates: list[list[WinRate]]
    battles: int
    rounds: int
    seed: int
    components: int


def fit_thetas(wins: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Bradley-Terry strengths by Newton's method with a backtracking line search.

    `wins` is (..., n, n): wins[..., i, j] is how often i beat j (ties already split in halves).
    Leading dimensions are independent problems fitted together (the bootstrap's rounds), so
    the loop runs in numpy, not Python. Returns theta (..., n), of mean zero. The log-likelihood
    with the prior is strictly concave, so Newton's direction always ascends, and the line
    search halves a step that would not; near the optimum the full step converges
    quadratically: about ten iterations from zero, three from a nearby `start` (the bootstrap
    starts from the fit of the observed counts).
    """
    wins = np.asarray(wins, dtype=float)
    n = wins.shape[-1]
    games = wins + np.swapaxes(wins, -1, -2)
    won = wins.sum(axis=-1)
    theta = np.zeros(wins.shape[:-1]) if start is None else np.broadcast_to(start, wins.shape[:-1])
    identity = np.eye(n)
    current = _log_likelihood(theta, wins)
    for _ in range(NEWTON_ITERATIONS):
        chance = expit(theta[..., :, None] - theta[..., None, :])
        gradient = won - (games * chance).sum(axis=-1) - PRIOR_PRECISION * theta
        weight = games * chance * (1 - chance)
        # Minus the Hessian: a graph Laplacian of the battle weights, plus the prior.
        curvature = (
            weight.sum(axis=-1)[..., :, None] * identity - weight + PRIOR_PRECISION * identity
        )
        step = np.linalg.solve(curvature, gradient[..., None])[..., 0]
        size = np.ones(theta.shape[:-1])
        for _ in range(30):
            trial = _log_likelihood(theta + size[..., None] * step, wins)
            worse = trial < current - 1e-12 * np.abs(current)
            if not worse.any():
                break
            size = np.where(worse, size / 2, size)
        else:  # no ascent left within rounding: those problems are solved
            size = np.where(worse, 0.0, size)
            trial = np.where(worse, current, trial)
        theta = theta + size[..., None] * step
        current = trial
        if np.abs(size[..., None] * step).max(initial=0.0) < TOLERANCE:
            break
    return theta - theta.mean(axis=-1, keepdims=True)


def _log_likelihood(theta: np.ndarray, wins: np.ndarray) -> np.ndarray:
    """The Bradley-Terry log-likelihood of `wins` at `theta`, with the Gaussian prior."""
    gap = theta[..., :, None] - theta[..., None, :]
    fit = (wins * log_expit(gap)).sum(axis=(-1, -2))
    return fit - PRIOR_PRECISION / 2 * (theta**2).sum(axis=-1)


def half_wins(wins: np.ndarray, ties: np.ndarray) -> np.ndarray:
    """Wins with each tie counted as half a win for either side."""
    return wins + ties / 2


def bootstrap_thetas(
    wins: np.ndarray, ties: np.ndarray, *, rounds: int, seed: int, start: np.ndarray | None = None
) -> np.ndarray:
    """`rounds` refits on battles resampled with replacement, as one multinomial draw over the
    cells (i beat j, j beat i, tie) per round; (rounds, n) thetas. Seeded: the same counts give
    the same intervals. `start`, the fit of the observed counts, saves most Newton steps."""
    n = wins.shape[0]
    upper = np.triu_indices(n, k=1)
    cells = np.concatenate([wins[upper], wins.T[upper], ties[upper]]).astype(float)
    total = int(cells.sum())
    rng = np.random.default_rng(seed)
    pairs = len(upper[0])
    thetas = []
    for done in range(0, rounds, CHUNK_ROUNDS):
        chunk = min(CHUNK_ROUNDS, rounds - done)
        draws = rng.multinomial(total, cells / total, size=chunk).astype(float)
        first, second, tied = draws[:, :pairs], draws[:, pairs : 2 * pairs], draws[:, 2 * pairs :]
        resampled = np.zeros((chunk, n, n))
        resampled[:, upper[0], upper[1]] = first + tied / 2
        resampled[:, upper[1], upper[0]] = second + tied / 2
        thetas.append(fit_thetas(resampled, start))
    return np.concatenate(thetas)


def scores(theta: np.ndarray) -> np.ndarray:
    """Thetas on the Elo-like scale."""
    return BASE + SCALE * theta


def interval_ranks(lows: Sequence[float], highs: Sequence[float]) -> list[int]:
    """Arena's rank: 1 + the number of models whose interval lies wholly above this one's, so
    models whose intervals overlap can share a rank."""
    return [1 + sum(other > high for other in lows) for high in highs]


def standings(
    names: Sequence[str],
    wins: Sequence[Sequence[int]] | np.ndarray,
    ties: Sequence[Sequence[int]] | np.ndarray,
    *,
    rounds: int,
    seed: int = 0,
) -> Standings:
    """The leaderboard of `names` from counts: wins[i][j] battles model i won against model j,
    ties[i][j] (symmetric) battles they tied. Models sorted by score, best first; the win-rate
    matrix in the same order, share = (wins + ties / 2) / battles of row over column (None
    without battles). `components` > 1 means some models were never compared, even through
    others: their scores are not on one scale."""
    won = np.asarray(wins, dtype=np.int64).reshape(len(names), len(names))
    tied = np.asarray(ties, dtype=np.int64).reshape(len(names), len(names))
    if not len(names):
        return {
            "models": [],
            "win_rates": [],
            "battles": 0,
            "rounds": rounds,
            "seed": seed,
            "components": 0,
        }
    halves = half_wins(won, tied)
    theta = fit_thetas(halves)
    point = scores(theta)
    if rounds:
        sampled = scores(bootstrap_thetas(won, tied, rounds=rounds, seed=seed, start=theta))
        tail = 100 * (1 - LEVEL) / 2
        low, high = np.percentile(sampled, [tail, 100 - tail], axis=0)
    else:
        low, high = point.copy(), point.copy()
    ranks = interval_ranks(low.tolist(), high.tolist())
    order = sorted(range(len(names)), key=lambda i: (-point[i], names[i]))
    battles = won + won.T + tied
    components, _ = connected_components(battles > 0, directed=False)
    rows: list[ModelRow] = [
        {
            "model": names[i],
            "score": float(point[i]),
            "low": float(low[i]),
            "high": float(high[i]),
            "rank": ranks[i],
            "comparisons": int(battles[i].sum()),
            "wins": int(won[i].sum()),
            "losses": int(won[:, i].sum()),
            "ties": int(tied[i].sum()),
        }
        for i in order
    ]
    win_rates: list[list[WinRate]] = [
        [
            {
                "share": float(halves[i, j] / battles[i, j]) if battles[i, j] else None,
                "battles": int(battles[i, j]),
            }
            for j in order
        ]
        for i in order
    ]
    return {
        "models": rows,
        "win_rates": win_rates,
        "battles": int(np.triu(battles, k=1).sum()),
        "rounds": rounds,
        "seed": seed,
        "components": int(components),
    }
