"""Import files in batches: read, parsed, checked and put in COPY's text format by a reader
thread (`PreparedBatches`), then written by the caller's thread (`write_batch`), with COPY on
PostgreSQL. `labeling.services.imports` runs the whole import, in one transaction.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import IO, Any

import orjson
from django.conf import settings
from django.db import connection, reset_queries
from django.utils import timezone

from labeling import formats
from labeling.models import Completion, Dataset, Prompt

IMPORT_BATCH_SIZE = 2000
IMPORT_BATCH_CHARS = 16_000_000
# The interpreter's switch interval while an import reads and writes in two threads.
SWITCH_INTERVAL = 0.0005


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


def write_batch(
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
