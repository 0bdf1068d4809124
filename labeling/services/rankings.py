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
from labeling.criteria import Scale
from labeling.models import (
    Asked,
    Assignment,
    Comparison,
    Dataset,
    Flag,
    Prompt,
    Ranking,
    Strength,
)
from labeling.services.ranking_store import rating_rows, store
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
    then the ranking, its ratings, its comparisons and the assignment's status
    (`ranking_store.store`: one statement on PostgreSQL, one query each on SQLite).

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
            store(ranking, rating_rows(ratings, task.criteria), order, strength)
    except IntegrityError:
        # Nothing was stored. The one unique value a valid submission can collide on is its
        # request id: a retry racing its first try, or an id used for another task.
        earlier = Ranking.objects.filter(request_id=request_id).first()
        if earlier is None:
            raise
        _check_same_task(earlier, assignment_id)
        return earlier
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
