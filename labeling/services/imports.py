"""Importing prompts and completions: straight from a file, or queued for a worker.

The files are read by `labeling.formats` (plain records); this module writes them, all or
nothing, with COPY on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any
from uuid import uuid4

import orjson
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import IntegrityError, OperationalError, connection, reset_queries, transaction
from django.utils import timezone

from labeling import formats
from labeling.models import Completion, Dataset, ImportJob, Prompt
from labeling.services import jobs

logger = logging.getLogger(__name__)

IMPORT_BATCH_SIZE = 2000
IMPORT_BATCH_CHARS = 16_000_000
UPLOAD_FOLDER = "imports"
# A running import is reclaimed this long after the task time limit (when Celery has killed it).
STALE_GRACE_SECONDS = 120
# The interpreter's switch interval while an import reads and writes in two threads.
SWITCH_INTERVAL = 0.0005


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


def batches(
    records: Iterable[formats.ParsedPrompt | formats.SkippedLine],
) -> Iterator[list[formats.ParsedPrompt | formats.SkippedLine]]:
    """Records in batches of IMPORT_BATCH_SIZE, or fewer once they hold IMPORT_BATCH_CHARS
    characters of text, so a batch of long prompts stays small in memory."""
    batch: list[formats.ParsedPrompt | formats.SkippedLine] = []
    chars = 0
    for record in records:
        batch.append(record)
        if isinstance(record, formats.ParsedPrompt):
            chars += sum(len(m["content"]) for m in record.messages)
            chars += sum(len(c.text) for c in record.completions)
        if len(batch) >= IMPORT_BATCH_SIZE or chars >= IMPORT_BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def read_limits() -> formats.ReadLimits:
    return formats.ReadLimits(
        max_bytes=settings.PREFLAB_IMPORT_MAX_UNCOMPRESSED_BYTES,
        max_line_bytes=settings.PREFLAB_IMPORT_MAX_LINE_BYTES,
        max_records=settings.PREFLAB_IMPORT_MAX_PROMPTS,
    )


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
    import stops with ImportCancelled and nothing is written.
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
                created, unchanged = _import_batch(dataset, batch.records)
            else:
                try:
                    with transaction.atomic():
                        created, unchanged = _import_batch(dataset, batch.records, look_up=False)
                except IntegrityError:
                    look_up = True
                    created, unchanged = _import_batch(dataset, batch.records)
            result.created += created
            result.unchanged += unchanged
            if on_progress is not None:
                on_progress(batch.position)
            if is_cancelled is not None and is_cancelled():
                raise ImportCancelled
        _check_constraints("DEFERRED")  # as Django declares them, for a caller's transaction
    return result


def _check_constraints(when: str) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SET CONSTRAINTS ALL {when}")


@dataclass
class PreparedPrompt:
    """A validated record with its content hash and, for PostgreSQL, its rows in COPY's text
    format, each without the prompt id that starts it (drawn when the batch is written)."""

    record: formats.ParsedPrompt
    content_hash: str
    prompt_row: str = ""
    completion_rows: tuple[str, ...] = ()


@dataclass
class PreparedBatch:
    records: list[PreparedPrompt]
    skipped: list[formats.SkippedLine]
    position: int  # bytes of the (compressed) stream read so far


class PreparedBatches:
    """The file's records in validated batches, read, parsed, hashed and (for PostgreSQL) put
    in COPY's text format by a thread of their own while the caller writes the batch before;
    one more batch waits at most, so memory stays flat.

    On a 2-core machine this overlaps Python's work with the database's (bench/import_bench.py:
    about 8,700 prompts/s in one thread, 11,000 to 13,000 in two). The thread touches no
    database. The first error of the file (a malformed or refused line) is raised by the
    iteration, in line order, after the batches before it; leaving the `with` block stops the
    thread, while the caller's stream is still open.
    """

    AHEAD = 1

    def __init__(
        self,
        stream: IO[bytes],
        *,
        filename: str,
        format: str | None,
        strict: bool,
        copy_rows_for: int | None = None,
    ) -> None:
        self.stream, self.filename, self.format, self.strict = stream, filename, format, strict
        self.dataset_id = copy_rows_for  # a dataset id: write each record's COPY rows for it
        self.queue: queue.Queue[PreparedBatch | BaseException | None] = queue.Queue(self.AHEAD)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, name="preflab-import-reader")

    def __enter__(self) -> PreparedBatches:
        # The writing thread waits on the database many times a batch, and each time it is
        # answered it waits again for the interpreter lock, up to the switch interval (5 ms by
        # default), while the reader parses: a shorter interval for the import's length.
        self.switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self.switch_interval, SWITCH_INTERVAL))
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        while self.thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self.queue.get(timeout=0.1)  # unblock a reader waiting to put a batch
        sys.setswitchinterval(self.switch_interval)

    def __iter__(self) -> Iterator[PreparedBatch]:
        while (item := self.queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def _put(self, item: PreparedBatch | BaseException | None) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(queue.Full):
                self.queue.put(item, timeout=0.1)
                return

    def _read(self) -> None:
        records = formats.read_records(
            self.stream, filename=self.filename, format=self.format, limits=read_limits()
        )
        try:
            with closing(records):
                for batch in batches(records):
                    if self.stop.is_set():
                        return
                    self._put(self._prepare(batch))
            self._put(None)
        except BaseException as error:  # raised again by the iteration, in the caller's thread
            self._put(error)

    def _prepare(self, batch: list[formats.ParsedPrompt | formats.SkippedLine]) -> PreparedBatch:
        prepared = PreparedBatch(records=[], skipped=[], position=self.stream.tell())
        now = timezone.now().isoformat()
        for record in batch:
            if isinstance(record, formats.SkippedLine):
                if self.strict:
                    raise formats.line_error(record.line, record.reason)
                prepared.skipped.append(record)
                continue
            formats.validate_record(record, max_text_chars=settings.PREFLAB_MAX_TEXT_CHARS)
            item = PreparedPrompt(record, record.content_hash)
            if self.dataset_id is not None:
                item.prompt_row = _prompt_row(item, self.dataset_id, now)
                item.completion_rows = _completion_rows(record)
            prepared.records.append(item)
        return prepared


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


def _import_batch(
    dataset: Dataset, records: list[PreparedPrompt], *, look_up: bool = True
) -> tuple[int, int]:
    """Write the records whose id is new to the dataset; count those already there with the same
    content; refuse, naming the line, one there with other content. With `look_up` False, the
    dataset's existing ids are not read (the caller knows of none)."""
    external_ids = [item.record.external_id for item in records]
    existing = _existing_hashes(dataset, external_ids) if look_up else {}
    new: dict[str, PreparedPrompt] = {}
    unchanged = 0
    for item in records:
        record, content_hash = item.record, item.content_hash
        known = existing.get(record.external_id)
        if known is None and record.external_id in new:
            known = new[record.external_id].content_hash
        if known == content_hash:
            unchanged += 1
        elif known is not None:
            raise formats.line_error(
                record.line,
                f"field 'id': prompt {record.external_id!r} is already in the dataset "
                "with different content",
            )
        else:
            new[record.external_id] = item
    if connection.vendor == "postgresql":
        _copy_prompts(dataset, list(new.values()))
    else:
        _bulk_create_prompts(dataset, list(new.values()))
    # With DEBUG on, Django keeps every query's SQL; an import must not grow with the file.
    reset_queries()
    return len(new), unchanged


def _existing_hashes(dataset: Dataset, external_ids: list[str]) -> dict[str, str]:
    """The content hashes of the dataset's prompts with these external ids."""
    if connection.vendor != "postgresql":
        return dict(
            Prompt.objects.filter(dataset=dataset, external_id__in=external_ids).values_list(
                "external_id", "content_hash"
            )
        )
    # Not a prepared statement: the table grows by the batch, unanalyzed, within the import's
    # transaction, and a generic plan made while the dataset was small would go on reading all of
    # it for every batch (a Seq Scan: a 100,000-prompt file took 150 s instead of 10).
    with connection.cursor() as cursor:
        cursor.cursor.execute(EXISTING_HASHES, [dataset.pk, external_ids], prepare=False)
        return dict(cursor.fetchall())


EXISTING_HASHES = (
    "SELECT external_id, content_hash FROM labeling_prompt "
    "WHERE dataset_id = %s AND external_id = ANY(%s)"
)


def _bulk_create_prompts(dataset: Dataset, new: list[PreparedPrompt]) -> None:
    prompts = Prompt.objects.bulk_create(
        Prompt(
            dataset=dataset,
            external_id=item.record.external_id,
            messages=item.record.messages,
            metadata=item.record.metadata,
            content_hash=item.content_hash,
            is_gold=item.record.gold_order is not None,
            gold_order=item.record.gold_order,
        )
        for item in new
    )
    Completion.objects.bulk_create(
        Completion(
            prompt=prompt,
            external_id=completion.external_id,
            text=completion.text,
            model_name=completion.model_name,
            metadata=completion.metadata,
            position=position,
        )
        for prompt, item in zip(prompts, new, strict=True)
        for position, completion in enumerate(item.record.completions)
    )


def _copy_prompts(dataset: Dataset, new: list[PreparedPrompt]) -> None:
    """The same rows as `_bulk_create_prompts`, through PostgreSQL's COPY, in the text format the
    reader thread wrote them in: ids are drawn from the prompts' sequence first and put in front.
    """
    if not new:
        return
    # wrap_database_errors: the COPYs run on psycopg's own cursor; a refused row raises
    # Django's IntegrityError, as everywhere else.
    with connection.cursor() as cursor, connection.wrap_database_errors:
        ids = _draw_prompt_ids(cursor, len(new))
        _copy_prompt_rows(cursor.cursor, ids, new)
        _copy_completion_rows(cursor.cursor, ids, new)


def _draw_prompt_ids(cursor: Any, count: int) -> list[int]:
    """`count` new ids from the prompts' sequence. They come back as a range when they are
    consecutive (no other import drew ids meanwhile), and one by one only when not."""
    cursor.execute(DRAW_IDS, [Prompt._meta.db_table, count])
    first, last, ids = cursor.fetchone()
    return list(range(first, last + 1)) if ids is None else ids


DRAW_IDS = """
SELECT min(id), max(id), CASE WHEN max(id) - min(id) + 1 = count(*) THEN NULL ELSE array_agg(id) END
FROM (SELECT nextval(pg_get_serial_sequence(%s, 'id')) AS id FROM generate_series(1, %s)) drawn
"""


PROMPT_COLUMNS = (
    "id, dataset_id, external_id, messages, metadata, content_hash, is_gold, gold_order, created_at"
)
COMPLETION_COLUMNS = "prompt_id, external_id, text, model_name, metadata, position"


def _copy_prompt_rows(raw: Any, ids: list[int], new: list[PreparedPrompt]) -> None:
    with raw.copy(f"COPY {Prompt._meta.db_table} ({PROMPT_COLUMNS}) FROM STDIN") as copy:
        copy.write("".join([f"{i}\t{item.prompt_row}" for i, item in zip(ids, new, strict=True)]))


def _copy_completion_rows(raw: Any, ids: list[int], new: list[PreparedPrompt]) -> None:
    with raw.copy(f"COPY {Completion._meta.db_table} ({COMPLETION_COLUMNS}) FROM STDIN") as copy:
        copy.write(
            "".join(
                [
                    f"{i}\t{row}"
                    for i, item in zip(ids, new, strict=True)
                    for row in item.completion_rows
                ]
            )
        )


def _prompt_row(item: PreparedPrompt, dataset_id: int, created_at: str) -> str:
    """The prompt's PROMPT_COLUMNS but its id, a line of COPY's text format."""
    record, gold = item.record, item.record.gold_order
    fields = (
        str(dataset_id),
        _copy_text(record.external_id),
        _copy_json(record.messages),
        _copy_json(record.metadata),
        item.content_hash,
        "f" if gold is None else "t",
        "\\N" if gold is None else _copy_json(gold),
        created_at,
    )
    return "\t".join(fields) + "\n"


def _completion_rows(record: formats.ParsedPrompt) -> tuple[str, ...]:
    """The completions' COMPLETION_COLUMNS but the prompt id, lines of COPY's text format."""
    return tuple(
        "\t".join(
            (
                _copy_text(completion.external_id),
                _copy_text(completion.text),
                _copy_text(completion.model_name),
                _copy_json(completion.metadata),
                str(position),
            )
        )
        + "\n"
        for position, completion in enumerate(record.completions)
    )


def _copy_text(value: str) -> str:
    """A value escaped for COPY's text format (backslash, newline, carriage return, tab)."""
    if COPY_SPECIAL.search(value) is None:  # most text: one scan, no copy
        return value
    return (
        value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )


COPY_SPECIAL = re.compile(r"[\\\n\r\t]")


def _copy_json(value: Any) -> str:
    """JSON for a jsonb column, escaped for COPY's text format: JSON has no raw newline, carriage
    return or tab, only backslashes to double."""
    return _json(value).replace("\\", "\\\\")


def _json(value: Any) -> str:
    """JSON for a jsonb column; orjson's, or json's for what orjson refuses (integers past 64
    bits, lone surrogates)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)
