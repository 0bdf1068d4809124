"""The quality dashboard and prompt pages, the quality API endpoint and the admin's gold and
exclusion actions."""

from __future__ import annotations

import html
import json
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from labeling.models import Exclusion, Prompt, QualityReport, Ranking
from labeling.services import gold, quality_report
from tests.factories import CompletionFactory, make_prompt, token_client


def test_dashboard_shows_the_report(client, small, staff, django_assert_max_num_queries):
    client.force_login(staff)
    url = reverse("labeling:quality", args=[small["dataset"].slug])
    quality_report.refresh_report(dataset_id=small["dataset"].pk)  # what the worker does
    with django_assert_max_num_queries(8):
        response = client.get(url)
    page = response.content.decode()
    assert response.status_code == 200
    assert "0.500" in page
    assert "<svg" in page
    assert all(name in page for name in ("ann", "bob", "cat"))
    assert reverse("labeling:quality-prompt", args=[small["dataset"].slug, small["p2"].pk]) in page


def test_dashboard_of_a_dataset_without_rankings(client, dataset, prompt, staff):
    client.force_login(staff)
    response = client.get(reverse("labeling:quality", args=[dataset.slug]))
    page = response.content.decode()
    assert response.status_code == 200
    assert "not enough data" in page
    assert "No rankings yet." in page
    data = response.context["data"]
    assert data["agreement"]["pairwise"]["rate"] is None
    assert data["progress"]["not_started"] == 1
    assert not QualityReport.objects.exists()  # a GET writes nothing


def test_labeler_table_sorts_by_any_column(client, small, staff):
    client.force_login(staff)
    url = reverse("labeling:quality", args=[small["dataset"].slug])
    page = client.get(url, {"sort": "rankings", "dir": "desc"}).content.decode()
    assert page.index(">ann ") < page.index(">bob ") < page.index(">cat ")
    page = client.get(url, {"sort": "rankings"}).content.decode()
    assert page.index(">cat ") < page.index(">bob ") < page.index(">ann ")


def test_staff_exclude_from_the_dashboards_dataset_and_reinstate(client, small, people, staff):
    client.force_login(staff)
    bob, dataset = people["bob"], small["dataset"]
    dashboard = reverse("labeling:quality", args=[dataset.slug])
    quality_report.refresh_report(dataset_id=dataset.pk)
    response = client.post(
        reverse("labeling:labeler-exclude", args=[dataset.slug, bob.pk]), {"next": dashboard}
    )
    assert response.status_code == 302 and response.url == dashboard
    bob.refresh_from_db()
    assert bob.is_active is True  # excluded from this dataset only; the account stays open
    assert Exclusion.objects.filter(labeler=bob, dataset=dataset).exists()
    assert QualityReport.objects.get(dataset=dataset).invalidated is True
    page = client.get(dashboard).content.decode()
    assert "Reinstate" in page
    client.post(
        reverse("labeling:labeler-reinstate", args=[dataset.slug, bob.pk]),
        {"next": "https://evil.example/"},
    )
    assert not Exclusion.objects.exists()


def test_prompt_page_escapes_model_output_and_marks_gold(client, small, staff):
    client.force_login(staff)
    prompt = small["p4"]
    prompt.completions.filter(external_id="c1").update(text="<script>alert(1)</script>")
    url = reverse("labeling:quality-prompt", args=[small["dataset"].slug, prompt.pk])
    page = client.get(url).content.decode()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    gold_url = reverse("labeling:quality-gold", args=[small["dataset"].slug, prompt.pk])
    response = client.post(gold_url, {"action": "set", "order": "c1 > c0 = c9"})
    assert response.status_code == 400
    assert "c9 not completions of this prompt" in response.content.decode()
    response = client.post(gold_url, {"action": "set", "order": "c1 > c0 = c2"})
    assert response.status_code == 302
    prompt.refresh_from_db()
    assert prompt.gold_order == [["c1"], ["c0", "c2"]]


def test_prefilled_gold_order_with_awkward_ids_submits_back_unchanged(client, dataset, staff):
    prompt = make_prompt(dataset, completions=0)
    names = ["a>b", "x = y", 'say "hi"', "c\\d", "日本 語"]
    for position, name in enumerate(names):
        CompletionFactory(prompt=prompt, position=position, external_id=name)
    expected = [["a>b"], ["x = y", 'say "hi"'], ["c\\d"], ["日本 語"]]
    gold.set_gold(prompt=prompt, order=expected)
    client.force_login(staff)
    page = client.get(reverse("labeling:quality-prompt", args=[dataset.slug, prompt.pk]))
    prefilled = re.search(r'name="order" value="([^"]*)"', page.content.decode())
    assert prefilled is not None
    response = client.post(
        reverse("labeling:quality-gold", args=[dataset.slug, prompt.pk]),
        {"action": "set", "order": html.unescape(prefilled.group(1))},
    )
    assert response.status_code == 302
    prompt.refresh_from_db()
    assert prompt.gold_order == expected


def test_promote_button_on_a_unanimous_prompt(client, small, staff):
    client.force_login(staff)
    url = reverse("labeling:quality-prompt", args=[small["dataset"].slug, small["p1"].pk])
    assert "Promote" in client.get(url).content.decode()
    client.post(
        reverse("labeling:quality-gold", args=[small["dataset"].slug, small["p1"].pk]),
        {"action": "promote"},
    )
    small["p1"].refresh_from_db()
    assert small["p1"].is_gold is True


def test_labelers_cannot_see_quality_pages_or_act(client, small, people):
    labeler = people["ann"]
    client.force_login(labeler)
    slug = small["dataset"].slug
    for url in (
        reverse("labeling:quality-index"),
        reverse("labeling:quality", args=[slug]),
        reverse("labeling:quality-prompt", args=[slug, small["p1"].pk]),
    ):
        response = client.get(url)
        assert response.status_code == 403, url
    for url in (
        reverse("labeling:labeler-exclude", args=[slug, people["bob"].pk]),
        reverse("labeling:quality-gold", args=[slug, small["p1"].pk]),
        reverse("labeling:quality-refresh", args=[slug]),
    ):
        assert client.post(url, {"action": "promote"}).status_code == 403
    people["bob"].refresh_from_db()
    small["p1"].refresh_from_db()
    assert not Exclusion.objects.exists() and not small["p1"].is_gold
    assert not QualityReport.objects.exists()


def test_quality_report_over_the_api(small, staff):
    response = token_client(staff).get(
        reverse("labeling-api:quality", args=[small["dataset"].slug])
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["report"]["agreement"]["pairwise"]["rate"] == pytest.approx(0.5)
    assert body["ranking_cursor"] == Ranking.objects.order_by("-pk").first().pk


# --- Admin -----------------------------------------------------------------------------------


def test_admin_checks_a_gold_order_and_promotes_unanimous_prompts(client, small, staff):
    client.force_login(staff)
    prompt = small["p4"]
    url = reverse("admin:labeling_prompt_change", args=[prompt.pk])
    form = {
        "dataset": prompt.dataset_id,
        "external_id": prompt.external_id,
        "messages": json.dumps(prompt.messages),
        "metadata": "{}",
        "is_gold": "on",
        "gold_order": '[["c0"], ["c7"]]',
        "completions-TOTAL_FORMS": "3",
        "completions-INITIAL_FORMS": "3",
        "completions-MIN_NUM_FORMS": "0",
        "completions-MAX_NUM_FORMS": "1000",
    }
    for i, completion in enumerate(prompt.completions.all()):
        form[f"completions-{i}-id"] = completion.pk
        form[f"completions-{i}-prompt"] = prompt.pk
    response = client.post(url, form)
    assert response.status_code == 200
    assert "c7 not completions of this prompt" in response.content.decode()
    prompt.refresh_from_db()
    assert not prompt.is_gold
    response = client.post(url, form | {"gold_order": '[["c2"], ["c0", "c1"]]'})
    assert response.status_code == 302
    prompt.refresh_from_db()
    assert prompt.gold_order == [["c2"], ["c0", "c1"]]

    changelist = reverse("admin:labeling_prompt_changelist")
    client.post(
        changelist,
        {
            "action": "promote_unanimous",
            "_selected_action": [small["p1"].pk, small["p2"].pk],
        },
    )
    assert Prompt.objects.get(pk=small["p1"].pk).is_gold
    assert not Prompt.objects.get(pk=small["p2"].pk).is_gold


def test_admin_user_actions_exclude_and_reinstate(client, small, people, staff):
    client.force_login(staff)
    changelist = reverse("admin:auth_user_changelist")
    bob, cat = people["bob"], people["cat"]
    client.post(
        changelist, {"action": "exclude_labelers", "_selected_action": [bob.pk, cat.pk, staff.pk]}
    )
    bob.refresh_from_db()
    cat.refresh_from_db()
    staff.refresh_from_db()
    assert (bob.is_active, cat.is_active, staff.is_active) == (False, False, True)
    client.post(changelist, {"action": "reinstate_labelers", "_selected_action": [bob.pk]})
    bob.refresh_from_db()
    assert bob.is_active


def test_unticking_active_in_the_user_admin_is_an_exclusion(client, small, people, staff):
    client.force_login(staff)
    bob = people["bob"]
    quality_report.refresh_report(dataset_id=small["dataset"].pk)
    url = reverse("admin:auth_user_change", args=[bob.pk])
    form = {
        "username": bob.username,
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "initial-date_joined_0": "2026-01-01",
        "initial-date_joined_1": "00:00:00",
    }  # is_active left out: unticked
    response = client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    bob.refresh_from_db()
    assert not bob.is_active
    assert LogEntry.objects.filter(
        object_id=str(bob.pk), change_message__startswith="Excluded"
    ).exists()
    assert QualityReport.objects.get(dataset=small["dataset"]).invalidated
