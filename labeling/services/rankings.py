"""Submitting a ranking, and the export cursor that submissions keep honest.

A ranking and its comparisons (one per ordered pair that is not a tie) are written in one
transaction. An export must never pass an id that a transaction still in flight is about to
commit below it. On PostgreSQL a submission holds a shared advisory lock on its dataset
(`SUBMITTING`) from before its rows get their ids until it commits, and an export takes the same
lock exclusively to read its cursor (`export_cursor`): submissions run side by side, and an
export waits only for those in flight. SQLite commits one writer at a time, so ids there are
committed in order without a lock.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.http import Http404
from django.utils import timezone

from labeling import orders
from labeling.criteria import Scale, ratings_json
from labeling.models import (
    Asked,
    Assignment,
    Comparison,
    Dataset,
    Flag,
    Prompt,
    Ranking,
    Rating,
    Strength,
)
from labeling.services.slots import lock_prompts, take_slot

RATIONALE_MAX_CHARS = 10_000
# The first key of PostgreSQL's two-key advisory locks taken on a dataset (the second is its id).
SUBMITTING = 0x50524546  # "PREF"


def submit_ranking(*, assignment: Assignment, **ranking: Any) -> Ranking:
    """`submit_own_ranking` for an assignment already in hand."""
    return submit_own_ranking(
        labeler_id=assignment.labeler_id, assignment_id=assignment.pk, **ranking
    )


def submit_own_ranking(
    *,
    labeler_id: int,
    assignment_id: int,
    order: orders.Order,
    ratings: dict[int, dict[str, int]],
    flags: dict[int, list[str]],
    request_id: UUID,
    seconds_spent: float,
    all_unacceptable: bool = False,
    rationale: str = "",
    strength: str = "",
    now: datetime | None = None,
) -> Ranking:
    """Store a ranking of the labeler's assignment, its ratings and comparisons together: the
    assignment first (locked, with its prompt's completion ids and its dataset's criteria),
    then on PostgreSQL one statement (`STORE`) for the ranking, its ratings, its comparisons
    and the assignment's status; on SQLite one query for each (ratings only when given).

    Raises Assignment.DoesNotExist when the assignment is not the labeler's, Http404 when its
    lease expired and the dataset no longer offers it to them (a labeler taken out of the pool
    or excluded has their leases given back, so their tasks take that path). Idempotent: a
    repeated request_id returns the ranking stored the first time. Refuses, with a
    ValidationError naming the field and storing nothing, what `check_ranking` refuses, a
    request_id used for another task, and an assignment that was skipped, submitted or whose
    expired lease went to someone else.
    """
    now = now or timezone.now()
    try:
        with transaction.atomic():
            task = _lock_task(assignment_id, labeler_id)
            if task.status == Assignment.Status.SUBMITTED and (
                earlier := Ranking.objects.filter(request_id=request_id).first()
            ):
                _check_same_task(earlier, assignment_id)
                return earlier
            check_task_is_live(task)
            check_ranking(
                order=order,
                ratings=ratings,
                flags=flags,
                strength=strength,
                seconds_spent=seconds_spent,
                rationale=rationale,
                completion_ids=task.completion_ids,
                criteria=task.criteria,
                ratings_asked=task.ratings,
                strength_asked=task.strength,
            )
            ranking = _store(
                task,
                assignment_id=assignment_id,
                order=order,
                ratings=ratings,
                flags=flags,
                request_id=request_id,
                seconds_spent=seconds_spent,
                all_unacceptable=all_unacceptable,
                rationale=rationale,
                strength=strength,
                now=now,
            )
    except IntegrityError:
        # Nothing was stored. The one unique value a valid submission can collide on is its
        # request id: a retry racing its first try, or an id used for another task.
        earlier = Ranking.objects.filter(request_id=request_id).first()
        if earlier is None:
            raise
        _check_same_task(earlier, assignment_id)
        return earlier
    return ranking


def _store(
    task: LockedTask,
    *,
    assignment_id: int,
    order: orders.Order,
    ratings: dict[int, dict[str, int]],
    flags: dict[int, list[str]],
    request_id: UUID,
    seconds_spent: float,
    all_unacceptable: bool,
    rationale: str,
    strength: str,
    now: datetime,
) -> Ranking:
    """Write a checked ranking of the locked task: its row, ratings and comparisons, and the
    assignment's status (one statement on PostgreSQL, one query each on SQLite)."""
    ranking = Ranking(
        assignment_id=assignment_id,
        dataset_id=task.dataset_id,
        prompt_id=task.prompt_id,
        labeler_id=task.labeler_id,
        order=orders.normalized(order),
        flags={str(cid): sorted(set(names)) for cid, names in flags.items() if names},
        all_unacceptable=all_unacceptable,
        rationale=rationale.strip(),
        seconds_spent=seconds_spent,
        guidelines_version=task.guidelines_version,
        request_id=request_id,
        created_at=now,
    )
    rows = _rating_rows(ratings, task.criteria)
    if connection.vendor == "postgresql":
        _store_in_one_statement(ranking, rows, order, strength)
        return ranking
    ranking.save(force_insert=True)
    ranking.rating_values = _store_ratings(ranking, rows)
    ranking.comparison_count = store_comparisons(ranking, order, strength)
    with connection.cursor() as cursor:
        finished_at = connection.ops.adapt_datetimefield_value(now)
        cursor.execute(SUBMITTED, {"assignment": assignment_id, "now": finished_at})
    return ranking


@dataclass(frozen=True)
class LockedTask:
    """What a submission needs to know of the assignment it ranks, read with its row's lock."""

    status: str
    prompt_id: int
    labeler_id: int
    labeler_is_active: bool
    dataset_id: int
    criteria: list[Scale]
    ratings: str
    strength: str
    guidelines_version: int
    labels_per_prompt: int
    completion_ids: list[int]


# Written out, as SUBMITTED: every submit runs them, and building them with the ORM cost more
# CPU than running them. `{completions}` lists the prompt's completion ids (an array on
# PostgreSQL, comma-separated on SQLite); `{submitting}` takes the dataset's shared SUBMITTING
# lock on PostgreSQL.
LOCK_TASK = """
SELECT a.status, a.prompt_id, u.is_active, p.dataset_id,
       {criteria}, d.ratings, d.strength, d.guidelines_version, d.labels_per_prompt,
       {completions} {submitting}
FROM labeling_assignment a
JOIN labeling_prompt p ON p.id = a.prompt_id
JOIN labeling_dataset d ON d.id = p.dataset_id
JOIN auth_user u ON u.id = a.labeler_id
WHERE a.id = %(assignment)s AND a.labeler_id = %(labeler)s
{lock}
"""

PROMPT_COMPLETIONS = "FROM labeling_completion c WHERE c.prompt_id = a.prompt_id"
COMPLETION_IDS = {
    "postgresql": f"ARRAY(SELECT c.id {PROMPT_COMPLETIONS})",
    "sqlite": f"(SELECT group_concat(c.id) {PROMPT_COMPLETIONS})",
}
# The dataset's criteria as a JSON list of [key, id, scale_min, scale_max], in page order.
CRITERION_SCALES = {
    "postgresql": """(SELECT json_agg(json_build_array(r.key, r.id, r.scale_min, r.scale_max)
        ORDER BY r.position, r.id) FROM labeling_ratingcriterion r WHERE r.dataset_id = d.id)""",
    "sqlite": """(SELECT json_group_array(json_array(r.key, r.id, r.scale_min, r.scale_max))
        FROM (SELECT * FROM labeling_ratingcriterion r WHERE r.dataset_id = d.id
        ORDER BY r.position, r.id) r)""",
}
SUBMITTED = f"""
UPDATE labeling_assignment SET status = '{Assignment.Status.SUBMITTED}', finished_at = %(now)s
WHERE id = %(assignment)s
"""


def _lock_task(assignment_id: int, labeler_id: int) -> LockedTask:
    """The labeler's assignment, its row locked until the transaction ends (so double submits
    of one task run one after the other). Raises Assignment.DoesNotExist if it is not theirs."""
    postgresql = connection.vendor == "postgresql"
    sql = LOCK_TASK.format(
        completions=COMPLETION_IDS[connection.vendor],
        criteria=CRITERION_SCALES[connection.vendor],
        submitting=", pg_advisory_xact_lock_shared(%(key)s, p.dataset_id::integer)"
        if postgresql
        else "",
        lock="FOR UPDATE OF a" if postgresql else "",
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, {"assignment": assignment_id, "labeler": labeler_id, "key": SUBMITTING})
        row = cursor.fetchone()
    if row is None:
        raise Assignment.DoesNotExist(f"no assignment {assignment_id} of labeler {labeler_id}")
    status, prompt_id, active, dataset_id, criteria, ratings, strength, version, cap, ids = row[:10]
    return LockedTask(
        status=status,
        prompt_id=prompt_id,
        labeler_id=labeler_id,
        labeler_is_active=bool(active),
        dataset_id=dataset_id,
        criteria=[
            Scale(*values)
            for values in (json.loads(criteria) if isinstance(criteria, str) else criteria or [])
        ],
        ratings=ratings,
        strength=strength,
        guidelines_version=version,
        labels_per_prompt=cap,
        completion_ids=ids if postgresql else [int(i) for i in (ids or "").split(",") if i],
    )


def _check_same_task(earlier: Ranking, assignment_id: int) -> None:
    if earlier.assignment_id != assignment_id:
        raise ValidationError({"request_id": "This request id was used for another task."})


def _rating_rows(
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


def check_task_is_live(task: LockedTask) -> None:
    """Refuse a submitted or skipped task, and an expired lease whose slot went to someone else;
    an expired lease whose slot is still free counts, and takes the slot again."""
    if task.status == Assignment.Status.SUBMITTED:
        raise ValidationError("This task was already submitted.")
    if task.status == Assignment.Status.SKIPPED:
        raise ValidationError("This task was skipped; it cannot be submitted.")
    if task.status == Assignment.Status.LEASED:
        return
    lock_prompts([task.prompt_id])
    if not _still_pooled(task):
        raise Http404(
            "This task is no longer yours: you were taken out of its dataset's pool or "
            "excluded from it."
        )
    taken = Prompt.objects.filter(pk=task.prompt_id).values_list("slots_taken", flat=True).get()
    if taken >= task.labels_per_prompt:
        raise ValidationError(
            "Your lease on this task expired and it went to another labeler; nothing was stored."
        )
    if task.labeler_is_active:
        take_slot(task.prompt_id)


def _still_pooled(task: LockedTask) -> bool:
    """Whether the task's dataset still offers the labeler (`DatasetQuerySet.pooled`: its pool,
    no exclusion), read after the prompt's lock: a change committed before it is seen, one
    committed after gives the prompt's slots back or recounts them."""
    return Dataset.objects.filter(pk=task.dataset_id).pooled(task.labeler_id).exists()


def check_ranking(
    *,
    order: Any,
    ratings: Any,
    flags: Any,
    strength: str,
    seconds_spent: float,
    rationale: str,
    completion_ids: list[int],
    criteria: list[Scale],
    ratings_asked: str = Asked.REQUIRED,
    strength_asked: str = Asked.REQUIRED,
) -> None:
    """Refuse, naming the field: an order that is not exactly the prompt's completions in tie
    groups; ratings missing where the dataset requires them, outside their criterion's scale or
    for criteria the dataset does not have;
    unknown flags; a strength missing where required, or given for anything but two untied
    completions; a negative time; an overlong rationale."""
    orders.check_order(order, completion_ids)
    if ratings_asked == Asked.OFF:
        criteria = []
    _check_ratings(ratings, completion_ids, criteria, required=ratings_asked == Asked.REQUIRED)
    _check_flags(flags, completion_ids)
    _check_strength(strength, strength_asked, untied_pair=len(completion_ids) == 2 == len(order))
    if not (math.isfinite(seconds_spent) and seconds_spent >= 0):
        raise ValidationError({"seconds_spent": "Must be a number of seconds, 0 or more."})
    if len(rationale) > RATIONALE_MAX_CHARS:
        raise ValidationError(
            {"rationale": f"Keep the rationale under {RATIONALE_MAX_CHARS} characters."}
        )


def _check_strength(strength: str, asked: str, *, untied_pair: bool) -> None:
    if strength and asked == Asked.OFF:
        raise ValidationError({"strength": "This dataset does not ask how much better."})
    if strength and not untied_pair:
        raise ValidationError(
            {"strength": "A strength is only asked for two completions that are not tied."}
        )
    if strength and strength not in Strength.values:
        raise ValidationError({"strength": f"Choose one of {', '.join(Strength.values)}."})
    if untied_pair and asked == Asked.REQUIRED and not strength:
        raise ValidationError({"strength": "Say how much better the first choice is."})


def _check_ratings(
    ratings: Any, completion_ids: list[int], criteria: list[Scale], *, required: bool
) -> None:
    if not criteria:
        if ratings:
            raise ValidationError({"ratings": "This dataset rates no criteria."})
        return
    if not isinstance(ratings, dict) or not set(ratings) <= set(completion_ids):
        raise ValidationError({"ratings": "Rate only the completions of this prompt."})
    if required and set(ratings) != set(completion_ids):
        raise ValidationError({"ratings": "Rate every completion of this prompt."})
    scales = {criterion.key: criterion for criterion in criteria}
    keys = ", ".join(scales)
    for cid, values in ratings.items():
        if not isinstance(values, dict):
            raise ValidationError({"ratings": f"Completion {cid}: rate {keys}."})
        unknown = sorted(set(values) - set(scales))
        if unknown:
            raise ValidationError(
                {"ratings": f"Completion {cid}: unknown criterion {unknown[0]!r}; rate {keys}."}
            )
        if required and set(values) != set(scales):
            raise ValidationError({"ratings": f"Completion {cid}: rate exactly {keys}."})
        for key, value in values.items():
            scale = scales[key]
            if type(value) is not int or not scale.scale_min <= value <= scale.scale_max:
                raise ValidationError(
                    {
                        "ratings": f"Completion {cid}: {key} must be a whole number "
                        f"from {scale.scale_min} to {scale.scale_max}."
                    }
                )


def _check_flags(flags: Any, completion_ids: list[int]) -> None:
    if not isinstance(flags, dict):
        raise ValidationError({"flags": "Must map completion ids to lists of flags."})
    for cid, names in flags.items():
        if cid not in completion_ids:
            raise ValidationError({"flags": f"Completion {cid} is not in this prompt."})
        unknown = set(names) - set(Flag.values)
        if unknown:
            raise ValidationError(
                {"flags": f"Unknown flags {sorted(unknown)}; use {', '.join(Flag.values)}."}
            )


def export_cursor(*, dataset: Dataset, model: type[Ranking] | type[Comparison]) -> int:
    """The highest id of `model` in the dataset that an export may include.

    On PostgreSQL, taking the dataset's `SUBMITTING` lock exclusively waits for submissions in
    flight, so every row at or below the returned id is committed, and every later row gets a
    higher id: pulling `since` this cursor next time returns each row exactly once.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(%s, %s::integer)", [SUBMITTING, dataset.pk]
                )
        top = model.objects.filter(dataset=dataset).order_by("-pk").values_list("pk", flat=True)
        return top.first() or 0
