"""Training runs: checking their options, starting, running in a worker, reclaiming when a
worker dies, retrying."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from labeling.models import AuditEvent, Dataset, Labelers
from labeling.services import audit, jobs
from rewards.models import TrainingRun
from rewards.services.heads import check_heads, heads_option

DEFAULT_HELD_OUT_SHARE = 0.2
# "ignore": the labelers' comparisons only; "prefer": for a prompt a reviewer adjudicated, the
# pairs of its newest adjudicated order instead of its labelers' comparisons.
ADJUDICATED_MODES = ("ignore", "prefer")
# Where each stage starts and ends on the run's progress bar.
STAGES = {
    "loading": (0.0, 0.1),
    "featurizing": (0.1, 0.35),
    "fitting": (0.35, 0.7),
    "heads": (0.7, 0.8),  # the per-criterion heads, when the run has any
    "evaluating": (0.8, 0.95),
    "exporting": (0.95, 1.0),
}


def run_config(data: dict[str, Any]) -> dict[str, Any]:
    """Validate a run's options and fill in the defaults; a ValidationError names the field."""
    from rewards import features, fitting  # the ML stack, loaded by what trains, not at start
    from rewards.services.reliability import check_weighting_options

    known = {
        "features",
        "fit",
        "held_out_share",
        "seed",
        "include_gold",
        "adjudicated",
        "weighting",
        "min_reliability",
        "heads",
        "labelers",
    }
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
    adjudicated = data.get("adjudicated", "ignore")
    if adjudicated not in ADJUDICATED_MODES:
        raise ValidationError(
            {"adjudicated": f"Use one of {', '.join(ADJUDICATED_MODES)} (or leave it out)."}
        )
    labelers = data.get("labelers", Labelers.HUMAN)
    if labelers not in Labelers.values:
        raise ValidationError(
            {"labelers": f"Use one of {', '.join(Labelers.values)} (or leave it out: human)."}
        )
    heads = heads_option(data.get("heads"))
    return {
        "features": feature_config.to_dict(),
        "fit": fit_config.to_dict(),
        "held_out_share": float(share),
        "seed": seed,
        "include_gold": include_gold,
        "adjudicated": adjudicated,
        # Whose comparisons it trains on: human labelers', AI labelers' or both.
        "labelers": str(labelers),
        **check_weighting_options(data),
        # Left out when empty, so a run without heads has the config runs always had.
        **({"heads": heads} if heads else {}),
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

    workspaces = {dataset.workspace_id for dataset in datasets}
    if len(workspaces) > 1:
        raise ValidationError({"datasets": "A run trains on the datasets of one workspace."})
    checked = run_config(config or {})
    if checked.get("heads"):
        checked["heads"] = check_heads(checked["heads"], datasets)
    with transaction.atomic():
        run = TrainingRun.objects.create(
            workspace_id=workspaces.pop(),
            config=checked,
            created_by=user,
            retry_of=retry_of,
        )
        run.datasets.set(datasets)
        audit.record(
            action=AuditEvent.Action.TRAINING_STARTED,
            workspace_id=run.workspace_id,
            actor=user,
            run=run.pk,
            datasets=sorted(dataset.slug for dataset in datasets),
            config=checked,
        )
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


class StageReporter:
    """Reports a run's stage and its progress within the stage (0..1) on the run row, with a
    heartbeat: a run whose heartbeat stops is reclaimed as failed (`reclaim_stale_runs`)."""

    def __init__(self, run_id: int) -> None:
        self.write = jobs.ProgressWriter(TrainingRun, run_id)

    def __call__(self, stage: str, share: float = 0.0) -> None:
        start, end = STAGES[stage]
        progress = start + (end - start) * max(0.0, min(1.0, share))
        self.write(progress, stage=stage, heartbeat_at=timezone.now())


def run_training(*, run_id: int, now: datetime | None = None) -> TrainingRun | None:
    """Train, evaluate and export the reward model of a queued run, reporting on its row.

    Idempotent: the run is claimed by a conditional update, so a second delivery, a deleted or
    a finished run return None with a log line. On failure the run is marked failed with the
    error, any half-written files are removed, and the exception is raised again.
    """
    from rewards.services import model_versions, training

    now = now or timezone.now()
    reclaim_stale_runs(now=now)
    if not jobs.claim_job(TrainingRun, run_id, now=now, heartbeat_at=now, stage="loading"):
        return None
    run = TrainingRun.objects.get(pk=run_id)
    with jobs.failing_loudly(TrainingRun, run_id):
        metrics, model = training.train(run, StageReporter(run_id))
    finished = jobs.finish_job(
        TrainingRun, run_id, stage="done", metrics=metrics, heartbeat_at=timezone.now()
    )
    if finished:  # a run reclaimed as failed meanwhile keeps its model version inactive
        model_versions.activate_reward_model(model=model)
    return TrainingRun.objects.get(pk=run_id)
