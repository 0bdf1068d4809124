"""Labeler pools: only the pool (by name or through a group) is offered a dataset; taking
someone out gives their leases back; the managers' pages and endpoints; and, on PostgreSQL,
labelers leasing while the pool changes and exclusions land under them."""

from __future__ import annotations

import threading
import traceback
from collections import Counter
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.http import Http404
from django.urls import reverse

from labeling.models import (
    Assignment,
    AuditEvent,
    Dataset,
    LabelerGroup,
    Membership,
    Prompt,
    Ranking,
    Role,
)
from labeling.services import exclusion, leasing
from labeling.services.workspaces import change_pool, remove_member, set_group_members
from tests.factories import (
    DatasetFactory,
    UserFactory,
    WorkspaceFactory,
    make_prompt,
    token_client,
)
from tests.labeling.test_exclusion_scoped import assert_slots_are_true
from tests.labeling.test_leasing import rank_in_given_order


@pytest.fixture
def team(db):
    """A workspace with an admin, a dataset whose pool is empty, labelers ann, bob and cat
    (members, in no pool) and a group "vendor" holding bob and cat."""
    workspace = WorkspaceFactory(slug="team")
    admin = UserFactory(username="boss", role=False)
    Membership.objects.create(workspace=workspace, user=admin, role=Role.ADMIN)
    people = {name: UserFactory(username=name, role=False) for name in ("ann", "bob", "cat")}
    for user in people.values():
        Membership.objects.create(workspace=workspace, user=user, role=Role.LABELER)
    vendor = LabelerGroup.objects.create(workspace=workspace, name="vendor")
    vendor.members.add(people["bob"], people["cat"])
    dataset = DatasetFactory(workspace=workspace, slug="team-data", labels_per_prompt=2)
    for _ in range(3):
        make_prompt(dataset)
    return {"workspace": workspace, "admin": admin, "dataset": dataset, "vendor": vendor} | people


def offered(user) -> set[str]:
    return set(Dataset.objects.offered_to(user).values_list("slug", flat=True))


def test_only_the_pool_is_offered_a_dataset_by_name_or_through_a_group(team):
    dataset, ann, bob = team["dataset"], team["ann"], team["bob"]
    assert offered(ann) == offered(bob) == set()
    change_pool(dataset=dataset, add_labelers=[ann], by=team["admin"])
    assert offered(ann) == {"team-data"} and offered(bob) == set()
    change_pool(dataset=dataset, add_groups=[team["vendor"]], by=team["admin"])
    assert offered(bob) == offered(team["cat"]) == {"team-data"}
    event = AuditEvent.objects.filter(action=AuditEvent.Action.POOL_CHANGED).first()
    assert event.details["added_groups"] == ["vendor"] and event.actor == team["admin"]


def test_adding_a_non_member_by_name_makes_them_a_labeler_of_the_workspace(team):
    newcomer = UserFactory(role=False)
    change_pool(dataset=team["dataset"], add_labelers=[newcomer])
    assert Membership.objects.get(workspace=team["workspace"], user=newcomer).role == Role.LABELER
    assert offered(newcomer) == {"team-data"}


def test_taking_a_labeler_out_gives_their_leases_back_and_keeps_their_rankings(client, team):
    dataset, ann = team["dataset"], team["ann"]
    change_pool(dataset=dataset, add_labelers=[ann])
    ranked = rank_in_given_order(leasing.lease_next_assignment(dataset=dataset, labeler=ann))
    lease = leasing.lease_next_assignment(dataset=dataset, labeler=ann)

    change_pool(dataset=dataset, remove_labelers=[ann])

    lease.refresh_from_db()
    assert lease.status == Assignment.Status.EXPIRED
    assert list(Ranking.objects.counted()) == [ranked]  # leaving a pool is not an exclusion
    assert_slots_are_true()
    client.force_login(ann)
    assert client.get(reverse("labeling:next", args=[dataset.slug])).status_code == 404
    assert client.post(reverse("labeling:next", args=[dataset.slug])).status_code == 404
    assert client.get(reverse("labeling:rank", args=[lease.pk])).status_code == 404
    api = token_client(ann)
    assert api.post(reverse("labeling-api:next-task", args=[dataset.slug])).status_code == 404
    skip = reverse("labeling-api:skip", args=[lease.pk])
    assert api.post(skip, {"reason": "x"}, format="json").status_code == 404


def test_taking_a_group_out_gives_back_the_leases_of_those_it_alone_pooled(team):
    dataset, bob, cat = team["dataset"], team["bob"], team["cat"]
    change_pool(dataset=dataset, add_labelers=[cat], add_groups=[team["vendor"]])
    bobs = leasing.lease_next_assignment(dataset=dataset, labeler=bob)
    cats = leasing.lease_next_assignment(dataset=dataset, labeler=cat)

    change_pool(dataset=dataset, remove_groups=[team["vendor"]])

    bobs.refresh_from_db()
    cats.refresh_from_db()
    assert bobs.status == Assignment.Status.EXPIRED
    assert cats.status == Assignment.Status.LEASED  # still in the pool by name
    assert offered(bob) == set() and offered(cat) == {"team-data"}
    assert_slots_are_true()


def test_leaving_a_group_gives_back_the_leases_it_gave(team):
    dataset, bob, cat = team["dataset"], team["bob"], team["cat"]
    change_pool(dataset=dataset, add_groups=[team["vendor"]])
    bobs = leasing.lease_next_assignment(dataset=dataset, labeler=bob)
    set_group_members(group=team["vendor"], members=[cat], by=team["admin"])
    bobs.refresh_from_db()
    assert bobs.status == Assignment.Status.EXPIRED
    assert offered(bob) == set()
    assert_slots_are_true()


def test_a_lease_written_after_the_labeler_left_the_pool_is_refused(team):
    """The request checked the pool before the change; the lease, written after it, sees it."""
    dataset, ann = team["dataset"], team["ann"]
    change_pool(dataset=dataset, add_labelers=[ann])
    change_pool(dataset=dataset, remove_labelers=[ann])
    with pytest.raises(PermissionDenied):
        leasing.lease_next_assignment(dataset=dataset, labeler=ann)
    assert not Assignment.objects.exists()
    assert_slots_are_true()


def test_removing_a_member_takes_them_out_of_pools_and_groups_and_gives_leases_back(team):
    dataset, bob = team["dataset"], team["bob"]
    change_pool(dataset=dataset, add_labelers=[bob], add_groups=[team["vendor"]])
    lease = leasing.lease_next_assignment(dataset=dataset, labeler=bob)
    remove_member(workspace=team["workspace"], user=bob, by=team["admin"])
    lease.refresh_from_db()
    assert lease.status == Assignment.Status.EXPIRED
    assert offered(bob) == set()
    assert not team["vendor"].members.filter(pk=bob.pk).exists()
    assert not dataset.pool_labelers.filter(pk=bob.pk).exists()
    assert_slots_are_true()


def test_groups_of_another_workspace_are_refused(team):
    foreign = LabelerGroup.objects.create(workspace=WorkspaceFactory(), name="elsewhere")
    with pytest.raises(ValidationError, match="elsewhere"):
        change_pool(dataset=team["dataset"], add_groups=[foreign])


# --- API ----------------------------------------------------------------------------------------


def test_api_reads_and_changes_the_pool(team):
    api = token_client(team["admin"])
    url = reverse("labeling-api:pool", args=["team-data"])
    assert api.get(url).json() == {"labelers": [], "groups": []}
    body = {"labelers": ["ann", "bob"], "groups": ["vendor"]}
    pool = api.post(url, body, format="json").json()
    assert pool["groups"] == [{"name": "vendor", "members": ["bob", "cat"]}]
    assert pool["labelers"] == [
        {"username": "ann", "by_name": True, "groups": [], "excluded": False},
        {"username": "bob", "by_name": True, "groups": ["vendor"], "excluded": False},
        {"username": "cat", "by_name": False, "groups": ["vendor"], "excluded": False},
    ]
    pool = api.delete(url, {"labelers": ["bob"]}, format="json").json()
    assert [row["username"] for row in pool["labelers"] if row["by_name"]] == ["ann"]
    remove = reverse("labeling-api:pool-remove", args=["team-data"])
    pool = api.post(remove, {"groups": ["vendor"]}, format="json").json()
    assert pool == {
        "labelers": [{"username": "ann", "by_name": True, "groups": [], "excluded": False}],
        "groups": [],
    }


def test_api_names_unknown_labelers_and_groups_and_changes_nothing(team):
    api = token_client(team["admin"])
    url = reverse("labeling-api:pool", args=["team-data"])
    response = api.post(url, {"labelers": ["ann", "zed", "yan"]}, format="json")
    assert response.status_code == 400
    assert response.json() == {"labelers": ["No such users: zed, yan."]}
    response = api.post(url, {"labelers": ["ann"], "groups": ["nope"]}, format="json")
    assert response.status_code == 400
    assert response.json() == {"groups": ["No such groups in this workspace: nope."]}
    assert api.get(url).json() == {"labelers": [], "groups": []}


def test_api_pool_takes_the_ability_to_manage(team):
    url = reverse("labeling-api:pool", args=["team-data"])
    change_pool(dataset=team["dataset"], add_labelers=[team["ann"]])
    assert token_client(team["ann"]).get(url).status_code == 403  # pooled: sees it, may not
    bob = token_client(team["bob"])
    assert bob.get(url).status_code == 404  # not pooled: sees nothing
    assert token_client(UserFactory(is_staff=True)).get(url).status_code == 404  # other admin
    response = bob.post(url, {"labelers": ["bob"]}, format="json")
    assert response.status_code == 404
    assert offered(team["bob"]) == set()


# --- Pages --------------------------------------------------------------------------------------


def test_pool_page_shows_who_and_through_what_and_changes_it(client, team):
    client.force_login(team["admin"])
    url = reverse("labeling:pool", args=["team-data"])
    change_pool(dataset=team["dataset"], add_groups=[team["vendor"]])
    page = client.get(url).content.decode()
    assert "through vendor" in page and "bob" in page
    response = client.post(url, {"action": "add", "labelers": "ann, bob"})
    assert response.status_code == 302
    assert offered(team["ann"]) == {"team-data"}
    client.post(url, {"action": "remove", "groups": "vendor"})
    assert offered(team["cat"]) == set() and offered(team["bob"]) == {"team-data"}
    response = client.post(url, {"action": "add", "labelers": "ann zed"})
    assert response.status_code == 400 and "No such users: zed." in response.content.decode()


def test_pool_pages_are_for_the_workspaces_managers(client, team):
    change_pool(dataset=team["dataset"], add_labelers=[team["ann"]])
    client.force_login(team["ann"])
    assert client.get(reverse("labeling:pool", args=["team-data"])).status_code == 403
    assert client.get(reverse("labeling:workspace-pools", args=["team"])).status_code == 403
    other_manager = UserFactory(role=Role.MANAGER)  # manages the default workspace only
    client.force_login(other_manager)
    assert client.get(reverse("labeling:pool", args=["team-data"])).status_code == 404
    assert client.get(reverse("labeling:workspace-pools", args=["team"])).status_code == 404


def test_workspace_page_shows_which_labeler_is_in_which_pool(
    client, team, django_assert_max_num_queries
):
    change_pool(dataset=team["dataset"], add_labelers=[team["ann"]], add_groups=[team["vendor"]])
    second = DatasetFactory(workspace=team["workspace"], slug="team-two", name="Second")
    change_pool(dataset=second, add_labelers=[team["cat"]])
    exclusion.exclude_from(labeler=team["cat"], dataset=second, by=team["admin"])
    client.force_login(team["admin"])
    with django_assert_max_num_queries(13):  # with the navigation's roles
        response = client.get(reverse("labeling:workspace-pools", args=["team"]))
    rows = dict(response.context["matrix"].rows())
    names = [dataset.slug for dataset in response.context["matrix"].datasets]
    assert names == ["team-data", "team-two"]  # by name: "Dataset n", "Second"
    assert rows == {
        "ann": ["name", ""],
        "bob": ["group", ""],
        "cat": ["group", "excluded"],
        "boss": ["", ""],
    }


# --- Admin --------------------------------------------------------------------------------------


def test_group_members_changed_in_the_admin_give_back_the_leavers_leases(client, team):
    dataset, bob = team["dataset"], team["bob"]
    change_pool(dataset=dataset, add_groups=[team["vendor"]])
    lease = leasing.lease_next_assignment(dataset=dataset, labeler=bob)
    admin = team["admin"]
    admin.is_staff = True
    admin.save()
    client.force_login(admin)
    url = reverse("admin:labeling_labelergroup_change", args=[team["vendor"].pk])
    assert client.get(url).status_code == 200
    body = {"workspace": team["workspace"].pk, "name": "vendor", "members": [team["cat"].pk]}
    assert client.post(url, body).status_code == 302
    lease.refresh_from_db()
    assert lease.status == Assignment.Status.EXPIRED
    assert list(team["vendor"].members.all()) == [team["cat"]]
    assert offered(bob) == set()
    # Another workspace's groups are not theirs to see.
    foreign = LabelerGroup.objects.create(workspace=WorkspaceFactory(), name="elsewhere")
    change = reverse("admin:labeling_labelergroup_change", args=[foreign.pk])
    assert client.get(change).status_code == 302  # "does not exist", back to the list


def test_members_added_in_the_workspace_admin_go_through_set_role(client, team, staff):
    client.force_login(staff)
    url = reverse("admin:labeling_workspace_change", args=[team["workspace"].pk])
    assert client.get(url).status_code == 200
    newcomer = UserFactory(username="nina", role=False)
    memberships = list(Membership.objects.filter(workspace=team["workspace"]).order_by("pk"))
    body = {
        "name": team["workspace"].name,
        "slug": team["workspace"].slug,
        "description": "",
        "memberships-TOTAL_FORMS": len(memberships) + 1,
        "memberships-INITIAL_FORMS": len(memberships),
        "memberships-MIN_NUM_FORMS": 0,
        "memberships-MAX_NUM_FORMS": 1000,
        "groups-TOTAL_FORMS": 1,
        "groups-INITIAL_FORMS": 1,
        "groups-MIN_NUM_FORMS": 0,
        "groups-MAX_NUM_FORMS": 1000,
        "groups-0-id": team["vendor"].pk,
        "groups-0-workspace": team["workspace"].pk,
        "groups-0-name": "vendor",
    }
    for i, membership in enumerate(memberships):
        body |= {
            f"memberships-{i}-id": membership.pk,
            f"memberships-{i}-workspace": team["workspace"].pk,
            f"memberships-{i}-user": membership.user_id,
            f"memberships-{i}-role": membership.role,
        }
    n = len(memberships)
    body |= {f"memberships-{n}-user": newcomer.pk, f"memberships-{n}-role": Role.MANAGER}
    response = client.post(url, body)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Membership.objects.get(user=newcomer).role == Role.MANAGER
    newcomer.refresh_from_db()
    assert newcomer.is_staff
    assert AuditEvent.objects.filter(
        action=AuditEvent.Action.MEMBER_CHANGED, details__member="nina"
    ).exists()


# --- PostgreSQL: the pool changing under labelers at work ---------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_labelers_at_work_while_the_pool_changes_and_exclusions_land():
    """32 pooled labelers (by name or through a group) lease and rank in threads while others
    take some of them out of the pool and exclude some; outsiders try to lease all along. No
    prompt gets more labels that count than labels_per_prompt, `slots_taken` equals the
    recount, outsiders got nothing, and nobody taken out or excluded keeps a lease."""
    admin, dataset, pooled, outsiders = busy_campaign()
    removed, excluded = pooled[:6], pooled[10:13] + pooled[20:23]
    started = threading.Event()
    submitted: list[int] = []  # list.append is atomic under the GIL
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(pooled) + len(outsiders) + 2)

    def label(user) -> None:
        try:
            barrier.wait()
            for _ in range(62):
                try:
                    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=user)
                except PermissionDenied:
                    return
                if assignment is None:
                    return
                try:
                    rank_in_given_order(assignment)
                except ValidationError:  # the lease went back meanwhile, its slot re-let
                    continue
                except Http404:  # and the labeler was taken out or excluded meanwhile
                    return
                submitted.append(user.pk)
                if len(submitted) >= 20:
                    started.set()
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    def change(action) -> None:
        try:
            barrier.wait()
            started.wait(60)
            action()
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    def take_out() -> None:
        for user in removed:
            change_pool(dataset=dataset, remove_labelers=[user], by=admin)

    def exclude() -> None:
        for user in excluded:
            exclusion.exclude_from(labeler=user, dataset=dataset, by=admin)

    threads = [threading.Thread(target=label, args=(user,)) for user in pooled + outsiders]
    threads += [threading.Thread(target=change, args=(take_out,))]
    threads += [threading.Thread(target=change, args=(exclude,))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert all(not thread.is_alive() for thread in threads)
    assert not errors, "".join(traceback.format_exception(errors[0]))

    assert_pool_changes_held(dataset, outsiders=outsiders, removed=removed, excluded=excluded)


def busy_campaign() -> tuple[Any, Dataset, list[Any], list[Any]]:
    """A workspace's admin, its dataset of 60 prompts (3 labels each), 32 labelers in its pool
    (16 by name, 16 through a group) and 4 members outside it."""
    workspace = WorkspaceFactory()
    admin = UserFactory(role=False)
    Membership.objects.create(workspace=workspace, user=admin, role=Role.ADMIN)
    dataset = DatasetFactory(workspace=workspace, labels_per_prompt=3)
    for i in range(60):
        make_prompt(dataset, completions=2 + i % 3)
    pooled = [UserFactory(role=False) for _ in range(32)]
    outsiders = [UserFactory(role=False) for _ in range(4)]
    for user in pooled + outsiders:
        Membership.objects.create(workspace=workspace, user=user, role=Role.LABELER)
    group = LabelerGroup.objects.create(workspace=workspace, name="vendor")
    group.members.add(*pooled[16:])
    change_pool(dataset=dataset, add_labelers=pooled[:16], add_groups=[group])
    return admin, dataset, pooled, outsiders


def assert_pool_changes_held(
    dataset: Dataset, *, outsiders: list[Any], removed: list[Any], excluded: list[Any]
) -> None:
    counted = Counter(Assignment.objects.holding_slots().values_list("prompt_id", flat=True))
    assert max(counted.values()) <= dataset.labels_per_prompt
    per_prompt = Counter(Ranking.objects.counted().values_list("prompt_id", flat=True))
    assert max(per_prompt.values()) <= dataset.labels_per_prompt
    assert_slots_are_true()
    assert not Assignment.objects.filter(labeler__in=outsiders).exists()
    gone = Assignment.objects.filter(labeler__in=removed + excluded, status="leased")
    assert not gone.exists()
    assert not Ranking.objects.counted().filter(labeler__in=excluded).exists()
    assert Prompt.objects.filter(dataset=dataset).count() == 60


def advisory_lock_awaited() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return cursor.fetchone() is not None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", ["exclude", "take out"])
def test_a_change_waits_for_a_lease_in_flight_and_gives_it_back(change):
    """A lease written before the change and committed after it: the change waits for its
    commit (`wait_for_leases_in_flight`), then gives it back, so it holds no slot."""
    workspace = WorkspaceFactory()
    admin, labeler = UserFactory(role=False), UserFactory(role=False)
    Membership.objects.create(workspace=workspace, user=admin, role=Role.ADMIN)
    dataset = DatasetFactory(workspace=workspace, labels_per_prompt=1)
    make_prompt(dataset)
    change_pool(dataset=dataset, add_labelers=[labeler])
    leased, commit = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def lease_and_commit_late() -> None:
        try:
            with transaction.atomic():
                leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
                leased.set()
                commit.wait(60)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    def make_the_change() -> None:
        try:
            if change == "exclude":
                exclusion.exclude_from(labeler=labeler, dataset=dataset, by=admin)
            else:
                change_pool(dataset=dataset, remove_labelers=[labeler], by=admin)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    leasing_thread = threading.Thread(target=lease_and_commit_late)
    leasing_thread.start()
    assert leased.wait(60)
    changing_thread = threading.Thread(target=make_the_change)
    changing_thread.start()
    # Until the change waits for the lease's lock; bounded, should it never wait.
    for _ in range(100_000):
        if advisory_lock_awaited():
            break
    commit.set()
    leasing_thread.join(60)
    changing_thread.join(60)
    assert not errors, errors
    assert list(Assignment.objects.values_list("status", flat=True)) == ["expired"]
    assert_slots_are_true()
