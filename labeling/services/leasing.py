"""Handing out work: leasing a labeler their next task, giving it back, expiring leases.

A prompt has `labels_per_prompt` label slots, held by live leases and submissions of labelers who
count (`AssignmentQuerySet.holding_slots`); gold prompts have no cap, since every labeler sees
them. `Prompt.slots_taken` keeps that count, so finding work costs the same on a dataset of a
thousand prompts or a million: one statement takes the first open prompt the labeler was never
given, closest to complete first, from an index (`prompt_open_slots`), passing over rows other
requests hold (`SKIP LOCKED`), and raises its count under the row's lock. Every change of the count
happens under that lock, so concurrent requests never hand out more slots than there are.

Locks are taken prompt row first, then assignment rows, everywhere a prompt's count changes
(leasing, expiry, release, skips, recounts), so two of them cannot deadlock. The one exception,
a late submit of an expired lease (assignment, then prompt), touches no row those others wait for:
they only change leased assignments.

Active learning (`Dataset.order` "uncertainty"): for `uncertainty_share` of the requests, the
untouched prompts the active reward model is least sure about come before the others, read in
order from their own index (`prompt_uncertain`, kept by the prediction worker in
`Prompt.uncertainty`); prompts already started still come first, and gold keeps its rate.

Who may lease is checked twice: by the caller before (`labeling.access.dataset_for`), and
after the new lease is written, in its transaction (`_lease_if_offered`), so that a labeler
taken out of the pool or excluded while their request runs gets no lease that outlives the
change. On PostgreSQL the lease statement also takes a shared advisory lock on the labeler
(`LEASING`) until it commits, and the change waits for it (`wait_for_leases_in_flight`) before
giving their leases back: every lease either sees the change or is seen by it.

Stale leases (past `expires_at`) are expired by the periodic job (`labeling.expire_stale_leases`),
and on the dataset at hand when it seems to have no open prompt left; until then their slots stay
taken, so nothing is ever over-labeled.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Exists, Min, Q
from django.utils import timezone

from labeling.compiled import CompiledQuery, instances
from labeling.models import Assignment, Dataset, Prompt, columns
from labeling.services.slots import expire_stale_leases, give_back_slots, lock_prompts

SKIP_REASON_MAX_CHARS = 200
# The prompts closest to complete among which a labeler's next task is looked for first.
WINDOW = 100
# The first key of PostgreSQL's two-key advisory lock a new lease holds on its labeler (the
# second is their id) until it commits: "LEAS".
LEASING = 0x4C454153


def lease_next_assignment(
    *, dataset: Dataset, labeler: User, now: datetime | None = None
) -> Assignment | None:
    """The labeler's current lease on the dataset, or a new one; None when no work is left.

    A new lease goes to a prompt the labeler was never given that still has a free label slot,
    prompts closest to complete first; gold comes at the dataset's rate (`gold_is_due`); new
    prompts in import order, or by uncertainty (`by_uncertainty`). The returned assignment
    carries its prompt and the dataset, so showing it needs only the completions.
    """
    now = now or timezone.now()
    if dataset.status != Dataset.Status.ACTIVE:
        raise ValidationError(f"dataset {dataset.slug!r} is not open for labeling")
    current, gold_due = _labeler_state(dataset, labeler, may_hold=_may_hold_lease(dataset, labeler))
    if current is not None and (renewed := _renew(current, now)) is not None:
        return renewed
    assignment = _lease_if_offered(dataset, labeler, gold_due=gold_due, now=now)
    if assignment is None and expire_stale_leases(now=now, dataset=dataset):
        assignment = _lease_if_offered(dataset, labeler, gold_due=gold_due, now=now)
    return assignment


def _lease_if_offered(
    dataset: Dataset, labeler: User, *, gold_due: bool, now: datetime
) -> Assignment | None:
    """Take one slot of the first open prompt (gold first when due) and lease it, kept only if
    the dataset is still offered to the labeler once the lease is written (see the module's
    docstring); PermissionDenied, nothing leased, if not. The check is a statement of its own,
    so that it sees every change committed before the lease statement took its LEASING lock.
    Leasing is one statement on PostgreSQL, two on SQLite (which has no UPDATE in a WITH), in
    one transaction with the check."""
    expires_at = now + timedelta(minutes=settings.PREFLAB_LEASE_MINUTES)
    try:
        with transaction.atomic():
            assignment = _take_slot_and_lease(
                dataset, labeler, gold_due=gold_due, leased_at=now, expires_at=expires_at
            )
            if assignment is not None and not _still_offered(dataset, labeler):
                raise PermissionDenied(
                    "This dataset is no longer offered to you: you were taken out of its pool "
                    "or excluded from it."
                )
    except IntegrityError as error:
        if not _leased_twice(error):
            raise
        # A concurrent request of the same labeler leased this prompt first: that is their
        # task (the pool check is the caller's, as for a lease they already hold).
        current, _ = _labeler_state(dataset, labeler)
        return current
    if assignment is not None:
        assignment.prompt.dataset = dataset
    return assignment


def _leased_twice(error: IntegrityError) -> bool:
    """Whether the error is the unique (prompt, labeler) of assignments refusing a second lease,
    not another constraint (a foreign key checked at commit, say)."""
    diagnosis = getattr(error.__cause__, "diag", None)
    if diagnosis is not None:  # PostgreSQL names the constraint
        return diagnosis.constraint_name == "assignment_once_per_labeler"
    return "labeling_assignment.prompt_id, labeling_assignment.labeler_id" in str(error)


# Whether the dataset is still offered to an active labeler: compiled once per process, since
# every new lease runs it.
STILL_OFFERED = CompiledQuery(
    lambda dataset, labeler: (
        Dataset.objects.filter(pk=dataset)
        .pooled(labeler)
        .filter(Exists(User.objects.filter(pk=labeler, is_active=True)))
    ),
    dataset=int,
    labeler=int,
)


def _still_offered(dataset: Dataset, labeler: User) -> bool:
    return STILL_OFFERED.exists(dataset=dataset.pk, labeler=labeler.pk)


def wait_for_leases_in_flight(labeler_ids: Iterable[int]) -> None:
    """Wait until the leases these labelers are taking right now have committed or rolled
    back (PostgreSQL; SQLite commits one writer at a time). Call it after committing what stops
    them from leasing (a pool change, an exclusion) and before giving their leases back: a
    lease that did not see the change holds `LEASING` until it commits, so it is seen by what
    comes after. The lock is taken and let go at once (a session lock, not the transaction's),
    so a caller inside a transaction holds nothing a lease waits for; but there the change is
    not committed yet, so a lease may still slip past it until the expiry takes it back."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for labeler_id in sorted(set(labeler_ids)):
            params = [LEASING, labeler_id]
            cursor.execute("SELECT pg_advisory_lock(%s, %s::integer)", params)
            cursor.execute("SELECT pg_advisory_unlock(%s, %s::integer)", params)


# The labeler's live lease on a dataset, oldest first. Next-task asks on a dataset without gold
# unless the access check found they hold none (`_may_hold_lease`); a gold dataset reads it
# with the labeler's counts instead.
LIVE_LEASE = CompiledQuery(
    lambda labeler, dataset: Assignment.objects.filter(
        labeler=labeler, status=Assignment.Status.LEASED, prompt__dataset=dataset
    ).order_by("leased_at", "pk")[:1],
    labeler=int,
    dataset=int,
)


def _may_hold_lease(dataset: Dataset, labeler: User) -> bool:
    """False when the dataset was read with the labeler's leases (`with_leases_of`, with
    `leases_of` set to their id, as `labeling.access.dataset_to_label` reads it) and they held
    none then. The hint is used once: it is true only of the moment it was read.

    A lease of theirs taken since is a concurrent request's (a second tab), as it could be
    after any read: if it took the same prompt, the unique (prompt, labeler) makes this request
    return it; if another, the labeler holds two leases until one is submitted or expires."""
    read_for = dataset.__dict__.pop("leases_of", None)
    return read_for != labeler.pk or bool(dataset.holds_lease)  # type: ignore[attr-defined]


def _labeler_state(
    dataset: Dataset, labeler: User, *, may_hold: bool = True
) -> tuple[Assignment | None, bool]:
    """The labeler's live lease on the dataset (oldest first) with its prompt, and whether gold
    is due. Without gold (`gold_rate` 0): one query when the labeler holds no lease, none when
    `may_hold` says they hold none, two when they hold one; with gold, one more."""
    if dataset.gold_rate <= 0:
        current = LIVE_LEASE.first(labeler=labeler.pk, dataset=dataset.pk) if may_hold else None
        gold_due = False
    else:
        mine = Assignment.objects.filter(labeler=labeler, prompt__dataset=dataset)
        counted = ~Q(status=Assignment.Status.EXPIRED)
        state = mine.aggregate(
            lease=Min("pk", filter=Q(status=Assignment.Status.LEASED)),
            total=Count("pk", filter=counted),
            gold=Count("pk", filter=counted & Q(prompt__is_gold=True)),
        )
        current = Assignment.objects.get(pk=state["lease"]) if state["lease"] else None
        gold_due = gold_is_due(dataset=dataset, total=state["total"], gold=state["gold"])
    if current is not None:
        current.prompt = Prompt.objects.get(pk=current.prompt_id)
        current.prompt.dataset = dataset
    return current, gold_due


def gold_is_due(*, dataset: Dataset, total: int, gold: int) -> bool:
    """Gold comes at the dataset's rate: the n-th task is gold while gold < floor(rate * n).

    `total` and `gold` count the labeler's tasks on the dataset so far, expired leases left out."""
    if dataset.gold_rate <= 0:
        return False
    return gold < math.floor(dataset.gold_rate * (total + 1))


def _renew(assignment: Assignment, now: datetime) -> Assignment | None:
    """The labeler's live lease, its expiry pushed back if it had passed; None if the expiry job
    took it meanwhile (then its slot may already be someone else's)."""
    if assignment.expires_at > now:
        return assignment
    expires_at = now + timedelta(minutes=settings.PREFLAB_LEASE_MINUTES)
    renewed = Assignment.objects.filter(pk=assignment.pk, status=Assignment.Status.LEASED).update(
        leased_at=now, expires_at=expires_at
    )
    if not renewed:
        return None
    assignment.leased_at, assignment.expires_at = now, expires_at
    return assignment


# The candidates of `_take_slot_and_lease`, each the first row of one pool that the labeler was
# never given and that no other request holds. `{lock}` is FOR UPDATE SKIP LOCKED on PostgreSQL.
CANDIDATE = """(
    SELECT p.id FROM {source}
    WHERE p.dataset_id = %(dataset)s AND {pool}
      AND NOT EXISTS (
        SELECT 1 FROM labeling_assignment a WHERE a.prompt_id = p.id AND a.labeler_id = %(labeler)s
      )
    ORDER BY {order} LIMIT 1 {lock}
)"""
PROMPT = "labeling_prompt p"
# `left_to_ai`: labeled by an AI labeler and not drawn for its human review sample. The
# conditions repeat the partial indexes' (`prompt_open_slots`, `prompt_uncertain`).
OPEN = "NOT p.is_gold AND NOT p.left_to_ai AND p.slots_taken < %(cap)s"
WINDOW_SOURCE = (
    "(SELECT w.id, w.slots_taken FROM labeling_prompt w "
    "WHERE w.dataset_id = %(dataset)s AND NOT w.is_gold AND NOT w.left_to_ai "
    "AND w.slots_taken < %(cap)s {started}"
    "ORDER BY w.slots_taken DESC, w.id LIMIT %(window)s) win "
    f"JOIN {PROMPT} ON p.id = win.id"
)
POOLS = {  # name: (source, condition, order)
    "gold": (PROMPT, "p.is_gold", "p.id"),
    # The WINDOW prompts closest to complete, read from the index in order and joined back to
    # their rows, lazily: the scan stops at the first prompt this labeler may take. The cap is
    # repeated on the joined row: that is what PostgreSQL rechecks once it is locked.
    "window": (WINDOW_SOURCE.format(started=""), OPEN, "win.slots_taken DESC, win.id"),
    # The window without untouched prompts, for the requests that open new prompts by
    # uncertainty: started ones are still finished first.
    "started": (
        WINDOW_SOURCE.format(started="AND w.slots_taken >= 1 "),
        OPEN,
        "win.slots_taken DESC, win.id",
    ),
    # A range, not `= 0`, so that the planner keeps to the index's order.
    "untouched": (
        PROMPT,
        "NOT p.is_gold AND NOT p.left_to_ai AND p.slots_taken < 1",
        "p.slots_taken DESC, p.id",
    ),
    # Active learning: untouched scored prompts, smallest reward margin first. The condition is
    # the partial index's (`prompt_uncertain`), so the scan reads it in order.
    "uncertain": (
        PROMPT,
        "NOT p.is_gold AND NOT p.left_to_ai AND p.slots_taken = 0 AND p.uncertainty IS NOT NULL",
        "p.uncertainty, p.id",
    ),
    "open": (PROMPT, OPEN, "p.slots_taken DESC, p.id"),
}


def _take_slot_and_lease(
    dataset: Dataset,
    labeler: User,
    *,
    gold_due: bool,
    leased_at: datetime,
    expires_at: datetime,
) -> Assignment | None:
    """Raise `slots_taken` of the first open prompt the labeler was never given and lease it to
    them; the new assignment with its prompt, or None when there is no open prompt.

    Written out because it is the hot path and its plan matters. Its candidates read the partial
    indexes in order and skip rows that other requests hold; COALESCE runs each only when those
    before it found nothing: gold when it is due; the labeler's first free prompt among the
    `WINDOW` closest to complete; the first untouched prompt; and last, near the end of a
    dataset, the first free prompt of all. The window keeps a labeler from walking past every
    prompt they labeled themselves (which come first, being partly labeled) on each request.
    A request that opens new prompts by uncertainty (`by_uncertainty`) reads the window's
    started prompts only, then the least certain untouched prompt, then the rest as above.
    PostgreSQL rechecks a locked row against its candidate's conditions, so the count never
    passes `labels_per_prompt`. On PostgreSQL the assignment is inserted by the same statement
    (a failed insert undoes the count with it); on SQLite by a second one, in the caller's
    transaction.
    """
    postgresql = connection.vendor == "postgresql"
    lock = "FOR UPDATE OF p SKIP LOCKED" if postgresql else ""
    pools = ["window", "untouched", "open"]
    if by_uncertainty(dataset):
        pools = ["started", "uncertain", "untouched", "open"]
    if gold_due:
        pools.insert(0, "gold")
    candidates = ", ".join(
        CANDIDATE.format(source=source, pool=pool, order=order, lock=lock)
        for source, pool, order in (POOLS[name] for name in pools)
    )
    take = (
        "UPDATE labeling_prompt SET slots_taken = slots_taken + 1 "
        f"WHERE id = COALESCE({candidates}) RETURNING {columns(Prompt)}"
    )
    params: dict[str, Any] = {
        "dataset": dataset.pk,
        "labeler": labeler.pk,
        "cap": dataset.labels_per_prompt,
        "window": WINDOW,
        "leased_at": leased_at,
        "expires_at": expires_at,
        "leasing": LEASING,
    }
    sql = (
        take
        if not postgresql
        else f"WITH taken AS ({take}), leased AS ({LEASE}) {TAKEN_AND_LEASED}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    (prompt,) = instances(Prompt, [row], connection.alias)
    if not postgresql:
        return Assignment.objects.create(
            prompt=prompt, labeler=labeler, leased_at=leased_at, expires_at=expires_at
        )
    values = {
        "id": row[len(Prompt._meta.concrete_fields)],  # the statement's preflab_assignment_id
        "prompt_id": prompt.pk,
        "labeler_id": labeler.pk,
        "status": Assignment.Status.LEASED,
        "leased_at": leased_at,
        "expires_at": expires_at,
        "finished_at": None,
        "skip_reason": "",
    }
    assignment = Assignment.from_db(connection.alias, list(values), list(values.values()))
    assignment.prompt, assignment.labeler = prompt, labeler
    return assignment


def by_uncertainty(dataset: Dataset) -> bool:
    """Whether this request opens the least certain untouched prompt rather than the next in
    import order: on an "uncertainty" dataset, for `uncertainty_share` of the requests, drawn
    at random so that the labeled prompts stay a mix of both."""
    if dataset.order != Dataset.Order.UNCERTAINTY:
        return False
    return random.random() < dataset.uncertainty_share


# Leasing the prompt `taken` (`_take_slot_and_lease` on PostgreSQL); the lease's other columns
# are known beforehand.
LEASE = f"""
INSERT INTO labeling_assignment (prompt_id, labeler_id, status, leased_at, expires_at, skip_reason)
SELECT id, %(labeler)s, '{Assignment.Status.LEASED}', %(leased_at)s, %(expires_at)s, '' FROM taken
RETURNING id
"""
# The LEASING lock is taken with the lease, before `_still_offered` reads (a statement later).
TAKEN_AND_LEASED = (
    f"SELECT {columns(Prompt, 'taken')}, leased.id AS preflab_assignment_id, "
    "pg_advisory_xact_lock_shared(%(leasing)s, %(labeler)s::integer) IS NULL AS preflab_locked "
    "FROM taken, leased"
)


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
    with transaction.atomic():
        lock_prompts([assignment.prompt_id])
        locked = (
            Assignment.objects.select_for_update(of=("self",))
            .filter(
                pk=assignment.pk,
                status__in=[Assignment.Status.LEASED, Assignment.Status.EXPIRED],
            )
            .values_list("status", "labeler__is_active")
            .first()
        )
        if locked is None:
            raise ValidationError("This task was already submitted or skipped.")
        status, counts = locked
        Assignment.objects.filter(pk=assignment.pk).update(
            status=Assignment.Status.SKIPPED, skip_reason=reason, finished_at=now
        )
        if status == Assignment.Status.LEASED:
            give_back_slots([(assignment.prompt_id, counts)])
    assignment.refresh_from_db()
    return assignment
