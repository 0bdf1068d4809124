"""Gold prompts in the service: checking a gold order and promoting unanimous prompts."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from labeling.services import gold
from tests.factories import UserFactory, token_client
from tests.labeling.quality_data import lines, rank, report_of, row_of


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
