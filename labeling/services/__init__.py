"""Writes and workflows of the labeling app: import, leasing work, skipping, submitting rankings.

Every door (pages, admin, management commands, tests) goes through these functions, so each
rule lives in one place and each write has one transaction boundary.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import IO, Any
from uuid import UUID, uuid4

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.files import File
from django.db import connection, connections, reset_queries, transaction
from django.db.models import Q
from django.utils import timezone

from labeling import formats
from labeling.models import (
    RATING_MAX,
    RATING_MIN,
    Assignment,
    Comparison,
    Completion,
    Dataset,
    Flag,
    ImportJob,
    Prompt,
    Ranking,
    Strength,
)
from labeling.services.quality import invalidate_reports

logger = logging.getLogger(__name__)

IMPORT_BATCH_SIZE = 2000
RATIONALE_MAX_CHARS = 10_000
SKIP_REASON_MAX_CHARS = 200


# --- Datasets and import ---------------------------------------------------------------------


def create_dataset(*, slug: str, name: str = "", **fields: Any) -> Dataset:
    dataset = Dataset(slug=slug, name=name or slug, **fields)
    dataset.full_clean()
    dataset.save()
    return dataset


def update_dataset(*, dataset: Dataset, **fields: Any) -> Dataset:
    """Change a dataset's settings; new guidelines raise `guidelines_version`."""
    old_guidelines = Dataset.objects.values_list("guidelines", flat=True).get(pk=dataset.pk)
    for name, value in fields.items():
        setattr(dataset, name, value)
    if dataset.guidelines != old_guidelines:
        dataset.guidelines_version += 1
    dataset.full_clean()
    dataset.save()
    if {"criteria", "labels_per_prompt"} & set(fields):
        invalidate_reports([dataset.pk])  # what is rated and what counts as done changed
    return dataset


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


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def import_dataset(
    *,
    dataset: Dataset,
    stream: IO[bytes],
    filename: str,
    format: str | None = None,
    size: int | None = None,
    strict: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import prompts and completions from a PrefLab JSONL, Anthropic HH or CSV file (.gz too).

    All or nothing: the first bad line raises ValidationError naming the line and the field, and
    the transaction leaves the dataset as it was. Idempotent: a prompt whose external id is already
    in the dataset with the same content is counted as unchanged; with other content, it is an
    error. HH lines that cannot be split into one conversation and two replies are skipped and
    reported, or are errors when `strict`. `on_progress` is called after each batch with the
    number of (compressed) bytes read so far.
    """
    limit = settings.PREFLAB_IMPORT_MAX_BYTES
    if size is not None and size > limit:
        raise ValidationError(f"the file is {size} bytes; the limit is {limit} bytes")
    result = ImportResult()
    records = formats.read_records(stream, filename=filename, format=format)
    # closing(): a failed import stops the reader now, while the caller's stream is still open.
    with closing(records), transaction.atomic():
        for batch in batched(records, IMPORT_BATCH_SIZE):
            parsed = []
            for record in batch:
                if isinstance(record, formats.SkippedLine):
                    if strict:
                        raise formats.line_error(record.line, record.reason)
                    result.skipped.append(record)
                    continue
                formats.validate_record(record, max_text_chars=settings.PREFLAB_MAX_TEXT_CHARS)
                parsed.append(record)
            created, unchanged = _import_batch(dataset, parsed)
            result.created += created
            result.unchanged += unchanged
            if on_progress is not None:
                on_progress(stream.tell())
    return result


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
    import stores its error on the job (the import itself changed nothing) and re-raises.
    """
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    claimed = ImportJob.objects.filter(
        Q(status=ImportJob.Status.QUEUED)
        | Q(status=ImportJob.Status.RUNNING, started_at__lt=stale),
        pk=job_id,
    ).update(status=ImportJob.Status.RUNNING, started_at=now, progress=0.0)
    if not claimed:
        logger.info("import job %s: not queued (gone, running or finished); nothing to do", job_id)
        return None
    job = ImportJob.objects.select_related("dataset").get(pk=job_id)
    progress = _ProgressWriter(job)
    try:
        with job.file.open("rb") as stream:
            result = import_dataset(
                dataset=job.dataset,
                stream=stream,
                filename=job.filename,
                format=job.format or None,
                size=job.size,
                strict=job.strict,
                on_progress=progress,
            )
    except Exception as error:
        message = (
            "; ".join(errors_text(error)) if isinstance(error, ValidationError) else repr(error)
        )
        ImportJob.objects.filter(pk=job_id).update(
            status=ImportJob.Status.FAILED, error=message, finished_at=timezone.now()
        )
        raise
    finally:
        progress.close()
    job.file.delete(save=False)
    job.status = ImportJob.Status.SUCCEEDED
    job.progress = 1.0
    job.created_count = result.created
    job.unchanged_count = result.unchanged
    job.skipped = [{"line": s.line, "reason": s.reason} for s in result.skipped]
    job.finished_at = timezone.now()
    job.save()
    return job


class _ProgressWriter:
    """Writes an import's progress while its transaction is still open.

    The import runs in one transaction, so progress goes through a second connection that
    commits each write. SQLite allows one writer at a time, so there it is left at 0 until done.
    """

    def __init__(self, job: ImportJob) -> None:
        self.job = job
        self.side = (
            connections.create_connection("default") if connection.vendor == "postgresql" else None
        )

    def __call__(self, bytes_read: int) -> None:
        if self.side is None or not self.job.size:
            return
        share = min(0.99, bytes_read / self.job.size)
        with self.side.cursor() as cursor:
            cursor.execute(
                f"UPDATE {ImportJob._meta.db_table} SET progress = %s WHERE id = %s",
                [share, self.job.pk],
            )

    def close(self) -> None:
        if self.side is not None:
            self.side.close()


def errors_text(error: ValidationError) -> list[str]:
    """A ValidationError's messages as lines, each prefixed by its field when it has one."""
    if hasattr(error, "error_dict"):
        return [
            f"{name}: {message}" if name != NON_FIELD_ERRORS else message
            for name, messages in error.message_dict.items()
            for message in messages
        ]
    return list(error.messages)


def _import_batch(dataset: Dataset, records: list[formats.ParsedPrompt]) -> tuple[int, int]:
    existing = dict(
        Prompt.objects.filter(
            dataset=dataset, external_id__in=[r.external_id for r in records]
        ).values_list("external_id", "content_hash")
    )
    new: dict[str, tuple[formats.ParsedPrompt, str]] = {}
    unchanged = 0
    for record in records:
        content_hash = record.content_hash
        known = existing.get(record.external_id)
        if known is None and record.external_id in new:
            known = new[record.external_id][1]
        if known == content_hash:
            unchanged += 1
        elif known is not None:
            raise formats.line_error(
                record.line,
                f"field 'id': prompt {record.external_id!r} is already in the dataset "
                "with different content",
            )
        else:
            new[record.external_id] = (record, content_hash)
    if connection.vendor == "postgresql":
        _copy_prompts(dataset, list(new.values()))
    else:
        _bulk_create_prompts(dataset, list(new.values()))
    # With DEBUG on, Django keeps every query's SQL; an import must not grow with the file.
    reset_queries()
    return len(new), unchanged


def _bulk_create_prompts(dataset: Dataset, new: list[tuple[formats.ParsedPrompt, str]]) -> None:
    prompts = Prompt.objects.bulk_create(
        Prompt(
            dataset=dataset,
            external_id=record.external_id,
            messages=record.messages,
            metadata=record.metadata,
            content_hash=content_hash,
            is_gold=record.gold_order is not None,
            gold_order=record.gold_order,
        )
        for record, content_hash in new
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
        for prompt, (record, _) in zip(prompts, new, strict=True)
        for position, completion in enumerate(record.completions)
    )


def _copy_prompts(dataset: Dataset, new: list[tuple[formats.ParsedPrompt, str]]) -> None:
    """The same rows as `_bulk_create_prompts`, through PostgreSQL's COPY: about 3x faster.

    The prompt ids are drawn from the table's sequence first, so the completions can name them.
    """
    if not new:
        return
    now = timezone.now()
    prompt_table = Prompt._meta.db_table
    completion_table = Completion._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [prompt_table, len(new)],
        )
        ids = [row[0] for row in cursor.fetchall()]
        raw = cursor.cursor
        with raw.copy(
            f"COPY {prompt_table} (id, dataset_id, external_id, messages, metadata, "
            "content_hash, is_gold, gold_order, created_at) FROM STDIN"
        ) as copy:
            for prompt_id, (record, content_hash) in zip(ids, new, strict=True):
                gold = record.gold_order
                copy.write_row(
                    (
                        prompt_id,
                        dataset.pk,
                        record.external_id,
                        json.dumps(record.messages),
                        json.dumps(record.metadata),
                        content_hash,
                        gold is not None,
                        None if gold is None else json.dumps(gold),
                        now,
                    )
                )
        with raw.copy(
            f"COPY {completion_table} (prompt_id, external_id, text, model_name, metadata, "
            "position) FROM STDIN"
        ) as copy:
            for prompt_id, (record, _) in zip(ids, new, strict=True):
                for position, completion in enumerate(record.completions):
                    copy.write_row(
                        (
                            prompt_id,
                            completion.external_id,
                            completion.text,
                            completion.model_name,
                            json.dumps(completion.metadata),
                            position,
                        )
                    )


# --- Leasing work ----------------------------------------------------------------------------


def expire_stale_leases(*, now: datetime | None = None) -> int:
    """Return abandoned work to the pool: leases past their expiry become expired."""
    now = now or timezone.now()
    return Assignment.objects.stale(now).update(status=Assignment.Status.EXPIRED)


def gold_is_due(*, dataset: Dataset, labeler: User) -> bool:
    """Gold comes at the dataset's rate: the n-th task is gold while gold < floor(rate * n)."""
    if dataset.gold_rate <= 0:
        return False
    mine = Assignment.objects.filter(prompt__dataset=dataset, labeler=labeler).exclude(
        status=Assignment.Status.EXPIRED
    )
    total = mine.count()
    gold = mine.filter(prompt__is_gold=True).count()
    return gold < math.floor(dataset.gold_rate * (total + 1))


def lease_next_assignment(
    *, dataset: Dataset, labeler: User, now: datetime | None = None
) -> Assignment | None:
    """The labeler's current lease on the dataset, or a new one; None when no work is left.

    A new lease goes to a prompt the labeler has not ranked or skipped that still has a free label
    slot (gold prompts, which every labeler sees once, have no cap), prompts closest to complete
    first. The prompt row is locked before its slots are counted, so concurrent requests never
    hand out more than `labels_per_prompt` slots; locked prompts are passed over, not waited for.
    """
    now = now or timezone.now()
    if dataset.status != Dataset.Status.ACTIVE:
        raise ValidationError(f"dataset {dataset.slug!r} is not open for labeling")
    expire_stale_leases(now=now)
    current = (
        Assignment.objects.leased_to(labeler)
        .filter(prompt__dataset=dataset)
        .order_by("leased_at")
        .first()
    )
    if current is not None:
        return current

    unseen = Prompt.objects.filter(dataset=dataset).not_seen_by(labeler)
    gold = unseen.filter(is_gold=True).order_by("pk")
    regular = (
        unseen.filter(is_gold=False)
        .with_taken()
        .filter(taken__lt=dataset.labels_per_prompt)  # type: ignore[misc]
        .order_by("-taken", "pk")
    )
    pools = [gold, regular] if gold_is_due(dataset=dataset, labeler=labeler) else [regular]
    for pool in pools:
        while candidates := list(pool.values_list("pk", flat=True)[:20]):
            for prompt_id in candidates:
                assignment = _lease_prompt(prompt_id, dataset=dataset, labeler=labeler, now=now)
                if assignment is not None:
                    return assignment
    return None


def _lease_prompt(
    prompt_id: int, *, dataset: Dataset, labeler: User, now: datetime
) -> Assignment | None:
    with transaction.atomic():
        prompt = Prompt.objects.select_for_update(skip_locked=True).filter(pk=prompt_id).first()
        if prompt is None:
            return None
        taken = Assignment.objects.filter(prompt=prompt).holding_slots().count()
        if not prompt.is_gold and taken >= dataset.labels_per_prompt:
            return None
        expires_at = now + timedelta(minutes=settings.PREFLAB_LEASE_MINUTES)
        assignment, created = Assignment.objects.get_or_create(
            prompt=prompt,
            labeler=labeler,
            defaults={"leased_at": now, "expires_at": expires_at},
        )
        if not created:
            if assignment.status != Assignment.Status.EXPIRED:
                return None
            # The labeler's own abandoned lease: the same row is leased again.
            assignment.status = Assignment.Status.LEASED
            assignment.leased_at = now
            assignment.expires_at = expires_at
            assignment.save(update_fields=["status", "leased_at", "expires_at"])
        return assignment


def skip_assignment(
    *, assignment: Assignment, reason: str, now: datetime | None = None
) -> Assignment:
    """Give a task back with a reason; the labeler is not offered that prompt again."""
    now = now or timezone.now()
    reason = reason.strip()
    if not reason:
        raise ValidationError({"reason": "Say why you skip this task."})
    if len(reason) > SKIP_REASON_MAX_CHARS:
        raise ValidationError(
            {"reason": f"Keep the reason under {SKIP_REASON_MAX_CHARS} characters."}
        )
    updated = Assignment.objects.filter(
        pk=assignment.pk, status__in=[Assignment.Status.LEASED, Assignment.Status.EXPIRED]
    ).update(status=Assignment.Status.SKIPPED, skip_reason=reason, finished_at=now)
    if not updated:
        raise ValidationError("This task was already submitted or skipped.")
    assignment.refresh_from_db()
    return assignment


# --- Submitting a ranking --------------------------------------------------------------------


def submit_ranking(
    *,
    assignment: Assignment,
    order: list[list[int]],
    ratings: dict[int, dict[str, int]],
    flags: dict[int, list[str]],
    request_id: UUID,
    seconds_spent: float,
    all_unacceptable: bool = False,
    rationale: str = "",
    strength: str = "",
    now: datetime | None = None,
) -> Ranking:
    """Store a ranking and its comparisons (one per ordered pair that is not a tie) together.

    Idempotent: a repeated request_id returns the ranking stored the first time. Refuses, with a
    ValidationError naming the field and storing nothing: an order that is not exactly the
    prompt's completions in tie groups, ratings out of range or for other criteria, unknown flags,
    and an assignment that was skipped, submitted or whose expired lease went to someone else.
    """
    now = now or timezone.now()
    with transaction.atomic():
        # The lock serialises double submits of the same task.
        assignment = (
            Assignment.objects.select_for_update(of=("self",))
            .select_related("prompt__dataset")
            .get(pk=assignment.pk)
        )
        earlier = Ranking.objects.filter(request_id=request_id).first()
        if earlier is not None:
            if earlier.assignment_id != assignment.pk:
                raise ValidationError({"request_id": "This request id was used for another task."})
            return earlier
        _check_assignment_is_live(assignment)
        prompt = assignment.prompt
        dataset = prompt.dataset
        # Submissions to a dataset commit one at a time, so an export's cursor (`export_cursor`)
        # never passes an id that a transaction still in flight is about to commit below it.
        _lock_dataset(dataset.pk)
        completion_ids = list(prompt.completions.values_list("pk", flat=True))
        _check_order(order, completion_ids)
        _check_ratings(ratings, completion_ids, dataset.criteria)
        _check_flags(flags, completion_ids)
        tied = len(order) == 1
        if len(completion_ids) == 2 and not tied:
            if strength not in Strength.values:
                raise ValidationError({"strength": "Say how much better the first choice is."})
        elif strength:
            raise ValidationError({"strength": "Only asked for two completions that are not tied."})
        if not (math.isfinite(seconds_spent) and seconds_spent >= 0):
            raise ValidationError({"seconds_spent": "Must be a number of seconds, 0 or more."})
        if len(rationale) > RATIONALE_MAX_CHARS:
            raise ValidationError(
                {"rationale": f"Keep the rationale under {RATIONALE_MAX_CHARS} characters."}
            )

        ranking = Ranking.objects.create(
            assignment=assignment,
            dataset=dataset,
            prompt=prompt,
            labeler_id=assignment.labeler_id,
            # Members of a tie group are kept sorted, so one judgment has one representation.
            order=[sorted(group) for group in order],
            ratings={str(cid): dict(values) for cid, values in ratings.items()},
            flags={str(cid): sorted(set(names)) for cid, names in flags.items() if names},
            all_unacceptable=all_unacceptable,
            rationale=rationale.strip(),
            seconds_spent=seconds_spent,
            guidelines_version=dataset.guidelines_version,
            request_id=request_id,
            created_at=now,
        )
        Comparison.objects.bulk_create(
            Comparison(
                dataset=dataset,
                prompt=prompt,
                chosen_id=chosen,
                rejected_id=rejected,
                margin=margin,
                strength=strength,
                labeler_id=assignment.labeler_id,
                ranking=ranking,
                created_at=now,
            )
            for chosen, rejected, margin in comparison_pairs(order)
        )
        assignment.status = Assignment.Status.SUBMITTED
        assignment.finished_at = now
        assignment.save(update_fields=["status", "finished_at"])
    return ranking


def export_cursor(*, dataset: Dataset, model: type[Ranking] | type[Comparison]) -> int:
    """The highest id of `model` in the dataset that an export may include.

    Taking the dataset's lock waits for submissions in flight, so every row at or below the
    returned id is committed, and every later row gets a higher id: pulling `since` this cursor
    next time returns each row exactly once.
    """
    with transaction.atomic():
        _lock_dataset(dataset.pk)
        top = model.objects.filter(dataset=dataset).order_by("-pk").values_list("pk", flat=True)
        return top.first() or 0


def _lock_dataset(dataset_id: int) -> None:
    list(Dataset.objects.select_for_update(no_key=True).filter(pk=dataset_id).values_list("pk"))


def comparison_pairs(order: list[list[int]]) -> Iterator[tuple[int, int, int]]:
    """(chosen, rejected, margin) for every pair in different tie groups; margin = rank distance."""
    for better_rank, better in enumerate(order):
        for worse_rank in range(better_rank + 1, len(order)):
            for chosen in better:
                for rejected in order[worse_rank]:
                    yield chosen, rejected, worse_rank - better_rank


def _check_assignment_is_live(assignment: Assignment) -> None:
    status = assignment.status
    if status == Assignment.Status.SUBMITTED:
        raise ValidationError("This task was already submitted.")
    if status == Assignment.Status.SKIPPED:
        raise ValidationError("This task was skipped; it cannot be submitted.")
    if status == Assignment.Status.LEASED:
        return
    # An expired lease still counts if nobody took its slot in the meantime.
    prompt = Prompt.objects.select_for_update().get(pk=assignment.prompt_id)
    taken = Assignment.objects.filter(prompt=prompt).holding_slots().count()
    if not prompt.is_gold and taken >= prompt.dataset.labels_per_prompt:
        raise ValidationError(
            "Your lease on this task expired and it went to another labeler; nothing was stored."
        )


def _check_order(order: Any, completion_ids: list[int]) -> None:
    if not isinstance(order, list) or not all(
        isinstance(group, list) and group and all(type(cid) is int for cid in group)
        for group in order
    ):
        raise ValidationError({"order": "Must be a list of non-empty groups of completion ids."})
    placed = [cid for group in order for cid in group]
    if sorted(placed) != sorted(completion_ids):
        missing = set(completion_ids) - set(placed)
        unknown = set(placed) - set(completion_ids)
        problems = []
        if missing:
            problems.append(f"missing {sorted(missing)}")
        if unknown:
            problems.append(f"not in this prompt {sorted(unknown)}")
        if len(placed) != len(set(placed)):
            problems.append("a completion is placed twice")
        raise ValidationError(
            {"order": "Rank every completion exactly once: " + ", ".join(problems) + "."}
        )


def _check_ratings(ratings: Any, completion_ids: list[int], criteria: list[str]) -> None:
    if not criteria:
        if ratings:
            raise ValidationError({"ratings": "This dataset rates no criteria."})
        return
    if not isinstance(ratings, dict) or set(ratings) != set(completion_ids):
        raise ValidationError({"ratings": "Rate every completion of this prompt."})
    for cid, values in ratings.items():
        if not isinstance(values, dict) or set(values) != set(criteria):
            raise ValidationError(
                {"ratings": f"Completion {cid}: rate exactly {', '.join(criteria)}."}
            )
        for criterion, value in values.items():
            if type(value) is not int or not RATING_MIN <= value <= RATING_MAX:
                raise ValidationError(
                    {
                        "ratings": f"Completion {cid}: {criterion} must be a whole number "
                        f"from {RATING_MIN} to {RATING_MAX}."
                    }
                )


def _check_flags(flags: Any, completion_ids: list[int]) -> None:
    if not isinstance(flags, dict):
        raise ValidationError({"flags": "Must map completion ids to lists of flags."})
    for cid, names in flags.items():
        if cid not in completion_ids:
            raise ValidationError({"flags": f"Completion {cid} is not in this prompt."})
        unknown = set(names) - set(Flag.values)
        if unknown:
            raise ValidationError(
                {"flags": f"Unknown flags {sorted(unknown)}; use {', '.join(Flag.values)}."}
            )
