"""Consensus and adjudicated pair exports: a prompt's pairs that a strict majority of its counted
labelers ordered the same way, or the pairs of a reviewer's newest adjudicated order, read a chunk
of prompts at a time (as JSON Lines, or as dicts for Parquet)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from labeling import consensus, orders
from labeling.export_options import Predicted, Split, predicted_rewards, prediction_fields
from labeling.exports import (
    CHUNK_SIZE,
    comparison_line,
    counted_orders,
    encode,
    line_format,
    pair_row,
    prompt_json,
    rows_by_id,
    with_fields,
)
from labeling.models import Adjudication, Completion, Labelers, Prompt


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
    labelers: str = Labelers.HUMAN,
) -> Iterator[ConsensusChunk]:
    """Each completion pair of each prompt that its consensus order separates and a strict
    majority of its counted labelers (rankings up to `ranking_cursor`, without "all
    unacceptable" ones when `exclude_unacceptable`; humans unless `labelers` asks for AI
    labelers, `ai`, or both, `all`) ordered the same way
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
                wanted,
                cursor=ranking_cursor,
                exclude_unacceptable=exclude_unacceptable,
                labelers=labelers,
            )
        )
        pairs = _agreed_pairs(by_prompt, settled, min_agreement, min_labelers)
        yield _chunk_of(pairs, {*by_prompt, *settled}, include)


def _agreed_pairs(
    by_prompt: dict[int, list[Any]],
    settled: dict[int, tuple[int, Any]],
    min_agreement: float | None,
    min_labelers: int,
) -> list[tuple[int, dict[str, Any]]]:
    """The consensus pairs of the prompts not adjudicated, then the adjudicated orders' pairs."""
    pairs: list[tuple[int, dict[str, Any]]] = []
    for prompt_id, prompt_orders in by_prompt.items():
        if prompt_id in settled:
            continue
        completion_ids = orders.members(prompt_orders[0])
        for agreed in consensus.consensus_pairs(completion_ids, prompt_orders):
            if agreed["vote_share"] >= (min_agreement or 0) and agreed["voters"] >= min_labelers:
                pairs.append((prompt_id, {**agreed, "source": "consensus"}))
    for prompt_id, (adjudication_id, order) in settled.items():
        for better, worse, margin in orders.comparison_pairs(order):
            settled_pair: dict[str, Any] = {"chosen": better, "rejected": worse}
            settled_pair |= {"margin": margin, "source": "adjudicated", "id": adjudication_id}
            pairs.append((prompt_id, settled_pair))
    return pairs


def _chunk_of(
    pairs: list[tuple[int, dict[str, Any]]], prompt_ids: set[int], include: tuple[str, ...]
) -> ConsensusChunk:
    """The chunk's pairs with the prompt and completion columns its rows are made of."""
    prompt_columns = ("id", "messages", "metadata") if "metadata" in include else ("id", "messages")
    completion_columns: tuple[str, ...] = ("id", "external_id", "text")
    if "models" in include:
        completion_columns += ("model_name",)
    completion_ids = [cid for _, pair in pairs for cid in (pair["chosen"], pair["rejected"])]
    return ConsensusChunk(
        predictions=predicted_rewards(completion_ids) if "predictions" in include else None,
        pairs=pairs,
        prompts={pk: rest for pk, *rest in rows_by_id(Prompt, prompt_columns, prompt_ids)},
        completions={
            pk: rest for pk, *rest in rows_by_id(Completion, completion_columns, completion_ids)
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
    criteria: list[str] | None = None,
) -> dict[str, Any]:
    """The fields a consensus row adds to its pair: its `source`, `include`'s (predicted
    rewards on the dataset's `criteria`), then `include_ids`'. An adjudicated pair has no vote
    share: its agreement is null."""
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
        fields |= prediction_fields(predictions, pair["chosen"], pair["rejected"], criteria or [])
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
    criteria: list[str] | None = None,
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
                criteria,
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
    criteria: list[str] | None = None,
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
                    criteria,
                )
            )
            records.append(record)
        yield records
