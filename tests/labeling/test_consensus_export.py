"""The comparisons export's consensus, min_agreement and min_labelers options."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from tests.factories import DatasetFactory, make_prompt, token_client
from tests.labeling.quality_data import lines, rank


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
