"""The quality report's AI labelers section: agreement with the human majority and position bias
with Wilson intervals, worked out by hand, in a fixed number of queries; on the dashboard and in
the API."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from labeling import quality, report_ai
from labeling.models import AIJudgment, Prompt
from labeling.services.quality_report_ai import ai_labeler_figures
from tests.factories import (
    AILabelerFactory,
    DatasetFactory,
    make_ai_ranking,
    make_prompt,
    token_client,
)
from tests.labeling.quality_data import rank, report_of


def ids_of(prompt: Prompt) -> dict[str, int]:
    return dict(prompt.completions.values_list("external_id", "pk"))


def order_of(prompt: Prompt, text: str) -> list[list[int]]:
    """'c0 > c1 = c2' as tie groups of the prompt's completion ids."""
    ids = ids_of(prompt)
    return [[ids[name.strip()] for name in group.split("=")] for group in text.split(">")]


def shown(prompt: Prompt, *names: str) -> list[int]:
    ids = ids_of(prompt)
    return [ids[name] for name in names]


def test_wilson_interval_of_known_shares():
    assert quality.wilson(5, 10) == pytest.approx(
        {"rate": 0.5, "low": 0.236593, "high": 0.763407, "count": 10}, abs=1e-6
    )
    assert quality.wilson(0, 10) == pytest.approx(
        {"rate": 0.0, "low": 0.0, "high": 0.277533, "count": 10}, abs=1e-6
    )
    assert quality.wilson(1, 1)["low"] == pytest.approx(0.206549, abs=1e-6)
    assert quality.wilson(1, 1)["high"] == 1.0
    assert quality.wilson(0, 0) == {"rate": None, "low": None, "high": None, "count": 0}


def test_majority_agreement_counts_the_ai_comparisons_on_majority_pairs():
    humans = [[[1], [2], [3]], [[1], [3], [2]], [[2], [1], [3]]]
    # Majorities: 1 > 2 (2 to 1), 1 > 3 (3 to 0), 2 > 3 (2 to 1).
    assert report_ai.majority_agreement([[[1], [2], [3]]], humans) == (3, 3)
    assert report_ai.majority_agreement([[[3], [2], [1]]], humans) == (0, 3)
    # A tie makes no comparison; a pair split evenly has no majority.
    assert report_ai.majority_agreement([[[1, 2], [3]]], humans) == (2, 2)
    assert report_ai.majority_agreement([[[1], [2]]], [[[1], [2]], [[2], [1]]]) == (0, 0)
    # Each against the others: three agree with a 2-1 majority, the fourth faces 3-0 against.
    assert report_ai.leave_one_out_agreement([[[1], [2]]] * 3 + [[[2], [1]]]) == (3, 4)


def test_an_ai_that_always_picks_the_first_slot_has_position_bias_one():
    facts = report_ai.AILabelerFacts(1, "judge", "m", 1, 3, 0, 300, 30, 6.0)
    judgments = [report_ai.AIJudgmentRow(calls=2, first_slot_picks=2, completions=2)] * 3
    row = report_ai.ai_labeler_row(facts, {}, {}, judgments)
    assert row["position_bias"] == quality.wilson(6, 6)
    assert row["position_bias"]["rate"] == 1.0
    assert row["chance"] == 0.5
    assert row["human_majority"]["rate"] is None and row["shared_prompts"] == 0
    assert (row["prompt_tokens_per_judgment"], row["seconds_per_judgment"]) == (100.0, 2.0)


@pytest.fixture
def judged(small: dict[str, Any]) -> dict[str, Any]:
    """`small` (see quality_data.make_small) judged by an AI labeler, by hand:

    agreement with the human majority (ann and bob on p1, ann and bob split on p2, ann and cat
    on p3, ann alone on p5; gold and p4 have no human ranking to compare):
    p1 c0 > c2 > c1 against c0 > c1 > c2: c0-c1 and c0-c2 agree, c1-c2 not: 2 of 3;
    p2: every pair split 1-1, no majority: 0 of 0;
    p3 c1 > c0 against ann's c0 > c1 and cat's tie (1.5 to 0.5 votes): 0 of 1;
    p5 c0 = c1 > c2: the tie makes no comparison, c0-c2 and c1-c2 agree: 2 of 2.
    4 of 6 over 4 shared prompts. Humans against the others' majority: p1 3 + 3 of 6, p2 0 of
    6, p3 none (cat tied, so ann faces no majority and cat makes no comparison): 6 of 12.

    position bias: p1 shown c0 c1 c2 (picked, c0 best) and c2 c1 c0 (not), p2 shown c0 c1 c2
    (picked), p3 shown c0 c1 (not, c1 best), p4 shown c1 c0 c2 (not), p5 shown c0 c1 c2 (c0
    is in the best tie group: picked): 3 of 6 calls; chance (2/3 + 1/3 + 1/2 + 1/3 + 1/3) / 6.
    """
    dataset = small["dataset"]
    judge = AILabelerFactory(dataset=dataset, name="judge")
    cases = {
        "p1": ("c0 > c2 > c1", [("c0", "c1", "c2"), ("c2", "c1", "c0")]),
        "p2": ("c0 > c1 > c2", [("c0", "c1", "c2")]),
        "p3": ("c1 > c0", [("c0", "c1")]),
        "p4": ("c0 > c1 > c2", [("c1", "c0", "c2")]),
        "p5": ("c0 = c1 > c2", [("c0", "c1", "c2")]),
    }
    for name, (text, calls) in cases.items():
        prompt = small[name]
        make_ai_ranking(
            judge,
            prompt,
            order_of(prompt, text),
            shown=[shown(prompt, *call) for call in calls],
            prompt_tokens=100,
            completion_tokens=40,
            seconds=2.0,
        )
    AIJudgment.objects.create(
        ai_labeler=judge,
        prompt=small["gold"],
        status=AIJudgment.Status.FAILED,
        error="no order in the answer",
        model=judge.model,
        constitution_version=1,
        prompt_tokens=100,
        seconds=4.0,
        created_at=timezone.now(),
    )
    return small | {"judge": judge}


def test_agreement_with_the_human_majority_and_position_bias_by_hand(judged):
    (row,) = report_of(judged["dataset"])["ai_labelers"]
    assert (row["name"], row["judged"], row["failed"], row["shared_prompts"]) == ("judge", 5, 1, 4)
    assert row["human_majority"] == pytest.approx(quality.wilson(4, 6))
    assert row["human_majority"]["rate"] == pytest.approx(4 / 6)
    assert row["human_reference"] == pytest.approx(quality.wilson(6, 12))
    assert row["human_pairwise"] == pytest.approx(3.5 / 7)
    assert row["position_bias"] == pytest.approx(quality.wilson(3, 6))
    assert row["chance"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 2 + 1 / 3 + 1 / 3) / 6)
    # Tokens and seconds per judgment, failures included: (5 x 100 + 100) / 6 and so on.
    assert row["prompt_tokens_per_judgment"] == pytest.approx(600 / 6)
    assert row["completion_tokens_per_judgment"] == pytest.approx(200 / 6)
    assert row["seconds_per_judgment"] == pytest.approx(14 / 6)


def test_a_dataset_without_ai_labelers_has_an_empty_section(small, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert ai_labeler_figures(dataset=small["dataset"], cursor=10**9) == []


@pytest.mark.parametrize("prompts", [3, 12])
def test_the_figures_take_four_queries_however_many_prompts(
    people, prompts, django_assert_num_queries
):
    dataset = DatasetFactory(labels_per_prompt=2, criteria=[])
    judges = [AILabelerFactory(dataset=dataset) for _ in range(2)]
    for _ in range(prompts):
        prompt = make_prompt(dataset, 3)
        rank(prompt, people["ann"], "c0 > c1 > c2")
        rank(prompt, people["bob"], "c1 > c0 > c2")
        for judge in judges:
            make_ai_ranking(judge, prompt, order_of(prompt, "c0 > c1 > c2"))
    with django_assert_num_queries(4):
        rows = ai_labeler_figures(dataset=dataset, cursor=10**9)
    # Majorities: c0 > c2 and c1 > c2 (c0-c1 is split): both agree on each prompt.
    assert [row["human_majority"]["count"] for row in rows] == [2 * prompts] * 2
    assert [row["human_majority"]["rate"] for row in rows] == [1.0, 1.0]


def test_dashboard_and_api_show_the_ai_labelers(judged, staff, client):
    dataset = judged["dataset"]
    client.force_login(staff)
    page = client.get(reverse("labeling:quality", args=[dataset.slug]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "AI labelers" in text and "judge" in text and "0.667" in text
    response = token_client(staff).get(reverse("labeling-api:quality", args=[dataset.slug]))
    assert response.status_code == 200
    (row,) = response.json()["report"]["ai_labelers"]
    assert row["human_majority"]["count"] == 6


def test_the_dashboard_has_no_ai_section_without_ai_labelers(small, staff, client):
    client.force_login(staff)
    page = client.get(reverse("labeling:quality", args=[small["dataset"].slug]))
    assert page.status_code == 200
    assert "<h2>AI labelers</h2>" not in page.content.decode()


def test_a_prompt_page_marks_the_ai_ranking_and_keeps_it_out_of_the_votes(judged, staff, client):
    client.force_login(staff)
    prompt = judged["p3"]
    page = client.get(reverse("labeling:quality-prompt", args=[judged["dataset"].slug, prompt.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert text.count("<strong>AI labeler</strong>") == 1
    assert judged["judge"].user.username in text
