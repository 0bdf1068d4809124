"""Helpers shared by the quality tests: submitting rankings written like 'c0 > c1', reading the
quality report, and the small dataset worked out by hand (registered as fixtures in conftest)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from labeling.models import Dataset, Prompt, Ranking
from labeling.services import quality_report, rankings
from tests.factories import DatasetFactory, UserFactory, make_lease, make_prompt


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
        ratings = {name: {c: 4 for c in prompt.dataset.criterion_keys} for name in ids}
    assignment = make_lease(prompt, labeler)
    return rankings.submit_ranking(
        assignment=assignment,
        order=groups,
        ratings={ids[name]: values for name, values in ratings.items() if values},
        flags={ids[name]: values for name, values in (flags or {}).items()},
        request_id=uuid.uuid4(),
        seconds_spent=seconds,
        strength="better" if len(ids) == 2 and len(groups) == 2 else "",
    )


def make_people() -> dict[str, Any]:
    """Three labelers: ann, bob and cat."""
    return {name: UserFactory(username=name) for name in ("ann", "bob", "cat")}


def make_small(people: dict[str, Any]) -> dict[str, Any]:
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


def lines(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.content
    return [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
