"""Excluding a labeler, and reinstating them: what counts changes, nothing is deleted."""

from __future__ import annotations

from datetime import datetime

from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from labeling.models import Assignment, Membership, Ranking, Role
from labeling.services.leasing import recount_slots, release_assignments
from labeling.services.quality_report import invalidate_reports


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
        release_assignments(assignments=Assignment.objects.filter(labeler=labeler), now=now)
        recount_slots(_prompts_of(labeler))
        _log_change(by, labeler, "Excluded from labeling: rankings left out of exports.")
        invalidate_reports(_datasets_of(labeler))
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
    return list(
        Ranking.objects.filter(labeler=labeler).values_list("dataset_id", flat=True).distinct()
    )


def _log_change(by: User, labeler: User, message: str) -> None:
    LogEntry.objects.log_actions(
        user_id=by.pk,
        queryset=User.objects.filter(pk=labeler.pk),
        action_flag=CHANGE,
        change_message=message,
        single_object=True,
    )
