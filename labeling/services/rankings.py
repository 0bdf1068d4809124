"""Submitting a ranking, and the export cursor that submissions keep honest.

A ranking and its comparisons (one per ordered pair that is not a tie) are written in one
transaction. Submissions to a dataset commit one at a time under the dataset row's lock
(`lock_dataset`); an export takes the same lock to read its cursor (`export_cursor`), so it never
passes an id that a transaction still in flight is about to commit below it.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from labeling import orders
from labeling.models import (
    RATING_MAX,
    RATING_MIN,
    Assignment,
    Comparison,
    Dataset,
    Flag,
    Prompt,
    Ranking,
    Strength,
)
from labeling.services.leasing import slot_is_free

RATIONALE_MAX_CHARS = 10_000


def submit_ranking(
    *,
    assignment: Assignment,
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
    """Store a ranking and its comparisons together.

    Idempotent: a repeated request_id returns the ranking stored the first time. Refuses, with a
    ValidationError naming the field and storing nothing, what `check_ranking` refuses and an
    assignment that was skipped, submitted or whose expired lease went to someone else.
    """
    now = now or timezone.now()
    with transaction.atomic():
        # The lock serialises double submits of the same task.
        assignment = (
            Assignment.objects.select_for_update(of=("self",))
            .select_related("prompt__dataset")
            .get(pk=assignment.pk)
        )
        if earlier := _earlier_submission(assignment, request_id):
            return earlier
        check_assignment_is_live(assignment)
        dataset = assignment.prompt.dataset
        lock_dataset(dataset.pk)
        completion_ids = list(assignment.prompt.completions.values_list("pk", flat=True))
        check_ranking(
            order=order,
            ratings=ratings,
            flags=flags,
            strength=strength,
            seconds_spent=seconds_spent,
            rationale=rationale,
            completion_ids=completion_ids,
            criteria=dataset.criteria,
        )
        ranking = Ranking.objects.create(
            assignment=assignment,
            dataset=dataset,
            prompt=assignment.prompt,
            labeler_id=assignment.labeler_id,
            order=orders.normalized(order),
            ratings={str(cid): dict(values) for cid, values in ratings.items()},
            flags={str(cid): sorted(set(names)) for cid, names in flags.items() if names},
            all_unacceptable=all_unacceptable,
            rationale=rationale.strip(),
            seconds_spent=seconds_spent,
            guidelines_version=dataset.guidelines_version,
            request_id=request_id,
            created_at=now,
        )
        _store_comparisons(ranking, order, strength)
        assignment.status = Assignment.Status.SUBMITTED
        assignment.finished_at = now
        assignment.save(update_fields=["status", "finished_at"])
    return ranking


def _earlier_submission(assignment: Assignment, request_id: UUID) -> Ranking | None:
    """The ranking a first try with this request id stored, if any; an id used for another
    task is refused."""
    earlier = Ranking.objects.filter(request_id=request_id).first()
    if earlier is not None and earlier.assignment_id != assignment.pk:
        raise ValidationError({"request_id": "This request id was used for another task."})
    return earlier


def _store_comparisons(ranking: Ranking, order: orders.Order, strength: str) -> None:
    Comparison.objects.bulk_create(
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


def check_assignment_is_live(assignment: Assignment) -> None:
    """Refuse a submitted or skipped task, and an expired lease whose slot went to someone else;
    an expired lease whose slot is still free counts. Takes the prompt row's lock."""
    status = assignment.status
    if status == Assignment.Status.SUBMITTED:
        raise ValidationError("This task was already submitted.")
    if status == Assignment.Status.SKIPPED:
        raise ValidationError("This task was skipped; it cannot be submitted.")
    if status == Assignment.Status.LEASED:
        return
    prompt = (
        Prompt.objects.select_for_update(of=("self",))
        .select_related("dataset")
        .get(pk=assignment.prompt_id)
    )
    if not slot_is_free(prompt):
        raise ValidationError(
            "Your lease on this task expired and it went to another labeler; nothing was stored."
        )


def check_ranking(
    *,
    order: Any,
    ratings: Any,
    flags: Any,
    strength: str,
    seconds_spent: float,
    rationale: str,
    completion_ids: list[int],
    criteria: list[str],
) -> None:
    """Refuse, naming the field: an order that is not exactly the prompt's completions in tie
    groups, ratings out of range or for other criteria, unknown flags, a strength asked of
    anything but two untied completions, a negative time, an overlong rationale."""
    orders.check_order(order, completion_ids)
    _check_ratings(ratings, completion_ids, criteria)
    _check_flags(flags, completion_ids)
    if len(completion_ids) == 2 and len(order) == 2:
        if strength not in Strength.values:
            raise ValidationError({"strength": "Say how much better the first choice is."})
    elif strength:
        raise ValidationError({"strength": "Only asked for two completions that are not tied."})
    if not (math.isfinite(seconds_spent) and seconds_spent >= 0):
        raise ValidationError({"seconds_spent": "Must be a number of seconds, 0 or more."})
    if len(rationale) > RATIONALE_MAX_CHARS:
        raise ValidationError(
            {"rationale": f"Keep the rationale under {RATIONALE_MAX_CHARS} characters."}
        )


def _check_ratings(ratings: Any, completion_ids: list[int], criteria: list[str]) -> None:
    if not criteria:
        if ratings:
            raise ValidationError({"ratings": "This dataset rates no criteria."})
        return
    if not isinstance(ratings, dict) or set(ratings) != set(completion_ids):
        raise ValidationError({"ratings": "Rate every completion of this prompt."})
    for cid, values in ratings.items():
        if not isinstance(values, dict) or set(values) != set(criteria):
            raise ValidationError(
                {"ratings": f"Completion {cid}: rate exactly {', '.join(criteria)}."}
            )
        for criterion, value in values.items():
            if type(value) is not int or not RATING_MIN <= value <= RATING_MAX:
                raise ValidationError(
                    {
                        "ratings": f"Completion {cid}: {criterion} must be a whole number "
                        f"from {RATING_MIN} to {RATING_MAX}."
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


def lock_dataset(dataset_id: int) -> None:
    """Take the dataset row's lock until the transaction ends (see the module's docstring)."""
    list(Dataset.objects.select_for_update(no_key=True).filter(pk=dataset_id).values_list("pk"))


def export_cursor(*, dataset: Dataset, model: type[Ranking] | type[Comparison]) -> int:
    """The highest id of `model` in the dataset that an export may include.

    Taking the dataset's lock waits for submissions in flight, so every row at or below the
    returned id is committed, and every later row gets a higher id: pulling `since` this cursor
    next time returns each row exactly once.
    """
    with transaction.atomic():
        lock_dataset(dataset.pk)
        top = model.objects.filter(dataset=dataset).order_by("-pk").values_list("pk", flat=True)
        return top.first() or 0
