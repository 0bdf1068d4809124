"""Excluding a labeler, and reinstating them: what counts changes, nothing is deleted.

Two kinds. Deactivating an account (`exclude_labeler`, the user admin's) locks it and leaves
its rankings out everywhere. An `Exclusion` (`exclude_from`, a workspace manager's) leaves the
labeler's rankings out of one dataset, or of every dataset of a workspace, present and future;
the account stays open, and they label elsewhere as before. Either way the rows that count are
those of `labeling.models.labeler_counts`, so exports, training, statistics and label slots
follow from the one change.

The lease race: the change is committed first; then `_settle` waits for the labeler's leases in
flight (`leasing.wait_for_leases_in_flight`), gives their open leases back and recounts the
slots of every prompt they hold or held, locking those prompts. A lease that started before
the change either sees it once written (and is undone) or is waited for and given back, so no
excluded labeler keeps a slot.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from labeling.access import check_ability
from labeling.models import (
    Ability,
    Assignment,
    AuditEvent,
    Dataset,
    Exclusion,
    Membership,
    Ranking,
    Role,
    Workspace,
)
from labeling.services import audit
from labeling.services.leasing import wait_for_leases_in_flight
from labeling.services.quality_report import invalidate_reports
from labeling.services.slots import recount_slots, release_assignments

REASON_MAX_CHARS = 500


# --- Per dataset or per workspace ------------------------------------------------------------


def check_may_exclude(*, labeler: User, workspace: Workspace, by: User) -> None:
    """Excluding and reinstating take the ability to manage the workspace (PermissionDenied);
    nobody excludes themselves, and only a member, or someone who labeled there, is excluded
    (ValidationError naming `labeler`)."""
    check_ability(by, workspace, Ability.MANAGE)
    if labeler.pk == by.pk:
        raise ValidationError({"labeler": "You cannot exclude yourself."})
    member = Membership.objects.filter(workspace=workspace, user=labeler).exists()
    if (
        not member
        and not Assignment.objects.filter(
            labeler=labeler, prompt__dataset__workspace=workspace
        ).exists()
    ):
        raise ValidationError(
            {"labeler": f"{labeler.get_username()} is not a member of this workspace."}
        )


def exclude_from(
    *,
    labeler: User,
    dataset: Dataset | None = None,
    workspace: Workspace | None = None,
    by: User,
    reason: str = "",
    request: Any = None,
    now: datetime | None = None,
) -> Exclusion:
    """Exclude the labeler from the dataset, or (no dataset) from every dataset of the
    workspace, including those made later: their rankings there stop counting, their open
    leases there go back, they are offered no more tasks there. Idempotent: excluding again
    returns the exclusion in place. Call it outside a transaction (see the module's docstring)."""
    workspace = _scope(dataset, workspace)
    check_may_exclude(labeler=labeler, workspace=workspace, by=by)
    reason = reason.strip()
    if len(reason) > REASON_MAX_CHARS:
        raise ValidationError({"reason": f"Keep the reason under {REASON_MAX_CHARS} characters."})
    with transaction.atomic():
        exclusion, created = Exclusion.objects.get_or_create(
            labeler=labeler,
            dataset=dataset,
            workspace=workspace,
            defaults={"reason": reason, "created_by": by},
        )
        if created:
            audit.record(
                action=AuditEvent.Action.LABELER_EXCLUDED,
                workspace_id=workspace.pk,
                dataset=dataset,
                actor=by,
                request=request,
                labeler=labeler.get_username(),
                scope="dataset" if dataset else "workspace",
                reason=reason,
            )
    _settle([labeler.pk], _datasets(dataset, workspace), now=now or timezone.now())
    return exclusion


def reinstate_in(
    *,
    labeler: User,
    dataset: Dataset | None = None,
    workspace: Workspace | None = None,
    by: User,
    request: Any = None,
) -> None:
    """Undo `exclude_from` (the same dataset, or the workspace): the exclusion row is deleted
    and the labeler's rankings count again (unless another exclusion still covers them).
    ValidationError naming `labeler` when there is no such exclusion."""
    workspace = _scope(dataset, workspace)
    check_may_exclude(labeler=labeler, workspace=workspace, by=by)
    with transaction.atomic():
        found = Exclusion.objects.filter(labeler=labeler, workspace=workspace, dataset=dataset)
        deleted, _ = found.delete()
        if not deleted:
            where = f"dataset {dataset.slug}" if dataset else f"workspace {workspace.slug}"
            raise ValidationError(
                {"labeler": f"{labeler.get_username()} is not excluded from {where}."}
            )
        audit.record(
            action=AuditEvent.Action.LABELER_REINSTATED,
            workspace_id=workspace.pk,
            dataset=dataset,
            actor=by,
            request=request,
            labeler=labeler.get_username(),
            scope="dataset" if dataset else "workspace",
        )
    datasets = _datasets(dataset, workspace)
    recount_slots(_prompts_held(Assignment.objects.filter(labeler=labeler), datasets))
    invalidate_reports(list(datasets.values_list("pk", flat=True)))


def _scope(dataset: Dataset | None, workspace: Workspace | None) -> Workspace:
    if dataset is not None:
        if workspace is not None and workspace.pk != dataset.workspace_id:
            raise ValidationError({"dataset": "This dataset is not one of that workspace."})
        return dataset.workspace
    if workspace is None:
        raise ValueError("exclude from a dataset or a workspace")
    return workspace


def _datasets(dataset: Dataset | None, workspace: Workspace) -> QuerySet[Dataset]:
    if dataset is not None:
        return Dataset.objects.filter(pk=dataset.pk)
    return Dataset.objects.filter(workspace=workspace)


def _prompts_held(assignments: QuerySet[Assignment], datasets: QuerySet[Dataset]) -> list[int]:
    """The prompts on which these assignments hold a slot, or held one before the change."""
    held = assignments.filter(prompt__dataset__in=datasets).exclude(
        status=Assignment.Status.SKIPPED
    )
    return list(held.values_list("prompt_id", flat=True))


def _settle(labeler_ids: list[int], datasets: QuerySet[Dataset], *, now: datetime) -> None:
    """After a change that stops the labelers from counting on these datasets has committed:
    wait for their leases in flight, give their open leases back and recount the prompts."""
    wait_for_leases_in_flight(labeler_ids)
    theirs = Assignment.objects.filter(labeler__in=labeler_ids)
    release_assignments(assignments=theirs.filter(prompt__dataset__in=datasets), now=now)
    recount_slots(_prompts_held(theirs, datasets))
    invalidate_reports(list(datasets.values_list("pk", flat=True)))


# --- Deactivating an account (the user admin) ------------------------------------------------


def check_may_change(*, labeler: User, by: User) -> None:
    """Excluding and reinstating take the permission to change users; staff, superuser and
    service accounts only a superuser may change this way. Refuses with a ValidationError."""
    if not by.has_perm("auth.change_user"):
        raise ValidationError({"labeler": "You need the permission to change users."})
    service = Membership.objects.filter(user=labeler, role=Role.SERVICE).exists()
    if (labeler.is_staff or labeler.is_superuser or service) and not by.is_superuser:
        raise ValidationError(
            {"labeler": "Only a superuser may exclude or reinstate staff and service accounts."}
        )


def exclude_labeler(*, labeler: User, by: User, now: datetime | None = None) -> User:
    """Deactivate a labeler and leave their rankings out of exports, training and statistics.

    Nothing is deleted: the account can no longer sign in or use its tokens, its open leases go
    back to the pool, and its submitted labels stop holding label slots, so their prompts are
    served to other labelers again. `reinstate_labeler` undoes it.
    """
    if labeler.pk == by.pk:
        raise ValidationError({"labeler": "You cannot exclude your own account."})
    check_may_change(labeler=labeler, by=by)
    now = now or timezone.now()
    with transaction.atomic():
        User.objects.filter(pk=labeler.pk).update(is_active=False)
        _log_change(by, labeler, "Excluded from labeling: rankings left out of exports.")
    _settle([labeler.pk], Dataset.objects.filter(pk__in=_datasets_of(labeler)), now=now)
    labeler.is_active = False
    return labeler


def reinstate_labeler(*, labeler: User, by: User) -> User:
    """Undo `exclude_labeler`: the account and its rankings count again."""
    check_may_change(labeler=labeler, by=by)
    with transaction.atomic():
        User.objects.filter(pk=labeler.pk).update(is_active=True)
        recount_slots(_prompts_of(labeler))
        _log_change(by, labeler, "Reinstated: rankings count again.")
        invalidate_reports(_datasets_of(labeler))
    labeler.is_active = True
    return labeler


def _prompts_of(labeler: User) -> list[int]:
    """The prompts on which the labeler's labels hold a slot, or held one before the exclusion."""
    submitted = Assignment.objects.filter(labeler=labeler, status=Assignment.Status.SUBMITTED)
    return list(submitted.values_list("prompt_id", flat=True))


def _datasets_of(labeler: User) -> list[int]:
    """The datasets the labeler labeled or holds a lease on."""
    ranked = Ranking.objects.filter(labeler=labeler).values_list("dataset_id", flat=True)
    leased = Assignment.objects.filter(labeler=labeler).values_list("prompt__dataset_id", flat=True)
    return sorted(set(ranked.distinct()) | set(leased.distinct()))


def _log_change(by: User, labeler: User, message: str) -> None:
    LogEntry.objects.log_actions(
        user_id=by.pk,
        queryset=User.objects.filter(pk=labeler.pk),
        action_flag=CHANGE,
        change_message=message,
        single_object=True,
    )
