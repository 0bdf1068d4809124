"""Export rows in the formats training pipelines read, streamed as JSON Lines: the pair formats'
row builders and the comparisons export.

The row builders are plain functions of messages and texts. The comparisons are read through one
joined query by a cursor, so memory stays flat however many rows there are. The consensus and
adjudicated pairs are in `labeling.consensus_exports`, the rankings in `labeling.ranking_exports`,
the `include=` fields and the train/test split in `labeling.export_options`.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from itertools import islice
from typing import Any

import orjson
from django.db import connection
from django.db.models import Func, JSONField, Model, QuerySet, TextField

from labeling import consensus, orders
from labeling.export_options import (
    INCLUDE_COLUMNS,
    Predicted,
    Split,
    chunk_ratings,
    included_fields,
    predicted_rewards,
)
from labeling.formats import HH_NAMES, render_hh_dialogue
from labeling.models import Comparison, Labelers, Ranking
from labeling.pair_reads import (
    PairRead,
    one_snapshot,
    read_ahead,
    shared_with_thread,
    side_cursor,
    side_read,
)

COMPARISON_FORMATS = ("trl", "trl-conversational", "hh", "openai")
FORMATS = (*COMPARISON_FORMATS, "rankings")
CHUNK_SIZE = 5000

Messages = list[dict[str, str]]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def comparison_row(format: str, messages: Messages, chosen: str, rejected: str) -> dict[str, Any]:
    """One preference pair in `format`; see FORMATS. `trl` needs a single-turn prompt: the API
    exports a dataset with conversations as `trl-conversational`, or as text (`trl_text_row`)."""
    if format == "trl":
        return {"prompt": messages[-1]["content"], "chosen": chosen, "rejected": rejected}
    if format == "trl-conversational":
        return {"prompt": messages, "chosen": assistant(chosen), "rejected": assistant(rejected)}
    if format == "hh":
        return {
            "chosen": render_hh_dialogue(messages + assistant(chosen)),
            "rejected": render_hh_dialogue(messages + assistant(rejected)),
        }
    if format == "openai":
        return {
            "input": {"messages": messages},
            "preferred_output": assistant(chosen),
            "non_preferred_output": assistant(rejected),
        }
    raise ValueError(f"unknown comparison format {format!r}")


def trl_text_row(messages: Messages, chosen: str, rejected: str) -> dict[str, str]:
    """TRL's plain-text form of a conversation: prompt + chosen is the whole HH-style dialogue."""
    return {
        "prompt": render_hh_dialogue(messages) + "\n\nAssistant:",
        "chosen": " " + chosen,
        "rejected": " " + rejected,
    }


def is_multi_turn(messages: Messages) -> bool:
    return len(messages) > 1


# JSON string escaping works character by character, so encoded pieces can be joined: the
# streaming path encodes each prompt and completion text once, then builds its lines from those
# pieces. `comparison_row` stays the readable definition; tests pin every line to the bytes of
# its `json.dumps(..., ensure_ascii=False)`, on SQLite and on PostgreSQL.
def encode(text: str) -> str:
    """`text` as a JSON string, as `json.dumps(text, ensure_ascii=False)` writes it. orjson
    escapes the same characters the same way, in 0.3 us for a 400-character reply where the
    standard library's encoder takes 1.4 us; it refuses a lone surrogate, which the standard
    library writes as an escape."""
    try:
        return orjson.dumps(text).decode()
    except orjson.JSONEncodeError:
        return json.encoder.encode_basestring(text)  # type: ignore[attr-defined,no-any-return]


# PostgreSQL writes JSON as `json.dumps(ensure_ascii=False)` does (the same separators and
# escapes; a message's keys come out as "role", "content" in both), so on PostgreSQL every
# format but `render=text` gets its prompt piece from the database, and Python only joins
# strings. For `hh` the database also renders the dialogue (`render_hh_dialogue`, with
# HH_NAMES' roles), and cuts the closing quote, as `prompt_json` does.
HH_DIALOGUE_SQL = (
    # A single human turn (most prompts) without a subquery, which costs the database more
    # than the rest of the row.
    "CASE WHEN jsonb_array_length(%(expressions)s) = 1 "
    "AND %(expressions)s -> 0 ->> 'role' = 'user' "
    "THEN E'\\n\\nHuman: ' || (%(expressions)s -> 0 ->> 'content') "
    "ELSE (SELECT string_agg(E'\\n\\n' || CASE m ->> 'role' "
    + " ".join(f"WHEN '{role}' THEN '{name}'" for role, name in HH_NAMES.items())
    + " END || ': ' || (m ->> 'content'), '' ORDER BY n) "
    "FROM jsonb_array_elements(%(expressions)s) WITH ORDINALITY AS t(m, n)) END"
)
PROMPT_JSON_SQL = {
    "trl": "(%(expressions)s -> -1 -> 'content')::text",
    "trl-conversational": "%(expressions)s::text",
    "openai": "%(expressions)s::text",
    "hh": f"left(to_json(COALESCE({HH_DIALOGUE_SQL}, '') || E'\\n\\nAssistant: ')::text, -1)",
}


def line_format(format: str, messages: Messages, render_text: bool) -> str:
    """`format`, or "trl-text" for a multi-turn prompt that `render=text` flattens for `trl`."""
    return "trl-text" if format == "trl" and render_text and is_multi_turn(messages) else format


def prompt_json(format: str, messages: Messages) -> str:
    """The prompt as the lines of `format` (or "trl-text") hold it, JSON-encoded; for `hh`, the
    start of a JSON string that each reply continues."""
    if format == "trl":
        return encode(messages[-1]["content"])  # type: ignore[no-any-return]
    if format == "trl-text":
        return encode(render_hh_dialogue(messages) + "\n\nAssistant:")  # type: ignore[no-any-return]
    if format == "hh":
        return encode(render_hh_dialogue(messages) + "\n\nAssistant: ")[:-1]  # type: ignore[no-any-return]
    return json.dumps(messages, ensure_ascii=False)


def assistant_json(text: str) -> str:
    return f'[{{"role": "assistant", "content": {text}}}]'


def comparison_line(format: str, prompt: str, chosen: str, rejected: str) -> str:
    """`comparison_row` (or `trl_text_row` for "trl-text") as a JSON line, from encoded pieces:
    `prompt` from `prompt_json`, `chosen` and `rejected` from `encode`."""
    if format == "trl":
        return f'{{"prompt": {prompt}, "chosen": {chosen}, "rejected": {rejected}}}'
    if format == "trl-text":
        return f'{{"prompt": {prompt}, "chosen": " {chosen[1:]}, "rejected": " {rejected[1:]}}}'
    if format == "trl-conversational":
        return (
            f'{{"prompt": {prompt}, "chosen": {assistant_json(chosen)}, '
            f'"rejected": {assistant_json(rejected)}}}'
        )
    if format == "hh":
        return f'{{"chosen": {prompt}{chosen[1:]}, "rejected": {prompt}{rejected[1:]}}}'
    if format == "openai":
        return (
            f'{{"input": {{"messages": {prompt}}}, '
            f'"preferred_output": {assistant_json(chosen)}, '
            f'"non_preferred_output": {assistant_json(rejected)}}}'
        )
    raise ValueError(f"unknown comparison format {format!r}")


def with_fields(line: str, fields: dict[str, Any]) -> str:
    """A JSON object line with `fields` added at its end."""
    return line[:-1] + ", " + json.dumps(fields, ensure_ascii=False)[1:]


def rows_by_id(model: type[Model], columns: tuple[str, ...], ids: Iterable[int]) -> list[Any]:
    """`columns` (fields) of the rows with these ids, as `values_list` gives them. On
    PostgreSQL they are read as a pair export reads prompts (`pair_reads.SideRead`): by runs of
    ids, else by one array parameter, never an IN list of 10,000 placeholders."""
    wanted = list(set(ids))
    if connection.vendor != "postgresql":
        return list(model._default_manager.filter(pk__in=wanted).order_by().values_list(*columns))
    if not wanted:
        return []
    fields = [model._meta.get_field(column) for column in columns]
    reads = []
    for field in fields:
        is_json = isinstance(field, JSONField)
        sql = f'"{field.column}"'  # type: ignore[union-attr]
        reads.append((field.name, sql + "::text" if is_json else sql, is_json))
    with connection.cursor() as cursor:
        return list(side_read(model, reads).rows(cursor, wanted, tuples=True).values())


def counted_orders(
    prompt_ids: Iterable[int],
    cursor: int | None = None,
    exclude_unacceptable: bool = False,
    labelers: str = Labelers.HUMAN,
) -> dict[int, list[orders.Order]]:
    """The orders that count for each prompt, up to the ranking `cursor`: humans' unless
    `labelers` asks for AI labelers' (`ai`) or both (`all`)."""
    rankings = Ranking.objects.counted(labelers).filter(prompt_id__in=set(prompt_ids))
    if cursor is not None:
        rankings = rankings.filter(pk__lte=cursor)
    if exclude_unacceptable:
        rankings = rankings.filter(all_unacceptable=False)
    return rankings.orders_by_prompt()


def vote_shares(
    by_prompt: dict[int, list[orders.Order]],
) -> dict[tuple[int, int, int], tuple[float, int]]:
    """(prompt, winner, loser) -> (the share of the prompt's labelers who put winner above
    loser, a tie counting half; how many labelers ordered the two)."""
    shares: dict[tuple[int, int, int], tuple[float, int]] = {}
    for prompt_id, prompt_orders in by_prompt.items():
        completion_ids = orders.members(prompt_orders[0])
        for pair in consensus.pair_votes(completion_ids, prompt_orders):
            a, b, voters = pair["a"], pair["b"], pair["voters"]
            shares[(prompt_id, a, b)] = (pair["a_votes"] / voters, voters)
            shares[(prompt_id, b, a)] = (pair["b_votes"] / voters, voters)
    return shares


TRACE_COLUMNS = ("ranking_id", "margin", "strength", "chosen__external_id", "rejected__external_id")


def comparison_chunks(
    comparisons: QuerySet[Comparison],
    columns: list[Any],
    *,
    shares_needed: bool,
    min_agreement: float | None,
    min_labelers: int,
    split: Split | None,
    labelers: str = Labelers.HUMAN,
    exclude_gold: bool = False,
) -> Iterator[tuple[list[tuple[Any, ...]], dict[tuple[int, int, int], tuple[float, int]] | None]]:
    """`comparisons`' rows of `columns` (the first four: pk, prompt_id, chosen_id, rejected_id;
    with `split`, the last: the prompt's external id), up to CHUNK_SIZE at a time, in primary
    key order, with the prompts' vote shares when `shares_needed` or a share filter asks for
    them; `exclude_gold` leaves out gold prompts' pairs.

    The comparisons are read by a cursor (a server-side one, in a transaction, on PostgreSQL),
    so memory stays flat however many there are. On PostgreSQL their prompts' and completions'
    columns are read a chunk at a time by id range (`labeling.pair_reads`); on SQLite one
    joined query gives every column. `min_agreement` and `min_labelers` keep only comparisons
    whose direction at least that share of at least that many of the prompt's counted
    labelers gave (`vote_shares`, over every counted ranking at the time of the pull, of the
    same `labelers` as the comparisons)."""
    share_filter = min_agreement is not None or min_labelers > 1
    postgresql = connection.vendor == "postgresql"
    read = PairRead.plan(columns, exclude_gold=exclude_gold) if postgresql else None
    if read is None and exclude_gold:
        comparisons = comparisons.filter(prompt__is_gold=False)
    # Outside a transaction, Django's server-side cursors on PostgreSQL are WITH HOLD: the
    # server runs the whole query and stores its result before the first row comes. Inside
    # one, rows are made as they are fetched. (On SQLite, which reads as it goes anyway, a
    # transaction would hold the write lock against every submission for the whole export.)
    with (
        one_snapshot() if postgresql else nullcontext() as snapshot,
        shared_with_thread() if postgresql else nullcontext(),
        side_cursor(snapshot) if postgresql else nullcontext() as side,
    ):
        own = read.own if read is not None else columns
        rows = comparisons.order_by("pk").values_list(*own).iterator(chunk_size=CHUNK_SIZE)
        # On PostgreSQL a thread fetches the comparisons ahead and another reads their prompts
        # and completions: the server works on one chunk while Python turns the one before
        # into rows (the connection takes one statement at a time).
        own_chunks = read_ahead(
            iter(lambda: list(islice(rows, CHUNK_SIZE)), []), threaded=postgresql
        )
        chunks = (
            own_chunks if read is None else read_ahead(read.joined(side, own_chunks), threaded=True)
        )
        try:
            for chunk in chunks:
                if split is not None:
                    chunk = [row for row in chunk if split.keeps(row[-1])]
                shares = None
                if shares_needed or share_filter:
                    shares = vote_shares(
                        counted_orders((row[1] for row in chunk), labelers=labelers)
                    )
                if shares is not None and share_filter:
                    chunk = [
                        row
                        for row in chunk
                        if shares[row[1:4]][0] >= (min_agreement or 0)
                        and shares[row[1:4]][1] >= min_labelers
                    ]
                yield chunk, shares
        finally:
            # A pull the client leaves early closes this generator: its cursor is closed here,
            # inside the transaction that holds it, not after the rollback (where PostgreSQL
            # no longer knows it and the CLOSE fails), once no fetch is in flight.
            chunks.close()
            own_chunks.close()
            rows.close()  # type: ignore[attr-defined]


def pair_columns(
    prompt_column: Any, *, include_ids: bool, include: tuple[str, ...], split: Split | None
) -> tuple[list[Any], dict[str, int]]:
    """The columns a comparison export reads, and where each named one is: the pair's own
    seven, then the trace of `include_ids`, those `include` needs, the prompt's external id
    for `split` (always last)."""
    columns = ["pk", "prompt_id", "chosen_id", "rejected_id", prompt_column]
    columns += ["chosen__text", "rejected__text"]
    if include_ids:
        columns += TRACE_COLUMNS
    for name in include:
        columns += [column for column in INCLUDE_COLUMNS[name] if column not in columns]
    if split is not None:
        columns.append("prompt__external_id")
    return columns, {column: i for i, column in enumerate(columns) if isinstance(column, str)}


def trace_fields(row: tuple[Any, ...], at: dict[str, int]) -> dict[str, Any]:
    """`include_ids`: the ids that trace a comparison's row to its ranking, and its margin."""
    strength = row[at["strength"]]
    ids = {
        "comparison": row[0],
        "ranking": row[at["ranking_id"]],
        "prompt": row[1],
        "chosen": row[2],
        "rejected": row[3],
        "chosen_external": row[at["chosen__external_id"]],
        "rejected_external": row[at["rejected__external_id"]],
    }
    return {"ids": ids, "margin": row[at["margin"]]} | ({"strength": strength} if strength else {})


def comparison_lines(
    comparisons: QuerySet[Comparison],
    *,
    format: str,
    include_ids: bool,
    render_text: bool = False,
    include: tuple[str, ...] = (),
    split: Split | None = None,
    criteria: list[str] | None = None,
    **shares: Any,
) -> Iterator[bytes]:
    """JSON Lines of `comparisons` (already filtered and bounded), in primary key order, read
    by `comparison_chunks` (which takes `shares`: min_agreement, min_labelers); `include` adds
    `included_fields` (ratings and predicted rewards on the dataset's `criteria`), `split`
    keeps one part."""
    in_database = (
        connection.vendor == "postgresql" and format in PROMPT_JSON_SQL and not render_text
    )
    prompt_column = (
        Func("prompt__messages", template=PROMPT_JSON_SQL[format], output_field=TextField())
        if in_database
        else "prompt__messages"
    )
    columns, at = pair_columns(prompt_column, include_ids=include_ids, include=include, split=split)
    extra = include_ids or bool(include)
    last_prompt, pair_format, prompt = 0, format, ""
    for chunk, vote_shares_of_chunk in comparison_chunks(
        comparisons,
        columns,
        shares_needed="agreement" in include,
        split=split,
        **shares,
    ):
        lines = []
        predictions = chunk_predictions(include, chunk)
        ratings = chunk_ratings(include, (row[at["ranking_id"]] for row in chunk))
        for row in chunk:
            prompt_id, prompt_value, chosen, rejected = row[1], row[4], row[5], row[6]
            # A ranking's comparisons come one after another: their prompt is encoded once.
            if prompt_id != last_prompt:
                last_prompt = prompt_id
                if in_database:
                    prompt = prompt_value
                else:
                    pair_format = line_format(format, prompt_value, render_text)
                    prompt = prompt_json(pair_format, prompt_value)
            line = comparison_line(pair_format, prompt, encode(chosen), encode(rejected))
            if extra:
                fields = included_fields(
                    include,
                    row,
                    at,
                    vote_shares_of_chunk,
                    predictions,
                    ratings=ratings,
                    keys=criteria,
                )
                if include_ids:
                    fields.update(trace_fields(row, at))
                line = with_fields(line, fields)
            lines.append(line)
        if lines:
            lines.append("")  # the last line's newline, without copying the chunk's text again
            yield "\n".join(lines).encode()


def comparison_records(
    comparisons: QuerySet[Comparison],
    *,
    format: str,
    include_ids: bool,
    render_text: bool = False,
    include: tuple[str, ...] = (),
    split: Split | None = None,
    criteria: list[str] | None = None,
    **shares: Any,
) -> Iterator[list[dict[str, Any]]]:
    """The rows of `comparison_lines` as dicts, a chunk at a time (for Parquet): the same
    fields, except that `prompt_metadata` is a JSON string and `strength` (with `include_ids`)
    is None rather than left out."""
    columns, at = pair_columns(
        "prompt__messages", include_ids=include_ids, include=include, split=split
    )
    for chunk, vote_shares_of_chunk in comparison_chunks(
        comparisons,
        columns,
        shares_needed="agreement" in include,
        split=split,
        **shares,
    ):
        records = []
        predictions = chunk_predictions(include, chunk)
        ratings = chunk_ratings(include, (row[at["ranking_id"]] for row in chunk))
        for row in chunk:
            record = pair_row(line_format(format, row[4], render_text), row[4], row[5], row[6])
            record.update(
                included_fields(
                    include,
                    row,
                    at,
                    vote_shares_of_chunk,
                    predictions,
                    ratings=ratings,
                    keys=criteria,
                )
            )
            if include_ids:
                record.update({"strength": None} | trace_fields(row, at))
            records.append(record)
        yield records


def chunk_predictions(include: tuple[str, ...], chunk: list[tuple[Any, ...]]) -> Predicted | None:
    """The predicted rewards of a chunk of comparison rows' completions, with
    `include=predictions` (one query); None without."""
    if "predictions" not in include:
        return None
    return predicted_rewards(completion_id for row in chunk for completion_id in row[2:4])


def pair_row(pair_format: str, messages: Messages, chosen: str, rejected: str) -> dict[str, Any]:
    """`comparison_row`, or `trl_text_row` for the "trl-text" of `line_format`."""
    if pair_format == "trl-text":
        return trl_text_row(messages, chosen, rejected)
    return comparison_row(pair_format, messages, chosen, rejected)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header takes gzip: named (or `*`) with a q-value above 0."""
    accepted: dict[str, float] = {}
    for part in accept_encoding.lower().split(","):
        name, _, parameters = part.strip().partition(";")
        quality = 1.0
        for parameter in parameters.split(";"):
            key, _, value = parameter.strip().partition("=")
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        accepted[name.strip()] = quality
    return accepted.get("gzip", accepted.get("x-gzip", accepted.get("*", 0.0))) > 0


def gzipped(chunks: Iterable[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: gzip header and trailer
    for chunk in chunks:
        if data := compressor.compress(chunk):
            yield data
    yield compressor.flush()
