"""Export rows in the formats training pipelines read, streamed as JSON Lines.

The row builders are plain functions of messages and texts. The generators read the database
in chunks, so memory stays flat however many rows there are: pairs through one joined query
read by a cursor, rankings and consensus pairs in chunks of primary keys (keyset pagination)
whose prompts and completions are fetched once per chunk.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from itertools import islice
from typing import Any

from django.db import connection, transaction
from django.db.models import Func, JSONField, Model, QuerySet, TextField

from labeling import consensus, orders
from labeling.accounts import pseudonym
from labeling.formats import render_hh_dialogue
from labeling.models import Adjudication, Comparison, Completion, Prompt, Ranking

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
encode = json.encoder.encode_basestring  # type: ignore[attr-defined]

# PostgreSQL writes JSON as `json.dumps(ensure_ascii=False)` does (the same separators and
# escapes; a message's keys come out as "role", "content" in both), so on PostgreSQL the formats
# that hold the last message or the messages as they are get that piece from the database, and
# Python only joins strings.
PROMPT_JSON_SQL = {
    "trl": "(%(expressions)s -> -1 -> 'content')::text",
    "trl-conversational": "%(expressions)s::text",
    "openai": "%(expressions)s::text",
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
    """`columns` of the rows with these ids, as `values_list` gives them. On PostgreSQL the ids
    go as one array parameter (`= ANY(%s)`): an IN list of 10,000 placeholders costs more to
    build, send and plan than the rows cost to read."""
    wanted = list(set(ids))
    if connection.vendor != "postgresql":
        return list(model._default_manager.filter(pk__in=wanted).order_by().values_list(*columns))
    fields = [model._meta.get_field(column) for column in columns]
    is_json = [isinstance(field, JSONField) for field in fields]
    names = ", ".join(
        f"{column}::text" if json_column else str(column)
        for column, json_column in zip(
            (getattr(field, "column", field.name) for field in fields), is_json, strict=True
        )
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {names} FROM {model._meta.db_table} WHERE id = ANY(%s)",
            [wanted],
        )
        return [
            tuple(
                json.loads(value) if json_column else value
                for value, json_column in zip(row, is_json, strict=True)
            )
            for row in cursor.fetchall()
        ]


def counted_orders(
    prompt_ids: Iterable[int], cursor: int | None = None
) -> dict[int, list[orders.Order]]:
    """The orders that count for each prompt, up to the ranking `cursor`."""
    rankings = Ranking.objects.counted().filter(prompt_id__in=set(prompt_ids))
    if cursor is not None:
        rankings = rankings.filter(pk__lte=cursor)
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


def comparison_lines(
    comparisons: QuerySet[Comparison],
    *,
    format: str,
    include_ids: bool,
    render_text: bool = False,
    min_agreement: float | None = None,
    min_labelers: int = 1,
) -> Iterator[bytes]:
    """JSON Lines of `comparisons` (already filtered and bounded), in primary key order.

    One query joins each comparison to its prompt and its two completions and is read
    CHUNK_SIZE rows at a time (through a server-side cursor, in a transaction, on PostgreSQL), so
    memory stays flat however many comparisons there are. With `min_agreement` or
    `min_labelers`, only comparisons whose direction at least that share of at least that many
    of the prompt's counted labelers gave (`vote_shares`, over every counted ranking at the time
    of the pull)."""
    in_database = (
        connection.vendor == "postgresql" and format in PROMPT_JSON_SQL and not render_text
    )
    prompt_column = (
        Func("prompt__messages", template=PROMPT_JSON_SQL[format], output_field=TextField())
        if in_database
        else "prompt__messages"
    )
    columns = ["pk", "prompt_id", "chosen_id", "rejected_id", prompt_column]
    columns += ["chosen__text", "rejected__text"]
    if include_ids:
        columns += ["ranking_id", "margin", "strength"]
        columns += ["chosen__external_id", "rejected__external_id"]
    last_prompt, pair_format, prompt = 0, format, ""
    # Outside a transaction, Django's server-side cursors on PostgreSQL are WITH HOLD: the
    # server runs the whole query and stores its result before the first row comes. Inside
    # one, rows are made as they are fetched. (On SQLite, which reads as it goes anyway, a
    # transaction would hold the write lock against every submission for the whole export.)
    with transaction.atomic() if connection.vendor == "postgresql" else nullcontext():
        rows = comparisons.order_by("pk").values_list(*columns).iterator(chunk_size=CHUNK_SIZE)
        while chunk := list(islice(rows, CHUNK_SIZE)):
            if min_agreement is not None or min_labelers > 1:
                shares = vote_shares(counted_orders(row[1] for row in chunk))
                chunk = [
                    row
                    for row in chunk
                    if shares[row[1:4]][0] >= (min_agreement or 0)
                    and shares[row[1:4]][1] >= min_labelers
                ]
            lines = []
            for (
                pk,
                prompt_id,
                chosen_id,
                rejected_id,
                prompt_value,
                chosen,
                rejected,
                *trace,
            ) in chunk:
                # A ranking's comparisons come one after another: their prompt is encoded once.
                if prompt_id != last_prompt:
                    last_prompt = prompt_id
                    if in_database:
                        prompt = prompt_value
                    else:
                        pair_format = line_format(format, prompt_value, render_text)
                        prompt = prompt_json(pair_format, prompt_value)
                line = comparison_line(pair_format, prompt, encode(chosen), encode(rejected))
                if include_ids:
                    ranking_id, margin, strength, chosen_external, rejected_external = trace
                    ids = {
                        "comparison": pk,
                        "ranking": ranking_id,
                        "prompt": prompt_id,
                        "chosen": chosen_id,
                        "rejected": rejected_id,
                        "chosen_external": chosen_external,
                        "rejected_external": rejected_external,
                    }
                    fields = {"ids": ids, "margin": margin} | (
                        {"strength": strength} if strength else {}
                    )
                    line = with_fields(line, fields)
                lines.append(line)
            if lines:
                yield ("\n".join(lines) + "\n").encode()


def consensus_lines(
    prompts: QuerySet[Prompt],
    *,
    ranking_cursor: int,
    format: str,
    include_ids: bool,
    render_text: bool = False,
    min_agreement: float | None = None,
    min_labelers: int = 1,
    adjudicated_only: bool = False,
) -> Iterator[bytes]:
    """One JSON line per completion pair of each prompt that its consensus order separates and
    a strict majority of its counted labelers (rankings up to `ranking_cursor`) ordered the same
    way (`labeling.consensus.consensus_pairs`); with `include_ids`, each
    row adds its `vote_share` and `voters`.

    A prompt a reviewer adjudicated gives the pairs of its newest adjudicated order instead, as
    a labeler's ranking of that order would (every two completions in different tie groups,
    whatever `min_agreement` and `min_labelers` say). Each row says which in `source`
    ("consensus" or "adjudicated"); `adjudicated_only` leaves out the prompts without one."""
    last = 0
    while chunk := list(
        prompts.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[: CHUNK_SIZE // 5]
    ):
        last = chunk[-1]
        settled = adjudicated_orders(chunk)
        by_prompt = {} if adjudicated_only else counted_orders(chunk, cursor=ranking_cursor)
        pairs: list[tuple[int, dict[str, Any]]] = []
        for prompt_id, prompt_orders in by_prompt.items():
            if prompt_id in settled:
                continue
            completion_ids = orders.members(prompt_orders[0])
            for agreed in consensus.consensus_pairs(completion_ids, prompt_orders):
                if (
                    agreed["vote_share"] >= (min_agreement or 0)
                    and agreed["voters"] >= min_labelers
                ):
                    pairs.append((prompt_id, {**agreed, "source": "consensus"}))
        for prompt_id, (adjudication_id, order) in settled.items():
            for better, worse, margin in orders.comparison_pairs(order):
                pairs.append(
                    (
                        prompt_id,
                        {"chosen": better, "rejected": worse, "margin": margin}
                        | {"source": "adjudicated", "id": adjudication_id},
                    )
                )
        encoded_prompts = {}
        for prompt_id, messages in rows_by_id(Prompt, ("id", "messages"), {*by_prompt, *settled}):
            pair_format = line_format(format, messages, render_text)
            encoded_prompts[prompt_id] = (pair_format, prompt_json(pair_format, messages))
        completions = {
            pk: (external_id, encode(text))
            for pk, external_id, text in rows_by_id(
                Completion,
                ("id", "external_id", "text"),
                (cid for _, pair in pairs for cid in (pair["chosen"], pair["rejected"])),
            )
        }
        lines = []
        for prompt_id, pair in pairs:
            (chosen_external, chosen), (rejected_external, rejected) = (
                completions[pair["chosen"]],
                completions[pair["rejected"]],
            )
            line = comparison_line(*encoded_prompts[prompt_id], chosen, rejected)
            fields: dict[str, Any] = {"source": pair["source"]}
            if include_ids:
                ids = {
                    "prompt": prompt_id,
                    "chosen": pair["chosen"],
                    "rejected": pair["rejected"],
                    "chosen_external": chosen_external,
                    "rejected_external": rejected_external,
                }
                if pair["source"] == "adjudicated":
                    ids["adjudication"] = pair["id"]
                    fields |= {"ids": ids, "margin": pair["margin"]}
                else:
                    fields |= {"ids": ids, "vote_share": pair["vote_share"]}
                    fields["voters"] = pair["voters"]
            lines.append(with_fields(line, fields))
        if lines:
            yield ("\n".join(lines) + "\n").encode()


def adjudicated_orders(prompt_ids: Iterable[int]) -> dict[int, tuple[int, orders.Order]]:
    """prompt id -> (id, order) of its newest adjudication, for those of `prompt_ids` that have
    one."""
    return {
        prompt_id: (pk, order)
        for pk, prompt_id, order in Adjudication.objects.filter(prompt_id__in=list(prompt_ids))
        .latest_per_prompt()
        .values_list("pk", "prompt_id", "order")
    }


RANKING_COLUMNS = (
    "pk",
    "prompt_id",
    "labeler_id",
    "order",
    "ratings",
    "flags",
    "all_unacceptable",
    "rationale",
    "seconds_spent",
    "guidelines_version",
    "created_at",
)


def ranking_lines(rankings: QuerySet[Ranking], *, include_ids: bool) -> Iterator[bytes]:
    """One JSON line per ranking: every completion, the order with ties, ratings, flags."""
    pseudonyms: dict[int, str] = {}
    last = 0
    while chunk := list(
        rankings.filter(pk__gt=last).order_by("pk").values_list(*RANKING_COLUMNS)[: CHUNK_SIZE // 5]
    ):
        last = chunk[-1][0]
        prompts = _encoded_prompts_with_completions({row[1] for row in chunk})
        lines = []
        for values in chunk:
            ranking = dict(zip(RANKING_COLUMNS, values, strict=True))
            labeler_id, prompt_id = ranking["labeler_id"], ranking["prompt_id"]
            if labeler_id not in pseudonyms:
                pseudonyms[labeler_id] = pseudonym(labeler_id)
            row: dict[str, Any] = {
                "order": ranking["order"],
                "ratings": ranking["ratings"],
                "flags": ranking["flags"],
                "all_unacceptable": ranking["all_unacceptable"],
                "rationale": ranking["rationale"],
                "seconds_spent": ranking["seconds_spent"],
                "guidelines_version": ranking["guidelines_version"],
                "labeler": pseudonyms[labeler_id],
                "created_at": ranking["created_at"].isoformat(),
            }
            external_id, head = prompts[prompt_id]
            if include_ids:
                row["ids"] = {
                    "ranking": ranking["pk"],
                    "prompt": prompt_id,
                    "prompt_external": external_id,
                }
            lines.append(head + json.dumps(row, ensure_ascii=False)[1:])
        yield ("\n".join(lines) + "\n").encode()


def _encoded_prompts_with_completions(prompt_ids: set[int]) -> dict[int, tuple[str, str]]:
    """prompt id -> (external id, the start of its ranking lines: the prompt and every
    completion in import order, as JSON up to the comma before the ranking's own fields)."""
    completions: dict[int, list[dict[str, Any]]] = {pk: [] for pk in prompt_ids}
    for pk, prompt_id, external_id, text, model in (
        Completion.objects.filter(prompt_id__in=prompt_ids)
        .order_by("prompt_id", "position")
        .values_list("pk", "prompt_id", "external_id", "text", "model_name")
    ):
        completions[prompt_id].append(
            {"id": pk, "external_id": external_id, "text": text, "model": model}
        )
    return {
        pk: (
            external_id,
            f'{{"prompt": {json.dumps(messages, ensure_ascii=False)}, '
            f'"completions": {json.dumps(completions[pk], ensure_ascii=False)}, ',
        )
        for pk, external_id, messages in Prompt.objects.filter(pk__in=prompt_ids)
        .order_by()
        .values_list("pk", "external_id", "messages")
    }


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
