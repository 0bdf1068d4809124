"""Workspaces, their members' roles and the datasets' labeler pools.

Each change is recorded in the audit trail in its own transaction. Taking a labeler out of a
pool gives their open leases there back (`release_assignments`); their submitted rankings still
count: leaving a pool is not an exclusion (`labeling.services.exclusion`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q

from labeling.models import (
    Assignment,
    AuditEvent,
    Dataset,
    LabelerGroup,
    Membership,
    Role,
    Workspace,
)
from labeling.services import audit
from labeling.services.leasing import wait_for_leases_in_flight
from labeling.services.slots import release_assignments

# Roles that manage a workspace through the Django admin, which lets only staff in.
ADMIN_SITE_ROLES = (Role.ADMIN, Role.MANAGER)


def create_workspace(
    *, slug: str, name: str, by: User | None = None, request: Any = None, **fields: Any
) -> Workspace:
    """A new workspace; its creator (unless a superuser) becomes its admin, recorded as their
    doing (through `request`: a page or a token)."""
    workspace = Workspace(slug=slug, name=name, **fields)
    workspace.full_clean()
    with transaction.atomic():
        try:
            with transaction.atomic():
                workspace.save()
        except IntegrityError:  # another request took the slug since full_clean looked
            raise ValidationError({"slug": "A workspace with this slug exists."}) from None
        if by is not None and not by.is_superuser:
            set_role(workspace=workspace, user=by, role=Role.ADMIN, by=by, request=request)
    return workspace


def update_workspace(
    *, workspace: Workspace, name: str | None = None, description: str | None = None
) -> Workspace:
    """Rename a workspace or change its description (its slug stays: URLs name it)."""
    if name is not None:
        workspace.name = name
    if description is not None:
        workspace.description = description
    workspace.full_clean()
    workspace.save(update_fields=["name", "description"])
    return workspace


def set_role(
    *, workspace: Workspace, user: User, role: str, by: User | None = None, request: Any = None
) -> Membership:
    """Make `user` a member with `role`, or change their role. Admins and managers get staff
    status, the Django admin's door, which shows them only their workspaces' rows."""
    if role not in Role.values:
        raise ValidationError({"role": f"Choose one of {', '.join(Role.values)}."})
    with transaction.atomic():
        membership, created = Membership.objects.select_for_update().get_or_create(
            workspace=workspace, user=user, defaults={"role": role}
        )
        before = None if created else membership.role
        if before != role:
            _check_keeps_an_admin(workspace, membership, role)
            membership.role = role
            membership.save(update_fields=["role"])
            audit.record(
                action=AuditEvent.Action.MEMBER_CHANGED,
                workspace_id=workspace.pk,
                actor=by,
                request=request,
                member=user.get_username(),
                role=role,
                before=before,
            )
        _sync_staff(user)
    return membership


def remove_member(
    *, workspace: Workspace, user: User, by: User | None = None, request: Any = None
) -> None:
    """Take `user` out of the workspace: out of its pools and groups too, leases given back
    after the commit (call it outside a transaction, as `change_pool`)."""
    with transaction.atomic():
        membership = Membership.objects.select_for_update().filter(workspace=workspace, user=user)
        found = membership.first()
        if found is None:
            return
        _check_keeps_an_admin(workspace, found, None)
        found.delete()
        datasets = Dataset.objects.filter(workspace=workspace)
        for dataset in datasets.filter(pool_labelers=user):
            dataset.pool_labelers.remove(user)
        user.labeler_groups.remove(*LabelerGroup.objects.filter(workspace=workspace))
        audit.record(
            action=AuditEvent.Action.MEMBER_CHANGED,
            workspace_id=workspace.pk,
            actor=by,
            request=request,
            member=user.get_username(),
            role=None,
            before=found.role,
        )
        _sync_staff(user)
    # After the commit, as in `change_pool`.
    wait_for_leases_in_flight([user.pk])
    _release(datasets, [user.pk])


def _check_keeps_an_admin(workspace: Workspace, membership: Membership, role: str | None) -> None:
    if membership.role != Role.ADMIN or role == Role.ADMIN or membership.pk is None:
        return
    others = Membership.objects.filter(workspace=workspace, role=Role.ADMIN).exclude(
        pk=membership.pk
    )
    if not others.exists():
        raise ValidationError({"role": "A workspace keeps at least one admin."})


def _sync_staff(user: User) -> None:
    if user.is_superuser:
        return
    staff = Membership.objects.filter(user=user, role__in=ADMIN_SITE_ROLES).exists()
    if user.is_staff != staff:
        User.objects.filter(pk=user.pk).update(is_staff=staff)
        user.is_staff = staff


def change_pool(
    *,
    dataset: Dataset,
    add_labelers: Iterable[User] = (),
    remove_labelers: Iterable[User] = (),
    add_groups: Iterable[LabelerGroup] = (),
    remove_groups: Iterable[LabelerGroup] = (),
    by: User | None = None,
    request: Any = None,
) -> None:
    """Add labelers and groups to the dataset's pool, or take them out. A labeler added by
    name becomes a labeler of the workspace if not a member yet; groups must be the dataset's
    workspace's. Who leaves the pool (and is not still in it through a group) has their open
    leases on the dataset given back, after the change commits (`leasing`'s module docstring):
    call it outside a transaction."""
    add_labelers, remove_labelers = list(add_labelers), list(remove_labelers)
    add_groups, remove_groups = list(add_groups), list(remove_groups)
    foreign = [g.name for g in add_groups + remove_groups if g.workspace_id != dataset.workspace_id]
    if foreign:
        raise ValidationError({"groups": f"Not groups of this workspace: {', '.join(foreign)}."})
    with transaction.atomic():
        Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
        members = set(
            Membership.objects.filter(
                workspace=dataset.workspace_id, user__in=add_labelers
            ).values_list("user_id", flat=True)
        )
        Membership.objects.bulk_create(
            [
                Membership(workspace=dataset.workspace, user=user, role=Role.LABELER)
                for user in add_labelers
                if user.pk not in members
            ]
        )
        dataset.pool_labelers.add(*add_labelers)
        dataset.pool_groups.add(*add_groups)
        dataset.pool_labelers.remove(*remove_labelers)
        dataset.pool_groups.remove(*remove_groups)
        leaving = {user.pk for user in remove_labelers} | set(
            User.objects.filter(labeler_groups__in=remove_groups).values_list("pk", flat=True)
        )
        still = set(
            User.objects.filter(pk__in=leaving)
            .filter(Q(pooled_datasets=dataset) | Q(labeler_groups__datasets=dataset))
            .values_list("pk", flat=True)
        )
        left = sorted(leaving - still)
        audit.record(
            action=AuditEvent.Action.POOL_CHANGED,
            workspace_id=dataset.workspace_id,
            dataset=dataset,
            actor=by,
            request=request,
            added_labelers=sorted(user.get_username() for user in add_labelers),
            removed_labelers=sorted(user.get_username() for user in remove_labelers),
            added_groups=sorted(group.name for group in add_groups),
            removed_groups=sorted(group.name for group in remove_groups),
        )
    # After the commit, and after the leases in flight of those who left: a lease taken while
    # the change was being made is either refused once written or given back here.
    wait_for_leases_in_flight(left)
    _release(Dataset.objects.filter(pk=dataset.pk), left)


def _release(datasets: Any, labeler_ids: list[int]) -> None:
    if labeler_ids:
        release_assignments(
            assignments=Assignment.objects.filter(
                labeler__in=labeler_ids, prompt__dataset__in=datasets
            )
        )


def set_group_members(
    *, group: LabelerGroup, members: Iterable[User], by: User | None = None, request: Any = None
) -> None:
    """Make `members` the group's members. Who leaves it, and so the pool of a dataset that
    holds them only through it, has their open leases there given back after the commit (as
    `change_pool`); call it outside a transaction."""
    members = list(members)
    with transaction.atomic():
        before = set(group.members.values_list("pk", flat=True))
        group.members.set(members)
        leaving = sorted(before - {user.pk for user in members})
        audit.record(
            action=AuditEvent.Action.POOL_CHANGED,
            workspace_id=group.workspace_id,
            actor=by,
            request=request,
            group=group.name,
            added_labelers=sorted(user.get_username() for user in members if user.pk not in before),
            removed_labelers=sorted(
                User.objects.filter(pk__in=leaving).values_list("username", flat=True)
            ),
        )
    wait_for_leases_in_flight(leaving)
    for dataset in Dataset.objects.filter(pool_groups=group):
        left = User.objects.filter(pk__in=leaving).exclude(
            Q(pooled_datasets=dataset) | Q(labeler_groups__datasets=dataset)
        )
        _release(Dataset.objects.filter(pk=dataset.pk), list(left.values_list("pk", flat=True)))
