from __future__ import annotations

from celery import shared_task

from rewards.services import runs


@shared_task(name="rewards.train_reward_model")
def train_reward_model(run_id: int) -> None:
    """Idempotent: the run is claimed by a conditional update; a killed worker's run is reclaimed
    as failed by its lost heartbeat (`runs.reclaim_stale_runs`) and can be retried."""
    runs.run_training(run_id=run_id)


@shared_task(name="rewards.reclaim_stale_runs")
def reclaim_stale_runs() -> int:
    return runs.reclaim_stale_runs()
