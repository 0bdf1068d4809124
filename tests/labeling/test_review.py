"""Per-prompt statistics, the review queue, the reviewer role and adjudication."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from labeling import review
from labeling.models import Adjudication, PromptStats, Role
from labeling.services import adjudication, exclusion, prompt_stats
from tests.factories import UserFactory, make_prompt
from tests.labeling.quality_data import rank, report_of


def make_reviewer(**fields: Any) -> Any:
    """A reviewer of the default workspace: not staff, not a manager."""
    return UserFactory(role=Role.REVIEWER, **fields)


def stats_of(prompt: Any) -> PromptStats:
    return PromptStats.objects.get(prompt=prompt)


# --- Figures, on plain data ---------------------------------------------------------------------


def test_figures_of_a_two_to_one_split():
    # Labelers 1 and 2 say 1 > 2 > 3, labeler 3 the reverse: of the 3 labeler pairs x 3
    # completion pairs, 3 agree; every completion pair is a 2-1 vote, a margin of 1/3.
    forward, backward = [[1], [2], [3]], [[3], [2], [1]]
    figures = review.prompt_figures(
        [1, 2, 3],
        [forward, forward, backward],
        [{"3": ["harmful_advice", "hallucination"]}, {}, {"3": ["harmful_advice"]}],
    )
    assert figures["labels"] == 3
    assert figures["agreement"] == pytest.approx(1 / 3)
    assert figures["min_margin"] == pytest.approx(1 / 3)
    assert figures["consensus"] == forward
    assert figures["flags"] == {"hallucination": 1, "harmful_advice": 2}
    assert figures["safety_flags"] == 2


def test_one_label_has_no_agreement_or_margin():
    figures = review.prompt_figures([1, 2], [[[2], [1]]], [{}])
    assert figures["agreement"] is None and figures["min_margin"] is None
    assert figures["consensus"] == [[2], [1]]


def test_model_contradiction_is_its_largest_probability_against_the_consensus():
    # Consensus 1 > 2 > 3; the model scores 3 highest: P(3 beats 1) = sigmoid(2).
    contradiction = review.model_contradiction([[1], [2], [3]], {1: 0.0, 2: 1.0, 3: 2.0})
    assert contradiction == pytest.approx(review.sigmoid(2.0))
    assert review.model_contradiction([[1, 2]], {1: 0.0, 2: 5.0}) is None


def test_need_weights_each_sign():
    def need(**signs: Any) -> float:
        base = {
            "agreement": None,
            "min_margin": None,
            "safety_flags": 0,
            "model_contradiction": None,
        }
        return review.need_score(**(base | signs))

    assert need() == 0
    assert need(agreement=1.0, min_margin=1.0, model_contradiction=0.4) == 0
    assert need(agreement=0.25) == pytest.approx(0.75)
    assert need(min_margin=0.0) == pytest.approx(0.5)
    assert need(safety_flags=3) == pytest.approx(1.0)
    assert need(model_contradiction=0.9) == pytest.approx(0.8)


# --- Stats rows, kept by the report's worker ------------------------------------------------------


def test_report_refresh_stores_each_prompts_stats(small):
    report_of(small["dataset"])
    p1, p2, p3 = stats_of(small["p1"]), stats_of(small["p2"]), stats_of(small["p3"])
    assert (p1.labels, p1.agreement, p1.min_margin, p1.need) == (2, 1.0, 1.0, 0)
    assert p1.flags == {"hallucination": 1} and p1.safety_flags == 0
    assert [len(group) for group in p1.consensus] == [1, 1, 1]
    assert (p2.agreement, p2.min_margin, p2.need) == (0.0, 0.0, 1.5)
    # ann c0 > c1, cat ties them: agreement 0.5, votes 1.5 to 0.5 of 2, a margin of 0.5.
    assert (p3.agreement, p3.min_margin) == (0.5, 0.5)
    assert p3.need == pytest.approx(0.5 + 0.5 * 0.5)
    assert stats_of(small["p4"]).labels == 0 and stats_of(small["p5"]).labels == 1
    assert stats_of(small["gold"]).is_gold
    assert PromptStats.objects.filter(dataset=small["dataset"]).count() == 6


def test_refresh_recomputes_only_prompts_with_new_rankings(small, people):
    dataset = small["dataset"]
    report_of(dataset)
    before = stats_of(small["p1"]).computed_at
    rank(small["p5"], people["bob"], "c2 > c1 > c0", flags={"c0": ["violent_content"]})
    report_of(dataset)
    p5 = stats_of(small["p5"])
    assert (p5.labels, p5.agreement, p5.safety_flags) == (2, 0.0, 1)
    assert stats_of(small["p1"]).computed_at == before


def test_an_exclusion_recomputes_every_prompt(small, people, staff):
    dataset = small["dataset"]
    report_of(dataset)
    exclusion.exclude_labeler(labeler=people["bob"], by=staff)
    report_of(dataset)
    assert stats_of(small["p2"]).labels == 1
    assert stats_of(small["p2"]).need == 0


def test_prompt_stats_are_written_in_batches(small, monkeypatch, django_assert_max_num_queries):
    monkeypatch.setattr(prompt_stats, "BATCH", 2)
    with django_assert_max_num_queries(4 + 3 * 5):  # 6 prompts: 3 batches of ~5 queries
        prompt_stats.refresh_prompt_stats(dataset=small["dataset"], cursor=10**9)
    assert PromptStats.objects.filter(dataset=small["dataset"]).count() == 6


# --- The queue ----------------------------------------------------------------------------------


def test_queue_orders_by_need_and_says_why(client, small, people):
    flagged = make_prompt(small["dataset"], 2)
    rank(flagged, people["ann"], "c0 > c1", flags={"c1": ["harmful_advice"]})
    report_of(small["dataset"])
    client.force_login(make_reviewer())
    response = client.get(reverse("labeling:review-queue", args=[small["dataset"].slug]))
    assert response.status_code == 200
    queued = [stats.prompt_id for stats, _ in response.context["rows"]]
    assert queued == [small["p2"].pk, flagged.pk, small["p3"].pk]
    page = response.content.decode()
    assert "agreement 0%" in page and "flagged: harmful or dangerous advice x1" in page


def test_queue_page_queries_do_not_grow_with_prompts(
    client, dataset, people, django_assert_max_num_queries
):
    for _ in range(60):
        prompt = make_prompt(dataset, 2)
        rank(prompt, people["ann"], "c0 > c1")
        rank(prompt, people["bob"], "c1 > c0")
    report_of(dataset)
    client.force_login(make_reviewer())
    with django_assert_max_num_queries(8):
        response = client.get(reverse("labeling:review-queue", args=[dataset.slug]))
    assert len(response.context["rows"]) == 50


# --- Who may review ---------------------------------------------------------------------------


def review_pages(small: dict[str, Any]) -> list[tuple[str, str]]:
    slug, prompt = small["dataset"].slug, small["p2"].pk
    return [
        ("get", reverse("labeling:review-index")),
        ("get", reverse("labeling:review-queue", args=[slug])),
        ("get", reverse("labeling:review-prompt", args=[slug, prompt])),
    ]


def test_labeler_gets_403_on_review_pages(client, small, labeler):
    client.force_login(labeler)
    for method, url in review_pages(small):
        response = getattr(client, method)(url)
        assert response.status_code == 403
        assert "This page is for workspace admins, managers and reviewers" in (
            response.content.decode()
        )
    post = reverse("labeling:review-adjudicate", args=[small["dataset"].slug, small["p2"].pk])
    assert client.post(post, {"action": "accept"}).status_code == 403
    assert not Adjudication.objects.exists()


def test_anonymous_is_sent_to_log_in_from_review_pages(client, small):
    for method, url in review_pages(small):
        response = getattr(client, method)(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_reviewer_sees_review_and_quality_pages_but_not_managers_pages(client, small):
    client.force_login(make_reviewer())
    for method, url in review_pages(small):
        assert getattr(client, method)(url).status_code == 200
    assert client.get(reverse("labeling:quality-index")).status_code == 200
    assert client.get(reverse("rewards:runs")).status_code == 403
    assert client.get(reverse("admin:index")).status_code == 403
    assert client.get(reverse("labeling:home")).content.decode().count("open the review queue")


def test_superuser_staff_may_review(client, small, staff):
    client.force_login(staff)
    for method, url in review_pages(small):
        assert getattr(client, method)(url).status_code == 200


# --- The review page and adjudication ---------------------------------------------------------


def test_review_page_shows_rankings_votes_models_and_escapes_model_output(client, small, people):
    prompt = small["p2"]
    prompt.completions.filter(external_id="c0").update(
        text="<script>alert(1)</script> **bold**", model_name="gpt-x"
    )
    client.force_login(make_reviewer())
    page = client.get(
        reverse("labeling:review-prompt", args=[small["dataset"].slug, prompt.pk])
    ).content.decode()
    assert "<script>alert(1)" not in page and "<strong>bold</strong>" in page
    assert "gpt-x" in page
    assert "ann" in page and "bob" in page and "c2 &gt; c1 &gt; c0" in page
    dash = "\N{EN DASH}"
    assert f"c0 1 {dash} 1 c1" in page  # each pair split 1-1


def test_adjudicating_overturns_the_consensus_and_opens_the_next_prompt(client, small):
    dataset = small["dataset"]
    report_of(dataset)
    reviewer = make_reviewer()
    client.force_login(reviewer)
    p3 = small["p3"]
    ids = dict(p3.completions.values_list("external_id", "pk"))
    response = client.post(
        reverse("labeling:review-adjudicate", args=[dataset.slug, p3.pk]),
        {"action": "save", f"rank_{ids['c0']}": 2, f"rank_{ids['c1']}": 1, "note": "c1 is right"},
    )
    assert response.status_code == 302
    assert response.url == reverse("labeling:review-prompt", args=[dataset.slug, small["p2"].pk])
    settled = Adjudication.objects.get(prompt=p3)
    assert settled.order == [[ids["c1"]], [ids["c0"]]]
    assert settled.consensus == [[ids["c0"]], [ids["c1"]]]
    assert settled.overturned and settled.note == "c1 is right" and settled.reviewer == reviewer
    assert stats_of(p3).adjudicated
    queue = PromptStats.objects.in_review_queue().filter(dataset=dataset)
    assert list(queue.values_list("prompt_id", flat=True)) == [small["p2"].pk]


def test_accepting_the_consensus_and_promoting_to_gold(client, small):
    dataset = small["dataset"]
    report_of(dataset)
    client.force_login(make_reviewer())
    p3 = small["p3"]
    response = client.post(
        reverse("labeling:review-adjudicate", args=[dataset.slug, p3.pk]),
        {"action": "accept", "gold": "on"},
    )
    assert response.status_code == 302
    settled = Adjudication.objects.get(prompt=p3)
    assert not settled.overturned and settled.promoted_to_gold
    p3.refresh_from_db()
    assert p3.is_gold and p3.gold_order == [["c0"], ["c1"]] and p3.gold_since is not None


def test_an_incomplete_order_is_refused_beside_the_form(client, small):
    client.force_login(make_reviewer())
    p2 = small["p2"]
    first = p2.completions.first()
    response = client.post(
        reverse("labeling:review-adjudicate", args=[small["dataset"].slug, p2.pk]),
        {"action": "save", f"rank_{first.pk}": 1, "note": "x" * 6000},
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "Ensure this value has at most 5000 characters" in page
    assert not Adjudication.objects.exists()
    response = client.post(
        reverse("labeling:review-adjudicate", args=[small["dataset"].slug, p2.pk]),
        {"action": "save", f"rank_{first.pk}": 1},
    )
    assert response.status_code == 400
    assert "Give every completion a rank" in response.content.decode()


def test_the_newest_adjudication_counts_and_history_is_kept(small):
    reviewer = make_reviewer()
    p2 = small["p2"]
    ids = dict(p2.completions.values_list("external_id", "pk"))
    adjudication.adjudicate_prompt(
        prompt=p2, order=[[ids["c0"]], [ids["c1"], ids["c2"]]], note="", reviewer=reviewer
    )
    newest = adjudication.adjudicate_prompt(
        prompt=p2, order=[[ids["c2"]], [ids["c1"]], [ids["c0"]]], note="", reviewer=reviewer
    )
    assert Adjudication.objects.filter(prompt=p2).count() == 2
    assert list(Adjudication.objects.latest_per_prompt()) == [newest]


def test_report_and_dashboard_show_the_overturn_rate(client, small, staff):
    reviewer = make_reviewer()
    p2, p3 = small["p2"], small["p3"]
    ids = dict(p3.completions.values_list("external_id", "pk"))
    adjudication.adjudicate_prompt(
        prompt=p3, order=[[ids["c1"]], [ids["c0"]]], note="", reviewer=reviewer
    )
    adjudication.accept_consensus(prompt=p2, note="", reviewer=reviewer)
    # p3 again, now agreeing with its labelers: its newest adjudication is what counts.
    adjudication.accept_consensus(prompt=p3, note="", reviewer=reviewer)
    adjudication.adjudicate_prompt(
        prompt=small["p1"],
        order=[[pk] for pk in reversed(stats_order(small["p1"]))],
        note="",
        reviewer=reviewer,
    )
    data = report_of(small["dataset"])
    assert data["review"] == {"adjudicated": 3, "overturned": 1, "overturn_rate": 1 / 3}
    client.force_login(staff)
    page = client.get(reverse("labeling:quality", args=[small["dataset"].slug])).content.decode()
    assert "3 prompts adjudicated by reviewers; 1 of them overturned" in page
    assert "(33%)" in page


def stats_order(prompt: Any) -> list[int]:
    return list(prompt.completions.order_by("position").values_list("pk", flat=True))


def test_a_gold_change_moves_the_prompt_out_of_the_queue_and_back_at_once(small):
    from labeling.services import gold

    report_of(small["dataset"])
    queued = PromptStats.objects.in_review_queue().filter(dataset=small["dataset"])
    assert small["p2"].pk in queued.values_list("prompt_id", flat=True)
    order = [[name] for name in small["p2"].completions.values_list("external_id", flat=True)]
    gold.set_gold(prompt=small["p2"], order=order)
    assert small["p2"].pk not in queued.values_list("prompt_id", flat=True)
    gold.set_gold(prompt=small["p2"], order=None)
    assert small["p2"].pk in queued.values_list("prompt_id", flat=True)
