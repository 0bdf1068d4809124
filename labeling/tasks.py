"""Celery tasks of the labeling app: each takes ids and calls one service. The periodic ones are
scheduled by Celery beat (`CELERY_BEAT_SCHEDULE` in the settings)."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready
from django.core.cache import cache
from django.utils import timezone

from labeling.services import imports, leasing, quality_report

WORKER_SEEN_KEY = "preflab:worker-seen"


@shared_task(name="labeling.import_file", acks_late=True, reject_on_worker_lost=True)
def import_file(job_id: int) -> None:
    """Idempotent: the job is claimed by a conditional update, and the import is all or nothing."""
    imports.run_import_job(job_id=job_id)


@shared_task(name="labeling.refresh_quality_report")
def refresh_quality_report(dataset_id: int) -> None:
    """Idempotent: recomputing a report from the same rankings gives the same report."""
    quality_report.refresh_report(dataset_id=dataset_id)


@shared_task(name="labeling.expire_stale_leases")
def expire_stale_leases() -> int:
    return leasing.expire_stale_leases()


@shared_task(name="labeling.reclaim_stale_imports")
def reclaim_stale_imports() -> int:
    return imports.reclaim_stale_imports()


@shared_task(name="labeling.refresh_stale_reports")
def refresh_stale_reports() -> int:
    return quality_report.refresh_stale_reports()


@shared_task(name="labeling.delete_old_uploads")
def delete_old_uploads() -> int:
    return imports.delete_old_uploads()


@shared_task(name="labeling.worker_heartbeat")
def worker_heartbeat() -> None:
    """A worker ran this: /healthz reads when, from the shared cache."""
    cache.set(WORKER_SEEN_KEY, timezone.now().timestamp(), timeout=None)


@worker_ready.connect
def heartbeat_at_start(**kwargs: object) -> None:
    """A worker that just started counts as seen, before beat's first heartbeat."""
    worker_heartbeat()
