"""The audit trail: gold changes and export pulls are recorded (who, when, how, which token by
its fingerprint, how many rows), and the workspace pages show it to admins only."""

from __future__ import annotations

import gzip
import io
import json

import pytest
from django.core.signals import request_finished
from django.db import close_old_connections, transaction
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient, APIRequestFactory

from labeling import export_api, exports, workspace_views
from labeling.models import AuditEvent, Membership, Role
from labeling.services import adjudication, gold
from labeling.services.audit import token_fingerprint
from tests.factories import UserFactory, make_prompt, make_team
from tests.labeling.quality_data import rank

GOLD = AuditEvent.Action.GOLD_CHANGED
EXPORT = AuditEvent.Action.EXPORT_PULLED


@pytest.fixture
def team(db):
    """Workspace "a" with a member of each role and its dataset "a-data"; workspace "b" too."""
    make_team("b")
    workspace, people = make_team("a")
    return workspace, people, workspace.datasets.get()


@pytest.fixture
def ranked(team):
    """a-data with three prompts of three completions, each ranked by two labelers: six
    rankings, eighteen comparisons."""
    _, people, dataset = team
    dataset.pool_labelers.add(people["reviewer"])  # reviewers label from within the pool too
    for _ in range(3):
        prompt = make_prompt(dataset, completions=3)
        rank(prompt, people["labeler"], "c0 > c1 > c2")
        rank(prompt, people["reviewer"], "c0 > c2 > c1")
    return dataset


def api_client(user):
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client, token.key


def only(action):
    (event,) = AuditEvent.objects.filter(action=action)
    return event


# --- Gold ------------------------------------------------------------------------------------


def test_gold_changes_record_the_prompt_the_order_and_who(team):
    workspace, people, dataset = team
    prompt = make_prompt(dataset, completions=3, external_id="q-7")
    gold.set_gold(prompt=prompt, order=[["c1"], ["c0", "c2"]], user=people["manager"])
    gold.set_gold(prompt=prompt, order=[["c1"], ["c0", "c2"]], user=people["manager"])  # same
    event = only(GOLD)
    assert (event.workspace, event.dataset, event.actor) == (workspace, dataset, people["manager"])
    assert (event.actor_name, event.via, event.token) == ("a-manager", "system", "")
    assert event.details == {
        "prompt": "q-7",
        "source": "set",
        "order": [["c1"], ["c0", "c2"]],
        "before": None,
    }
    gold.set_gold(prompt=prompt, order=None, user=people["admin"])
    unmarked = AuditEvent.objects.filter(action=GOLD).first()
    assert unmarked.details == {
        "prompt": "q-7",
        "source": "unmark",
        "order": None,
        "before": [["c1"], ["c0", "c2"]],
    }
    assert unmarked.actor_name == "a-admin"


def test_a_gold_change_that_rolls_back_leaves_no_record(team):
    prompt = make_prompt(team[2], completions=2)
    with pytest.raises(RuntimeError), transaction.atomic():
        gold.set_gold(prompt=prompt, order=[["c0"], ["c1"]])
        raise RuntimeError("after the change")
    assert not AuditEvent.objects.filter(action=GOLD).exists()


def test_promoting_to_gold_is_recorded_with_the_labelers_order(small, staff):
    gold.promote_to_gold(prompt=small["p1"], user=staff)
    event = only(GOLD)
    assert event.details["source"] == "promote"
    assert event.details["order"] == [["c0"], ["c1"], ["c2"]]
    assert event.details["prompt"] == small["p1"].external_id
    assert event.dataset == small["dataset"]


def test_an_adjudication_that_promotes_to_gold_is_recorded_as_the_reviewers(small, people):
    reviewer = UserFactory(role=Role.REVIEWER)
    prompt = small["p2"]
    ids = dict(prompt.completions.values_list("external_id", "pk"))
    adjudication.adjudicate_prompt(
        prompt=prompt, order=[[ids["c2"]], [ids["c0"], ids["c1"]]], note="", reviewer=reviewer
    )
    assert not AuditEvent.objects.filter(action=GOLD).exists()  # not promoted: no gold change
    adjudication.adjudicate_prompt(
        prompt=prompt,
        order=[[ids["c2"]], [ids["c0"], ids["c1"]]],
        note="settled",
        reviewer=reviewer,
        promote_to_gold=True,
    )
    event = only(GOLD)
    assert event.actor == reviewer
    assert event.details["source"] == "adjudication"
    assert event.details["order"] == [["c2"], ["c0", "c1"]]


def test_gold_set_on_the_quality_page_is_recorded_as_a_session(client, small):
    manager = UserFactory(role=Role.MANAGER)
    client.force_login(manager)
    prompt = small["p1"]
    url = reverse("labeling:quality-gold", args=[small["dataset"].slug, prompt.pk])
    assert client.post(url, {"action": "promote"}).status_code == 302
    event = only(GOLD)
    assert (event.actor, event.via, event.token) == (manager, "session", "")


# --- Exports ---------------------------------------------------------------------------------


def pull(client, dataset, endpoint="comparisons", **params):
    url = reverse(f"labeling-api:{endpoint}", args=[dataset.slug])
    response = client.get(url, params)
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)


def test_a_jsonl_pull_records_the_token_fingerprint_filters_and_rows(team, ranked):
    client, key = api_client(team[1]["service"])
    body = pull(client, ranked, format="hh", exclude_gold="false")
    event = only(EXPORT)
    assert (event.actor_name, event.via, event.dataset) == ("a-service", "token", ranked)
    assert event.token == token_fingerprint(key)
    assert key not in json.dumps(event.details) and key not in event.token
    assert event.details["rows"] == len(body.splitlines()) == 18
    assert event.details["complete"] is True
    assert event.details["export"] == "comparisons" and event.details["output"] == "jsonl"
    assert event.details["filters"]["format"] == "hh"
    assert event.details["filters"]["exclude_gold"] is False
    assert event.details["cursor"] > 0


def test_gzipped_rankings_and_consensus_pulls_count_their_rows(team, ranked):
    client, _ = api_client(team[1]["admin"])
    url = reverse("labeling-api:rankings", args=[ranked.slug])
    response = client.get(url, {"split": "train", "seed": 3}, HTTP_ACCEPT_ENCODING="gzip")
    assert response["Content-Encoding"] == "gzip"
    body = gzip.decompress(b"".join(response.streaming_content))
    event = AuditEvent.objects.filter(action=EXPORT).first()
    assert event.details["export"] == "rankings"
    assert event.details["rows"] == len(body.splitlines())
    assert event.details["filters"]["split"] == {"part": "train", "test_share": 0.1, "seed": 3}
    consensus = pull(client, ranked, consensus="true", include="models")
    event = AuditEvent.objects.filter(action=EXPORT).first()
    assert event.details["rows"] == len(consensus.splitlines()) > 0
    assert event.details["filters"]["include"] == ["models"]


def test_a_parquet_pull_records_its_rows(team, ranked):
    pyarrow_parquet = pytest.importorskip("pyarrow.parquet")
    client, _ = api_client(team[1]["manager"])
    body = pull(client, ranked, output="parquet", include_ids="true")
    table = pyarrow_parquet.read_table(io.BytesIO(body))
    event = only(EXPORT)
    assert event.details["output"] == "parquet"
    assert event.details["rows"] == table.num_rows == 18
    assert event.details["complete"] is True


def test_an_adjudicated_parquet_pull_records_its_rows(team, ranked):
    pyarrow_parquet = pytest.importorskip("pyarrow.parquet")
    prompt = ranked.prompts.first()
    ids = list(prompt.completions.order_by("position").values_list("pk", flat=True))
    adjudication.adjudicate_prompt(
        prompt=prompt, order=[[pk] for pk in ids], note="", reviewer=team[1]["reviewer"]
    )
    client, _ = api_client(team[1]["service"])
    body = pull(client, ranked, output="parquet", adjudicated="true")
    event = only(EXPORT)
    assert event.details["rows"] == pyarrow_parquet.read_table(io.BytesIO(body)).num_rows == 3


def test_a_pull_closed_early_is_recorded_incomplete_with_the_rows_sent(team, ranked, monkeypatch):
    monkeypatch.setattr(exports, "CHUNK_SIZE", 4)
    _, key = api_client(team[1]["service"])
    url = reverse("labeling-api:comparisons", args=[ranked.slug])
    # The view's own response, as a server gets it (the test client would read it all).
    request = APIRequestFactory().get(url, HTTP_AUTHORIZATION=f"Token {key}")
    response = export_api.comparison_export(request, slug=ranked.slug)
    first = next(iter(response.streaming_content))
    assert not AuditEvent.objects.filter(action=EXPORT).exists()  # still streaming
    # The client went away: the server closes the response. (Without closing the test's
    # database connection, which Django's request_finished would, as its test client knows.)
    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)
    event = only(EXPORT)
    assert event.details["complete"] is False
    assert event.details["rows"] == len(first.splitlines()) == 4
    assert event.token == token_fingerprint(key)


def test_a_pull_by_a_signed_in_user_is_recorded_as_a_session(client, team, ranked):
    client.force_login(team[1]["admin"])
    response = client.get(reverse("labeling-api:comparisons", args=[ranked.slug]))
    b"".join(response.streaming_content)
    event = only(EXPORT)
    assert (event.actor_name, event.via, event.token) == ("a-admin", "session", "")


def test_refused_pulls_are_not_recorded(team, ranked):
    client, _ = api_client(team[1]["service"])
    url = reverse("labeling-api:comparisons", args=[ranked.slug])
    assert client.get(url, {"format": "csv"}).status_code == 400
    assert api_client(team[1]["labeler"])[0].get(url).status_code == 403
    assert not AuditEvent.objects.filter(action=EXPORT).exists()


def test_recording_a_pull_is_one_insert_whatever_its_size(
    team, ranked, monkeypatch, django_assert_max_num_queries
):
    monkeypatch.setattr(exports, "CHUNK_SIZE", 2)
    client, _ = api_client(team[1]["service"])
    with django_assert_max_num_queries(40) as captured:
        pull(client, ranked)
    inserts = [q["sql"] for q in captured.captured_queries if "labeling_auditevent" in q["sql"]]
    assert len(inserts) == 1 and inserts[0].startswith("INSERT")


# --- Pages -----------------------------------------------------------------------------------


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def test_the_workspaces_page_shows_admins_their_members(team):
    page = signed_in(team[1]["admin"]).get(reverse("labeling:workspaces"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "a-labeler@example.com" in html and "Audit trail" in html
    assert "b-labeler" not in html and "Team b" not in html
    assert 'name="csrfmiddlewaretoken"' in html


def test_other_members_see_their_role_but_not_the_members(team):
    for role in ("manager", "reviewer", "labeler", "service"):
        page = signed_in(team[1][role]).get(reverse("labeling:workspaces"))
        assert page.status_code == 200
        html = page.content.decode()
        assert f"<strong>{role}</strong>" in html
        assert "a-admin@example.com" not in html and "Audit trail" not in html


def test_anonymous_visitors_are_sent_to_log_in(team):
    for url in (reverse("labeling:workspaces"), reverse("labeling:workspace-audit", args=["a"])):
        response = Client().get(url)
        assert response.status_code == 302 and "/login/" in response["Location"]


def test_the_nav_offers_workspaces_to_their_admins_only(team):
    link = f'href="{reverse("labeling:workspaces")}"'
    assert link in signed_in(team[1]["admin"]).get(reverse("labeling:home")).content.decode()
    for role in ("manager", "labeler"):
        page = signed_in(team[1][role]).get(reverse("labeling:home"))
        assert link not in page.content.decode()


def test_admins_add_change_and_remove_members_on_the_page(team):
    workspace, people, _ = team
    admin = signed_in(people["admin"])
    newcomer = UserFactory(role=False, username="newcomer")
    url = reverse("labeling:workspace-member-set", args=["a"])
    response = admin.post(url, {"username": "newcomer", "role": "labeler"})
    assert response.status_code == 302 and response["Location"] == reverse("labeling:workspaces")
    admin.post(url, {"username": "newcomer", "role": "reviewer"})
    assert Membership.objects.get(workspace=workspace, user=newcomer).role == Role.REVIEWER
    event = AuditEvent.objects.filter(action=AuditEvent.Action.MEMBER_CHANGED).first()
    assert (event.actor, event.via, event.details["role"]) == (
        people["admin"],
        "session",
        "reviewer",
    )
    remove = reverse("labeling:workspace-member-remove", args=["a", newcomer.pk])
    assert admin.post(remove).status_code == 302
    assert not Membership.objects.filter(workspace=workspace, user=newcomer).exists()


def test_refused_member_changes_say_why(team):
    workspace, people, _ = team
    admin = signed_in(people["admin"])
    url = reverse("labeling:workspace-member-set", args=["a"])
    response = admin.post(url, {"username": "nobody-here", "role": "labeler"})
    assert response.status_code == 400
    assert "No user is named &#x27;nobody-here&#x27;." in response.content.decode()
    response = admin.post(url, {"username": "a-admin", "role": "labeler"})
    assert response.status_code == 400 and "at least one admin" in response.content.decode()
    remove = reverse("labeling:workspace-member-remove", args=["a", people["admin"].pk])
    followed = admin.post(remove, follow=True)
    assert "at least one admin" in followed.content.decode()
    assert Membership.objects.filter(workspace=workspace, user=people["admin"]).exists()


def test_only_admins_of_the_workspace_change_members_on_the_page(team):
    url = reverse("labeling:workspace-member-set", args=["a"])
    body = {"username": "a-labeler", "role": "admin"}
    assert signed_in(team[1]["manager"]).post(url, body).status_code == 403
    b_admin = Membership.objects.get(workspace__slug="b", role=Role.ADMIN).user
    assert signed_in(b_admin).post(url, body).status_code == 404
    remove = reverse("labeling:workspace-member-remove", args=["a", team[1]["labeler"].pk])
    assert signed_in(team[1]["manager"]).post(remove).status_code == 403
    assert Membership.objects.get(user=team[1]["labeler"], workspace__slug="a").role == "labeler"


def test_member_forms_need_the_csrf_token(team):
    client = Client(enforce_csrf_checks=True)
    client.force_login(team[1]["admin"])
    url = reverse("labeling:workspace-member-set", args=["a"])
    assert client.post(url, {"username": "a-labeler", "role": "admin"}).status_code == 403


def test_the_audit_page_is_for_the_workspaces_admins(team):
    url = reverse("labeling:workspace-audit", args=["a"])
    assert signed_in(team[1]["admin"]).get(url).status_code == 200
    for role in ("manager", "reviewer", "labeler", "service"):
        assert signed_in(team[1][role]).get(url).status_code == 403, role
    b_admin = Membership.objects.get(workspace__slug="b", role=Role.ADMIN).user
    assert signed_in(b_admin).get(url).status_code == 404


def test_the_audit_page_filters_pages_and_escapes(team, monkeypatch):
    workspace, people, dataset = team
    prompt = make_prompt(dataset, completions=2, external_id="<script>alert(1)</script>")
    gold.set_gold(prompt=prompt, order=[["c0"], ["c1"]], user=people["manager"])
    admin = signed_in(people["admin"])
    url = reverse("labeling:workspace-audit", args=["a"])
    html = admin.get(url, {"action": "gold_changed"}).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "Membership changed" not in html.split("<tbody>")[1]
    html = admin.get(url, {"dataset": "a-data"}).content.decode()
    assert "Gold prompt changed" in html and "Membership changed" not in html.split("<tbody>")[1]
    assert admin.get(url, {"dataset": "b-data"}).status_code == 400  # not a dataset of a
    assert admin.get(url, {"action": "nonsense"}).status_code == 400
    monkeypatch.setattr(workspace_views, "AUDIT_PAGE_SIZE", 2)
    first = admin.get(url)
    events = list(AuditEvent.objects.filter(workspace=workspace).order_by("-pk"))
    assert list(first.context["events"]) == events[:2]
    assert first.context["older"] == f"before={events[1].pk}"
    second = admin.get(f"{url}?{first.context['older']}")
    assert list(second.context["events"]) == events[2:4]
    assert second.context["newest"] == ""
