"""Importing prompts and completions: straight from a file, or queued for a worker.

The files are read by `labeling.formats` (plain records) and written in batches by
`import_batches`; this module runs an import, all or nothing, and its background jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO
from uuid import uuid4

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from labeling import formats
from labeling.models import Dataset, ImportJob
from labeling.services import jobs
from labeling.services.import_batches import PreparedBatches, write_batch

logger = logging.getLogger(__name__)

UPLOAD_FOLDER = "imports"
# A running import is reclaimed this long after the task time limit (when Celery has killed it).
STALE_GRACE_SECONDS = 120


@dataclass
class ImportResult:
    created: int = 0
    unchanged: int = 0
    skipped: list[formats.SkippedLine] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.created} prompts imported, {self.unchanged} already present"
        if self.skipped:
            lines = ", ".join(str(s.line) for s in self.skipped[:20])
            more = " ..." if len(self.skipped) > 20 else ""
            text += (
                f", {len(self.skipped)} lines skipped (lines {lines}{more}): "
                f"{self.skipped[0].reason}"
            )
        return text


class ImportCancelled(Exception):
    """Raised inside an import whose cancellation was asked for: its transaction rolls back."""


def import_dataset(
    *,
    dataset: Dataset,
    stream: IO[bytes],
    filename: str,
    format: str | None = None,
    size: int | None = None,
    strict: bool = False,
    on_progress: Callable[[int], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
) -> ImportResult:
    """Import prompts and completions from a PrefLab JSONL, Anthropic HH or CSV file (.gz too).

    All or nothing: the first bad line raises ValidationError naming the line and the field, and
    the transaction leaves the dataset as it was. Idempotent: a prompt whose external id is already
    in the dataset with the same content is counted as unchanged; with other content, it is an
    error. HH lines that cannot be split into one conversation and two replies are skipped and
    reported, or are errors when `strict`. `on_progress` is called after each batch with the
    number of (compressed) bytes read so far; when `is_cancelled` says so after a batch, the
    import stops with ImportCancelled and nothing is written. New prompts of a dataset with an
    active reward model are scored by a worker after commit (`rewards.services.predictions`).
    """
    limit = settings.PREFLAB_IMPORT_MAX_BYTES
    if size is not None and size > limit:
        raise ValidationError(f"the file is {size} bytes; the limit is {limit} bytes")
    result = ImportResult()
    prepared = PreparedBatches(
        stream,
        filename=filename,
        format=format,
        strict=strict,
        copy_rows_for=dataset.pk if connection.vendor == "postgresql" else None,
    )
    with prepared, transaction.atomic():
        # Foreign keys are checked as each COPY ends rather than all at the commit, so that the
        # database checks one batch while the reader prepares the next.
        _check_constraints("IMMEDIATE")
        # Into a dataset that had no prompts, a batch is written without looking its ids up;
        # should one be there after all (an earlier line, or another import), the unique id
        # refuses it and the batch is written again, looking up, as are the batches after it.
        look_up = dataset.prompts.exists()
        for batch in prepared:
            result.skipped.extend(batch.skipped)
            if look_up:
                created, unchanged = write_batch(dataset, batch.records)
            else:
                try:
                    with transaction.atomic():
                        created, unchanged = write_batch(dataset, batch.records, look_up=False)
                except IntegrityError:
                    look_up = True
                    created, unchanged = write_batch(dataset, batch.records)
            result.created += created
            result.unchanged += unchanged
            if on_progress is not None:
                on_progress(batch.position)
            if is_cancelled is not None and is_cancelled():
                raise ImportCancelled
        _check_constraints("DEFERRED")  # as Django declares them, for a caller's transaction
        if result.created:
            # The dataset's active reward model scores the new prompts once they are committed.
            from rewards.services.predictions import queue_after_import  # rewards builds on this

            queue_after_import(dataset=dataset)
    return result


def _check_constraints(when: str) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SET CONSTRAINTS ALL {when}")


def queue_import(
    *,
    dataset: Dataset,
    upload: IO[bytes],
    filename: str,
    size: int,
    format: str | None = None,
    strict: bool = False,
    user: User | None = None,
) -> ImportJob:
    """Store an uploaded file and queue its import; the worker runs `run_import_job`."""
    limit = settings.PREFLAB_IMPORT_MAX_BYTES
    if size > limit:
        raise ValidationError({"file": f"The file is {size} bytes; the limit is {limit} bytes."})
    if format is not None and format not in formats.FORMATS:
        raise ValidationError({"format": f"Use one of {', '.join(formats.FORMATS)}."})
    from labeling.tasks import import_file

    task_id = str(uuid4())
    job = ImportJob(
        dataset=dataset,
        created_by=user,
        filename=filename[:255],
        size=size,
        format=format or "",
        strict=strict,
        task_id=task_id,
    )
    job.file.save(f"{task_id}-{Path(filename).name[:100]}", File(upload), save=False)
    job.save()
    transaction.on_commit(lambda: import_file.apply_async((job.pk,), task_id=task_id))
    return job


def run_import_job(*, job_id: int, now: datetime | None = None) -> ImportJob | None:
    """Import a queued file. Returns None, with a log line, when there is nothing to do.

    The job is claimed by a conditional update, so a second delivery of the task does nothing; a
    job left running by a worker that died is claimed again after the task time limit. A failed
    import stores its error on the job (the import itself changed nothing) and re-raises; a
    cancelled one ends cancelled. Either way the uploaded file is deleted.
    """
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    if not jobs.claim_job(ImportJob, job_id, now=now, reclaim_started_before=stale):
        return None
    job = ImportJob.objects.select_related("dataset").get(pk=job_id)
    progress = jobs.ProgressWriter(ImportJob, job_id, beside_transaction=True)
    try:
        with jobs.failing_loudly(ImportJob, job_id, file=""), job.file.open("rb") as stream:
            try:
                result = import_dataset(
                    dataset=job.dataset,
                    stream=stream,
                    filename=job.filename,
                    format=job.format or None,
                    size=job.size,
                    strict=job.strict,
                    on_progress=lambda read: progress(min(0.99, read / (job.size or 1))),
                    is_cancelled=lambda: jobs.cancel_requested(ImportJob, job_id),
                )
            except ImportCancelled:
                message = "Cancelled while importing; nothing was imported."
                _end_cancelled(job_id, message, [ImportJob.Status.RUNNING])
                return ImportJob.objects.get(pk=job_id)
    finally:
        progress.close()
        _delete_upload(job)
    jobs.finish_job(
        ImportJob,
        job_id,
        file="",
        created_count=result.created,
        unchanged_count=result.unchanged,
        skipped=[{"line": s.line, "reason": s.reason} for s in result.skipped],
    )
    return ImportJob.objects.get(pk=job_id)


def cancel_import(*, job: ImportJob, now: datetime | None = None) -> ImportJob:
    """Stop an import: a queued one at once, a running one after the batch it is writing (its
    transaction rolls back, so nothing of the file is imported). A finished one is refused."""
    if job.is_finished:
        raise ValidationError(f"This import has already {job.status}; there is nothing to stop.")
    message = "Cancelled before it started; nothing was imported."
    queued = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.QUEUED).exists()
    # Only a queued job is written to here: a running import on SQLite holds the one write
    # lock until it ends, so the worker is asked through the cache instead.
    try:
        ended = queued and _end_cancelled(job.pk, message, [ImportJob.Status.QUEUED], now=now)
    except OperationalError:  # claimed meanwhile and locked on SQLite
        ended = False
    if ended:
        _delete_upload(job)
    else:
        jobs.request_cancel(ImportJob, job.pk)
    job.refresh_from_db()
    return job


def _end_cancelled(
    job_id: int, message: str, statuses: list[str], *, now: datetime | None = None
) -> bool:
    """Mark the job cancelled if its status is one of `statuses`; False if it was not."""
    return bool(
        ImportJob.objects.filter(pk=job_id, status__in=statuses).update(
            status=ImportJob.Status.CANCELLED,
            error=message,
            finished_at=now or timezone.now(),
            file="",
        )
    )


def _delete_upload(job: ImportJob) -> None:
    if job.file.name:
        job.file.delete(save=False)


def reclaim_stale_imports(*, now: datetime | None = None) -> int:
    """Mark failed the imports still running past the task time limit (their worker died: the
    import rolled back), and delete their files (the periodic job)."""
    now = now or timezone.now()
    limit = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + STALE_GRACE_SECONDS)
    stale = list(ImportJob.objects.filter(status=ImportJob.Status.RUNNING, started_at__lt=limit))
    for job in stale:
        updated = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.RUNNING).update(
            status=ImportJob.Status.FAILED,
            finished_at=now,
            file="",
            error="The worker stopped before the import finished (killed or out of memory?); "
            "nothing was imported. Upload the file again.",
        )
        if updated:
            _delete_upload(job)
    return len(stale)


def delete_old_uploads(*, now: datetime | None = None) -> int:
    """Delete uploaded files that no queued or running import needs and that are older than
    PREFLAB_UPLOAD_RETENTION_HOURS (left by a crash, say) (the periodic job)."""
    now = now or timezone.now()
    folder = Path(settings.MEDIA_ROOT) / UPLOAD_FOLDER
    if not folder.is_dir():
        return 0
    needed = {
        Path(name).name
        for name in ImportJob.objects.filter(
            status__in=[ImportJob.Status.QUEUED, ImportJob.Status.RUNNING]
        ).values_list("file", flat=True)
    }
    cutoff = (now - timedelta(hours=settings.PREFLAB_UPLOAD_RETENTION_HOURS)).timestamp()
    deleted = 0
    for path in folder.iterdir():
        if path.is_file() and path.name not in needed and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            deleted += 1
    return deleted
