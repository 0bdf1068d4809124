"""Adding labelers in bulk (`invite_labelers`): all or nothing with line-numbered refusals,
existing accounts reused, invitation links that set a password, the page and the endpoint."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from labeling import tasks
from labeling.models import AuditEvent, Dataset, LabelerGroup, Membership, Role
from labeling.services import invites
from tests.factories import DatasetFactory, UserFactory, WorkspaceFactory, token_client


@pytest.fixture
def team(db):
    workspace = WorkspaceFactory(slug="team", name="Team")
    admin = UserFactory(username="boss", role=False)
    Membership.objects.create(workspace=workspace, user=admin, role=Role.ADMIN)
    dataset = DatasetFactory(workspace=workspace, slug="team-data")
    group = LabelerGroup.objects.create(workspace=workspace, name="vendor")
    return {"workspace": workspace, "admin": admin, "dataset": dataset, "group": group}


@pytest.fixture
def queue_in_process(monkeypatch):
    """`.delay` runs the task at once, in this process."""
    monkeypatch.setattr(tasks.send_invitation, "delay", lambda *args: tasks.send_invitation(*args))


def invite(team, lines, **kwargs):
    return invites.invite_labelers(
        workspace=team["workspace"], lines=lines, by=team["admin"], **kwargs
    )


def test_new_accounts_are_made_members_pooled_grouped_and_given_a_link(team):
    rows = invite(
        team,
        "username,email\nann,ann@example.org\n\nbob\n# a comment\n",
        datasets=[team["dataset"]],
        groups=[team["group"]],
    )
    assert [(row.username, row.email, row.created) for row in rows] == [
        ("ann", "ann@example.org", True),
        ("bob", "", True),
    ]
    assert all(row.link.startswith("/password-reset/") for row in rows)
    for user in User.objects.filter(username__in=["ann", "bob"]):
        assert not user.has_usable_password() and user.is_active and not user.is_staff
        assert Membership.objects.get(workspace=team["workspace"], user=user).role == Role.LABELER
        assert set(Dataset.objects.offered_to(user)) == {team["dataset"]}
    assert set(team["group"].members.values_list("username", flat=True)) == {"ann", "bob"}
    event = AuditEvent.objects.get(action=AuditEvent.Action.LABELERS_INVITED)
    assert event.details["count"] == 2 and event.details["created"] == ["ann", "bob"]
    assert "password-reset" not in str(event.details)  # never the links


def test_existing_accounts_are_added_as_they_are_without_a_link(team):
    ann = UserFactory(username="ann", email="old@example.org", role=False)
    reviewer = UserFactory(username="rita", role=False)
    Membership.objects.create(workspace=team["workspace"], user=reviewer, role=Role.REVIEWER)
    rows = invite(team, "ANN,new@example.org\nrita,\ncid,cid@example.org")
    assert [(row.username, row.created, row.link == "") for row in rows] == [
        ("ann", False, True),
        ("rita", False, True),
        ("cid", True, False),
    ]
    ann.refresh_from_db()
    assert ann.email == "old@example.org" and ann.has_usable_password()
    assert User.objects.filter(username__iexact="ann").count() == 1
    assert Membership.objects.get(user=ann, workspace=team["workspace"]).role == Role.LABELER
    assert Membership.objects.get(user=reviewer).role == Role.REVIEWER  # kept


def test_a_bad_line_refuses_everything_naming_each_line(team):
    UserFactory(username="zoe", role=False)
    lines = "ann,ann@example.org\nb o b,\ncat,not-an-address\nann,\ndan,a@b.org,extra\n,x@y.org"
    with pytest.raises(ValidationError) as refused:
        invite(team, lines)
    assert refused.value.message_dict["lines"] == [
        "line 2: 'b o b' is not a username (letters, digits and @.+-_ only).",
        "line 3: 'not-an-address' is not an e-mail address.",
        "line 4: ann is on line 1 already.",
        "line 5: give a username and an e-mail address, no more.",
        "line 6: the username is missing.",
    ]
    assert not User.objects.filter(username="ann").exists()
    assert (
        not Membership.objects.filter(workspace=team["workspace"])
        .exclude(user=team["admin"])
        .exists()
    )


def test_the_text_is_bounded(team):
    with pytest.raises(ValidationError, match="at most 1000"):
        invite(team, "\n".join(f"user{i}" for i in range(1001)))
    with pytest.raises(ValidationError, match="at most 200 KB"):
        invite(team, "a" * 200_001)
    with pytest.raises(ValidationError, match="one `username,email` line"):
        invite(team, "\n\n")
    assert User.objects.count() == 1


def test_only_managers_invite_and_only_admins_make_managers(team):
    manager = UserFactory(role=False)
    Membership.objects.create(workspace=team["workspace"], user=manager, role=Role.MANAGER)
    labeler = UserFactory(role=False)
    Membership.objects.create(workspace=team["workspace"], user=labeler, role=Role.LABELER)
    with pytest.raises(PermissionDenied):
        invites.invite_labelers(workspace=team["workspace"], lines="ann", by=labeler)
    with pytest.raises(PermissionDenied):
        invites.invite_labelers(
            workspace=team["workspace"], lines="ann", by=manager, role=Role.MANAGER
        )
    rows = invites.invite_labelers(
        workspace=team["workspace"], lines="ann", by=manager, role=Role.REVIEWER
    )
    assert rows[0].created
    invite(team, "max", role=Role.MANAGER)
    assert User.objects.get(username="max").is_staff  # the admin site's door, as set_role
    other = DatasetFactory()  # the default workspace
    with pytest.raises(ValidationError, match="datasets of this workspace"):
        invite(team, "eve", datasets=[other])


def test_the_link_sets_a_password_and_the_labeler_signs_in(client, team):
    [row] = invite(team, "ann,ann@example.org", datasets=[team["dataset"]])
    response = client.get(row.link)
    assert response.status_code == 302  # Django moves the token out of the address
    form = client.get(response.url)
    assert form.status_code == 200 and "new_password1" in form.content.decode()
    password = "a-long-new-password-42"
    done = client.post(response.url, {"new_password1": password, "new_password2": password})
    assert done.status_code == 302
    assert client.login(username="ann", password=password)
    page = client.get(reverse("labeling:home")).content.decode()
    assert team["dataset"].name in page
    assert client.get(row.link).status_code == 200  # once used, the link says it is invalid
    assert "new_password1" not in client.get(row.link).content.decode()


def test_new_accounts_with_an_address_are_emailed_their_link(
    client, team, mailoutbox, queue_in_process, django_capture_on_commit_callbacks
):
    UserFactory(username="old", email="old@example.org", role=False)
    with django_capture_on_commit_callbacks(execute=True):
        invite(team, "ann,ann@example.org\nbob\nold,old@example.org")
    assert [mail.to for mail in mailoutbox] == [["ann@example.org"]]
    assert "Team" in mailoutbox[0].subject
    link = re.search(r"http://localhost(/password-reset/\S+/\S+/)", mailoutbox[0].body)
    assert link and client.get(link.group(1)).status_code == 302


def test_no_email_once_the_account_has_a_password(team, mailoutbox):
    invite(team, "ann,ann@example.org")
    ann = User.objects.get(username="ann")
    ann.set_password("chosen-already-1")
    ann.save()
    sent = invites.send_invitation(
        user_id=ann.pk, workspace_name="Team", domain="x", use_https=True
    )
    assert sent is False and not mailoutbox


# --- Page and API -------------------------------------------------------------------------------


def test_the_page_adds_labelers_and_shows_their_links_once(client, team):
    client.force_login(team["admin"])
    url = reverse("labeling:invite", args=["team"])
    assert client.get(url).status_code == 200
    response = client.post(
        url,
        {"lines": "ann,ann@example.org\nbob", "role": "labeler", "datasets": [team["dataset"].pk]},
    )
    page = response.content.decode()
    assert response.status_code == 200 and "/password-reset/" in page
    assert set(Dataset.objects.offered_to(User.objects.get(username="bob"))) == {team["dataset"]}
    response = client.post(url, {"lines": "cat\nd d", "role": "labeler"})
    assert response.status_code == 400 and "line 2: " in response.content.decode()
    assert not User.objects.filter(username="cat").exists()


def test_the_page_takes_an_uploaded_file(client, team):
    client.force_login(team["admin"])
    upload = SimpleUploadedFile("people.csv", b"\xef\xbb\xbfusername,email\nann,ann@example.org\n")
    response = client.post(
        reverse("labeling:invite", args=["team"]), {"file": upload, "role": "labeler"}
    )
    assert response.status_code == 200 and User.objects.filter(username="ann").exists()


def test_the_page_is_for_the_workspaces_managers(client, team):
    labeler = UserFactory(role=False)
    Membership.objects.create(workspace=team["workspace"], user=labeler, role=Role.LABELER)
    client.force_login(labeler)
    url = reverse("labeling:invite", args=["team"])
    assert client.get(url).status_code == 403
    assert client.post(url, {"lines": "ann", "role": "labeler"}).status_code == 403
    client.force_login(UserFactory(role=Role.MANAGER))  # of the default workspace
    assert client.get(url).status_code == 404
    assert not User.objects.filter(username="ann").exists()


def test_the_api_takes_lines_or_a_list(team):
    api = token_client(team["admin"])
    url = reverse("labeling-api:labelers", args=["team"])
    response = api.post(url, {"lines": "ann,ann@example.org", "groups": ["vendor"]}, format="json")
    assert response.status_code == 201
    [row] = response.json()["labelers"]
    assert row["username"] == "ann" and row["created"] and "/password-reset/" in row["link"]
    assert row["link"].startswith("http://testserver/")
    body = {
        "labelers": [{"username": "ann"}, {"username": "bob", "email": "bob@example.org"}],
        "datasets": ["team-data"],
    }
    response = api.post(url, body, format="json")
    assert [(r["username"], r["created"]) for r in response.json()["labelers"]] == [
        ("ann", False),
        ("bob", True),
    ]
    response = api.post(url, {"lines": "cid\nbad name"}, format="json")
    assert response.status_code == 400
    assert response.json()["lines"][0].startswith("line 2: ")
    response = api.post(url, {"lines": "cid", "datasets": ["nope"]}, format="json")
    assert response.json() == {"datasets": ["No such datasets in this workspace: nope."]}
    assert not User.objects.filter(username="cid").exists()


def test_the_api_takes_the_ability_to_manage(team):
    url = reverse("labeling-api:labelers", args=["team"])
    labeler = UserFactory(role=False)
    Membership.objects.create(workspace=team["workspace"], user=labeler, role=Role.LABELER)
    assert token_client(labeler).post(url, {"lines": "ann"}, format="json").status_code == 403
    outsider = token_client(UserFactory(role=False))
    assert outsider.post(url, {"lines": "ann"}, format="json").status_code == 404
    assert not User.objects.filter(username="ann").exists()


def test_an_account_made_meanwhile_by_another_request_is_a_refusal(team, monkeypatch):
    """What two requests adding the same new username at once look like to the second one."""

    def made_meanwhile(objs, *args, **kwargs):
        User.objects.create(username=objs[0].username)  # the other request, committed first
        return original(objs, *args, **kwargs)

    original = User.objects.bulk_create
    monkeypatch.setattr(User.objects, "bulk_create", made_meanwhile)
    with pytest.raises(ValidationError, match="made meanwhile"):
        invite(team, "ann")
    assert not Membership.objects.filter(user__username="ann").exists()
