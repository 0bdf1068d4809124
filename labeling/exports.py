"""Export rows in the formats training pipelines read, streamed as JSON Lines.

The row builders are plain functions of messages and texts. The generators read the database
in chunks of primary keys (keyset pagination) and fetch each chunk's prompts and completions
once, so memory stays flat however many comparisons there are.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from django.db.models import QuerySet

from labeling.formats import render_hh_dialogue
from labeling.models import Comparison, Completion, Prompt, Ranking
from labeling.permissions import pseudonym

COMPARISON_FORMATS = ("trl", "trl-conversational", "hh", "openai")
FORMATS = (*COMPARISON_FORMATS, "rankings")
CHUNK_SIZE = 5000

Messages = list[dict[str, str]]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def comparison_row(format: str, messages: Messages, chosen: str, rejected: str) -> dict[str, Any]:
    """One preference pair in `format`; see FORMATS. `trl` needs a single-turn prompt unless the
    caller renders conversations as text (`trl_text_row`)."""
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


def comparison_lines(
    comparisons: QuerySet[Comparison],
    *,
    format: str,
    include_ids: bool,
    render_text: bool = False,
) -> Iterator[bytes]:
    """JSON Lines of `comparisons` (already filtered and bounded), in primary key order."""
    columns = ("pk", "ranking_id", "prompt_id", "chosen_id", "rejected_id", "margin", "strength")
    last = 0
    while chunk := list(
        comparisons.filter(pk__gt=last).order_by("pk").values_list(*columns)[:CHUNK_SIZE]
    ):
        last = chunk[-1][0]
        prompts = dict(
            Prompt.objects.filter(pk__in={row[2] for row in chunk}).values_list("pk", "messages")
        )
        completions = {
            pk: (external_id, text)
            for pk, external_id, text in Completion.objects.filter(
                pk__in={cid for row in chunk for cid in (row[3], row[4])}
            ).values_list("pk", "external_id", "text")
        }
        lines = []
        for pk, ranking_id, prompt_id, chosen_id, rejected_id, margin, strength in chunk:
            messages = prompts[prompt_id]
            chosen, rejected = completions[chosen_id][1], completions[rejected_id][1]
            if format == "trl" and render_text and is_multi_turn(messages):
                row: dict[str, Any] = trl_text_row(messages, chosen, rejected)
            else:
                row = comparison_row(format, messages, chosen, rejected)
            if include_ids:
                row["ids"] = {
                    "comparison": pk,
                    "ranking": ranking_id,
                    "prompt": prompt_id,
                    "chosen": chosen_id,
                    "rejected": rejected_id,
                    "chosen_external": completions[chosen_id][0],
                    "rejected_external": completions[rejected_id][0],
                }
                row["margin"] = margin
                if strength:
                    row["strength"] = strength
            lines.append(json.dumps(row, ensure_ascii=False))
        yield ("\n".join(lines) + "\n").encode()


def ranking_lines(rankings: QuerySet[Ranking], *, include_ids: bool) -> Iterator[bytes]:
    """One JSON line per ranking: every completion, the order with ties, ratings, flags."""
    last = 0
    while chunk := list(
        rankings.filter(pk__gt=last)
        .order_by("pk")
        .select_related("prompt")
        .prefetch_related("prompt__completions")[: CHUNK_SIZE // 5]
    ):
        last = chunk[-1].pk
        lines = []
        for ranking in chunk:
            prompt = ranking.prompt
            row: dict[str, Any] = {
                "prompt": prompt.messages,
                "completions": [
                    {
                        "id": c.pk,
                        "external_id": c.external_id,
                        "text": c.text,
                        "model": c.model_name,
                    }
                    for c in prompt.completions.all()
                ],
                "order": ranking.order,
                "ratings": ranking.ratings,
                "flags": ranking.flags,
                "all_unacceptable": ranking.all_unacceptable,
                "rationale": ranking.rationale,
                "seconds_spent": ranking.seconds_spent,
                "guidelines_version": ranking.guidelines_version,
                "labeler": pseudonym(ranking.labeler_id),
                "created_at": ranking.created_at.isoformat(),
            }
            if include_ids:
                row["ids"] = {
                    "ranking": ranking.pk,
                    "prompt": prompt.pk,
                    "prompt_external": prompt.external_id,
                }
            lines.append(json.dumps(row, ensure_ascii=False))
        yield ("\n".join(lines) + "\n").encode()


def gzipped(chunks: Iterable[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: gzip header and trailer
    for chunk in chunks:
        if data := compressor.compress(chunk):
            yield data
    yield compressor.flush()
