"""The workspace API: workspaces and the caller's role, members and roles, the audit trail; each
endpoint's role checks across two workspaces."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling.models import AuditEvent, Membership, Role, Workspace
from labeling.services import workspaces
from tests.factories import UserFactory, make_team, token_client

ROLES = list(Role.values)


@pytest.fixture
def teams(db):
    """Workspaces "a" and "b", each with a member of every role and a dataset."""
    return {slug: make_team(slug) for slug in ("a", "b")}


def caller(teams, who):
    """The API client of `who`: "<slug>-<role>", "anonymous" or "superuser" (each with their
    one token, however often asked)."""
    if who == "anonymous":
        return APIClient()
    if who == "superuser":
        user = UserFactory(is_staff=True, is_superuser=True, role=False)
    else:
        slug, role = who.split("-")
        user = teams[slug][1][role]
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def status_by_role(teams, method, url, body=None):
    """The status each member of "a" (and b's admin, and anonymous) gets."""
    result = {}
    for who in [*(f"a-{role}" for role in ROLES), "b-admin", "anonymous"]:
        response = getattr(caller(teams, who), method)(url, body, format="json")
        result[who] = response.status_code
    return result


# --- Workspaces ------------------------------------------------------------------------------


def test_each_member_lists_only_their_workspaces_with_their_role(teams):
    for role in ROLES:
        response = caller(teams, f"a-{role}").get(reverse("labeling-api:workspaces"))
        assert response.status_code == 200
        assert [(w["slug"], w["role"]) for w in response.json()] == [("a", role)]


def test_superuser_lists_every_workspace_as_admin(teams):
    response = caller(teams, "superuser").get(reverse("labeling-api:workspaces"))
    listed = {w["slug"]: w["role"] for w in response.json()}
    assert {"a": "admin", "b": "admin"}.items() <= listed.items()


def test_anonymous_callers_are_refused(teams):
    client = caller(teams, "anonymous")
    assert client.get(reverse("labeling-api:workspaces")).status_code == 401
    assert client.get(reverse("labeling-api:audit", args=["a"])).status_code == 401


def test_only_superusers_and_holders_of_the_permission_create_workspaces(teams):
    body = {"slug": "c", "name": "C"}
    for who in ("a-admin", "a-manager", "a-labeler", "a-service"):
        response = caller(teams, who).post(reverse("labeling-api:workspaces"), body, format="json")
        assert response.status_code == 403, who
    maker = UserFactory(role=False)
    maker.user_permissions.add(Permission.objects.get(codename="add_workspace"))
    response = token_client(maker).post(reverse("labeling-api:workspaces"), body, format="json")
    assert response.status_code == 201
    assert response.json()["role"] == "admin"
    assert Membership.objects.get(workspace__slug="c", user=maker).role == Role.ADMIN
    made = caller(teams, "superuser").post(
        reverse("labeling-api:workspaces"), {"slug": "d", "name": "D"}, format="json"
    )
    assert made.status_code == 201
    assert not Membership.objects.filter(workspace__slug="d").exists()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"slug": "not a slug", "name": "X"}, "slug"),
        ({"slug": "a", "name": "Taken"}, "slug"),
        ({"slug": "fresh"}, "name"),
        ({"slug": "x" * 101, "name": "X"}, "slug"),
    ],
)
def test_a_bad_or_taken_slug_is_400_naming_the_field(teams, body, field):
    response = caller(teams, "superuser").post(
        reverse("labeling-api:workspaces"), body, format="json"
    )
    assert response.status_code == 400
    assert field in response.json()


def test_every_member_reads_their_workspace_and_nobody_else_does(teams):
    statuses = status_by_role(teams, "get", reverse("labeling-api:workspace", args=["a"]))
    assert statuses == {**{f"a-{role}": 200 for role in ROLES}, "b-admin": 404, "anonymous": 401}


def test_only_admins_rename_their_workspace(teams):
    url = reverse("labeling-api:workspace", args=["a"])
    statuses = status_by_role(teams, "patch", url, {"name": "Renamed"})
    assert statuses == {
        "a-admin": 200,
        **{f"a-{role}": 403 for role in ROLES if role != "admin"},
        "b-admin": 404,
        "anonymous": 401,
    }
    assert Workspace.objects.get(slug="a").name == "Renamed"
    response = caller(teams, "a-admin").patch(url, {"description": "Ours"}, format="json")
    assert response.json()["description"] == "Ours" and response.json()["name"] == "Renamed"
    assert caller(teams, "a-admin").patch(url, {"name": ""}, format="json").status_code == 400


# --- Members ---------------------------------------------------------------------------------


def test_admins_and_managers_list_members_of_their_workspace_only(teams):
    url = reverse("labeling-api:members", args=["a"])
    statuses = status_by_role(teams, "get", url)
    assert statuses == {
        "a-admin": 200,
        "a-manager": 200,
        "a-reviewer": 403,
        "a-labeler": 403,
        "a-service": 403,
        "b-admin": 404,
        "anonymous": 401,
    }
    members = caller(teams, "a-manager").get(url).json()
    assert [(m["username"], m["role"]) for m in members] == sorted(
        (f"a-{role}", role) for role in ROLES
    )
    assert members[0]["email"] == "a-admin@example.com" and members[0]["joined"]


def test_only_admins_add_members_and_change_roles(teams):
    newcomer = UserFactory(role=False)
    url = reverse("labeling-api:members", args=["a"])
    body = {"username": newcomer.username, "role": "reviewer"}
    statuses = status_by_role(teams, "post", url, body)
    assert statuses == {
        "a-admin": 200,
        **{f"a-{role}": 403 for role in ROLES if role != "admin"},
        "b-admin": 404,
        "anonymous": 401,
    }
    assert Membership.objects.get(workspace__slug="a", user=newcomer).role == Role.REVIEWER
    changed = caller(teams, "a-admin").post(
        url, {"username": newcomer.username, "role": "manager"}, format="json"
    )
    assert changed.json()["role"] == "manager"
    newcomer.refresh_from_db()
    assert newcomer.is_staff  # managers use the Django admin


@pytest.mark.parametrize(
    "body, field",
    [
        ({"username": "nobody-here", "role": "labeler"}, "username"),
        ({"username": "a-labeler", "role": "owner"}, "role"),
        ({"role": "labeler"}, "username"),
    ],
)
def test_an_unknown_user_or_role_is_400_naming_it(teams, body, field):
    url = reverse("labeling-api:members", args=["a"])
    response = caller(teams, "a-admin").post(url, body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    if field == "username" and "username" in body:
        assert "nobody-here" in response.json()["username"][0]


def test_a_member_of_another_workspace_is_added_not_moved(teams):
    url = reverse("labeling-api:members", args=["a"])
    body = {"username": "b-labeler", "role": "labeler"}
    assert caller(teams, "a-admin").post(url, body, format="json").status_code == 200
    b_labeler = teams["b"][1]["labeler"]
    assert set(
        Membership.objects.filter(user=b_labeler).values_list("workspace__slug", flat=True)
    ) == {
        "a",
        "b",
    }


def test_only_admins_remove_members(teams):
    for who in ("a-manager", "a-reviewer", "a-labeler", "a-service"):
        url = reverse("labeling-api:member", args=["a", "a-labeler"])
        assert caller(teams, who).delete(url).status_code == 403, who
    url = reverse("labeling-api:member", args=["a", "a-labeler"])
    assert caller(teams, "b-admin").delete(url).status_code == 404
    assert caller(teams, "anonymous").delete(url).status_code == 401
    assert caller(teams, "a-admin").delete(url).status_code == 204
    assert not Membership.objects.filter(workspace__slug="a", user__username="a-labeler").exists()
    assert caller(teams, "a-admin").delete(url).status_code == 404  # not a member any more
    other = reverse("labeling-api:member", args=["a", "b-labeler"])
    assert caller(teams, "a-admin").delete(other).status_code == 404


def test_the_last_admin_can_neither_leave_nor_step_down(teams):
    admin = caller(teams, "a-admin")
    url = reverse("labeling-api:member", args=["a", "a-admin"])
    response = admin.delete(url)
    assert response.status_code == 400
    assert "admin" in response.json()["role"][0]
    demoted = admin.post(
        reverse("labeling-api:members", args=["a"]),
        {"username": "a-admin", "role": "manager"},
        format="json",
    )
    assert demoted.status_code == 400
    workspaces.set_role(
        workspace=teams["a"][0], user=teams["a"][1]["manager"], role=Role.ADMIN, by=None
    )
    assert admin.delete(url).status_code == 204


# --- Audit trail -----------------------------------------------------------------------------


def test_only_admins_read_the_audit_trail(teams):
    statuses = status_by_role(teams, "get", reverse("labeling-api:audit", args=["a"]))
    assert statuses == {
        "a-admin": 200,
        **{f"a-{role}": 403 for role in ROLES if role != "admin"},
        "b-admin": 404,
        "anonymous": 401,
    }


def test_the_audit_trail_holds_only_its_workspace_events(teams):
    rows = caller(teams, "a-admin").get(reverse("labeling-api:audit", args=["a"])).json()
    events = AuditEvent.objects.filter(workspace__slug="a").order_by("-pk")
    assert [row["id"] for row in rows["results"]] == [event.pk for event in events]
    assert {row["details"]["member"] for row in rows["results"]} == {f"a-{r}" for r in ROLES}


def test_the_audit_trail_pages_by_cursor_newest_first(teams):
    admin = caller(teams, "a-admin")
    url = reverse("labeling-api:audit", args=["a"])
    expected = list(
        AuditEvent.objects.filter(workspace__slug="a").order_by("-pk").values_list("pk", flat=True)
    )
    seen, page = [], admin.get(url, {"limit": 2}).json()
    while True:
        assert len(page["results"]) <= 2
        seen += [row["id"] for row in page["results"]]
        if page["next"] is None:
            break
        page = admin.get(page["next"]).json()
    assert seen == expected


@pytest.mark.parametrize(
    "params, field",
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"before": "x"}, "before"),
        ({"action": "deleted_everything"}, "action"),
    ],
)
def test_bad_audit_parameters_are_400_naming_them(teams, params, field):
    response = caller(teams, "a-admin").get(reverse("labeling-api:audit", args=["a"]), params)
    assert response.status_code == 400
    assert field in response.json()


def test_the_audit_trail_filters_by_action_dataset_and_actor(teams):
    workspace, people = teams["a"]
    admin = caller(teams, "a-admin")
    url = reverse("labeling-api:audit", args=["a"])
    admin.patch(
        reverse("labeling-api:dataset", args=["a-data"]), {"guidelines": "New."}, format="json"
    )
    newcomer = UserFactory(role=False)
    workspaces.set_role(workspace=workspace, user=newcomer, role=Role.LABELER, by=people["manager"])

    def ids(**params):
        return [row["id"] for row in admin.get(url, params).json()["results"]]

    guidelines = AuditEvent.objects.get(action=AuditEvent.Action.GUIDELINES_CHANGED)
    assert ids(action="guidelines_changed") == [guidelines.pk]
    assert ids(dataset="a-data") == [guidelines.pk]
    assert ids(dataset="b-data") == []  # another workspace's dataset: nothing of it here
    by_manager = AuditEvent.objects.get(actor=people["manager"])
    assert ids(actor="a-manager") == [by_manager.pk]
    assert ids(actor="a-admin", action="member_changed") == []
    row = admin.get(url, {"action": "guidelines_changed"}).json()["results"][0]
    assert row["actor"] == "a-admin" and row["via"] == "token" and row["dataset"] == "a-data"
    assert len(row["token"]) == 12


def test_a_slug_taken_between_the_check_and_the_insert_is_refused_naming_it(teams, monkeypatch):
    # As if another request made "a" after this one's full_clean looked.
    monkeypatch.setattr(Workspace, "validate_unique", lambda self, exclude=None: None)
    with pytest.raises(ValidationError) as refused:
        workspaces.create_workspace(slug="a", name="Again", by=teams["a"][1]["admin"])
    assert "slug" in refused.value.message_dict
    assert Workspace.objects.filter(slug="a").count() == 1
