"""Fitting and evaluating a run's reward model: the work a worker does between claiming the
run (`runs.run_training`) and saving the model (`model_versions`)."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from django.core.exceptions import ValidationError

from labeling.models import Labelers
from labeling.quality import comparison_agreement
from rewards import features, fitting
from rewards.models import RewardModel, TrainingRun
from rewards.services import reliability
from rewards.services.heads import train_heads
from rewards.services.model_versions import save_reward_model
from rewards.services.training_data import Report, TrainingData, load_training_data

LEARNING_CURVE_SHARES = (0.1, 0.3, 1.0)


def train(run: TrainingRun, report: Report) -> tuple[dict[str, Any], RewardModel]:
    """Fit the run's model on its training prompts, evaluate it on the held-out ones and save it
    as a new reward model version; returns the run's metrics and the model."""
    config = run.config
    feature_config = features.FeatureConfig.from_dict(config["features"])
    fit_config = fitting.FitConfig.from_dict(config["fit"])
    datasets = list(run.datasets.all())
    report("loading")
    # Before the comparisons: the reliabilities rest on rankings the data has too.
    labelers = (
        reliability.labeler_weights(
            datasets=datasets,
            weighting=config.get("weighting", "none"),
            min_reliability=config.get("min_reliability", 0.0),
        )
        if reliability.is_weighted(config)
        else None
    )
    data = load_training_data(
        datasets=datasets,
        feature_config=feature_config,
        report=report,
        include_gold=config.get("include_gold", False),
        adjudicated=config.get("adjudicated", "ignore"),
        labelers=config.get("labelers", Labelers.HUMAN),
    )

    # Training pairs first, held-out ones last: both are slices (views) of the data's arrays.
    held_out_mask = fitting.group_split(data.prompts, config["held_out_share"], config["seed"])
    if held_out_mask.all() or not held_out_mask.any():
        raise ValidationError("Too few prompts to hold some out for evaluation; label more.")
    train_count = data.put_held_out_last(held_out_mask)
    del held_out_mask
    train_pairs = slice(0, train_count)
    sample_weight = _sample_weights(data, datasets, labelers, train_count)
    report("fitting")
    weights = fitting.fit_bradley_terry(
        data.features,
        data.chosen_rows[train_pairs],
        data.rejected_rows[train_pairs],
        fit_config,
        on_progress=lambda share: report("fitting", share),
        sample_weight=None if sample_weight is None else sample_weight[train_pairs],
    )
    head_weights: list[np.ndarray] = []
    head_metrics: list[dict[str, Any]] = []
    if config.get("heads"):
        head_weights, head_metrics = train_heads(
            heads=config["heads"],
            datasets=datasets,
            data=data,
            train_count=train_count,
            fit_config=fit_config,
            include_gold=config.get("include_gold", False),
            report=report,
            labelers=config.get("labelers", Labelers.HUMAN),
        )
    report("evaluating")
    metrics = evaluate(
        data, weights, train_count, fit_config, config["seed"], report, sample_weight
    )
    if labelers is not None and sample_weight is not None:
        metrics["weighting"] = reliability.training_summary(
            labelers.summary, sample_weight[train_pairs]
        )
    if head_metrics:
        metrics["heads"] = head_metrics
        # Row 0 the overall head, then a row per criterion: one weight matrix for every file.
        weights = np.vstack([weights, *head_weights])
    report("exporting")
    model = save_reward_model(
        run=run,
        datasets=datasets,
        data=data,
        weights=weights,
        metrics=metrics,
        feature_config=feature_config,
    )
    return metrics, model


def _sample_weights(
    data: TrainingData,
    datasets: list[Any],
    labelers: reliability.LabelerWeights | None,
    train_count: int,
) -> np.ndarray | None:
    """Each comparison's weight by its labeler's reliability, or None for an unweighted run."""
    if labelers is None:
        return None
    sample_weight = reliability.comparison_weights(
        comparison_ids=data.comparison_ids, datasets=datasets, weights=labelers
    )
    if not sample_weight[:train_count].any():
        raise ValidationError(
            "min_reliability drops the labelers of every training comparison; lower it."
        )
    return sample_weight


def evaluate(
    data: TrainingData,
    weights: np.ndarray,
    train_count: int,
    fit_config: fitting.FitConfig,
    seed: int,
    report: Report,
    sample_weight: np.ndarray | None = None,
) -> dict[str, Any]:
    """The run's metrics: accuracy, log loss and calibration on the training and the held-out
    pairs (the first `train_count` and the rest), a learning curve, the labelers' agreement on
    comparisons (the ceiling) and a sample of rewards for the histogram.

    With `sample_weight`, the held-out figures stay unweighted, over every held-out pair (so
    they compare with unweighted runs'), and `held_out_weighted` adds the accuracy with each
    pair counting its labeler's weight (dropped labelers' pairs not at all); the learning curve
    fits with the weights, as the model did."""
    train, held_out = slice(0, train_count), slice(train_count, len(data.comparison_ids))
    scores = fitting.rewards(data.features, weights)

    def metrics_of(pairs: slice) -> dict[str, Any]:
        differences = fitting.reward_differences(
            scores, data.chosen_rows[pairs], data.rejected_rows[pairs]
        )
        return fitting.difference_metrics(differences, data.margins[pairs])

    held_out_metrics = metrics_of(held_out)
    extra: dict[str, Any] = {}
    if sample_weight is not None:
        differences = fitting.reward_differences(
            scores, data.chosen_rows[held_out], data.rejected_rows[held_out]
        )
        extra["held_out_weighted"] = {
            "accuracy": reliability.weighted_accuracy(differences, sample_weight[held_out]),
            "pairs": int(np.count_nonzero(sample_weight[held_out])),
        }
    return extra | {
        "comparisons": {
            "total": len(data.comparison_ids),
            "train": train_count,
            "held_out": len(data.comparison_ids) - train_count,
        },
        "prompts": {
            "total": len(data.prompt_ids),
            "held_out": len(np.unique(data.prompts[held_out])),
        },
        "completions": len(data.completion_ids),
        "train": metrics_of(train),
        "held_out": held_out_metrics,
        # Stored as "labeler_agreement" since the first runs; see `comparison_agreement`.
        "labeler_agreement": comparison_agreement(
            data.prompts, data.chosen_rows, data.rejected_rows
        ),
        "learning_curve": _learning_curve(
            data,
            train,
            held_out,
            fit_config,
            seed,
            held_out_metrics["accuracy"],
            report,
            None if sample_weight is None else sample_weight[train],
        ),
        "reward_samples": {
            "chosen": _sample(scores[data.chosen_rows[held_out]], seed),
            "rejected": _sample(scores[data.rejected_rows[held_out]], seed),
        },
    }


def _learning_curve(
    data: TrainingData,
    train: slice,
    held_out: slice,
    fit_config: fitting.FitConfig,
    seed: int,
    full_accuracy: float,
    report: Report,
    train_weight: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """Held-out accuracy of models fitted on growing shares of the training prompts (weighted
    by `train_weight` when given; a share whose pairs all weigh 0 is left out)."""
    points = []
    train_prompts = data.prompts[train]
    shuffled = np.random.default_rng(seed).permutation(np.unique(train_prompts))
    for index, share in enumerate(LEARNING_CURVE_SHARES):
        if share >= 1.0:
            points.append({"comparisons": len(train_prompts), "accuracy": full_accuracy})
            continue
        # Prompts are indexes into data.prompt_ids: a flag per prompt marks the subset's.
        in_subset = np.zeros(len(data.prompt_ids), dtype=bool)
        in_subset[shuffled[: max(1, int(len(shuffled) * share))]] = True
        subset = in_subset[train_prompts]
        subset_weight = None if train_weight is None else train_weight[subset]
        if subset_weight is not None and not subset_weight.any():
            continue
        report("evaluating", index / len(LEARNING_CURVE_SHARES))
        weights = fitting.fit_bradley_terry(
            data.features,
            data.chosen_rows[train][subset],
            data.rejected_rows[train][subset],
            fit_config,
            # Progress is also the heartbeat: a long fit must not look like a dead worker.
            on_progress=partial(_curve_progress, report, index),
            sample_weight=subset_weight,
        )
        scores = fitting.rewards(data.features, weights)
        metrics = fitting.difference_metrics(
            fitting.reward_differences(
                scores, data.chosen_rows[held_out], data.rejected_rows[held_out]
            )
        )
        points.append(
            {"comparisons": int(np.count_nonzero(subset)), "accuracy": metrics["accuracy"]}
        )
        report("evaluating", (index + 1) / len(LEARNING_CURVE_SHARES))
    return points


def _curve_progress(report: Report, index: int, done: float) -> None:
    report("evaluating", (index + done) / len(LEARNING_CURVE_SHARES))


def _sample(values: np.ndarray, seed: int, size: int = 2000) -> list[float]:
    """At most `size` values, for the reward histogram, so the metrics row stays small."""
    if len(values) > size:
        values = np.random.default_rng(seed).choice(values, size, replace=False)
    return [round(float(v), 5) for v in values]
