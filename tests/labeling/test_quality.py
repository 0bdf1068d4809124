"""The quality report, excluding labelers, gold prompts and the consensus exports, on datasets
small enough to work out by hand."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from labeling import report
from labeling.models import Assignment, Comparison, Dataset, Prompt, QualityReport, Ranking
from labeling.services import datasets, exclusion, gold, leasing, quality_report, rankings
from tests.factories import DatasetFactory, UserFactory, make_prompt, token_client


def rank(
    prompt: Prompt,
    labeler: Any,
    order: str,
    *,
    seconds: float = 30.0,
    ratings: dict[str, dict[str, int]] | None = None,
    flags: dict[str, list[str]] | None = None,
) -> Ranking:
    """Submit `labeler`'s ranking of `prompt`, written like 'c0 > c1 = c2'; every completion
    rated 4 on the dataset's criteria unless `ratings` says otherwise."""
    ids = dict(prompt.completions.values_list("external_id", "pk"))
    groups = [[ids[name.strip()] for name in group.split("=")] for group in order.split(">")]
    if ratings is None:
        ratings = {name: {c: 4 for c in prompt.dataset.criteria} for name in ids}
    now = timezone.now()
    assignment = Assignment.objects.create(
        prompt=prompt, labeler=labeler, leased_at=now, expires_at=now + timedelta(minutes=30)
    )
    return rankings.submit_ranking(
        assignment=assignment,
        order=groups,
        ratings={ids[name]: values for name, values in ratings.items() if values},
        flags={ids[name]: values for name, values in (flags or {}).items()},
        request_id=uuid.uuid4(),
        seconds_spent=seconds,
        strength="better" if len(ids) == 2 and len(groups) == 2 else "",
    )


@pytest.fixture
def people(db: None) -> dict[str, Any]:
    return {name: UserFactory(username=name) for name in ("ann", "bob", "cat")}


@pytest.fixture
def small(people: dict[str, Any]) -> dict[str, Any]:
    """Worked out by hand:

    p1: ann and bob both c0 > c1 > c2: 3 of 3 pairs agree.
    p2: ann c0 > c1 > c2, bob c2 > c1 > c0: all 3 pairs opposite, 0 of 3.
    p3: ann c0 > c1, cat ties them: half, 0.5 of 1.
    Dataset rate (3 + 0 + 0.5) / (3 + 3 + 1) = 0.5; ann 3.5 / 7, bob 3 / 6, cat 0.5 / 1.
    p4 is not started, p5 ranked by ann alone is partly done (2 labels per prompt).
    gold: expected c0 > c1 > c2, ann gives c0 > c2 > c1: 2 of 3 pairs.
    """
    dataset = DatasetFactory(labels_per_prompt=2, criteria=["helpful"])
    ann, bob, cat = people["ann"], people["bob"], people["cat"]
    p1, p2, p4, p5 = (make_prompt(dataset, 3) for _ in range(4))
    p3 = make_prompt(dataset, 2)
    gold = make_prompt(dataset, 3, is_gold=True, gold_order=[["c0"], ["c1"], ["c2"]])
    helpful = {"c0": {"helpful": 7}, "c1": {"helpful": 4}, "c2": {"helpful": 1}}
    rank(p1, ann, "c0 > c1 > c2", ratings=helpful, flags={"c2": ["hallucination"]})
    rank(p1, bob, "c0 > c1 > c2", ratings=helpful)
    rank(p2, ann, "c0 > c1 > c2")
    rank(p2, bob, "c2 > c1 > c0")
    rank(p3, ann, "c0 > c1")
    rank(p3, cat, "c0 = c1")
    rank(p5, ann, "c0 > c1 > c2")
    rank(gold, ann, "c0 > c2 > c1")
    return {"dataset": dataset, "p1": p1, "p2": p2, "p3": p3, "p4": p4, "p5": p5, "gold": gold}


def report_of(dataset: Dataset) -> dict[str, Any]:
    report = quality_report.refresh_report(dataset_id=dataset.pk)
    assert report is not None
    return report.data


def row_of(data: dict[str, Any], username: str) -> dict[str, Any]:
    return next(row for row in data["labelers"] if row["username"] == username)


def test_report_matches_the_hand_computed_figures(small):
    data = report_of(small["dataset"])
    assert data["progress"] == {
        "prompts": 5,
        "done": 3,
        "partly": 1,
        "not_started": 1,
        "gold": 1,
        "labels_per_prompt": 2,
    }
    pairwise = data["agreement"]["pairwise"]
    assert pairwise["rate"] == pytest.approx(0.5)
    assert pairwise["count"] == 7
    assert pairwise["low"] <= 0.5 <= pairwise["high"]
    # Identical helpful ratings on p1 (the only prompt rated twice): perfect interval agreement.
    assert data["agreement"]["alpha_ratings"]["helpful"]["alpha"] == pytest.approx(1.0)
    assert row_of(data, "ann")["agreement"] == pytest.approx(0.5)
    assert row_of(data, "ann")["agreement_pairs"] == 7
    assert row_of(data, "bob")["agreement"] == pytest.approx(0.5)
    assert row_of(data, "cat")["agreement"] == pytest.approx(0.5)
    assert row_of(data, "ann")["gold"] == pytest.approx(2 / 3)
    assert row_of(data, "bob")["gold"] is None
    assert row_of(data, "ann")["rankings"] == 5
    # One flagged completion out of 3 + 3 + 2 + 3 + 3 that ann saw.
    assert row_of(data, "ann")["flag_rate"] == pytest.approx(1 / 14)
    flags = {row["flag"]: row["count"] for row in data["flags"]["by_flag"]}
    assert flags["hallucination"] == 1
    assert data["flags"]["rankings_flagged"] == 1
    # Least agreement first; p1, where both agreed, is not disputed.
    assert [row["prompt"] for row in data["disputed"]] == [small["p2"].pk, small["p3"].pk]
    votes = {
        (p["a_name"], p["b_name"]): (p["a_votes"], p["b_votes"])
        for p in data["disputed"][1]["pairs"]
    }
    assert votes == {("c0", "c1"): (1.5, 0.5)}
    assert data["unanimous"] == 1
    assert sum(day["count"] for day in data["rate"]) == 8


def test_rushing_and_disagreeing_labelers_stand_out_and_exclusion_removes_them(people, staff):
    dataset = DatasetFactory(labels_per_prompt=3, criteria=[])
    ann, bob, rush = people["ann"], people["bob"], UserFactory(username="rush")
    for _ in range(12):
        prompt = make_prompt(dataset, 3)
        rank(prompt, ann, "c0 > c1 > c2", seconds=30)
        rank(prompt, bob, "c0 > c1 > c2", seconds=40)
        rank(prompt, rush, "c2 > c1 > c0", seconds=2)
    data = report_of(dataset)
    # Per prompt: ann-bob agree on 3 pairs, each against rush on none: 3 of 9.
    assert data["agreement"]["pairwise"]["rate"] == pytest.approx(1 / 3)
    assert row_of(data, "rush")["warnings"] == ["rushing", "disagrees"]
    assert row_of(data, "ann")["warnings"] == []
    assert row_of(data, "rush")["reliability"] < row_of(data, "ann")["reliability"]

    exclusion.exclude_labeler(labeler=rush, by=staff)
    data = report_of(dataset)
    assert data["agreement"]["pairwise"]["rate"] == pytest.approx(1.0)
    assert row_of(data, "rush")["active"] is False
    assert row_of(data, "rush")["agreement"] == pytest.approx(0.0)
    assert row_of(data, "ann")["agreement"] == pytest.approx(1.0)
    assert Ranking.objects.filter(labeler=rush).count() == 12  # nothing deleted


def test_exclusion_is_one_action_that_can_be_undone(small, people, staff):
    dataset, bob = small["dataset"], people["bob"]
    cursor = Comparison.objects.order_by("-pk").values_list("pk", flat=True).first()
    exported = Comparison.objects.filter(dataset=dataset).exported
    before = exported(cursor=cursor).count()
    bobs = exported(cursor=cursor).filter(labeler=bob).count()
    open_prompt = small["p4"]
    now = timezone.now()
    lease = Assignment.objects.create(
        prompt=open_prompt, labeler=bob, leased_at=now, expires_at=now + timedelta(minutes=30)
    )

    exclusion.exclude_labeler(labeler=bob, by=staff)

    bob.refresh_from_db()
    lease.refresh_from_db()
    assert bob.is_active is False
    assert lease.status == Assignment.Status.EXPIRED
    assert exported(cursor=cursor).count() == before - bobs
    assert not exported(cursor=cursor).filter(labeler=bob).exists()
    assert LogEntry.objects.filter(object_id=str(bob.pk)).count() == 1
    # Bob's labels no longer hold slots: p1 (ann + bob) needs a second label again.
    newcomer = UserFactory()
    leased = {
        leasing.lease_next_assignment(dataset=dataset, labeler=newcomer).prompt_id for _ in range(1)
    }
    assert leased & {small["p1"].pk, small["p2"].pk, small["p5"].pk}

    exclusion.reinstate_labeler(labeler=bob, by=staff)
    bob.refresh_from_db()
    assert bob.is_active is True
    assert exported(cursor=cursor).count() == before


def test_staff_cannot_exclude_themselves(staff):
    with pytest.raises(ValidationError, match="your own account"):
        exclusion.exclude_labeler(labeler=staff, by=staff)


def test_gold_order_is_checked_against_the_prompts_completions(small):
    prompt = small["p4"]
    with pytest.raises(ValidationError, match="c9 not completions of this prompt"):
        gold.set_gold(prompt=prompt, order=[["c0"], ["c9"]])
    with pytest.raises(ValidationError, match="exactly once"):
        gold.set_gold(prompt=prompt, order=[["c0"], ["c1"]])
    prompt.refresh_from_db()
    assert prompt.is_gold is False
    gold.set_gold(prompt=prompt, order=[["c1"], ["c0", "c2"]])
    prompt.refresh_from_db()
    assert (prompt.is_gold, prompt.gold_order) == (True, [["c1"], ["c0", "c2"]])
    gold.set_gold(prompt=prompt, order=None)
    prompt.refresh_from_db()
    assert (prompt.is_gold, prompt.gold_order) == (False, None)


def test_a_unanimous_prompt_is_promoted_to_gold_and_leaves_the_exports(small, staff):
    with pytest.raises(ValidationError, match="ranked identically"):
        gold.promote_to_gold(prompt=small["p2"])
    p1 = gold.promote_to_gold(prompt=small["p1"])
    assert p1.gold_order == [["c0"], ["c1"], ["c2"]]
    assert p1.gold_since is not None
    client = token_client(staff)
    url = reverse("labeling-api:comparisons", args=[small["dataset"].slug])
    rows = lines(client.get(url, {"include_ids": "true"}))
    assert small["p1"].pk not in {row["ids"]["prompt"] for row in rows}
    rows = lines(client.get(url, {"include_ids": "true", "exclude_gold": "false"}))
    assert small["p1"].pk in {row["ids"]["prompt"] for row in rows}
    # The rankings that gave the order are not scored against it; later ones are.
    data = report_of(small["dataset"])
    assert row_of(data, "bob")["gold"] is None
    newcomer = UserFactory(username="dan")
    rank(small["p1"], newcomer, "c0 > c2 > c1")
    assert row_of(report_of(small["dataset"]), "dan")["gold"] == pytest.approx(2 / 3)


def lines(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.content
    return [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]


def test_consensus_export_has_one_row_per_pair_with_its_vote_share(small, staff):
    client = token_client(staff)
    url = reverse("labeling-api:comparisons", args=[small["dataset"].slug])
    rows = lines(client.get(url, {"consensus": "true", "include_ids": "true"}))
    by_prompt: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_prompt.setdefault(row["ids"]["prompt"], []).append(row)
    # p2 is split 1-1 on every pair: no majority, no row.
    assert set(by_prompt) == {small["p1"].pk, small["p3"].pk, small["p5"].pk}
    assert {
        (r["ids"]["chosen_external"], r["ids"]["rejected_external"])
        for r in by_prompt[small["p1"].pk]
    } == {
        ("c0", "c1"),
        ("c0", "c2"),
        ("c1", "c2"),
    }
    assert [(r["vote_share"], r["voters"]) for r in by_prompt[small["p3"].pk]] == [(0.75, 2)]
    strict = lines(client.get(url, {"consensus": "true", "min_agreement": "0.8"}))
    assert len(strict) == 6  # p1's and p5's pairs, at 1.0
    # p5 was ranked by ann alone: min_labelers=2 leaves it out.
    reviewed = lines(client.get(url, {"consensus": "true", "min_labelers": "2"}))
    assert len(reviewed) == 4  # p1's three pairs and p3's one


def test_consensus_export_follows_the_consensus_order_through_a_cycle(people, staff):
    # a > b > c, b > c > a, c > a > b: every majority is 2-1 and they form a cycle; ranked pairs
    # orders c0 > c1 > c2 (ties broken by id), so c2 > c0, which that order goes against, is
    # not exported, and the exported pairs form no cycle.
    dataset = DatasetFactory(labels_per_prompt=3, criteria=[])
    prompt = make_prompt(dataset, 3)
    rank(prompt, people["ann"], "c0 > c1 > c2")
    rank(prompt, people["bob"], "c1 > c2 > c0")
    rank(prompt, people["cat"], "c2 > c0 > c1")
    url = reverse("labeling-api:comparisons", args=[dataset.slug])
    rows = lines(token_client(staff).get(url, {"consensus": "true", "include_ids": "true"}))
    pairs = {(r["ids"]["chosen_external"], r["ids"]["rejected_external"]) for r in rows}
    assert pairs == {("c0", "c1"), ("c1", "c2")}


def test_min_agreement_keeps_comparisons_most_labelers_share(small, staff):
    client = token_client(staff)
    url = reverse("labeling-api:comparisons", args=[small["dataset"].slug])
    rows = lines(client.get(url, {"min_agreement": "0.75", "include_ids": "true"}))
    # p1: 6 comparisons at 1.0; p2: all at 0.5; p3: ann's c0 > c1 at 0.75; p5: 3 at 1.0.
    prompts = [row["ids"]["prompt"] for row in rows]
    assert len(rows) == 10
    assert small["p2"].pk not in prompts
    assert len(lines(client.get(url, {"min_agreement": "0.5"}))) == 16
    # Only pairs that two or more labelers ordered: p5 (ann alone) is left out.
    assert len(lines(client.get(url, {"min_agreement": "0.75", "min_labelers": "2"}))) == 7


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"consensus": "true", "since": "3"}, "since"),
        ({"consensus": "true", "min_margin": "2"}, "min_margin"),
        ({"min_agreement": "1.5"}, "min_agreement"),
        ({"min_agreement": "0.6", "since": "3"}, "since"),
        ({"min_labelers": "0"}, "min_labelers"),
    ],
)
def test_consensus_options_that_do_not_fit_are_refused(small, staff, params, field):
    client = token_client(staff)
    url = reverse("labeling-api:comparisons", args=[small["dataset"].slug])
    response = client.get(url, params)
    assert response.status_code == 400
    assert field in response.json()


# --- Pages -----------------------------------------------------------------------------------


def test_dashboard_shows_the_report(client, small, staff, django_assert_max_num_queries):
    client.force_login(staff)
    url = reverse("labeling:quality", args=[small["dataset"].slug])
    client.get(url)  # computes the report: a small dataset is computed at once
    with django_assert_max_num_queries(8):
        response = client.get(url)
    page = response.content.decode()
    assert response.status_code == 200
    assert "0.500" in page
    assert "<svg" in page
    assert all(name in page for name in ("ann", "bob", "cat"))
    assert reverse("labeling:quality-prompt", args=[small["dataset"].slug, small["p2"].pk]) in page


def test_labeler_table_sorts_by_any_column(client, small, staff):
    client.force_login(staff)
    url = reverse("labeling:quality", args=[small["dataset"].slug])
    page = client.get(url, {"sort": "rankings", "dir": "desc"}).content.decode()
    assert page.index(">ann ") < page.index(">bob ") < page.index(">cat ")
    page = client.get(url, {"sort": "rankings"}).content.decode()
    assert page.index(">cat ") < page.index(">bob ") < page.index(">ann ")


def test_staff_excludes_and_reinstates_from_the_dashboard(client, small, people, staff):
    client.force_login(staff)
    bob = people["bob"]
    dashboard = reverse("labeling:quality", args=[small["dataset"].slug])
    client.get(dashboard)
    response = client.post(reverse("labeling:labeler-exclude", args=[bob.pk]), {"next": dashboard})
    assert response.status_code == 302 and response.url == dashboard
    bob.refresh_from_db()
    assert bob.is_active is False
    assert QualityReport.objects.get(dataset=small["dataset"]).invalidated is True
    page = client.get(dashboard).content.decode()
    assert "Reinstate" in page
    client.post(
        reverse("labeling:labeler-reinstate", args=[bob.pk]), {"next": "https://evil.example/"}
    )
    bob.refresh_from_db()
    assert bob.is_active is True


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
        assert response.status_code == 302 and "/admin/login/" in response.url, url
    for url in (
        reverse("labeling:labeler-exclude", args=[people["bob"].pk]),
        reverse("labeling:quality-gold", args=[slug, small["p1"].pk]),
        reverse("labeling:quality-refresh", args=[slug]),
    ):
        assert client.post(url, {"action": "promote"}).status_code == 302
    people["bob"].refresh_from_db()
    small["p1"].refresh_from_db()
    assert people["bob"].is_active and not small["p1"].is_gold
    assert not QualityReport.objects.exists()


def test_report_stays_fresh(small, settings):
    dataset = small["dataset"]
    now = timezone.now()
    report = quality_report.refresh_report(dataset_id=dataset.pk)
    newest = Ranking.objects.order_by("-pk").values_list("pk", flat=True).first()
    assert not quality_report.report_is_stale(report, newest_ranking=newest, now=now)
    # Newer rankings make it stale only once it is older than the refresh period.
    later = now + timedelta(seconds=settings.PREFLAB_QUALITY_REFRESH_SECONDS + 1)
    assert not quality_report.report_is_stale(report, newest_ranking=newest, now=later)
    assert quality_report.report_is_stale(report, newest_ranking=newest + 1, now=later)
    assert not quality_report.report_is_stale(report, newest_ranking=newest + 1, now=now)
    quality_report.invalidate_reports([dataset.pk])
    report.refresh_from_db()
    assert quality_report.report_is_stale(report, newest_ranking=newest, now=now)


@pytest.mark.django_db(transaction=True)
def test_a_big_datasets_report_is_refreshed_by_the_worker(worker, finished, client, settings):
    settings.PREFLAB_QUALITY_INLINE_RANKINGS = 0
    dataset = DatasetFactory(labels_per_prompt=2, criteria=[])
    ann, bob = UserFactory(), UserFactory()
    staff = UserFactory(is_staff=True)
    prompt = make_prompt(dataset, 3)
    rank(prompt, ann, "c0 > c1 > c2")
    rank(prompt, bob, "c0 > c2 > c1")
    client.force_login(staff)
    url = reverse("labeling:quality", args=[dataset.slug])
    page = client.get(url).content.decode()
    assert "being computed" in page
    assert finished.wait(60)
    report = QualityReport.objects.get(dataset=dataset)
    assert report.computed_at is not None and report.error == ""
    assert report.data["agreement"]["pairwise"]["rate"] == pytest.approx(2 / 3)
    assert "0.667" in client.get(url).content.decode()


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


def test_quality_report_over_the_api(small, staff):
    response = token_client(staff).get(
        reverse("labeling-api:quality", args=[small["dataset"].slug])
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["report"]["agreement"]["pairwise"]["rate"] == pytest.approx(0.5)
    assert body["ranking_cursor"] == Ranking.objects.order_by("-pk").first().pk


def test_dashboard_of_a_dataset_without_rankings(client, dataset, prompt, staff):
    client.force_login(staff)
    response = client.get(reverse("labeling:quality", args=[dataset.slug]))
    page = response.content.decode()
    assert response.status_code == 200
    assert "not enough data" in page
    assert "No rankings yet." in page
    data = QualityReport.objects.get(dataset=dataset).data
    assert data["agreement"]["pairwise"]["rate"] is None
    assert data["progress"]["not_started"] == 1


def test_a_failed_refresh_is_reported_and_tried_again(small, monkeypatch, client, staff):
    dataset = small["dataset"]
    quality_report.refresh_report(dataset_id=dataset.pk)

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(quality_report, "compute_report", broken)
    with pytest.raises(RuntimeError):
        quality_report.refresh_report(dataset_id=dataset.pk)
    report = QualityReport.objects.get(dataset=dataset)
    assert report.error == "RuntimeError: disk full"
    # A big dataset's next refresh waits for the refresh period: no retry storm.
    assert report.refresh_queued_at is not None
    assert not quality_report.request_refresh(dataset=dataset)
    assert report.data["agreement"]["pairwise"]["rate"] == pytest.approx(0.5)  # kept
    client.force_login(staff)
    page = client.get(reverse("labeling:quality", args=[dataset.slug])).content.decode()
    assert "The last computation failed: RuntimeError: disk full" in page
    monkeypatch.undo()
    report = quality_report.refresh_report(dataset_id=dataset.pk)
    assert report is not None and report.error == ""


def test_an_invalidation_while_computing_is_not_lost(small, monkeypatch, staff, people):
    dataset = small["dataset"]
    quality_report.refresh_report(dataset_id=dataset.pk)
    compute = quality_report.compute_report

    def exclude_meanwhile(**kwargs: Any) -> dict[str, Any]:
        data = compute(**kwargs)
        exclusion.exclude_labeler(labeler=people["bob"], by=staff)
        return data

    monkeypatch.setattr(quality_report, "compute_report", exclude_meanwhile)
    report = quality_report.refresh_report(dataset_id=dataset.pk)
    assert report is not None and report.invalidated  # computed before bob's exclusion
    monkeypatch.undo()
    report = quality_report.refresh_report(dataset_id=dataset.pk)
    assert report is not None and not report.invalidated
    assert row_of(report.data, "bob")["active"] is False


def test_excluding_takes_the_permission_to_change_users(small, people, staff):
    manager = UserFactory(is_staff=True)
    with pytest.raises(ValidationError, match="permission to change users"):
        exclusion.exclude_labeler(labeler=people["bob"], by=manager)
    from django.contrib.auth.models import Permission

    manager.user_permissions.add(Permission.objects.get(codename="change_user"))
    manager = type(manager).objects.get(pk=manager.pk)  # fresh permission cache
    other_staff = UserFactory(is_staff=True)
    with pytest.raises(ValidationError, match="Only a superuser"):
        exclusion.exclude_labeler(labeler=other_staff, by=manager)
    exclusion.exclude_labeler(labeler=people["bob"], by=manager)
    people["bob"].refresh_from_db()
    assert not people["bob"].is_active
    # A deactivated superuser cannot be brought back by a non-superuser either.
    boss = UserFactory(is_staff=True, is_superuser=True, is_active=False)
    with pytest.raises(ValidationError, match="Only a superuser"):
        exclusion.reinstate_labeler(labeler=boss, by=manager)


def test_an_expired_lease_is_still_submittable_when_the_slot_holder_was_excluded(
    dataset, people, staff
):
    prompt = make_prompt(dataset, 2)  # labels_per_prompt is 2
    ann, bob, cat = people["ann"], people["bob"], people["cat"]
    rank(prompt, ann, "c0 > c1")
    now = timezone.now()
    late = Assignment.objects.create(
        prompt=prompt, labeler=cat, leased_at=now - timedelta(hours=2), expires_at=now
    )
    rank(prompt, bob, "c1 > c0")  # took the last slot while cat's lease was expired
    late.status = Assignment.Status.EXPIRED
    late.save()
    exclusion.exclude_labeler(labeler=bob, by=staff)
    ids = dict(prompt.completions.values_list("external_id", "pk"))
    rankings.submit_ranking(
        assignment=late,
        order=[[ids["c0"]], [ids["c1"]]],
        ratings={cid: {c: 4 for c in dataset.criteria} for cid in ids.values()},
        flags={},
        request_id=uuid.uuid4(),
        seconds_spent=5.0,
        strength="slightly",
    )
    assert Ranking.objects.filter(labeler=cat, prompt=prompt).exists()


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


def test_changing_what_is_rated_invalidates_the_report(small):
    dataset = small["dataset"]
    quality_report.refresh_report(dataset_id=dataset.pk)
    datasets.update_dataset(dataset=dataset, labels_per_prompt=3)
    assert QualityReport.objects.get(dataset=dataset).invalidated
    data = report_of(dataset)
    assert data["progress"]["done"] == 0 and data["progress"]["partly"] == 4


def test_days_without_rankings_are_drawn_as_zero(small):
    old = Ranking.objects.filter(dataset=small["dataset"]).order_by("pk").first()
    Ranking.objects.filter(pk=old.pk).update(created_at=old.created_at - timedelta(days=3))
    rate = report_of(small["dataset"])["rate"]
    assert [day["count"] for day in rate] == [1, 0, 0, 7]


def test_many_prompts_are_resampled_in_bounded_groups(monkeypatch):
    monkeypatch.setattr(report, "BOOTSTRAP_GROUPS", 4)
    assert report.grouped([0, 1, 2]) == [0, 1, 2]
    grouped = report.grouped([0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert grouped[0] == grouped[1]  # a prompt's units stay together
    assert set(grouped) <= {0, 1, 2, 3}
    assert grouped == report.grouped([0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])  # seeded
