"""Adjudicated orders in the exports: `adjudicated=true` and the consensus preferring them."""

from __future__ import annotations

import pytest
from django.urls import reverse

from labeling.services import adjudication
from tests.factories import UserFactory, token_client
from tests.labeling.quality_data import lines


def settle(prompt, order_text: str):
    """Adjudicate `prompt` with an order written like 'c1 > c0 = c2'."""
    ids = dict(prompt.completions.values_list("external_id", "pk"))
    order = [[ids[name.strip()] for name in group.split("=")] for group in order_text.split(">")]
    return adjudication.adjudicate_prompt(
        prompt=prompt, order=order, note="", reviewer=UserFactory(is_superuser=True)
    )


def pairs_of(rows, prompt=None):
    return {
        (row["ids"]["chosen_external"], row["ids"]["rejected_external"])
        for row in rows
        if prompt is None or row["ids"]["prompt"] == prompt.pk
    }


def test_adjudicated_export_gives_the_pairs_of_the_newest_adjudications(small, staff):
    settle(small["p2"], "c0 > c1 > c2")
    newest = settle(small["p2"], "c2 > c0 = c1")
    settle(small["p4"], "c1 > c0 > c2")  # nobody ranked it: a reviewer's order still counts
    url = reverse("labeling-api:comparisons", args=[small["dataset"].slug])
    client = token_client(staff)
    rows = lines(client.get(url, {"adjudicated": "true", "include_ids": "true"}))
    assert pairs_of(rows, small["p2"]) == {("c2", "c0"), ("c2", "c1")}
    assert pairs_of(rows, small["p4"]) == {("c1", "c0"), ("c1", "c2"), ("c0", "c2")}
    assert len(rows) == 5
    assert {row["source"] for row in rows} == {"adjudicated"}
    p2_rows = [row for row in rows if row["ids"]["prompt"] == small["p2"].pk]
    assert {row["ids"]["adjudication"] for row in p2_rows} == {newest.pk}
    assert {row["margin"] for row in p2_rows} == {1}
    plain = lines(client.get(url, {"adjudicated": "true", "format": "hh"}))
    assert len(plain) == 5 and set(plain[0]) == {"chosen", "rejected", "source"}


def test_consensus_export_prefers_the_adjudicated_order(small, staff):
    settle(small["p3"], "c1 > c0")  # the labelers' consensus is c0 > c1
    url = reverse("labeling-api:comparisons", args=[small["dataset"].slug])
    rows = lines(token_client(staff).get(url, {"consensus": "true", "include_ids": "true"}))
    p3 = [row for row in rows if row["ids"]["prompt"] == small["p3"].pk]
    assert [(r["ids"]["chosen_external"], r["source"]) for r in p3] == [("c1", "adjudicated")]
    p1 = [row for row in rows if row["ids"]["prompt"] == small["p1"].pk]
    assert {row["source"] for row in p1} == {"consensus"} and len(p1) == 3


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"adjudicated": "true", "since": "2"}, "since"),
        ({"adjudicated": "true", "consensus": "true"}, "adjudicated"),
        ({"adjudicated": "true", "min_agreement": "0.5"}, "min_agreement"),
        ({"adjudicated": "maybe"}, "adjudicated"),
    ],
)
def test_adjudicated_options_that_do_not_fit_are_refused(small, staff, params, field):
    url = reverse("labeling-api:comparisons", args=[small["dataset"].slug])
    response = token_client(staff).get(url, params)
    assert response.status_code == 400
    assert field in response.json()


def test_adjudicated_pairs_as_parquet_and_with_the_fields_a_reviewer_order_has(small, staff):
    import io

    import pyarrow.parquet as pq

    settle(small["p3"], "c1 > c0")
    url = reverse("labeling-api:comparisons", args=[small["dataset"].slug])
    client = token_client(staff)
    response = client.get(
        url, {"adjudicated": "true", "output": "parquet", "include": "models,agreement"}
    )
    table = pq.read_table(io.BytesIO(b"".join(response.streaming_content)))
    assert table.num_rows == 1
    row = table.to_pylist()[0]
    assert (row["source"], row["agreement"], row["voters"]) == ("adjudicated", None, None)
    refused = client.get(url, {"adjudicated": "true", "include": "ratings"})
    assert refused.status_code == 400 and "adjudicated=true" in refused.json()["include"][0]
