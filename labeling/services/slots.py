"""A prompt's label slots given back and recounted: leases expired by the periodic job or
released by an admin, counts set again after something outside leasing changed what holds a
slot. Locks are taken prompt rows first, then assignment rows, as leasing takes them (see
`labeling.services.leasing`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.db.models import Count, F, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from labeling.models import Assignment, Dataset, Prompt

# Leases expired in one transaction by `expire_stale_leases`, so its locks stay short.
EXPIRY_BATCH = 1000


def lock_prompts(prompt_ids: Iterable[int]) -> list[int]:
    """Lock the prompt rows, in id order, until the transaction ends (see the module's
    docstring); returns the ids that exist."""
    ids = sorted(set(prompt_ids))
    if not ids:
        return []
    # FOR NO KEY UPDATE: what it guards is the count, not the key, so the foreign key checks of
    # a submission committing its ranking (FOR KEY SHARE on the prompt, deferred to its commit,
    # while it holds its assignment's lock) do not wait for it; they would deadlock with a
    # release holding the prompt and waiting for that assignment.
    return list(
        Prompt.objects.select_for_update(no_key=True)
        .filter(pk__in=ids)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def give_back_slots(released: Iterable[tuple[int, bool]]) -> None:
    """Lower `slots_taken` for leases that stopped holding a slot: (prompt id, whether the
    labeler counts) pairs; the caller holds the prompts' locks."""
    per_prompt = Counter(prompt_id for prompt_id, counts in released if counts)
    by_amount: dict[int, list[int]] = {}
    for prompt_id, amount in per_prompt.items():
        by_amount.setdefault(amount, []).append(prompt_id)
    for amount, prompt_ids in by_amount.items():
        Prompt.objects.filter(pk__in=prompt_ids).update(slots_taken=F("slots_taken") - amount)


def _end_leases(
    leases: QuerySet[Assignment], *, status: str, now: datetime, expires_now: bool
) -> int:
    """Move up to EXPIRY_BATCH of these leases to `status` and give their slots back, in one
    transaction: prompts locked first, then the leases, which are rechecked once locked."""
    with transaction.atomic():
        prompt_ids = lock_prompts(
            leases.order_by().values_list("prompt_id", flat=True).distinct()[:EXPIRY_BATCH]
        )
        locked = list(
            leases.filter(prompt_id__in=prompt_ids)
            .select_for_update(of=("self",))
            .values_list("pk", "prompt_id", "labeler__is_active")
        )
        if not locked:
            return 0
        changes: dict[str, object] = {"status": status}
        if expires_now:
            changes["expires_at"] = now
        Assignment.objects.filter(pk__in=[pk for pk, _, _ in locked]).update(**changes)
        give_back_slots((prompt_id, counts) for _, prompt_id, counts in locked)
    return len(locked)


def expire_stale_leases(*, now: datetime | None = None, dataset: Dataset | None = None) -> int:
    """Return abandoned work to the pool: leases past their expiry become expired, in batches.
    Run by the periodic job over every dataset, and by leasing over one dataset that seems full."""
    now = now or timezone.now()
    stale = Assignment.objects.stale(now)
    if dataset is not None:
        stale = stale.filter(prompt__dataset=dataset)
    expired = 0
    while batch := _end_leases(stale, status=Assignment.Status.EXPIRED, now=now, expires_now=False):
        expired += batch
    return expired


def release_assignments(*, assignments: QuerySet[Assignment], now: datetime | None = None) -> int:
    """Give live leases back to the pool at once, as if they had expired (an admin's action)."""
    now = now or timezone.now()
    leases = assignments.filter(status=Assignment.Status.LEASED)
    released = 0
    while batch := _end_leases(leases, status=Assignment.Status.EXPIRED, now=now, expires_now=True):
        released += batch
    return released


def recount_slots(prompt_ids: Iterable[int]) -> None:
    """Set `slots_taken` of these prompts from their assignments, after something outside
    leasing changed what holds a slot (a labeler excluded or reinstated, assignments deleted).
    The prompts are locked first, so the count read after is not changed under it."""
    with transaction.atomic():
        ids = lock_prompts(prompt_ids)
        for start in range(0, len(ids), EXPIRY_BATCH):
            batch = ids[start : start + EXPIRY_BATCH]
            held = (
                Assignment.objects.holding_slots()
                .filter(prompt=OuterRef("pk"))
                .order_by()
                .values("prompt")
                .annotate(n=Count("pk"))
                .values("n")
            )
            Prompt.objects.filter(pk__in=batch).update(slots_taken=Coalesce(Subquery(held), 0))


def take_slot(prompt_id: int) -> None:
    """Count one more label on a prompt whose row the caller has locked (a late submit)."""
    Prompt.objects.filter(pk=prompt_id).update(slots_taken=F("slots_taken") + 1)
