"""What every background job does the same way: imports, training runs and quality reports.

The job's row is the truth. A worker claims the row with a conditional update (a second
delivery of the task then finds nothing to claim), writes its progress and heartbeat on the row
while it runs, and on failure stores the error text on the row and raises again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, connections
from django.db.models import Q, QuerySet
from django.utils import timezone

from labeling.errors import failure_text
from labeling.models import BackgroundJob

logger = logging.getLogger(__name__)

Status = BackgroundJob.Status


def claim_job(
    model: type[BackgroundJob],
    job_id: int,
    *,
    now: datetime,
    reclaim_started_before: datetime | None = None,
    **fields: Any,
) -> bool:
    """Take a queued job, and with `reclaim_started_before` also a running one started before
    then (its worker is presumed dead), by a conditional update; True if this caller has it.

    The claim sets status running, `started_at`, progress 0, no error, and `fields`."""
    claimable = Q(status=Status.QUEUED)
    if reclaim_started_before is not None:
        claimable |= Q(status=Status.RUNNING, started_at__lt=reclaim_started_before)
    claimed = model._default_manager.filter(claimable, pk=job_id).update(
        status=Status.RUNNING, started_at=now, progress=0.0, error="", **fields
    )
    if not claimed:
        name = model._meta.verbose_name
        logger.info("%s %s: not queued (gone, running or finished); nothing to do", name, job_id)
    return bool(claimed)


def record_failure(rows: QuerySet[Any], error: BaseException, **fields: Any) -> str:
    """Store why work failed (`failure_text`) on `rows` with `fields`; return the text."""
    text = failure_text(error)
    rows.update(error=text, **fields)
    return text


def store_computed(
    rows: QuerySet[Any], compute: Callable[[], Any], *, cursor: int, generation: int
) -> None:
    """Compute a stored statistic (a quality report, a leaderboard) and write it on its row
    with the ranking `cursor` it covers and the `generation` it was started at (an
    invalidation meanwhile raised the row's own, so it stays invalidated). A failure is stored
    on the row, with the time, and raised."""
    started = time.monotonic()
    try:
        data = compute()
    except Exception as error:
        record_failure(rows, error, refresh_queued_at=timezone.now())
        raise
    rows.update(
        data=data,
        ranking_cursor=cursor,
        computed_at=timezone.now(),
        computed_generation=generation,
        seconds=time.monotonic() - started,
        error="",
        refresh_queued_at=None,
    )


def finish_job(model: type[BackgroundJob], job_id: int, **fields: Any) -> bool:
    """Mark a running job succeeded; False (with a log line) if it is no longer running, e.g.
    reclaimed as failed meanwhile: a finished job's status is never overwritten."""
    finished = model._default_manager.filter(pk=job_id, status=Status.RUNNING).update(
        status=Status.SUCCEEDED, progress=1.0, finished_at=timezone.now(), **fields
    )
    if not finished:
        name = model._meta.verbose_name
        logger.warning("%s %s ended after it was no longer running; left as it is", name, job_id)
    return bool(finished)


@contextmanager
def failing_loudly(model: type[BackgroundJob], job_id: int, **fields: Any) -> Iterator[None]:
    """Mark the job failed, with the error and `fields`, if the block raises; the exception
    goes on."""
    try:
        yield
    except Exception as error:
        record_failure(
            model._default_manager.filter(pk=job_id),
            error,
            status=Status.FAILED,
            finished_at=timezone.now(),
            **fields,
        )
        logger.exception("%s %s failed", model._meta.verbose_name, job_id)
        raise


def request_cancel(model: type[BackgroundJob], job_id: int) -> None:
    """Ask the worker running the job to stop, through the shared cache: the job's own row may
    be locked by the work it is doing (an import's transaction on SQLite, say)."""
    cache.set(_cancel_key(model, job_id), True, timeout=settings.CELERY_TASK_TIME_LIMIT * 2)


def cancel_requested(model: type[BackgroundJob], job_id: int) -> bool:
    return bool(cache.get(_cancel_key(model, job_id)))


def _cancel_key(model: type[BackgroundJob], job_id: int) -> str:
    return f"preflab:cancel:{model._meta.label_lower}:{job_id}"


class ProgressWriter:
    """Writes a running job's progress (0..1) and other fields, such as a heartbeat, on its row.

    A job that runs inside one transaction (an import) cannot commit its own progress, so with
    `beside_transaction` the writes go through a second connection that commits each one; SQLite
    allows one writer at a time, so there nothing is written until the job is done. A job that
    is no longer running (reclaimed as stale, say) is left alone.
    """

    def __init__(
        self, model: type[BackgroundJob], job_id: int, *, beside_transaction: bool = False
    ) -> None:
        self.model, self.job_id = model, job_id
        self.side = None
        self.enabled = True
        if beside_transaction:
            self.enabled = connection.vendor == "postgresql"
            if self.enabled:
                self.side = connections.create_connection("default")

    def __call__(self, share: float, **fields: Any) -> None:
        if not self.enabled:
            return
        values = {"progress": min(1.0, max(0.0, share)), **fields}
        if self.side is None:
            self.model._default_manager.filter(pk=self.job_id, status=Status.RUNNING).update(
                **values
            )
            return
        column_of = {field.name: field.column for field in self.model._meta.concrete_fields}
        columns = [column_of[name] for name in values]
        assignments = ", ".join(f"{column} = %s" for column in columns)
        with self.side.cursor() as cursor:
            cursor.execute(
                f"UPDATE {self.model._meta.db_table} SET {assignments} "
                "WHERE id = %s AND status = %s",
                [*values.values(), self.job_id, Status.RUNNING],
            )

    def close(self) -> None:
        if self.side is not None:
            self.side.close()
