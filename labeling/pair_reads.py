"""How a pair export reads its rows on PostgreSQL: the comparisons by a cursor without joins,
their prompts and completions a chunk at a time by id range.

A query that joins each comparison to its prompt and two completions makes PostgreSQL descend an
index three times a row: on 1M HH-shaped comparisons (one a prompt) that cost 9 to 11 s of the
server's CPU, more than a `COPY` of the same rows. Prompts and completions are stored in the
order they were imported, so the ones a chunk of comparisons names lie in few runs of
consecutive ids; reading those runs costs the server about half as much. A chunk whose ids are
scattered (a dataset labeled in no particular order, imports interleaved) is read with one
`= ANY(ids)` probe per id instead, as the join did.

One thread fetches the comparisons ahead; another reads each chunk's prompts and completions,
on a second connection that shares the export's snapshot (`one_snapshot`, `side_cursor`), so
the server works on both while Python writes the chunk before. The rows keep the shape of the
joined query's (`columns`, in order), so the export's writers do not know which way they were
read. Prompts and completions are not changed once imported; one
deleted since the cursor opened (its dataset deleted mid-export) drops its comparisons, which the
deletion removes anyway.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Func, JSONField, Model

from labeling.models import Completion, Prompt

logger = logging.getLogger(__name__)

# Ids closer than this are read as one run, the ones between them read and dropped: a new
# index descent costs about what reading a few rows does.
GAP = 4
# At most this many runs, and at most twice the wanted rows, are read by range; else by id.
MAX_RUNS = 16
SIDES: dict[str, type[Model]] = {"prompt": Prompt, "chosen": Completion, "rejected": Completion}


def id_filter(ids: list[int]) -> tuple[str, list[Any]]:
    """A WHERE clause on `id` (and its parameters) that reads at least `ids` (which may repeat),
    reading at most twice as many rows as `ids` holds: their runs of near-consecutive ids as
    ranges when they are few enough, else the ids themselves."""
    first, last = min(ids), max(ids)
    if last - first < 2 * len(ids):
        return "id BETWEEN %s AND %s", [first, last]
    wanted = sorted(set(ids))
    runs, start, previous = [], first, first
    for id in wanted:
        if id - previous > GAP:
            runs.append((start, previous))
            if len(runs) == MAX_RUNS:
                return "id = ANY(%s)", [wanted]
            start = id
        previous = id
    runs.append((start, previous))
    if sum(last - first + 1 for first, last in runs) > 2 * len(ids):
        return "id = ANY(%s)", [wanted]
    return " OR ".join(["id BETWEEN %s AND %s"] * len(runs)), [id for run in runs for id in run]


@dataclass(frozen=True)
class SideRead:
    """Columns of one model's table (SQL expressions), read by id, of rows that meet `where`;
    `is_json` ones are decoded. A row is its one column's value, or a tuple of several."""

    table: str
    expressions: tuple[str, ...]
    is_json: tuple[bool, ...]
    where: str = "true"

    @property
    def single(self) -> bool:
        return len(self.expressions) == 1

    def rows(self, cursor: Any, ids: list[int], *, tuples: bool) -> dict[int, Any]:
        """id -> the row's columns: a tuple, or with one column and not `tuples` its value."""
        by_id, params = id_filter(ids)
        names = ", ".join(self.expressions)
        sql = f"SELECT id, {names} FROM {self.table} WHERE ({by_id}) AND {self.where}"
        cursor.execute(sql, params)
        rows = cursor.fetchall()
        if any(self.is_json):
            rows = [
                (
                    row[0],
                    *(
                        json.loads(v) if j and v is not None else v
                        for v, j in zip(row[1:], self.is_json, strict=True)
                    ),
                )
                for row in rows
            ]
        # One column's values as they are, without a tuple: the dict is made in C.
        return {row[0]: row[1:] for row in rows} if tuples or not self.single else dict(rows)


# A column read from a prompt or a completion: a name that tells equal ones apart, its SQL, and
# whether it is JSON to decode.
Expression = tuple[str, str, bool]


@dataclass(frozen=True)
class PairRead:
    """Where each of a pair export's `columns` comes from: `own` ones from the comparisons'
    cursor (pk, prompt_id, chosen_id, rejected_id first), the rest from the prompt's and the
    completions' rows; `layout` puts them back in the columns' order (None: they are in it)."""

    own: list[Any]
    prompts: SideRead
    completions: SideRead
    layout: itemgetter[Any] | None

    @classmethod
    def plan(cls, columns: list[Any], *, exclude_gold: bool) -> PairRead:
        own: list[Any] = []
        wanted: dict[type[Model], dict[str, Expression]] = {Prompt: {}, Completion: {}}
        places: list[tuple[str, int]] = []
        for column in columns:
            side, expression = side_column(column)
            if side is None:
                places.append(("own", len(own)))
                own.append(column)
                continue
            reads = wanted[SIDES[side]]
            reads.setdefault(expression[0], expression)
            places.append((side, list(reads).index(expression[0])))
        prompt_reads = list(wanted[Prompt].values()) or [("id", '"id"', False)]
        completion_reads = list(wanted[Completion].values()) or [("id", '"id"', False)]
        start = {
            "own": 0,
            "prompt": len(own),
            "chosen": len(own) + len(prompt_reads),
            "rejected": len(own) + len(prompt_reads) + len(completion_reads),
        }
        positions = [start[side] + index for side, index in places]
        identity = positions == list(
            range(len(own) + len(prompt_reads) + 2 * len(completion_reads))
        )
        return cls(
            own=own,
            # A gold prompt's row is not read, so its pairs are left out as a deleted one's.
            prompts=side_read(
                Prompt, prompt_reads, where="NOT is_gold" if exclude_gold else "true"
            ),
            completions=side_read(Completion, completion_reads),
            layout=None if identity else itemgetter(*positions),
        )

    def rows(self, cursor: Any, chunk: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The chunk's rows (of `own` columns) with their prompts' and completions' columns,
        in the columns' order; two queries."""
        if not chunk:
            return []
        tuples = not self.single
        prompts = self.prompts.rows(cursor, [row[1] for row in chunk], tuples=tuples)
        completions = self.completions.rows(
            cursor, [*(row[2] for row in chunk), *(row[3] for row in chunk)], tuples=tuples
        )
        try:
            joined = self.join(chunk, prompts, completions)
        except KeyError:
            # A gold prompt's pairs (not read with `exclude_gold`), or rows deleted since the
            # cursor opened: left out.
            kept = [
                row
                for row in chunk
                if row[1] in prompts and row[2] in completions and row[3] in completions
            ]
            joined = self.join(kept, prompts, completions)
        return joined if self.layout is None else list(map(self.layout, joined))

    @property
    def single(self) -> bool:
        """Whether the prompt and the completions each give one column (the plain export)."""
        return self.prompts.single and self.completions.single

    def join(
        self,
        chunk: list[tuple[Any, ...]],
        prompts: dict[int, Any],
        completions: dict[int, Any],
    ) -> list[tuple[Any, ...]]:
        if self.single:
            return [
                (*row, prompts[row[1]], completions[row[2]], completions[row[3]]) for row in chunk
            ]
        return [row + prompts[row[1]] + completions[row[2]] + completions[row[3]] for row in chunk]

    def joined(
        self, cursor: Any, chunks: Iterator[list[tuple[Any, ...]]]
    ) -> Iterator[list[tuple[Any, ...]]]:
        """`rows` of each of `chunks`, skipping any left empty (all on gold prompts). The
        chunks may be made in another thread (`read_ahead`), which alone uses `cursor`
        (`side_cursor`, made in the caller's thread)."""
        for chunk in chunks:
            if joined := self.rows(cursor, chunk):
                yield joined


def side_column(column: Any) -> tuple[str | None, Expression]:
    """Which side a column of the comparisons' query reads (prompt, chosen, rejected; None for
    the comparison's own row or another join), and how it reads it there: a field of the
    prompt or a completion, or an expression (Func) over the prompt's messages."""
    if isinstance(column, Func):
        sources = column.get_source_expressions()
        if (
            len(sources) == 1
            and isinstance(sources[0], F)
            and sources[0].name == "prompt__messages"
        ):
            template = column.extra.get("template", column.template)
            sql = template % {"function": column.function, "expressions": '"messages"'}
            return "prompt", (sql, sql, False)
        return None, ("", "", False)
    side, _, name = column.partition("__") if isinstance(column, str) else ("", "", "")
    if side not in SIDES or "__" in name:
        return None, ("", "", False)
    field = SIDES[side]._meta.get_field(name)
    if field.is_relation:
        return None, ("", "", False)
    is_json = isinstance(field, JSONField)
    sql = f'"{field.column}"'  # type: ignore[union-attr]
    return side, (name, sql + "::text" if is_json else sql, is_json)


def side_read(model: type[Model], reads: list[Expression], where: str = "true") -> SideRead:
    return SideRead(
        table=model._meta.db_table,
        expressions=tuple(sql for _, sql, _ in reads),
        is_json=tuple(is_json for _, _, is_json in reads),
        where=where,
    )


@contextmanager
def one_snapshot() -> Iterator[str | None]:
    """A transaction whose statements all see the database as its first one did (REPEATABLE
    READ): an export's prompts and completions, read a chunk at a time, are as they were when
    its cursor opened, as a joined query would give them (an admin may mark a prompt gold or
    edit its metadata meanwhile). Gives the snapshot's name, which another connection can
    read too. Inside a transaction already (a test's), that one, and None."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if not outermost:
            yield None
            return
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("SELECT pg_export_snapshot()")
            (snapshot,) = cursor.fetchone()
        yield snapshot


@contextmanager
def side_cursor(snapshot: str | None) -> Iterator[Any]:
    """A cursor for the prompt and completion reads. With a `snapshot` (`one_snapshot`), on a
    second connection that reads it: the server then reads a chunk's prompts on one
    connection while it fetches the next comparisons on the other, where one connection takes
    one statement at a time. Without (inside a test's transaction, whose rows another
    connection cannot see), or when the server refuses a second connection, on the export's
    own connection."""
    import psycopg
    from psycopg import sql

    side = None
    if snapshot is not None:
        try:
            side = psycopg.connect(**connection.get_connection_params())
        except psycopg.OperationalError as error:  # the server's connection limit, say
            logger.warning("export reads on its own connection, no second one: %s", error)
    if side is None:
        with connection.cursor() as cursor:
            yield cursor
        return
    with side:
        side.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        side.read_only = True
        with side.cursor() as cursor:
            cursor.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(snapshot))
            yield cursor
        side.rollback()


@contextmanager
def shared_with_thread() -> Iterator[None]:
    """The connection may be used by `read_ahead`'s thread: Django checks which thread uses a
    connection when it makes a cursor, as it does to log a query's SQL (with DEBUG on)."""
    connection.inc_thread_sharing()
    try:
        yield
    finally:
        connection.dec_thread_sharing()


def read_ahead(chunks: Iterator[list[Any]], *, threaded: bool) -> Generator[list[Any], None, None]:
    """`chunks` (of a query's rows, read by a cursor); `threaded`, each after the first is
    fetched in a thread while the caller works on the one before, so that PostgreSQL makes the
    next chunk on one core while Python encodes this one on the other. At most two chunks are
    held. The first is read by the caller's thread, which starts the query on its own
    connection; the thread only fetches from that cursor. Closing this generator waits for the
    fetch in flight, so the cursor can be closed after it."""
    if not threaded:
        yield from chunks
        return
    chunk = next(chunks, None)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-read-ahead") as reader:
        while chunk is not None:
            pending = reader.submit(next, chunks, None)
            yield chunk
            chunk = pending.result()
