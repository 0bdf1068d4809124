"""Fitting a Bradley-Terry reward model and measuring it on pairs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression, SGDClassifier


@dataclass(frozen=True)
class FitConfig:
    regularization: float = 1.0
    exact_limit: int = 200_000
    epochs: int = 5
    chunk_size: int = 50_000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fit options {sorted(unknown)}; use {sorted(known)}")
        return cls(**data)


def _differences(
    features: sparse.csr_matrix, chosen: np.ndarray, rejected: np.ndarray, signs: np.ndarray
) -> sparse.csr_matrix:
    # A flipped pair is the same difference the other way round: no multiply needed.
    flip = signs < 0
    return features[np.where(flip, rejected, chosen)] - features[np.where(flip, chosen, rejected)]


def fit_bradley_terry(
    features: sparse.csr_matrix,
    chosen: np.ndarray,
    rejected: np.ndarray,
    config: FitConfig,
    seed: int,
    on_progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    if len(chosen) == 0:
        raise ValueError("no comparisons to fit")
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1, 1]), size=len(chosen))
    if len(np.unique(signs)) < 2:
        # Both classes are needed: the first pair is added again the other way round.
        chosen, rejected = np.append(chosen, chosen[0]), np.append(rejected, rejected[0])
        signs = np.append(signs, -signs[0])
    labels = (signs > 0).astype(int)
    if len(chosen) <= config.exact_limit:
        if on_progress:
            on_progress(0.0)
        # The dual problem: far fewer pairs than hashed features, ~10x faster, same solution.
        model = LogisticRegression(
            C=config.regularization,
            fit_intercept=False,
            solver="liblinear",
            dual=True,
            random_state=seed,
            max_iter=1000,
        )
        model.fit(_differences(features, chosen, rejected, signs), labels)
        if on_progress:
            on_progress(1.0)
        return model.coef_.ravel().astype(np.float64)
    model = SGDClassifier(
        loss="log_loss",
        fit_intercept=False,
        alpha=1.0 / (config.regularization * len(chosen)),
        random_state=seed,
    )
    order = np.arange(len(chosen))
    steps = config.epochs * ((len(chosen) + config.chunk_size - 1) // config.chunk_size)
    done = 0
    for _ in range(config.epochs):
        rng.shuffle(order)
        for start in range(0, len(order), config.chunk_size):
            batch = order[start : start + config.chunk_size]
            model.partial_fit(
                _differences(features, chosen[batch], rejected[batch], signs[batch]),
                labels[batch],
                classes=np.array([0, 1]),
            )
            done += 1
            if on_progress:
                on_progress(done / steps)
    return model.coef_.ravel().astype(np.float64)


def rewards(features: sparse.csr_matrix, weights: np.ndarray) -> np.ndarray:
    return np.asarray(features @ weights, dtype=np.float64)


def pairwise_metrics(
    reward_chosen: np.ndarray,
    reward_rejected: np.ndarray,
    margins: np.ndarray | None = None,
    bins: int = 10,
) -> dict[str, Any]:
    diff = np.asarray(reward_chosen) - np.asarray(reward_rejected)
    if len(diff) == 0:
        return {"accuracy": None, "log_loss": None, "ece": None, "reliability": [], "pairs": 0}
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


def group_split(groups: np.ndarray, test_share: float, seed: int) -> np.ndarray:
    unique = np.unique(groups)
    shuffled = np.random.default_rng(seed).permutation(unique)
    held = (
        set(shuffled[: max(1, round(len(unique) * test_share))].tolist())
        if len(unique) > 1
        else set()
    )
    return np.isin(groups, list(held))
