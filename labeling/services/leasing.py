"""Handing out work: leasing a labeler their next task, giving it back, expiring leases.

A prompt has `labels_per_prompt` label slots, held by live leases and submissions of labelers
who count (`AssignmentQuerySet.holding_slots`); gold prompts have no cap, since every labeler
sees them. Slots are counted only while the prompt row is locked (`slot_is_free`), so concurrent
requests on PostgreSQL never hand out more slots than there are.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from labeling.models import Assignment, Dataset, Prompt

SKIP_REASON_MAX_CHARS = 200
# Candidate prompts read at once; most leases take the first that is not locked.
CANDIDATES = 20


def expire_stale_leases(*, now: datetime | None = None) -> int:
    """Return abandoned work to the pool: leases past their expiry become expired."""
    now = now or timezone.now()
    return Assignment.objects.stale(now).update(status=Assignment.Status.EXPIRED)


def release_assignments(*, assignments: QuerySet[Assignment], now: datetime | None = None) -> int:
    """Give live leases back to the pool at once, as if they had expired (an admin's action)."""
    now = now or timezone.now()
    return assignments.filter(status=Assignment.Status.LEASED).update(
        status=Assignment.Status.EXPIRED, expires_at=now
    )


def slot_is_free(prompt: Prompt) -> bool:
    """Whether the prompt can take one more label. The caller holds the prompt row's lock
    (`select_for_update`), so no other request counts the same slots at the same time."""
    if prompt.is_gold:
        return True
    taken = Assignment.objects.filter(prompt=prompt).holding_slots().count()
    return taken < prompt.dataset.labels_per_prompt


def gold_is_due(*, dataset: Dataset, labeler: User) -> bool:
    """Gold comes at the dataset's rate: the n-th task is gold while gold < floor(rate * n)."""
    if dataset.gold_rate <= 0:
        return False
    mine = Assignment.objects.filter(prompt__dataset=dataset, labeler=labeler).exclude(
        status=Assignment.Status.EXPIRED
    )
    total = mine.count()
    gold = mine.filter(prompt__is_gold=True).count()
    return gold < math.floor(dataset.gold_rate * (total + 1))


def lease_next_assignment(
    *, dataset: Dataset, labeler: User, now: datetime | None = None
) -> Assignment | None:
    """The labeler's current lease on the dataset, or a new one; None when no work is left.

    A new lease goes to a prompt the labeler has not ranked or skipped that still has a free label
    slot, prompts closest to complete first. Locked prompts are passed over, not waited for.
    """
    now = now or timezone.now()
    if dataset.status != Dataset.Status.ACTIVE:
        raise ValidationError(f"dataset {dataset.slug!r} is not open for labeling")
    expire_stale_leases(now=now)
    current = (
        Assignment.objects.leased_to(labeler)
        .filter(prompt__dataset=dataset)
        .order_by("leased_at")
        .first()
    )
    if current is not None:
        return current

    unseen = Prompt.objects.filter(dataset=dataset).not_seen_by(labeler)
    gold = unseen.filter(is_gold=True).order_by("pk")
    regular = (
        unseen.filter(is_gold=False)
        .with_taken()
        .filter(taken__lt=dataset.labels_per_prompt)  # type: ignore[misc]
        .order_by("-taken", "pk")
    )
    pools = [gold, regular] if gold_is_due(dataset=dataset, labeler=labeler) else [regular]
    for pool in pools:
        while candidates := list(pool.values_list("pk", flat=True)[:CANDIDATES]):
            for prompt_id in candidates:
                assignment = _lease_prompt(prompt_id, labeler=labeler, now=now)
                if assignment is not None:
                    return assignment
    return None


def _lease_prompt(prompt_id: int, *, labeler: User, now: datetime) -> Assignment | None:
    with transaction.atomic():
        prompt = (
            Prompt.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("dataset")
            .filter(pk=prompt_id)
            .first()
        )
        if prompt is None or not slot_is_free(prompt):
            return None
        expires_at = now + timedelta(minutes=settings.PREFLAB_LEASE_MINUTES)
        assignment, created = Assignment.objects.get_or_create(
            prompt=prompt,
            labeler=labeler,
            defaults={"leased_at": now, "expires_at": expires_at},
        )
        if not created:
            if assignment.status != Assignment.Status.EXPIRED:
                return None
            # The labeler's own abandoned lease: the same row is leased again.
            assignment.status = Assignment.Status.LEASED
            assignment.leased_at = now
            assignment.expires_at = expires_at
            assignment.save(update_fields=["status", "leased_at", "expires_at"])
        return assignment


def skip_assignment(
    *, assignment: Assignment, reason: str, now: datetime | None = None
) -> Assignment:
    """Give a task back with a reason; the labeler is not offered that prompt again."""
    now = now or timezone.now()
    reason = reason.strip()
    if not reason:
        raise ValidationError({"reason": "Say why you skip this task."})
    if len(reason) > SKIP_REASON_MAX_CHARS:
        raise ValidationError(
            {"reason": f"Keep the reason under {SKIP_REASON_MAX_CHARS} characters."}
        )
    updated = Assignment.objects.filter(
        pk=assignment.pk, status__in=[Assignment.Status.LEASED, Assignment.Status.EXPIRED]
    ).update(status=Assignment.Status.SKIPPED, skip_reason=reason, finished_at=now)
    if not updated:
        raise ValidationError("This task was already submitted or skipped.")
    assignment.refresh_from_db()
    return assignment
