"""Excluding a labeler from one dataset or a whole workspace (`exclude_from`, `reinstate_in`):
what stops counting and where, undoing it, who may, and the pages and endpoints that do it."""

from __future__ import annotations

from collections import Counter

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.urls import reverse

from labeling.models import (
    Assignment,
    AuditEvent,
    Comparison,
    Dataset,
    Exclusion,
    Membership,
    Prompt,
    Ranking,
    Role,
)
from labeling.services import exclusion, leasing, quality_report
from labeling.services.workspaces import change_pool
from tests.factories import (
    DatasetFactory,
    UserFactory,
    WorkspaceFactory,
    make_lease,
    make_prompt,
    token_client,
)
from tests.labeling.quality_data import report_of, row_of
from tests.labeling.test_leasing import rank_in_given_order


def assert_slots_are_true() -> None:
    """`slots_taken` of every prompt equals its assignments that hold a slot: only rows that
    count (`labeler_counts`, exclusions included)."""
    held = Counter(Assignment.objects.holding_slots().values_list("prompt_id", flat=True))
    assert {p.pk: p.slots_taken for p in Prompt.objects.all()} == {
        pk: held.get(pk, 0) for pk in Prompt.objects.values_list("pk", flat=True)
    }


def counted_by(dataset: Dataset) -> Counter[str]:
    rows = Ranking.objects.filter(dataset=dataset).counted()
    return Counter(rows.values_list("labeler__username", flat=True))


@pytest.fixture
def manager(db):
    return UserFactory(username="maria", role=Role.MANAGER)


def test_excluding_from_a_dataset_leaves_rankings_out_there_and_only_there(small, people, manager):
    dataset, bob = small["dataset"], people["bob"]
    elsewhere = DatasetFactory(labels_per_prompt=2)
    make_prompt(elsewhere)
    rank_in_given_order(leasing.lease_next_assignment(dataset=elsewhere, labeler=bob))
    lease = make_lease(small["p4"], bob)
    p1_before = Prompt.objects.get(pk=small["p1"].pk).slots_taken
    cursor = Comparison.objects.order_by("-pk").values_list("pk", flat=True).first()

    made = exclusion.exclude_from(labeler=bob, dataset=dataset, by=manager, reason="spam")

    assert made.dataset == dataset and made.reason == "spam" and made.created_by == manager
    bob.refresh_from_db()
    lease.refresh_from_db()
    assert bob.is_active  # the account stays open
    assert lease.status == Assignment.Status.EXPIRED
    assert counted_by(dataset) == {"ann": 5, "cat": 1}
    assert counted_by(elsewhere) == {"bob": 1}
    exported = Comparison.objects.filter(dataset=dataset).exported(cursor=cursor)
    assert not exported.filter(labeler=bob).exists()
    # What training reads (rewards.services.training_data), and what it still reads elsewhere.
    assert not Comparison.objects.counted().filter(dataset=dataset, labeler=bob).exists()
    assert Comparison.objects.counted().filter(dataset=elsewhere, labeler=bob).exists()
    assert Prompt.objects.get(pk=small["p1"].pk).slots_taken == p1_before - 1
    assert_slots_are_true()
    assert row_of(report_of(dataset), "bob")["active"] is False
    assert row_of(report_of(elsewhere), "bob")["active"] is True
    assert not Dataset.objects.offered_to(bob).filter(pk=dataset.pk).exists()
    assert Dataset.objects.offered_to(bob).filter(pk=elsewhere.pk).exists()
    event = AuditEvent.objects.get(action=AuditEvent.Action.LABELER_EXCLUDED)
    assert event.dataset == dataset and event.actor == manager
    assert event.details == {"labeler": "bob", "scope": "dataset", "reason": "spam"}

    exclusion.reinstate_in(labeler=bob, dataset=dataset, by=manager)

    assert not Exclusion.objects.exists()
    assert counted_by(dataset) == {"ann": 5, "bob": 2, "cat": 1}
    assert Prompt.objects.get(pk=small["p1"].pk).slots_taken == p1_before
    assert_slots_are_true()
    assert AuditEvent.objects.filter(action=AuditEvent.Action.LABELER_REINSTATED).count() == 1


def test_an_excluded_labeler_is_offered_nothing_there_and_their_old_task_is_gone(
    client, dataset, labeler, staff
):
    make_prompt(dataset)
    lease = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    exclusion.exclude_from(labeler=labeler, dataset=dataset, by=staff)
    client.force_login(labeler)
    assert client.get(reverse("labeling:next", args=[dataset.slug])).status_code == 404
    assert client.get(reverse("labeling:rank", args=[lease.pk])).status_code == 404
    api = token_client(labeler)
    assert api.post(reverse("labeling-api:next-task", args=[dataset.slug])).status_code == 404
    # Signing in still works: the account is not locked.
    assert client.get(reverse("labeling:home")).status_code == 200


def test_a_lease_taken_as_the_exclusion_lands_is_refused_and_leaves_no_slot(
    dataset, labeler, staff
):
    """The request checked the pool before the exclusion; the lease, written after it, sees it."""
    prompt = make_prompt(dataset)
    exclusion.exclude_from(labeler=labeler, dataset=dataset, by=staff)
    with pytest.raises(PermissionDenied, match="no longer offered"):
        leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    assert not Assignment.objects.exists()
    prompt.refresh_from_db()
    assert prompt.slots_taken == 0


def test_a_late_submit_of_an_excluded_labeler_is_refused_and_takes_no_slot(dataset, labeler, staff):
    make_prompt(dataset)
    lease = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    exclusion.exclude_from(labeler=labeler, dataset=dataset, by=staff)
    lease.refresh_from_db()
    assert lease.status == Assignment.Status.EXPIRED
    with pytest.raises(Http404, match="no longer yours"):
        rank_in_given_order(lease)
    api = token_client(labeler)
    body = {"order": [], "request_id": "6c2e6f0e-6b0e-4f55-9d77-9a1cbd0f4b7e", "seconds_spent": 1}
    url = reverse("labeling-api:ranking", args=[lease.pk])
    assert api.post(url, body, format="json").status_code == 404
    assert not Ranking.objects.exists()
    assert_slots_are_true()


def test_workspace_wide_exclusion_covers_every_dataset_including_later_ones(db):
    workspace = WorkspaceFactory()
    admin, bob = UserFactory(role=False), UserFactory(role=False)
    Membership.objects.create(workspace=workspace, user=admin, role=Role.ADMIN)
    first = DatasetFactory(workspace=workspace, labels_per_prompt=1)
    change_pool(dataset=first, add_labelers=[bob])
    make_prompt(first)
    rank_in_given_order(leasing.lease_next_assignment(dataset=first, labeler=bob))
    home = DatasetFactory()  # the default workspace: bob is not excluded there
    change_pool(dataset=home, add_labelers=[bob])

    exclusion.exclude_from(labeler=bob, workspace=workspace, by=admin)

    later = DatasetFactory(workspace=workspace)
    change_pool(dataset=later, add_labelers=[bob])
    offered = set(Dataset.objects.offered_to(bob))
    assert offered == {home}
    assert not Ranking.objects.filter(dataset=first).counted().exists()
    assert_slots_are_true()
    assert Exclusion.objects.get().dataset is None
    with pytest.raises(ValidationError, match="not excluded from dataset"):
        exclusion.reinstate_in(labeler=bob, dataset=first, by=admin)
    exclusion.reinstate_in(labeler=bob, workspace=workspace, by=admin)
    assert set(Dataset.objects.offered_to(bob)) == {home, first, later}
    assert Ranking.objects.filter(dataset=first).counted().count() == 1


def test_only_the_workspaces_managers_exclude_and_nobody_themselves(small, people, manager):
    dataset, bob = small["dataset"], people["bob"]
    reviewer = UserFactory(role=Role.REVIEWER)
    outsider = UserFactory(role=False)
    Membership.objects.create(workspace=WorkspaceFactory(), user=outsider, role=Role.ADMIN)
    for who in (people["ann"], reviewer, outsider):
        with pytest.raises(PermissionDenied):
            exclusion.exclude_from(labeler=bob, dataset=dataset, by=who)
    with pytest.raises(ValidationError, match="cannot exclude yourself"):
        exclusion.exclude_from(labeler=manager, dataset=dataset, by=manager)
    stranger = UserFactory(role=False)
    with pytest.raises(ValidationError, match="not a member"):
        exclusion.exclude_from(labeler=stranger, dataset=dataset, by=manager)
    assert not Exclusion.objects.exists()


def test_excluding_twice_keeps_one_exclusion_and_reinstating_twice_is_refused(
    small, people, manager
):
    dataset, bob = small["dataset"], people["bob"]
    first = exclusion.exclude_from(labeler=bob, dataset=dataset, by=manager)
    assert exclusion.exclude_from(labeler=bob, dataset=dataset, by=manager) == first
    assert AuditEvent.objects.filter(action=AuditEvent.Action.LABELER_EXCLUDED).count() == 1
    exclusion.reinstate_in(labeler=bob, dataset=dataset, by=manager)
    with pytest.raises(ValidationError, match="bob is not excluded"):
        exclusion.reinstate_in(labeler=bob, dataset=dataset, by=manager)


def test_the_reason_is_bounded(small, people, manager):
    with pytest.raises(ValidationError) as refused:
        exclusion.exclude_from(
            labeler=people["bob"], dataset=small["dataset"], by=manager, reason="x" * 501
        )
    assert "reason" in refused.value.message_dict


# --- The quality dashboard ----------------------------------------------------------------------


def test_the_dashboard_excludes_from_its_dataset_and_reinstates(client, small, people, manager):
    dataset, bob = small["dataset"], people["bob"]
    client.force_login(manager)
    dashboard = reverse("labeling:quality", args=[dataset.slug])
    quality_report.refresh_report(dataset_id=dataset.pk)
    response = client.post(
        reverse("labeling:labeler-exclude", args=[dataset.slug, bob.pk]), {"next": dashboard}
    )
    assert response.status_code == 302 and response.url == dashboard
    assert Exclusion.objects.get().dataset == dataset
    bob.refresh_from_db()
    assert bob.is_active
    page = client.get(dashboard).content.decode()
    assert reverse("labeling:labeler-reinstate", args=[dataset.slug, bob.pk]) in page
    response = client.post(
        reverse("labeling:labeler-reinstate", args=[dataset.slug, bob.pk]),
        {"next": "https://evil.example/"},
    )
    assert response.url == dashboard
    assert not Exclusion.objects.exists()


def test_a_reviewer_sees_the_dashboard_without_exclusion_buttons_and_cannot_post(
    client, small, people
):
    dataset, bob = small["dataset"], people["bob"]
    reviewer = UserFactory(role=Role.REVIEWER)
    client.force_login(reviewer)
    quality_report.refresh_report(dataset_id=dataset.pk)
    page = client.get(reverse("labeling:quality", args=[dataset.slug])).content.decode()
    assert "/exclude/" not in page
    url = reverse("labeling:labeler-exclude", args=[dataset.slug, bob.pk])
    assert client.post(url).status_code == 403
    assert not Exclusion.objects.exists()


# --- The API ------------------------------------------------------------------------------------


def test_api_excludes_lists_and_reinstates_per_dataset(small, people, manager):
    dataset = small["dataset"]
    api = token_client(manager)
    url = reverse("labeling-api:exclusions", args=[dataset.slug])
    response = api.post(url, {"labeler": "bob", "reason": "rushed"}, format="json")
    assert response.status_code == 201
    assert response.json() | {"created_at": None} == {
        "labeler": "bob",
        "dataset": dataset.slug,
        "reason": "rushed",
        "created_by": "maria",
        "created_at": None,
    }
    assert [row["labeler"] for row in api.get(url).json()] == ["bob"]
    response = api.post(url, {"labeler": "nobody"}, format="json")
    assert response.status_code == 400 and "nobody" in response.json()["labeler"][0]
    one = reverse("labeling-api:exclusion", args=[dataset.slug, "bob"])
    assert api.delete(one).status_code == 204
    assert api.delete(one).status_code == 400
    assert api.get(url).json() == []


def test_api_excludes_from_a_whole_workspace(small, people, manager):
    api = token_client(manager)
    url = reverse("labeling-api:workspace-exclusions", args=["default"])
    assert api.post(url, {"labeler": "cat"}, format="json").status_code == 201
    rows = api.get(url).json()
    assert [(row["labeler"], row["dataset"]) for row in rows] == [("cat", None)]
    dataset_url = reverse("labeling-api:exclusions", args=[small["dataset"].slug])
    assert [row["labeler"] for row in api.get(dataset_url).json()] == ["cat"]
    one = reverse("labeling-api:workspace-exclusion", args=["default", "cat"])
    assert api.delete(one).status_code == 204
    assert not Exclusion.objects.exists()


def test_api_exclusions_take_the_ability_to_manage(small, people):
    dataset = small["dataset"]
    url = reverse("labeling-api:exclusions", args=[dataset.slug])
    body = {"labeler": "bob"}
    # Its labelers and reviewers see the dataset, and may not; others do not see it.
    assert token_client(people["ann"]).post(url, body, format="json").status_code == 403
    reviewer = token_client(UserFactory(role=Role.REVIEWER))
    assert reviewer.post(url, body, format="json").status_code == 403
    assert reviewer.get(url).status_code == 403
    workspace_url = reverse("labeling-api:workspace-exclusions", args=["default"])
    assert reviewer.post(workspace_url, body, format="json").status_code == 403
    outsider = token_client(UserFactory(role=False))
    assert outsider.get(workspace_url).status_code == 404
    assert outsider.post(url, body, format="json").status_code == 404
    assert token_client(None).get(url).status_code == 401
    assert not Exclusion.objects.exists()
