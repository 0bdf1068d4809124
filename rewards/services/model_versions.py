"""Reward models: their model card, their numbered versions and which one is active."""

from __future__ import annotations

import platform
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from labeling.models import Dataset
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
    import numpy as np
    import onnx
    import scipy
    import skl2onnx
    import sklearn
    import skops

    from rewards import artifacts, features

    config = run.config
    return {
        "format_version": artifacts.FORMAT_VERSION,
        "run": run.pk,
        "created_at": timezone.now().isoformat(),
        "datasets": [d.slug for d in datasets],
        "data": {
            "comparisons": len(data.comparison_ids),
            "prompts": metrics["prompts"]["total"],
            "completions": len(data.completion_ids),
            "comparison_ids_sha256": data.ids_sha256,
            # With config.adjudicated "prefer": the pairs of reviewers' adjudicated orders, in
            # place of their prompts' labelers' comparisons; their ids are negative stand-ins.
            "adjudicated_pairs": int(np.count_nonzero(data.comparison_ids < 0)),
            "excluded": (
                "labelers excluded (deactivated)"
                if config.get("include_gold")
                else "gold prompts; labelers excluded (deactivated)"
            ),
        },
        "config": config,
        "model": (
            "reward = featurizer row . weights (no intercept); the weights minimize, over the "
            "training pairs, sum log(1 + exp(-(reward(chosen) - reward(rejected)))) + "
            "config.fit.l2_penalty / 2 * |weights|^2, found by scipy's L-BFGS-B"
        ),
        "featurizer": features.describe(feature_config),
        "metrics": {k: v for k, v in metrics.items() if k != "reward_samples"},
        "libraries": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__,
            "skops": skops.__version__,
            "onnx": onnx.__version__,
            "skl2onnx": skl2onnx.__version__,
        },
        "usage": (
            "reward = model.onnx(featurizer.featurize([(messages, completion)], "
            "featurizer.FeatureConfig.from_dict(card['config']['features'])).toarray()"
            ".astype('float32')); P(a beats b) = sigmoid(reward_a - reward_b)"
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


def activate_reward_model(*, model: RewardModel) -> RewardModel:
    """Make `model` the active one for each of its datasets; others on them are deactivated.
    After commit, a worker scores the datasets' completions with it (`predictions`)."""
    from rewards.services import predictions

    with transaction.atomic():
        dataset_ids = list(model.datasets.values_list("pk", flat=True))
        list(Dataset.objects.select_for_update().filter(pk__in=dataset_ids).values_list("pk"))
        RewardModel.objects.filter(datasets__in=dataset_ids, is_active=True).exclude(
            pk=model.pk
        ).update(is_active=False)
        RewardModel.objects.filter(pk=model.pk).update(is_active=True)
        predictions.queue_predictions(model=model)
    model.refresh_from_db()
    return model
