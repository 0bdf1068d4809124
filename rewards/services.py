"""Training runs: start, run (in a worker), reclaim when a worker dies, retry; reward models."""

from __future__ import annotations

import hashlib
import logging
import platform
import shutil
from array import array
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import scipy
import skl2onnx
import sklearn
import skops
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from scipy import sparse

from labeling.models import Comparison, Completion, Dataset, Prompt
from rewards import artifacts, features, fitting
from rewards.evaluation import labeler_agreement
from rewards.models import RewardModel, TrainingRun

logger = logging.getLogger(__name__)

CHUNK_SIZE = 20_000
# Comparisons converted at once from loaded ids to int32 positions (`_positions`).
POSITION_BLOCK = 1 << 16
# Completions are featurized in smaller chunks: featurizing needs ~8x its result's memory for a
# moment (token strings, hashed names, intermediate blocks), ~100 MB for 5,000 completions.
COMPLETION_CHUNK_SIZE = 5_000
DEFAULT_HELD_OUT_SHARE = 0.2
LEARNING_CURVE_SHARES = (0.1, 0.3, 1.0)
# Where each stage starts and ends on the run's progress bar.
STAGES = {
    "loading": (0.0, 0.1),
    "featurizing": (0.1, 0.35),
    "fitting": (0.35, 0.8),
    "evaluating": (0.8, 0.95),
    "exporting": (0.95, 1.0),
}


def run_config(data: dict[str, Any]) -> dict[str, Any]:
    """Validate a run's options and fill in the defaults; a ValidationError names the field."""
    known = {"features", "fit", "held_out_share", "seed", "include_gold"}
    unknown = set(data) - known
    if unknown:
        raise ValidationError(
            {"config": f"Unknown options {sorted(unknown)}; use {sorted(known)}."}
        )
    try:
        feature_config = features.FeatureConfig.from_dict(data.get("features") or {})
    except (TypeError, ValueError) as error:
        raise ValidationError({"features": str(error)}) from None
    try:
        fit_config = fitting.FitConfig.from_dict(data.get("fit") or {})
    except (TypeError, ValueError) as error:
        raise ValidationError({"fit": str(error)}) from None
    share = data.get("held_out_share", DEFAULT_HELD_OUT_SHARE)
    if not isinstance(share, int | float) or not 0 < share < 1:
        raise ValidationError({"held_out_share": "Must be a number between 0 and 1."})
    seed = data.get("seed", 0)
    if type(seed) is not int or seed < 0:
        raise ValidationError({"seed": "Must be a whole number, 0 or more."})
    include_gold = data.get("include_gold", False)
    if not isinstance(include_gold, bool):
        raise ValidationError({"include_gold": "Must be true or false."})
    return {
        "features": feature_config.to_dict(),
        "fit": fit_config.to_dict(),
        "held_out_share": float(share),
        "seed": seed,
        "include_gold": include_gold,
    }


def start_training_run(
    *,
    datasets: list[Dataset],
    config: dict[str, Any] | None = None,
    user: User | None = None,
    retry_of: TrainingRun | None = None,
    enqueue: bool = True,
) -> TrainingRun:
    """Create a queued run and, after commit, hand it to a worker (unless `enqueue` is False)."""
    if not datasets:
        raise ValidationError({"datasets": "Choose at least one dataset."})
    from rewards.tasks import train_reward_model

    with transaction.atomic():
        run = TrainingRun.objects.create(
            config=run_config(config or {}), created_by=user, retry_of=retry_of
        )
        run.datasets.set(datasets)
        if enqueue:
            run.task_id = f"train-{run.pk}"
            run.save(update_fields=["task_id"])
            transaction.on_commit(
                lambda: train_reward_model.apply_async((run.pk,), task_id=run.task_id)
            )
    return run


def retry_training_run(*, run: TrainingRun, user: User | None = None) -> TrainingRun:
    """A failed run again, as a new run with the same datasets and options."""
    if run.status != TrainingRun.Status.FAILED:
        raise ValidationError("Only a failed run can be retried.")
    return start_training_run(
        datasets=list(run.datasets.all()), config=run.config, user=user, retry_of=run
    )


def reclaim_stale_runs(*, now: datetime | None = None) -> int:
    """Mark failed the runs whose worker stopped sending heartbeats (killed, out of memory...)."""
    now = now or timezone.now()
    return TrainingRun.objects.stale(now).update(
        status=TrainingRun.Status.FAILED,
        finished_at=now,
        error=(
            f"The worker stopped reporting for over {settings.PREFLAB_RUN_STALE_SECONDS} seconds "
            "(killed or out of memory?). Retry the run."
        ),
    )


class _Reporter:
    """Writes stage, progress and a heartbeat on the run row; the row is the truth."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.last = 0.0

    def __call__(self, stage: str, share: float = 0.0) -> None:
        start, end = STAGES[stage]
        progress = min(1.0, start + (end - start) * max(0.0, min(1.0, share)))
        now = timezone.now()
        # Finished runs (e.g. reclaimed as stale) are left alone.
        TrainingRun.objects.filter(pk=self.run_id, status=TrainingRun.Status.RUNNING).update(
            stage=stage, progress=progress, heartbeat_at=now
        )


@dataclass
class TrainingData:
    """The comparisons to train on and the features of the distinct completions they compare.

    The per-comparison arrays (PER_COMPARISON) hold comparison i at index i, in primary key order
    as loaded (`put_held_out_last` reorders them): 22 bytes a comparison, its id (int64), its
    prompt as an index into `prompt_ids` (int32), the rows of its chosen and rejected completions
    in `features` and `completion_ids` (int32; int64 from 2**31 completions on) and its margin
    (int16, the database's smallint). Both id lists are sorted, so the indexes order, group and
    split the comparisons as the ids would. `ids_sha256` is the SHA-256 of the sorted comparison
    ids as little-endian int64, taken while they are in primary key order.
    """

    PER_COMPARISON = ("comparison_ids", "prompts", "chosen_rows", "rejected_rows", "margins")

    comparison_ids: np.ndarray
    prompts: np.ndarray
    chosen_rows: np.ndarray
    rejected_rows: np.ndarray
    margins: np.ndarray
    features: sparse.csr_matrix
    completion_ids: np.ndarray
    prompt_ids: np.ndarray
    ids_sha256: str

    def put_held_out_last(self, held_out: np.ndarray) -> int:
        """Reorder the comparisons, those where `held_out` is False first and the held out ones
        last, each group in its present order; return the size of the first group. Each group is
        then a slice of the arrays, a view where a boolean mask would copy. The arrays are
        replaced one at a time: the move costs 8 bytes a comparison (the order) plus one array."""
        order = np.argsort(held_out, kind="stable")
        for name in self.PER_COMPARISON:
            setattr(self, name, getattr(self, name)[order])
        return len(held_out) - int(np.count_nonzero(held_out))


def load_training_data(
    *,
    datasets: list[Dataset],
    feature_config: features.FeatureConfig,
    report: Any,
    include_gold: bool = False,
) -> TrainingData:
    """Stream the comparisons (excluded labelers left out, and gold prompts unless asked for) in
    primary key chunks, then featurize each distinct completion once: pairs are rows indices
    into that matrix.

    Loading holds 34 bytes a comparison (four int64 columns and the int16 margins); they become
    the 22 of `TrainingData` one column at a time, before featurizing, so the featurizer's own
    memory comes on top of those 22 only."""
    comparisons = Comparison.objects.counted().filter(dataset__in=datasets)
    if not include_gold:
        comparisons = comparisons.filter(prompt__is_gold=False)
    total = comparisons.count()
    columns: dict[str, array[int]] = {
        "pk": array("q"),
        "prompt": array("q"),
        "chosen": array("q"),
        "rejected": array("q"),
        "margin": array("h"),  # a PositiveSmallIntegerField: 1 to 32767
    }
    last = 0
    while chunk := list(
        comparisons.filter(pk__gt=last)
        .order_by("pk")
        .values_list("pk", "prompt_id", "chosen_id", "rejected_id", "margin")[:CHUNK_SIZE]
    ):
        for column, values in zip(columns.values(), zip(*chunk, strict=True), strict=True):
            column.extend(values)
        last = chunk[-1][0]
        report("loading", len(columns["pk"]) / max(total, 1))
    if not columns["pk"]:
        raise ValidationError("There are no comparisons to train on in these datasets yet.")
    # Each column becomes an array on its own buffer (np.frombuffer copies nothing); a column is
    # freed as soon as its int32 positions exist.
    comparison_ids = np.frombuffer(columns.pop("pk"), dtype=np.int64)
    ids_sha256 = hashlib.sha256(comparison_ids.astype("<i8", copy=False).data).hexdigest()
    margins = np.frombuffer(columns.pop("margin"), dtype=np.int16)
    prompt_column = np.frombuffer(columns.pop("prompt"), dtype=np.int64)
    prompt_ids = np.unique(prompt_column)
    if len(prompt_ids) < 2:
        raise ValidationError("Training needs comparisons from at least two prompts.")
    prompts = _positions(prompt_ids, prompt_column)
    del prompt_column
    chosen = np.frombuffer(columns.pop("chosen"), dtype=np.int64)
    rejected = np.frombuffer(columns.pop("rejected"), dtype=np.int64)
    completion_ids = np.union1d(np.unique(chosen), np.unique(rejected))
    chosen_rows = _positions(completion_ids, chosen)
    del chosen
    rejected_rows = _positions(completion_ids, rejected)
    del rejected

    matrix = _Rows(feature_config.n_features)
    for start in range(0, len(completion_ids), COMPLETION_CHUNK_SIZE):
        ids = completion_ids[start : start + COMPLETION_CHUNK_SIZE].tolist()
        rows = dict(
            (pk, (prompt_id, text))
            for pk, prompt_id, text in Completion.objects.filter(pk__in=ids).values_list(
                "pk", "prompt_id", "text"
            )
        )
        messages = dict(
            Prompt.objects.filter(pk__in={p for p, _ in rows.values()}).values_list(
                "pk", "messages"
            )
        )
        items = [(messages[rows[pk][0]], rows[pk][1]) for pk in ids]
        matrix.append(features.featurize(items, feature_config))
        report("featurizing", (start + len(ids)) / len(completion_ids))
    return TrainingData(
        comparison_ids=comparison_ids,
        prompts=prompts,
        chosen_rows=chosen_rows,
        rejected_rows=rejected_rows,
        margins=margins,
        features=matrix.csr(),
        completion_ids=completion_ids,
        prompt_ids=prompt_ids,
        ids_sha256=ids_sha256,
    )


def _positions(sorted_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The index in `sorted_ids` of each of `values` (all of which it holds): int32 below 2**31
    ids, int64 from there on. Converted a block at a time, so there is no int64 array as long
    as `values` beside the result, as `np.searchsorted` of them all at once would make."""
    dtype = np.int32 if len(sorted_ids) <= np.iinfo(np.int32).max else np.int64
    positions = np.empty(len(values), dtype=dtype)
    for start in range(0, len(values), POSITION_BLOCK):
        block = slice(start, start + POSITION_BLOCK)
        positions[block] = np.searchsorted(sorted_ids, values[block])
    return positions


class _Rows:
    """A float32 CSR matrix appended to block by block. Its arrays grow in place (`array`
    resizes large buffers without copying them), so there is never a second copy of the whole
    matrix, as `sparse.vstack` of the blocks would make."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.values, self.columns, self.lengths = array("f"), array("i"), array("q")

    def append(self, block: sparse.csr_matrix) -> None:
        self.values.frombytes(block.data.astype(np.float32, copy=False).tobytes())
        self.columns.frombytes(block.indices.astype(np.intc, copy=False).tobytes())
        self.lengths.frombytes(np.diff(block.indptr).astype(np.int64).tobytes())

    def csr(self) -> sparse.csr_matrix:
        """The matrix, on these very buffers (append no more)."""
        index = np.intc if len(self.values) < 2**31 else np.int64
        lengths = np.frombuffer(self.lengths, dtype=np.int64)
        return sparse.csr_matrix(
            (
                np.frombuffer(self.values, dtype=np.float32),
                np.frombuffer(self.columns, dtype=np.intc).astype(index, copy=False),
                np.concatenate([[0], np.cumsum(lengths)]).astype(index),
            ),
            shape=(len(lengths), self.width),
        )


def run_training(*, run_id: int, now: datetime | None = None) -> TrainingRun | None:
    """Train, evaluate and export the reward model of a queued run, reporting on its row.

    Idempotent: the run is claimed by a conditional update, so a second delivery, a deleted or
    a finished run return None with a log line. On failure the run is marked failed with the
    error, any half-written files are removed, and the exception is raised again.
    """
    now = now or timezone.now()
    reclaim_stale_runs(now=now)
    claimed = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        stage="loading",
        progress=0.0,
        error="",
    )
    if not claimed:
        logger.info(
            "training run %s: not queued (gone, running or finished); nothing to do", run_id
        )
        return None
    run = TrainingRun.objects.get(pk=run_id)
    try:
        metrics, model = _train(run, _Reporter(run_id))
    except Exception as error:
        message = "; ".join(error.messages) if isinstance(error, ValidationError) else repr(error)
        TrainingRun.objects.filter(pk=run_id).update(
            status=TrainingRun.Status.FAILED, error=message, finished_at=timezone.now()
        )
        logger.exception("training run %s failed", run_id)
        raise
    TrainingRun.objects.filter(pk=run_id).update(
        status=TrainingRun.Status.SUCCEEDED,
        stage="done",
        progress=1.0,
        metrics=metrics,
        finished_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )
    activate_reward_model(model=model)
    return TrainingRun.objects.get(pk=run_id)


def _train(run: TrainingRun, report: _Reporter) -> tuple[dict[str, Any], RewardModel]:
    config = run.config
    feature_config = features.FeatureConfig.from_dict(config["features"])
    fit_config = fitting.FitConfig.from_dict(config["fit"])
    seed = config["seed"]
    datasets = list(run.datasets.all())
    report("loading")
    data = load_training_data(
        datasets=datasets,
        feature_config=feature_config,
        report=report,
        include_gold=config.get("include_gold", False),
    )

    # Training pairs first, held-out ones last: both are slices (views) of the data's arrays.
    held_out_mask = fitting.group_split(data.prompts, config["held_out_share"], seed)
    if held_out_mask.all() or not held_out_mask.any():
        raise ValidationError("Too few prompts to hold some out for evaluation; label more.")
    train_count = data.put_held_out_last(held_out_mask)
    del held_out_mask
    train, held_out = slice(0, train_count), slice(train_count, len(data.comparison_ids))
    report("fitting")
    weights = fitting.fit_bradley_terry(
        data.features,
        data.chosen_rows[train],
        data.rejected_rows[train],
        fit_config,
        on_progress=lambda share: report("fitting", share),
    )

    report("evaluating")
    scores = fitting.rewards(data.features, weights)
    held_out_metrics = fitting.difference_metrics(
        fitting.reward_differences(
            scores, data.chosen_rows[held_out], data.rejected_rows[held_out]
        ),
        data.margins[held_out],
    )
    train_metrics = fitting.difference_metrics(
        fitting.reward_differences(scores, data.chosen_rows[train], data.rejected_rows[train]),
        data.margins[train],
    )
    curve = _learning_curve(
        data, train, held_out, fit_config, seed, held_out_metrics["accuracy"], report
    )
    metrics = {
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
        "train": train_metrics,
        "held_out": held_out_metrics,
        "labeler_agreement": labeler_agreement(data.prompts, data.chosen_rows, data.rejected_rows),
        "learning_curve": curve,
        "reward_samples": {
            "chosen": _sample(scores[data.chosen_rows[held_out]], seed),
            "rejected": _sample(scores[data.rejected_rows[held_out]], seed),
        },
    }

    report("exporting")
    return metrics, _save_reward_model(
        run, datasets, data, weights, config, metrics, feature_config
    )


def _learning_curve(
    data: TrainingData,
    train: slice,
    held_out: slice,
    fit_config: fitting.FitConfig,
    seed: int,
    full_accuracy: float,
    report: _Reporter,
) -> list[dict[str, float]]:
    """Held-out accuracy of models fitted on growing shares of the training prompts."""
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
        report("evaluating", index / len(LEARNING_CURVE_SHARES))
        weights = fitting.fit_bradley_terry(
            data.features,
            data.chosen_rows[train][subset],
            data.rejected_rows[train][subset],
            fit_config,
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


def _sample(values: np.ndarray, seed: int, size: int = 2000) -> list[float]:
    """At most `size` values, for the reward histogram, so the metrics row stays small."""
    if len(values) > size:
        values = np.random.default_rng(seed).choice(values, size, replace=False)
    return [round(float(v), 5) for v in values]


def _save_reward_model(
    run: TrainingRun,
    datasets: list[Dataset],
    data: TrainingData,
    weights: np.ndarray,
    config: dict[str, Any],
    metrics: dict[str, Any],
    feature_config: features.FeatureConfig,
) -> RewardModel:
    directory = f"reward_models/run-{run.pk}"
    card = {
        "format_version": artifacts.FORMAT_VERSION,
        "run": run.pk,
        "created_at": timezone.now().isoformat(),
        "datasets": [d.slug for d in datasets],
        "data": {
            "comparisons": len(data.comparison_ids),
            "prompts": metrics["prompts"]["total"],
            "completions": len(data.completion_ids),
            "comparison_ids_sha256": data.ids_sha256,
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
    target = Path(settings.MEDIA_ROOT) / directory
    if target.exists():
        shutil.rmtree(target)  # left by an earlier attempt of this run that died before its row
    files = artifacts.write_artifacts(target, weights=weights, card=card)
    try:
        for _ in range(5):
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
    """Make `model` the active one for each of its datasets; others on them are deactivated."""
    with transaction.atomic():
        dataset_ids = list(model.datasets.values_list("pk", flat=True))
        list(Dataset.objects.select_for_update().filter(pk__in=dataset_ids).values_list("pk"))
        RewardModel.objects.filter(datasets__in=dataset_ids, is_active=True).exclude(
            pk=model.pk
        ).update(is_active=False)
        RewardModel.objects.filter(pk=model.pk).update(is_active=True)
    model.refresh_from_db()
    return model
