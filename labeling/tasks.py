"""Celery tasks of the labeling app: each takes ids and calls one service. The periodic ones are
scheduled by Celery beat (`CELERY_BEAT_SCHEDULE` in the settings); each worker process also
notes itself seen for /healthz (`start_heartbeat`)."""

from __future__ import annotations

import logging
import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from labeling.services import (
    ai_labeling,
    imports,
    invites,
    leaderboard,
    password_reset,
    quality_report,
    slots,
)

logger = logging.getLogger(__name__)

WORKER_SEEN_KEY = "preflab:worker-seen"


@shared_task(name="labeling.import_file", acks_late=True, reject_on_worker_lost=True)
def import_file(job_id: int) -> None:
    """Idempotent: the job is claimed by a conditional update, and the import is all or nothing."""
    imports.run_import_job(job_id=job_id)


@shared_task(name="labeling.run_ai_labeler", acks_late=True, reject_on_worker_lost=True)
def run_ai_labeler(run_id: int) -> None:
    """Idempotent: the run is claimed by a conditional update, and a prompt it ranked already
    is never ranked again (`AIJudgment`'s unique constraint); a redelivered run goes on."""
    ai_labeling.run_ai_labeler(run_id=run_id)


@shared_task(name="labeling.refresh_quality_report")
def refresh_quality_report(dataset_id: int) -> None:
    """Idempotent: recomputing a report from the same rankings gives the same report."""
    quality_report.refresh_report(dataset_id=dataset_id)


@shared_task(name="labeling.refresh_leaderboard")
def refresh_leaderboard(leaderboard_id: int) -> None:
    """Idempotent: recomputing a leaderboard from the same battles gives the same one (seeded)."""
    leaderboard.refresh_leaderboard(leaderboard_id=leaderboard_id)


@shared_task(name="labeling.send_password_reset")
def send_password_reset(user_id: int, domain: str, use_https: bool) -> None:
    """Not retried: a lost e-mail is asked for again, a repeated one does no harm."""
    password_reset.send_password_reset(user_id=user_id, domain=domain, use_https=use_https)


@shared_task(name="labeling.expire_stale_leases")
def expire_stale_leases() -> int:
    return slots.expire_stale_leases()


@shared_task(name="labeling.reclaim_stale_imports")
def reclaim_stale_imports() -> int:
    return imports.reclaim_stale_imports()


@shared_task(name="labeling.refresh_stale_reports")
def refresh_stale_reports() -> int:
    return quality_report.refresh_stale_reports()


@shared_task(name="labeling.delete_old_uploads")
def delete_old_uploads() -> int:
    return imports.delete_old_uploads()


def note_worker_seen() -> None:
    """/healthz reads when a worker was last seen, from the shared cache."""
    cache.set(WORKER_SEEN_KEY, timezone.now().timestamp(), timeout=None)


_stop_heartbeat = threading.Event()


@worker_ready.connect
def start_heartbeat(**kwargs: object) -> None:
    """A worker process (`celery worker`) notes itself seen every WORKER_HEARTBEAT_SECONDS from
    a thread of its main process, so a pool busy with a long training run does not hide it."""

    def beat() -> None:
        while not _stop_heartbeat.is_set():
            try:
                note_worker_seen()
            except Exception:  # the cache is down: /healthz will say so
                logger.warning("could not note the worker's heartbeat", exc_info=True)
            _stop_heartbeat.wait(settings.PREFLAB_WORKER_HEARTBEAT_SECONDS)

    _stop_heartbeat.clear()
    threading.Thread(target=beat, name="preflab-heartbeat", daemon=True).start()


@worker_shutdown.connect
def stop_heartbeat(**kwargs: object) -> None:
    _stop_heartbeat.set()


@shared_task(name="labeling.send_invitation")
def send_invitation(user_id: int, workspace_name: str, domain: str, use_https: bool) -> None:
    """Not retried: a lost invitation is sent again from the page; a repeated one does no harm."""
    invites.send_invitation(
        user_id=user_id, workspace_name=workspace_name, domain=domain, use_https=use_https
    )
