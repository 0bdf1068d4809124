"""Workspaces and roles: memberships, the last admin, staff status for the admin site, the
pool as the door to labeling, and the move of earlier data into the default workspace."""

from __future__ import annotations

import importlib
import uuid
from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from labeling.models import (
    DEFAULT_WORKSPACE_SLUG,
    Ability,
    Dataset,
    Membership,
    Ranking,
    Role,
    Workspace,
    default_workspace_id,
)
from labeling.services import workspaces
from tests.factories import DatasetFactory, UserFactory, WorkspaceFactory, make_prompt, token_client

default_workspace = importlib.import_module("labeling.migrations.0013_default_workspace")


def test_the_default_workspace_exists_and_takes_datasets_made_without_one(db):
    assert Workspace.objects.get(pk=default_workspace_id()).slug == DEFAULT_WORKSPACE_SLUG
    assert Dataset.objects.create(slug="plain", name="Plain").workspace.slug == "default"


@pytest.mark.parametrize(
    ("fields", "groups", "role"),
    [
        ({"is_staff": True, "is_superuser": False}, set(), "admin"),
        ({"is_staff": False, "is_superuser": True}, set(), "admin"),
        ({"is_staff": False, "is_superuser": False}, {"service"}, "service"),
        ({"is_staff": False, "is_superuser": False}, {"Reviewers"}, "reviewer"),
        ({"is_staff": False, "is_superuser": False}, set(), "labeler"),
    ],
)
def test_accounts_from_before_workspaces_keep_their_role(fields, groups, role):
    assert default_workspace.role_of(SimpleNamespace(**fields), groups) == role


def test_admins_and_managers_get_staff_status_and_lose_it_with_the_role(db):
    workspace = WorkspaceFactory()
    first, user = UserFactory(role=False), UserFactory(role=False)
    workspaces.set_role(workspace=workspace, user=first, role=Role.ADMIN)
    workspaces.set_role(workspace=workspace, user=user, role=Role.MANAGER)
    user.refresh_from_db()
    assert user.is_staff
    workspaces.set_role(workspace=workspace, user=user, role=Role.LABELER)
    user.refresh_from_db()
    assert not user.is_staff
    assert Workspace.objects.where(user, Ability.MANAGE).count() == 0
    assert list(Workspace.objects.where(first, Ability.ADMINISTER)) == [workspace]


def test_a_workspace_keeps_its_last_admin(db):
    workspace = WorkspaceFactory()
    admin = UserFactory(role=False)
    workspaces.set_role(workspace=workspace, user=admin, role=Role.ADMIN)
    with pytest.raises(ValidationError, match="at least one admin"):
        workspaces.set_role(workspace=workspace, user=admin, role=Role.LABELER)
    with pytest.raises(ValidationError, match="at least one admin"):
        workspaces.remove_member(workspace=workspace, user=admin)
    assert Membership.objects.get(user=admin).role == Role.ADMIN


def test_an_unknown_role_is_refused(db):
    with pytest.raises(ValidationError, match="Choose one of"):
        workspaces.set_role(workspace=WorkspaceFactory(), user=UserFactory(), role="owner")


def submit_body(task: dict) -> dict:
    ids = [completion["id"] for completion in task["completions"]]
    return {
        "order": [[cid] for cid in ids],
        "ratings": {},
        "request_id": str(uuid.uuid4()),
        "seconds_spent": 2.0,
        "strength": "better" if len(ids) == 2 else "",
    }


def test_the_pool_is_the_door_to_labeling(db):
    dataset = DatasetFactory(pool_everyone=False, ratings="off")
    make_prompt(dataset, completions=2)
    inside, outside = UserFactory(), UserFactory()
    workspaces.change_pool(dataset=dataset, add_labelers=[inside])
    url = reverse("labeling-api:next-task", args=[dataset.slug])
    # A labeler outside the pool, a non-member: the dataset is not there for them.
    assert token_client(outside).post(url).status_code == 404
    assert token_client(UserFactory(role=False)).post(url).status_code == 404
    # A manager sees the dataset but labels only from within the pool.
    manager = UserFactory(role=Role.MANAGER)
    assert token_client(manager).post(url).status_code == 403
    assert list(Dataset.objects.offered_to(inside)) == [dataset]
    assert not Dataset.objects.offered_to(outside).exists()


def test_taken_out_of_the_pool_a_labeler_loses_the_task_and_cannot_submit_it(db):
    dataset = DatasetFactory(pool_everyone=False, ratings="off")
    make_prompt(dataset, completions=2)
    labeler = UserFactory()
    workspaces.change_pool(dataset=dataset, add_labelers=[labeler])
    client = token_client(labeler)
    task = client.post(reverse("labeling-api:next-task", args=[dataset.slug])).json()
    workspaces.change_pool(dataset=dataset, remove_labelers=[labeler])
    submit = reverse("labeling-api:ranking", args=[task["assignment"]])
    assert client.post(submit, submit_body(task), format="json").status_code == 404
    assert not Ranking.objects.exists()
    dataset.prompts.get().refresh_from_db()
    assert dataset.prompts.get().slots_taken == 0  # the lease went back


def test_in_the_pool_through_a_group(db):
    dataset = DatasetFactory(pool_everyone=False, ratings="off")
    make_prompt(dataset, completions=2)
    labeler = UserFactory()
    group = dataset.workspace.groups.create(name="Vendor A")
    group.members.add(labeler)
    assert not Dataset.objects.offered_to(labeler).exists()
    workspaces.change_pool(dataset=dataset, add_groups=[group])
    assert list(Dataset.objects.offered_to(labeler)) == [dataset]


def test_a_group_of_another_workspace_cannot_join_a_pool(db):
    dataset = DatasetFactory(pool_everyone=False)
    foreign = WorkspaceFactory().groups.create(name="Elsewhere")
    with pytest.raises(ValidationError, match="Not groups of this workspace: Elsewhere"):
        workspaces.change_pool(dataset=dataset, add_groups=[foreign])
    assert not dataset.pool_groups.exists()
