"""Writing a submitted ranking: its row, its ratings and the comparisons its order implies, and
its assignment's status. `labeling.services.rankings` checks a submission under the
assignment's lock, then stores it here; the AI labeler stores comparisons the same way."""

from __future__ import annotations

import json

from django.db import connection

from labeling import orders
from labeling.criteria import Scale, ratings_json
from labeling.models import Assignment, Comparison, Ranking, Rating


def store(
    ranking: Ranking, rows: list[tuple[int, Scale, int]], order: orders.Order, strength: str
) -> None:
    """Write a checked, unsaved `ranking` (its row, its `rating_rows` and the comparisons of
    `order`) and mark its assignment submitted: one statement on PostgreSQL, one query each on
    SQLite. The caller's transaction holds the assignment's lock."""
    if connection.vendor == "postgresql":
        _store_in_one_statement(ranking, rows, order, strength)
        return
    ranking.save(force_insert=True)
    ranking.rating_values = _store_ratings(ranking, rows)
    ranking.comparison_count = store_comparisons(ranking, order, strength)
    with connection.cursor() as cursor:
        finished_at = connection.ops.adapt_datetimefield_value(ranking.created_at)
        cursor.execute(SUBMITTED, {"assignment": ranking.assignment_id, "now": finished_at})


# Written out: every submit on SQLite runs it (PostgreSQL's `STORE` does the same).
SUBMITTED = f"""
UPDATE labeling_assignment SET status = '{Assignment.Status.SUBMITTED}', finished_at = %(now)s
WHERE id = %(assignment)s
"""


def rating_rows(
    ratings: dict[int, dict[str, int]], criteria: list[Scale]
) -> list[tuple[int, Scale, int]]:
    """(completion id, criterion, value) of each rating (checked by `check_ranking`), in
    completion then criterion order."""
    by_key = {criterion.key: criterion for criterion in criteria}
    order = {criterion.key: index for index, criterion in enumerate(criteria)}
    return [
        (completion_id, by_key[key], value)
        for completion_id in sorted(ratings)
        for key, value in sorted(ratings[completion_id].items(), key=lambda item: order[item[0]])
    ]


def _store_ratings(
    ranking: Ranking, rows: list[tuple[int, Scale, int]]
) -> dict[str, dict[str, int]]:
    """The ratings as rows, and as `Ranking.rating_values`."""
    if rows:
        Rating.objects.bulk_create(
            Rating(ranking=ranking, completion_id=cid, criterion_id=criterion.pk, value=value)
            for cid, criterion, value in rows
        )
    return ratings_json((cid, criterion.key, value) for cid, criterion, value in rows)


# A submission's rows on PostgreSQL, in one statement: the ranking, its ratings and comparisons
# (from arrays), and the assignment's status. Building and sending the four with the ORM cost a
# submit more CPU than everything else it does.
STORE = f"""
WITH ranking AS (
    INSERT INTO labeling_ranking (assignment_id, dataset_id, prompt_id, labeler_id, "order",
        flags, all_unacceptable, rationale, seconds_spent, guidelines_version, request_id,
        created_at)
    VALUES (%(assignment)s, %(dataset)s, %(prompt)s, %(labeler)s, %(order)s::jsonb,
        %(flags)s::jsonb, %(all_unacceptable)s, %(rationale)s, %(seconds_spent)s,
        %(guidelines_version)s, %(request_id)s, %(now)s)
    RETURNING id
), ratings AS (
    INSERT INTO labeling_rating (ranking_id, completion_id, criterion_id, value)
    SELECT ranking.id, r.completion, r.criterion, r.value
    FROM ranking, unnest(%(rated)s::bigint[], %(criteria)s::bigint[], %(values)s::integer[])
        AS r (completion, criterion, value)
), comparisons AS (
    INSERT INTO labeling_comparison (dataset_id, prompt_id, chosen_id, rejected_id, margin,
        strength, labeler_id, ranking_id, created_at)
    SELECT %(dataset)s, %(prompt)s, c.chosen, c.rejected, c.margin, %(strength)s, %(labeler)s,
        ranking.id, %(now)s
    FROM ranking, unnest(%(chosen)s::bigint[], %(rejected)s::bigint[], %(margins)s::integer[])
        AS c (chosen, rejected, margin)
), submitted AS (
    UPDATE labeling_assignment SET status = '{Assignment.Status.SUBMITTED}', finished_at = %(now)s
    WHERE id = %(assignment)s
)
SELECT id FROM ranking
"""


def _store_in_one_statement(
    ranking: Ranking, rows: list[tuple[int, Scale, int]], order: orders.Order, strength: str
) -> None:
    """Insert `ranking` (unsaved), its ratings and comparisons, and mark its assignment
    submitted (PostgreSQL; the caller's transaction holds the assignment's lock)."""
    pairs = list(orders.comparison_pairs(order))
    params = {
        "assignment": ranking.assignment_id,
        "dataset": ranking.dataset_id,
        "prompt": ranking.prompt_id,
        "labeler": ranking.labeler_id,
        "order": json.dumps(ranking.order),
        "flags": json.dumps(ranking.flags),
        "all_unacceptable": ranking.all_unacceptable,
        "rationale": ranking.rationale,
        "seconds_spent": ranking.seconds_spent,
        "guidelines_version": ranking.guidelines_version,
        "request_id": ranking.request_id,
        "now": ranking.created_at,
        "rated": [cid for cid, _, _ in rows],
        "criteria": [criterion.pk for _, criterion, _ in rows],
        "values": [value for _, _, value in rows],
        "strength": strength,
        "chosen": [chosen for chosen, _, _ in pairs],
        "rejected": [rejected for _, rejected, _ in pairs],
        "margins": [margin for _, _, margin in pairs],
    }
    with connection.cursor() as cursor:
        cursor.execute(STORE, params)
        (ranking.pk,) = cursor.fetchone()
    ranking._state.adding = False
    ranking._state.db = connection.alias
    ranking.rating_values = ratings_json((cid, c.key, value) for cid, c, value in rows)
    ranking.comparison_count = len(pairs)


def store_comparisons(ranking: Ranking, order: orders.Order, strength: str) -> int:
    stored = Comparison.objects.bulk_create(
        Comparison(
            dataset_id=ranking.dataset_id,
            prompt_id=ranking.prompt_id,
            chosen_id=chosen,
            rejected_id=rejected,
            margin=margin,
            strength=strength,
            labeler_id=ranking.labeler_id,
            ranking=ranking,
            created_at=ranking.created_at,
        )
        for chosen, rejected, margin in orders.comparison_pairs(order)
    )
    return len(stored)
