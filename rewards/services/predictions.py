"""Predictions as data: the active reward model's reward of every completion of its datasets.

Activating a model (`model_versions.activate_reward_model`) queues one `PredictionJob` per dataset
the model was trained on, and a finished import queues one for its dataset's active model. Only
the datasets a model was trained on: those are the datasets it is active for (activation is per
dataset), and a model says nothing useful about prompts of a kind it never saw.

A job walks its dataset's prompts in id order, BATCH at a time, so memory stays flat: it scores
the completions of the prompts that have one without a prediction (`prompt_stats.Scorer`, the
path the review queue uses), inserts them in bulk (conflicts ignored, so a second delivery or a
retry writes nothing twice), and sets each prompt's `uncertainty`, the smallest reward margin
between two of its completions, which uncertainty leasing orders by. A job whose model was
deactivated meanwhile stops: the newer model's own job owns the uncertainty column now.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import pairwise

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from labeling.models import Completion, Dataset, Prompt
from labeling.services import jobs
from labeling.services.prompt_stats import Scorer, active_reward_model
from labeling.services.slots import lock_prompts
from rewards.models import Prediction, PredictionJob, RewardModel

logger = logging.getLogger(__name__)

BATCH = 1000
# A running job untouched this long past the task time limit had its worker die.
STALE_GRACE_SECONDS = 60


def queue_predictions(*, model: RewardModel, dataset: Dataset | None = None) -> list[PredictionJob]:
    """Queue scoring of `dataset` (default: every dataset the model was trained on) by `model`,
    after commit. A dataset that already has a queued job of this model gets none: that job
    will reach the new prompts too (it walks them in id order)."""
    from rewards.tasks import score_completions

    datasets = [dataset] if dataset is not None else list(model.datasets.all())
    queued = set(
        PredictionJob.objects.filter(
            reward_model=model, dataset__in=datasets, status=PredictionJob.Status.QUEUED
        ).values_list("dataset_id", flat=True)
    )
    created = []
    for target in datasets:
        if target.pk in queued:
            continue
        job = PredictionJob.objects.create(reward_model=model, dataset=target)
        score_completions.delay_on_commit(job.pk)
        created.append(job)
    return created


def queue_after_import(*, dataset: Dataset) -> list[PredictionJob]:
    """New prompts of a dataset with an active model get scored too (the import job's end)."""
    model = active_reward_model(dataset)
    return queue_predictions(model=model, dataset=dataset) if model else []


def retry_prediction_job(*, job: PredictionJob, user: User | None = None) -> PredictionJob:
    """A failed job again, as a new job: what the failed one wrote stays and is not redone."""
    from rewards.tasks import score_completions

    if job.status != PredictionJob.Status.FAILED:
        raise ValidationError("Only a failed prediction job can be retried.")
    retry = PredictionJob.objects.create(
        reward_model_id=job.reward_model_id, dataset_id=job.dataset_id, retry_of=job
    )
    score_completions.delay_on_commit(retry.pk)
    return retry


def reclaim_stale_prediction_jobs(*, now: datetime | None = None) -> int:
    """Mark failed the jobs still running past the task time limit: their worker died. What
    they wrote stays; a retry scores the rest."""
    now = now or timezone.now()
    limit = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + STALE_GRACE_SECONDS)
    return PredictionJob.objects.filter(
        status=PredictionJob.Status.RUNNING, started_at__lt=limit
    ).update(
        status=PredictionJob.Status.FAILED,
        finished_at=now,
        error="The worker stopped before the job finished (killed or out of memory?). Retry it.",
    )


def run_prediction_job(*, job_id: int, now: datetime | None = None) -> PredictionJob | None:
    """Score the job's dataset; None, with a log line, when the job is not queued any more.
    A failure is stored on the job and raised again."""
    now = now or timezone.now()
    if not jobs.claim_job(PredictionJob, job_id, now=now):
        return None
    job = PredictionJob.objects.select_related("reward_model", "dataset").get(pk=job_id)
    progress = jobs.ProgressWriter(PredictionJob, job_id)
    with jobs.failing_loudly(PredictionJob, job_id):
        scored = score_dataset(
            model=job.reward_model,
            dataset=job.dataset,
            on_progress=lambda share, scored: progress(share, scored=scored),
        )
    jobs.finish_job(PredictionJob, job_id, scored=scored)
    return PredictionJob.objects.get(pk=job_id)


def score_dataset(
    *,
    model: RewardModel,
    dataset: Dataset,
    on_progress: Callable[[float, int], None] | None = None,
) -> int:
    """Write `model`'s predictions of the dataset's unscored completions and the prompts'
    uncertainty, BATCH prompts at a time; returns how many completions were scored."""
    total = Prompt.objects.filter(dataset=dataset).count() or 1
    scorer: Scorer | None = None
    last, done, scored = 0, 0, 0
    while chunk := list(
        Prompt.objects.filter(dataset=dataset, pk__gt=last)
        .order_by("pk")
        .values_list("pk", "uncertainty")[:BATCH]
    ):
        if not RewardModel.objects.filter(pk=model.pk, is_active=True).exists():
            logger.info("reward model v%s was deactivated; its scoring stops", model.version)
            break
        last = chunk[-1][0]
        prompt_ids = [pk for pk, _ in chunk]
        unscored = list(
            Completion.objects.filter(prompt_id__in=prompt_ids)
            .filter(
                ~Exists(Prediction.objects.filter(reward_model=model, completion=OuterRef("pk")))
            )
            .order_by()
            .values_list("prompt_id", flat=True)
            .distinct()
        )
        if unscored:
            scorer = scorer or Scorer(model)
            scored += _write_predictions(model, scorer.head_scores(unscored), scorer.heads)
        _set_uncertainty(model, dict(chunk))
        done += len(chunk)
        if on_progress is not None:
            on_progress(min(0.99, done / total), scored)
    return scored


def _write_predictions(
    model: RewardModel, scores: dict[int, dict[int, list[float]]], heads: list[str]
) -> int:
    """Store each completion's overall reward and, for a model with per-criterion heads, each
    head's reward in `criteria` ({} without heads)."""
    rows = [
        Prediction(
            reward_model=model,
            completion_id=completion_id,
            reward=rewards[0],
            criteria=dict(zip(heads, rewards[1:], strict=True)),
        )
        for by_completion in scores.values()
        for completion_id, rewards in by_completion.items()
    ]
    Prediction.objects.bulk_create(rows, ignore_conflicts=True, batch_size=BATCH)
    return len(rows)


def uncertainty(rewards: list[float]) -> float | None:
    """The smallest margin between two rewards (0 for a tie): how close the model is to not
    knowing which of two completions is better. None with fewer than two completions."""
    if len(rewards) < 2:
        return None
    ordered = sorted(rewards)
    return round(min(b - a for a, b in pairwise(ordered)), 6)


def _set_uncertainty(model: RewardModel, current: dict[int, float | None]) -> None:
    """Set `Prompt.uncertainty` of these prompts from the model's predictions, writing only the
    rows that change, under their locks in id order (as leasing takes them)."""
    rewards: dict[int, list[float]] = defaultdict(list)
    for prompt_id, reward in Prediction.objects.filter(
        reward_model=model, completion__prompt_id__in=list(current)
    ).values_list("completion__prompt_id", "reward"):
        rewards[prompt_id].append(reward)
    changed = {
        prompt_id: value
        for prompt_id, old in current.items()
        if (value := uncertainty(rewards.get(prompt_id, []))) != old
    }
    if not changed:
        return
    with transaction.atomic():
        lock_prompts(changed)
        prompts = [Prompt(pk=pk, uncertainty=value) for pk, value in changed.items()]
        Prompt.objects.bulk_update(prompts, ["uncertainty"], batch_size=BATCH)
