"""The rankings export: one JSON line per ranking, every completion of its prompt as a record
(shape v2) or keyed by internal ids (v1), read in chunks of primary keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.db.models import Exists, OuterRef, QuerySet

from labeling import orders
from labeling.accounts import pseudonym
from labeling.criteria import with_every_criterion
from labeling.export_options import Split
from labeling.exports import CHUNK_SIZE
from labeling.models import AILabeler, Completion, Prompt, Ranking, Rating

RANKING_COLUMNS = (
    "pk",
    "prompt_id",
    "labeler_id",
    "order",
    "flags",
    "all_unacceptable",
    "rationale",
    "seconds_spent",
    "guidelines_version",
    "created_at",
    "labeler_is_ai",  # annotated by `ranking_lines`
)


RANKING_SHAPES = ("v2", "v1")


def ranking_lines(
    rankings: QuerySet[Ranking],
    *,
    include_ids: bool,
    shape: str = "v2",
    split: Split | None = None,
    criteria: list[str] | None = None,
) -> Iterator[bytes]:
    """One JSON line per ranking: every completion, the order with ties, ratings (on the
    dataset's `criteria`, read a chunk at a time), flags.

    `v2` (the default) holds a list of completion records keyed by the import's ids
    (`ranking_v2_fields`), which column tools read as one schema; `v1`, the earlier shape,
    keeps order, ratings and flags keyed by internal completion ids. Each line says whether its
    labeler is an AI labeler (`labeler_kind`: "ai" or "human")."""
    keys = criteria or []
    pseudonyms: dict[int, str] = {}
    rankings = rankings.annotate(
        labeler_is_ai=Exists(AILabeler.objects.filter(user=OuterRef("labeler")))
    )
    last = 0
    while chunk := list(
        rankings.filter(pk__gt=last).order_by("pk").values_list(*RANKING_COLUMNS)[: CHUNK_SIZE // 5]
    ):
        last = chunk[-1][0]
        prompt_ids = {row[1] for row in chunk}
        ratings = Rating.objects.of_rankings(row[0] for row in chunk)
        prompts = (
            _encoded_prompts_with_completions(prompt_ids)
            if shape == "v1"
            else _encoded_prompts_with_completion_records(prompt_ids)
        )
        lines = []
        for values in chunk:
            ranking = dict(zip(RANKING_COLUMNS, values, strict=True))
            ranking["ratings"] = ratings.get(ranking["pk"], {})
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
                line_head = head + completion_records_json(ranking, completions[0], keys) + ", "
            row |= {
                "all_unacceptable": ranking["all_unacceptable"],
                "rationale": ranking["rationale"],
                "seconds_spent": ranking["seconds_spent"],
                "guidelines_version": ranking["guidelines_version"],
                "labeler": pseudonyms[labeler_id],
                "labeler_kind": "ai" if ranking["labeler_is_ai"] else "human",
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
    ranking: dict[str, Any], completions: list[tuple[int, str, str]], criteria: list[str]
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
                "ratings": with_every_criterion(ratings.get(str(pk)), criteria),
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
