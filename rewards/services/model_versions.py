"""Reward models: their model card, their numbered versions and which one is active."""

from __future__ import annotations

import platform
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from labeling.models import AuditEvent, Dataset, Labelers
from labeling.services import audit
from rewards.models import RewardModel, TrainingRun

if TYPE_CHECKING:  # the ML stack is imported where a model is written, not with this module
    import numpy as np

    from rewards import features
    from rewards.services.training_data import TrainingData

# Tries at a version number when other runs take the same one at the same moment.
VERSION_TRIES = 5


def model_card(
    *,
    run: TrainingRun,
    datasets: list[Dataset],
    data: TrainingData,
    metrics: dict[str, Any],
    feature_config: features.FeatureConfig,
) -> dict[str, Any]:
    """What a model is, what it was trained on and how well it did, as in model_card.json."""
    from rewards import artifacts, features

    config = run.config
    labelers = config.get("labelers", Labelers.HUMAN)
    return {
        "format_version": artifacts.FORMAT_VERSION,
        "run": run.pk,
        "created_at": timezone.now().isoformat(),
        "datasets": [d.slug for d in datasets],
        # Whose comparisons it was trained on (config.labelers): human labelers' (runs from
        # before AI labelers had no such option: humans'), AI labelers' or both.
        "labelers": labelers,
        "data": _data_card(data, metrics, config),
        "config": config,
        # With config.weighting or config.min_reliability: where the weights came from and
        # how they fell (rewards.services.reliability).
        "weighting": metrics.get("weighting"),
        "model": (
            "reward = featurizer row . weights (no intercept); the weights minimize, over the "
            "training pairs, sum log(1 + exp(-(reward(chosen) - reward(rejected)))) + "
            "config.fit.l2_penalty / 2 * |weights|^2, found by scipy's L-BFGS-B"
        ),
        "featurizer": features.describe(feature_config),
        "metrics": {k: v for k, v in metrics.items() if k != "reward_samples"},
        "libraries": _libraries(),
        "usage": (
            "reward = model.onnx(featurizer.featurize([(messages, completion)], "
            "featurizer.FeatureConfig.from_dict(card['config']['features']))"
            ".astype('float32').toarray()); P(a beats b) = sigmoid(reward_a - reward_b)"
        ),
        "sparse_usage": (
            "rewards = featurizer.score(items, featurizer.FeatureConfig.from_dict("
            "card['config']['features']), featurizer.load_weights('weights.npy')) for items "
            "[(messages, completion), ...]: sparse rows times the float64 weights, never dense, "
            "featurized 1,000 items at a time (what PrefLab itself does): about 20 MB above "
            "the process's own for 1,000 or 10,000 items, where the ONNX file's dense input "
            "takes 1 GiB per 1,000 items (float32 rows, cast before toarray) "
            "(bench/scoring_memory.py); the ONNX file gives the same rewards to ~1e-6 (float32)"
        ),
        **(_heads_card(config["heads"]) if config.get("heads") else {}),
    }


def _data_card(
    data: TrainingData, metrics: dict[str, Any], config: dict[str, Any]
) -> dict[str, Any]:
    """What the model was trained on: counts, whose comparisons, and what was left out."""
    import numpy as np

    labelers = config.get("labelers", Labelers.HUMAN)
    adjudicated_pairs = int(np.count_nonzero(data.comparison_ids < 0))
    left_out = [] if config.get("include_gold") else ["gold prompts"]
    left_out.append("labelers excluded (deactivated)")
    left_out += {Labelers.HUMAN: ["AI labelers"], Labelers.AI: ["human labelers"]}.get(labelers, [])
    return {
        "comparisons": len(data.comparison_ids),
        # Of them, the labelers' comparisons by kind (adjudicated pairs are neither).
        "human_comparisons": len(data.comparison_ids) - adjudicated_pairs - data.ai_comparisons,
        "ai_comparisons": data.ai_comparisons,
        "prompts": metrics["prompts"]["total"],
        "completions": len(data.completion_ids),
        "comparison_ids_sha256": data.ids_sha256,
        # With config.adjudicated "prefer": the pairs of reviewers' adjudicated orders, in
        # place of their prompts' labelers' comparisons; their ids are negative stand-ins.
        "adjudicated_pairs": adjudicated_pairs,
        "excluded": "; ".join(left_out),
    }


def _libraries() -> dict[str, str]:
    import numpy as np
    import onnx
    import scipy
    import skl2onnx
    import sklearn
    import skops

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "skops": skops.__version__,
        "onnx": onnx.__version__,
        "skl2onnx": skl2onnx.__version__,
    }


def _heads_card(heads: list[str]) -> dict[str, Any]:
    """What a model with per-criterion heads adds to its card: the heads and where each is."""
    return {
        "heads": heads,
        "outputs": (
            f"{1 + len(heads)} rewards per item: column 0 the overall head (trained on the "
            f"comparisons), then {', '.join(heads)} (columns 1..{len(heads)}), each trained on "
            "the pairs its criterion's ratings order (every two completions of a ranking rated "
            "differently on it, the higher-rated chosen; equal ratings left out). model.onnx "
            f"outputs 'variable' of shape [items, {1 + len(heads)}]; weights.npy has a row per "
            "column; featurizer.score returns those columns. Per head, metrics.heads gives "
            "its pairs (train, held_out on the overall head's held-out prompts, left_out: "
            "pairs of a completion no comparison uses), accuracy and log loss, and two "
            "ceilings: labeler_agreement (of every two labelers who ordered the same pair by "
            "their ratings, the share who ordered it alike) and held_out_best (the held-out "
            "accuracy a perfect scorer could reach given labelers' conflicting votes: the "
            "majority's share of each pair's votes)"
        ),
    }


def save_reward_model(
    *,
    run: TrainingRun,
    datasets: list[Dataset],
    data: TrainingData,
    weights: np.ndarray,
    metrics: dict[str, Any],
    feature_config: features.FeatureConfig,
) -> RewardModel:
    """Write the run's artifacts and record them as the next reward model version.

    Files are written before the row; if the row cannot be made, they are removed again."""
    from rewards import artifacts

    directory = f"reward_models/run-{run.pk}"
    card = model_card(
        run=run, datasets=datasets, data=data, metrics=metrics, feature_config=feature_config
    )
    target = Path(settings.MEDIA_ROOT) / directory
    if target.exists():
        shutil.rmtree(target)  # left by an earlier attempt of this run that died before its row
    files = artifacts.write_artifacts(target, weights=weights, card=card)
    try:
        for _ in range(VERSION_TRIES):
            try:
                with transaction.atomic():
                    version = (RewardModel.objects.aggregate(top=Max("version"))["top"] or 0) + 1
                    model = RewardModel.objects.create(
                        run=run,
                        workspace_id=run.workspace_id,
                        version=version,
                        directory=directory,
                        files=files,
                        card=card | {"version": version},
                    )
                    model.datasets.set(datasets)
                    return model
            except IntegrityError:
                continue  # another run took this version number at the same moment
        raise RuntimeError("could not assign a version number to the reward model")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def activate_reward_model(*, model: RewardModel, user: User | None = None) -> RewardModel:
    """Make `model` the active one for each of its datasets; others on them are deactivated.
    After commit, a worker scores the datasets' completions with it (`predictions`)."""
    from labeling.services.quality_report import invalidate_reports
    from rewards.services import predictions

    with transaction.atomic():
        dataset_ids = list(model.datasets.values_list("pk", flat=True))
        list(Dataset.objects.select_for_update().filter(pk__in=dataset_ids).values_list("pk"))
        RewardModel.objects.filter(datasets__in=dataset_ids, is_active=True).exclude(
            pk=model.pk
        ).update(is_active=False)
        RewardModel.objects.filter(pk=model.pk).update(is_active=True)
        predictions.queue_predictions(model=model)
        audit.record(
            action=AuditEvent.Action.MODEL_ACTIVATED,
            workspace_id=model.workspace_id,
            actor=user,
            version=model.version,
            datasets=sorted(model.datasets.values_list("slug", flat=True)),
        )
        # The quality reports' per-prompt figures (the review queue's model contradiction)
        # came from the model active before: recompute them with this one.
        invalidate_reports(dataset_ids)
    model.refresh_from_db()
    return model
