from __future__ import annotations

from celery import shared_task

from rewards.services import predictions, runs


@shared_task(name="rewards.train_reward_model")
def train_reward_model(run_id: int) -> None:
    """Idempotent: the run is claimed by a conditional update; a killed worker's run is reclaimed
    as failed by its lost heartbeat (`runs.reclaim_stale_runs`) and can be retried."""
    runs.run_training(run_id=run_id)


@shared_task(name="rewards.reclaim_stale_runs")
def reclaim_stale_runs() -> int:
    return runs.reclaim_stale_runs()


@shared_task(name="rewards.score_completions")
def score_completions(job_id: int) -> None:
    """Idempotent: the job is claimed by a conditional update and predictions are inserted with
    conflicts ignored, so a retry scores only what is still missing."""
    predictions.run_prediction_job(job_id=job_id)


@shared_task(name="rewards.reclaim_stale_prediction_jobs")
def reclaim_stale_prediction_jobs() -> int:
    return predictions.reclaim_stale_prediction_jobs()
