"""Pair exports as Parquet, written in row groups as the rows stream.

Plain dicts in, bytes out: `labeling.exports` makes the rows (the same dicts as its JSON Lines),
this module fixes their schema and writes them. pyarrow is imported only inside the functions,
so a web process that never writes Parquet never loads it (tests/test_lean.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

CONTENT_TYPE = "application/vnd.apache.parquet"
# About 10k rows of a few kB each: tens of MB a row group, a size readers stream well, while the
# writer holds no more than one group at a time.
ROW_GROUP_ROWS = 10_000


class Drain:
    """A write-only file that keeps what is written until `take` hands it on: the Parquet
    writer writes into it, the response reads out of it a row group at a time."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        """Nothing to flush: `take` hands the bytes on."""

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def pair_schema(
    format: str,
    *,
    include: tuple[str, ...],
    include_ids: bool,
    consensus: bool,
    criteria: list[str] | None = None,
) -> Any:
    """The Parquet schema of a pair export: fixed by the format, the fields asked for and the
    dataset's `criteria` (the fields of ratings and criterion rewards), so every file of one
    query has the same columns, however its rows vary. `format` is the
    export's (the `trl` rows of `render=text` are strings too); conversations are lists of
    {role, content} structs; prompt metadata, whose keys vary by prompt, is a JSON string."""
    import pyarrow as pa

    criteria = criteria or []
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    messages = pa.list_(message)
    fields: list[tuple[str, Any]] = {
        "trl": [("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string())],
        "trl-conversational": [("prompt", messages), ("chosen", messages), ("rejected", messages)],
        "hh": [("chosen", pa.string()), ("rejected", pa.string())],
        "openai": [
            ("input", pa.struct([("messages", messages)])),
            ("preferred_output", messages),
            ("non_preferred_output", messages),
        ],
    }[format]
    ratings = pa.struct([(criterion, pa.int8()) for criterion in criteria])
    if "models" in include:
        fields += [("chosen_model", pa.string()), ("rejected_model", pa.string())]
    # Parquet has no struct without fields: a dataset without criteria has no such columns.
    if "ratings" in include and criteria:
        fields += [("chosen_ratings", ratings), ("rejected_ratings", ratings)]
    if "flags" in include:
        fields += [
            ("chosen_flags", pa.list_(pa.string())),
            ("rejected_flags", pa.list_(pa.string())),
        ]
        fields += [("all_unacceptable", pa.bool_())]
    if "metadata" in include:
        fields += [("prompt_metadata", pa.string())]
    if "strength" in include or (include_ids and not consensus):
        fields += [("strength", pa.string())]
    if "agreement" in include:
        fields += [("agreement", pa.float64())]
    if "agreement" in include or (include_ids and consensus):
        fields += [("voters", pa.int32())]
    if "predictions" in include:
        rewards = pa.struct([(criterion, pa.float64()) for criterion in criteria])
        fields += [("chosen_reward", pa.float64())]
        fields += [("chosen_criterion_rewards", rewards)] if criteria else []
        fields += [("rejected_reward", pa.float64())]
        fields += [("rejected_criterion_rewards", rewards)] if criteria else []
    if include_ids:
        ids = [(name, pa.int64()) for name in ("comparison", "ranking")] if not consensus else []
        ids += [(name, pa.int64()) for name in ("prompt", "chosen", "rejected")]
        ids += [("chosen_external", pa.string()), ("rejected_external", pa.string())]
        ids += [("adjudication", pa.int64())] if consensus else []  # null but on adjudicated rows
        fields += [("ids", pa.struct(ids))]
        fields += [("vote_share", pa.float64())] if consensus else []
        fields += [("margin", pa.int16())]  # a consensus pair's is null
    if consensus:
        fields += [("source", pa.string())]  # "consensus", or "adjudicated" by a reviewer
    return pa.schema(fields)


def parquet_stream(chunks: Iterable[list[dict[str, Any]]], schema: Any) -> Iterator[bytes]:
    """A Parquet file of the rows of `chunks`, given out as it is written: a row group of
    ROW_GROUP_ROWS rows at a time (the footer last), so memory holds one group, however many
    rows there are. A row's `prompt_metadata` is written as its JSON."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    drain = Drain()
    writer = pq.ParquetWriter(drain, schema, compression="zstd")
    try:
        pending: list[dict[str, Any]] = []
        for chunk in chunks:
            pending += chunk
            while len(pending) >= ROW_GROUP_ROWS:
                group, pending = pending[:ROW_GROUP_ROWS], pending[ROW_GROUP_ROWS:]
                writer.write_table(table(group, schema, pa), row_group_size=ROW_GROUP_ROWS)
                yield drain.take()
        if pending:
            writer.write_table(table(pending, schema, pa), row_group_size=ROW_GROUP_ROWS)
    finally:
        writer.close()
    yield drain.take()


def table(rows: list[dict[str, Any]], schema: Any, pa: Any) -> Any:
    if "prompt_metadata" in schema.names:
        for row in rows:
            row["prompt_metadata"] = json.dumps(row["prompt_metadata"], ensure_ascii=False)
    return pa.Table.from_pylist(rows, schema=schema)
