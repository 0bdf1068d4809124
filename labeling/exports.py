"""Export rows in the formats training pipelines read, streamed as JSON Lines.

The row builders are plain functions of messages and texts. The generators read the database
in chunks, so memory stays flat however many rows there are: pairs through one joined query
read by a cursor, rankings and consensus pairs in chunks of primary keys (keyset pagination)
whose prompts and completions are fetched once per chunk.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Func, JSONField, Model, QuerySet, TextField

from labeling import consensus, orders
from labeling.accounts import pseudonym
from labeling.formats import render_hh_dialogue
from labeling.models import Adjudication, Comparison, Completion, Prompt, Ranking, all_criteria

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
    prompt_ids: Iterable[int], cursor: int | None = None, exclude_unacceptable: bool = False
) -> dict[int, list[orders.Order]]:
    """The orders that count for each prompt, up to the ranking `cursor`."""
    rankings = Ranking.objects.counted().filter(prompt_id__in=set(prompt_ids))
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


INCLUDES = ("models", "ratings", "flags", "metadata", "strength", "agreement", "predictions")
# A consensus pair is many labelers' verdict: one labeler's ratings, flags or strength do not
# belong to it, and its agreement is its vote share.
CONSENSUS_INCLUDES = ("models", "metadata", "agreement", "predictions")
# The columns each `include` name needs from a comparison's joined rows.
INCLUDE_COLUMNS = {
    "models": ("chosen__model_name", "rejected__model_name"),
    "ratings": ("ranking__ratings",),
    "flags": ("ranking__flags", "ranking__all_unacceptable"),
    "metadata": ("prompt__metadata",),
    "strength": ("strength",),
    "agreement": (),
    "predictions": (),  # looked up a chunk at a time (`predicted_rewards`)
}
TRACE_COLUMNS = ("ranking_id", "margin", "strength", "chosen__external_id", "rejected__external_id")


@dataclass(frozen=True)
class Split:
    """A deterministic train/test split by prompt: `part` is "train" or "test"."""

    part: str
    test_share: float
    seed: int

    def keeps(self, prompt_external_id: str) -> bool:
        return in_test_part(self.seed, prompt_external_id, self.test_share) == (self.part == "test")


def in_test_part(seed: int, prompt_external_id: str, test_share: float) -> bool:
    """Whether a prompt is in the test part: the first 8 bytes of sha256("<seed>:<external
    id>"), read as a big-endian number over 2**64, fall under `test_share`. A hash of the
    prompt's own id, so every pair of a prompt lands in the same part, the parts of one seed
    and share are disjoint and cover everything, and any machine (or a user's script) gives the
    same split; the share is met on average, not exactly."""
    digest = hashlib.sha256(f"{seed}:{prompt_external_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < test_share * 2**64


def criteria_ratings(ratings: dict[str, int] | None) -> dict[str, int | None]:
    """A completion's ratings on every criterion, None where it has none: one shape for every
    row, so column tools (and Parquet) see fixed fields."""
    given = ratings or {}
    return {criterion: given.get(criterion) for criterion in all_criteria()}


Predicted = dict[int, tuple[float, dict[str, float]]]


def predicted_rewards(completion_ids: Iterable[int]) -> Predicted:
    """completion id -> (reward, per-criterion rewards) by the active reward model of its
    dataset (`rewards.services.predictions`), for those of `completion_ids` it scored. At most
    one active model covers a dataset (`activate_reward_model`), so each id has one row."""
    from rewards.models import Prediction  # rewards builds on labeling

    ids = list(set(completion_ids))
    if not ids:
        return {}
    rows = Prediction.objects.filter(
        completion_id__in=ids,
        reward_model__is_active=True,
        reward_model__datasets=F("completion__prompt__dataset"),
    ).values_list("completion_id", "reward", "criteria")
    return {completion_id: (reward, criteria) for completion_id, reward, criteria in rows}


def prediction_fields(predictions: Predicted, chosen_id: int, rejected_id: int) -> dict[str, Any]:
    """`include=predictions`: each side's predicted reward and per-criterion rewards, null
    where the model has not scored it (or has no head for a criterion), in one shape."""
    fields: dict[str, Any] = {}
    for side, completion_id in (("chosen", chosen_id), ("rejected", rejected_id)):
        reward, criteria = predictions.get(completion_id, (None, {}))
        fields[f"{side}_reward"] = reward
        fields[f"{side}_criterion_rewards"] = {c: criteria.get(c) for c in all_criteria()}
    return fields


def included_fields(
    include: tuple[str, ...],
    row: tuple[Any, ...],
    at: dict[str, int],
    shares: dict[tuple[int, int, int], tuple[float, int]] | None,
    predictions: Predicted | None = None,
) -> dict[str, Any]:
    """The `include` fields of one comparison's joined row (`at`: column name -> index)."""
    fields: dict[str, Any] = {}
    chosen_id, rejected_id = str(row[2]), str(row[3])
    if "models" in include:
        fields["chosen_model"] = row[at["chosen__model_name"]] or None
        fields["rejected_model"] = row[at["rejected__model_name"]] or None
    if "ratings" in include:
        ratings = row[at["ranking__ratings"]]
        fields["chosen_ratings"] = criteria_ratings(ratings.get(chosen_id))
        fields["rejected_ratings"] = criteria_ratings(ratings.get(rejected_id))
    if "flags" in include:
        flags = row[at["ranking__flags"]]
        fields["chosen_flags"] = flags.get(chosen_id, [])
        fields["rejected_flags"] = flags.get(rejected_id, [])
        fields["all_unacceptable"] = row[at["ranking__all_unacceptable"]]
    if "metadata" in include:
        fields["prompt_metadata"] = row[at["prompt__metadata"]]
    if "strength" in include:
        fields["strength"] = row[at["strength"]] or None
    if "agreement" in include and shares is not None:
        fields["agreement"], fields["voters"] = shares[row[1:4]]
    if predictions is not None:
        fields |= prediction_fields(predictions, row[2], row[3])
    return fields


def comparison_chunks(
    comparisons: QuerySet[Comparison],
    columns: list[Any],
    *,
    shares_needed: bool,
    min_agreement: float | None,
    min_labelers: int,
    split: Split | None,
) -> Iterator[tuple[list[tuple[Any, ...]], dict[tuple[int, int, int], tuple[float, int]] | None]]:
    """`comparisons`' rows of `columns` (the first four: pk, prompt_id, chosen_id, rejected_id;
    with `split`, the last: the prompt's external id), CHUNK_SIZE at a time, in primary key
    order, with the prompts' vote shares when `shares_needed` or a share filter asks for them.

    One query is read by a cursor (a server-side one, in a transaction, on PostgreSQL), so
    memory stays flat however many comparisons there are. `min_agreement` and `min_labelers`
    keep only comparisons whose direction at least that share of at least that many of the
    prompt's counted labelers gave (`vote_shares`, over every counted ranking at the time of
    the pull)."""
    share_filter = min_agreement is not None or min_labelers > 1
    # Outside a transaction, Django's server-side cursors on PostgreSQL are WITH HOLD: the
    # server runs the whole query and stores its result before the first row comes. Inside
    # one, rows are made as they are fetched. (On SQLite, which reads as it goes anyway, a
    # transaction would hold the write lock against every submission for the whole export.)
    with transaction.atomic() if connection.vendor == "postgresql" else nullcontext():
        rows = comparisons.order_by("pk").values_list(*columns).iterator(chunk_size=CHUNK_SIZE)
        while chunk := list(islice(rows, CHUNK_SIZE)):
            if split is not None:
                chunk = [row for row in chunk if split.keeps(row[-1])]
            shares = None
            if shares_needed or share_filter:
                shares = vote_shares(counted_orders(row[1] for row in chunk))
            if shares is not None and share_filter:
                chunk = [
                    row
                    for row in chunk
                    if shares[row[1:4]][0] >= (min_agreement or 0)
                    and shares[row[1:4]][1] >= min_labelers
                ]
            yield chunk, shares


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
    min_agreement: float | None = None,
    min_labelers: int = 1,
    include: tuple[str, ...] = (),
    split: Split | None = None,
) -> Iterator[bytes]:
    """JSON Lines of `comparisons` (already filtered and bounded), in primary key order, read
    by `comparison_chunks`; `include` adds `included_fields`, `split` keeps one part."""
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
    for chunk, shares in comparison_chunks(
        comparisons,
        columns,
        shares_needed="agreement" in include,
        min_agreement=min_agreement,
        min_labelers=min_labelers,
        split=split,
    ):
        lines = []
        predictions = chunk_predictions(include, chunk)
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
                fields = included_fields(include, row, at, shares, predictions)
                if include_ids:
                    fields.update(trace_fields(row, at))
                line = with_fields(line, fields)
            lines.append(line)
        if lines:
            yield ("\n".join(lines) + "\n").encode()


def comparison_records(
    comparisons: QuerySet[Comparison],
    *,
    format: str,
    include_ids: bool,
    render_text: bool = False,
    min_agreement: float | None = None,
    min_labelers: int = 1,
    include: tuple[str, ...] = (),
    split: Split | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """The rows of `comparison_lines` as dicts, a chunk at a time (for Parquet): the same
    fields, except that `prompt_metadata` is a JSON string and `strength` (with `include_ids`)
    is None rather than left out."""
    columns, at = pair_columns(
        "prompt__messages", include_ids=include_ids, include=include, split=split
    )
    for chunk, shares in comparison_chunks(
        comparisons,
        columns,
        shares_needed="agreement" in include,
        min_agreement=min_agreement,
        min_labelers=min_labelers,
        split=split,
    ):
        records = []
        predictions = chunk_predictions(include, chunk)
        for row in chunk:
            record = pair_row(line_format(format, row[4], render_text), row[4], row[5], row[6])
            record.update(included_fields(include, row, at, shares, predictions))
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


@dataclass
class ConsensusChunk:
    """The consensus pairs of a chunk of prompts, with what their rows are made of."""

    pairs: list[tuple[int, dict[str, Any]]]  # a ConsensusPair, or an adjudicated pair
    prompts: dict[int, tuple[Any, ...]]  # id -> (messages, metadata when asked)
    completions: dict[int, tuple[Any, ...]]  # id -> (external id, text, model when asked)
    predictions: Predicted | None = None  # with include=predictions


def consensus_chunks(
    prompts: QuerySet[Prompt],
    *,
    ranking_cursor: int,
    min_agreement: float | None = None,
    min_labelers: int = 1,
    include: tuple[str, ...] = (),
    split: Split | None = None,
    exclude_unacceptable: bool = False,
    adjudicated_only: bool = False,
) -> Iterator[ConsensusChunk]:
    """Each completion pair of each prompt that its consensus order separates and a strict
    majority of its counted labelers (rankings up to `ranking_cursor`, without "all
    unacceptable" ones when `exclude_unacceptable`) ordered the same way
    (`labeling.consensus.consensus_pairs`), a chunk of prompts (keyset pagination) at a time.

    A prompt a reviewer adjudicated gives the pairs of its newest adjudicated order instead, as
    a labeler's ranking of that order would (every two completions in different tie groups,
    whatever `min_agreement` and `min_labelers` say). Each pair says which in `source`
    ("consensus" or "adjudicated"); `adjudicated_only` leaves out the prompts without one."""
    last = 0
    while chunk := list(
        prompts.filter(pk__gt=last)
        .order_by("pk")
        .values_list("pk", "external_id")[: CHUNK_SIZE // 5]
    ):
        last = chunk[-1][0]
        wanted = [pk for pk, external_id in chunk if split is None or split.keeps(external_id)]
        settled = adjudicated_orders(wanted)
        by_prompt = (
            {}
            if adjudicated_only
            else counted_orders(
                wanted, cursor=ranking_cursor, exclude_unacceptable=exclude_unacceptable
            )
        )
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
                settled_pair: dict[str, Any] = {"chosen": better, "rejected": worse}
                settled_pair |= {"margin": margin, "source": "adjudicated", "id": adjudication_id}
                pairs.append((prompt_id, settled_pair))
        prompt_columns = (
            ("id", "messages", "metadata") if "metadata" in include else ("id", "messages")
        )
        completion_columns: tuple[str, ...] = ("id", "external_id", "text")
        if "models" in include:
            completion_columns += ("model_name",)
        yield ConsensusChunk(
            predictions=(
                predicted_rewards(
                    cid for _, pair in pairs for cid in (pair["chosen"], pair["rejected"])
                )
                if "predictions" in include
                else None
            ),
            pairs=pairs,
            prompts={
                pk: rest for pk, *rest in rows_by_id(Prompt, prompt_columns, {*by_prompt, *settled})
            },
            completions={
                pk: rest
                for pk, *rest in rows_by_id(
                    Completion,
                    completion_columns,
                    (cid for _, pair in pairs for cid in (pair["chosen"], pair["rejected"])),
                )
            },
        )


def consensus_fields(
    pair: dict[str, Any],
    include: tuple[str, ...],
    include_ids: bool,
    prompt_id: int,
    prompt: tuple[Any, ...],
    chosen: tuple[Any, ...],
    rejected: tuple[Any, ...],
    predictions: Predicted | None = None,
) -> dict[str, Any]:
    """The fields a consensus row adds to its pair: its `source`, `include`'s, then
    `include_ids`'. An adjudicated pair has no vote share: its agreement is null."""
    fields: dict[str, Any] = {"source": pair["source"]}
    adjudicated = pair["source"] == "adjudicated"
    if "models" in include:
        fields["chosen_model"], fields["rejected_model"] = chosen[2] or None, rejected[2] or None
    if "metadata" in include:
        fields["prompt_metadata"] = prompt[1]
    if "agreement" in include:
        fields["agreement"] = None if adjudicated else pair["vote_share"]
        fields["voters"] = None if adjudicated else pair["voters"]
    if predictions is not None:
        fields |= prediction_fields(predictions, pair["chosen"], pair["rejected"])
    if include_ids:
        ids = {
            "prompt": prompt_id,
            "chosen": pair["chosen"],
            "rejected": pair["rejected"],
            "chosen_external": chosen[0],
            "rejected_external": rejected[0],
        }
        if adjudicated:
            fields |= {"ids": ids | {"adjudication": pair["id"]}, "margin": pair["margin"]}
        else:
            fields |= {"ids": ids, "vote_share": pair["vote_share"], "voters": pair["voters"]}
    return fields


def consensus_lines(
    prompts: QuerySet[Prompt],
    *,
    format: str,
    include_ids: bool,
    render_text: bool = False,
    include: tuple[str, ...] = (),
    **selection: Any,
) -> Iterator[bytes]:
    """One JSON line per pair of `consensus_chunks` (which takes `selection`: the ranking
    cursor and the filters), each saying its `source` ("consensus" or "adjudicated"); with
    `include_ids`, a consensus row adds its `vote_share` and `voters`, an adjudicated one its
    adjudication's id and the pair's `margin`."""
    for chunk in consensus_chunks(prompts, include=include, **selection):
        encoded_prompts = {}
        for prompt_id, (messages, *_) in chunk.prompts.items():
            pair_format = line_format(format, messages, render_text)
            encoded_prompts[prompt_id] = (pair_format, prompt_json(pair_format, messages))
        texts = {pk: encode(values[1]) for pk, values in chunk.completions.items()}
        lines = []
        for prompt_id, pair in chunk.pairs:
            line = comparison_line(
                *encoded_prompts[prompt_id], texts[pair["chosen"]], texts[pair["rejected"]]
            )
            fields = consensus_fields(
                pair,
                include,
                include_ids,
                prompt_id,
                chunk.prompts[prompt_id],
                chunk.completions[pair["chosen"]],
                chunk.completions[pair["rejected"]],
                chunk.predictions,
            )
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


def consensus_records(
    prompts: QuerySet[Prompt],
    *,
    format: str,
    include_ids: bool,
    render_text: bool = False,
    include: tuple[str, ...] = (),
    **selection: Any,
) -> Iterator[list[dict[str, Any]]]:
    """The rows of `consensus_lines` as dicts, a chunk at a time (for Parquet)."""
    for chunk in consensus_chunks(prompts, include=include, **selection):
        records = []
        for prompt_id, pair in chunk.pairs:
            prompt = chunk.prompts[prompt_id]
            chosen, rejected = (
                chunk.completions[pair["chosen"]],
                chunk.completions[pair["rejected"]],
            )
            pair_format = line_format(format, prompt[0], render_text)
            record = pair_row(pair_format, prompt[0], chosen[1], rejected[1])
            record.update(
                consensus_fields(
                    pair,
                    include,
                    include_ids,
                    prompt_id,
                    prompt,
                    chosen,
                    rejected,
                    chunk.predictions,
                )
            )
            records.append(record)
        yield records


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


RANKING_SHAPES = ("v2", "v1")


def ranking_lines(
    rankings: QuerySet[Ranking],
    *,
    include_ids: bool,
    shape: str = "v2",
    split: Split | None = None,
) -> Iterator[bytes]:
    """One JSON line per ranking: every completion, the order with ties, ratings, flags.

    `v2` (the default) holds a list of completion records keyed by the import's ids
    (`ranking_v2_fields`), which column tools read as one schema; `v1`, the earlier shape,
    keeps order, ratings and flags keyed by internal completion ids."""
    pseudonyms: dict[int, str] = {}
    last = 0
    while chunk := list(
        rankings.filter(pk__gt=last).order_by("pk").values_list(*RANKING_COLUMNS)[: CHUNK_SIZE // 5]
    ):
        last = chunk[-1][0]
        prompt_ids = {row[1] for row in chunk}
        prompts = (
            _encoded_prompts_with_completions(prompt_ids)
            if shape == "v1"
            else _encoded_prompts_with_completion_records(prompt_ids)
        )
        lines = []
        for values in chunk:
            ranking = dict(zip(RANKING_COLUMNS, values, strict=True))
            labeler_id, prompt_id = ranking["labeler_id"], ranking["prompt_id"]
            external_id, head, *completions = prompts[prompt_id]
            if split is not None and not split.keeps(external_id):
                continue
            if labeler_id not in pseudonyms:
                pseudonyms[labeler_id] = pseudonym(labeler_id)
            if shape == "v1":
                row: dict[str, Any] = {
                    "order": ranking["order"],
                    "ratings": ranking["ratings"],
                    "flags": ranking["flags"],
                }
                line_head = head
            else:
                row = {"order": external_order(ranking["order"], completions[0])}
                line_head = head + completion_records_json(ranking, completions[0]) + ", "
            row |= {
                "all_unacceptable": ranking["all_unacceptable"],
                "rationale": ranking["rationale"],
                "seconds_spent": ranking["seconds_spent"],
                "guidelines_version": ranking["guidelines_version"],
                "labeler": pseudonyms[labeler_id],
                "created_at": ranking["created_at"].isoformat(),
            }
            if include_ids:
                row["ids"] = {
                    "ranking": ranking["pk"],
                    "prompt": prompt_id,
                    "prompt_external": external_id,
                }
                if shape != "v1":
                    row["ids"]["completions"] = [pk for pk, _, _ in completions[0]]
            lines.append(line_head + json.dumps(row, ensure_ascii=False)[1:])
        if lines:
            yield ("\n".join(lines) + "\n").encode()


def external_order(order: orders.Order, completions: list[tuple[int, str, str]]) -> list[list[str]]:
    """A ranking's order with the import's completion ids instead of internal ones."""
    external = {pk: external_id for pk, external_id, _ in completions}
    return [[external[pk] for pk in group] for group in order]


def completion_records_json(
    ranking: dict[str, Any], completions: list[tuple[int, str, str]]
) -> str:
    """`"completions": [...]` of a v2 ranking line: each completion's record (from its encoded
    start) with its rank (1 for the best tie group, 2 for the next, ...), its ratings on every
    criterion (None where none was given) and its flags."""
    ranks = {pk: rank for rank, group in enumerate(ranking["order"], start=1) for pk in group}
    ratings, flags = ranking["ratings"], ranking["flags"]
    records = [
        start
        + json.dumps(
            {
                "rank": ranks.get(pk),
                "ratings": criteria_ratings(ratings.get(str(pk))),
                "flags": flags.get(str(pk), []),
            },
            ensure_ascii=False,
        )[1:]
        for pk, _, start in completions
    ]
    return '"completions": [' + ", ".join(records) + "]"


def _encoded_prompts_with_completion_records(
    prompt_ids: set[int],
) -> dict[int, tuple[str, str, list[tuple[int, str, str]]]]:
    """prompt id -> (external id, the start of its v2 ranking lines: the prompt and its
    external id, and its completions in import order as (id, external id, the start of their
    record as JSON up to the comma before the ranking's own fields))."""
    completions: dict[int, list[tuple[int, str, str]]] = {pk: [] for pk in prompt_ids}
    for pk, prompt_id, external_id, text, model in (
        Completion.objects.filter(prompt_id__in=prompt_ids)
        .order_by("prompt_id", "position")
        .values_list("pk", "prompt_id", "external_id", "text", "model_name")
    ):
        start = json.dumps(
            {"id": external_id, "text": text, "model": model or None}, ensure_ascii=False
        )
        completions[prompt_id].append((pk, external_id, start[:-1] + ", "))
    return {
        pk: (
            external_id,
            f'{{"prompt": {json.dumps(messages, ensure_ascii=False)}, '
            f'"prompt_id": {json.dumps(external_id, ensure_ascii=False)}, ',
            completions[pk],
        )
        for pk, external_id, messages in Prompt.objects.filter(pk__in=prompt_ids)
        .order_by()
        .values_list("pk", "external_id", "messages")
    }


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
