"""Ratings in the exports, read from the table a chunk at a time: the HHH shape byte for byte as
before, and a dataset's own criterion in the rankings export, the pairs' include=ratings and
Parquet."""

from __future__ import annotations

import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from labeling import parquet
from labeling.models import Asked
from labeling.services import datasets
from tests.factories import DatasetFactory, make_prompt, token_client
from tests.labeling.test_export_options import parquet_pull, submit
from tests.labeling.test_exports import pull
from tests.labeling.test_leasing_scale import TRANSACTION_CONTROL

CONCISE = {"key": "concise", "label": "Concise", "scale_min": 1, "scale_max": 5}


@pytest.fixture
def client(staff):
    return token_client(staff)


def raw_lines(client, dataset, endpoint, **params) -> list[str]:
    response = client.get(reverse(f"labeling-api:{endpoint}", args=[dataset.slug]), params)
    assert response.status_code == 200
    return b"".join(response.streaming_content).decode().splitlines()


def as_the_json_column_held_it(ratings: dict) -> dict:
    """Ratings in the key order the old `Ranking.ratings` column gave them: PostgreSQL's jsonb
    (shorter keys first, then bytewise); SQLite kept the order they were submitted in."""
    if connection.vendor != "postgresql":
        return ratings
    ordered = sorted(ratings.items(), key=lambda item: (len(item[0]), item[0]))
    return {key: as_the_json_column_held_it(v) if isinstance(v, dict) else v for key, v in ordered}


def test_hhh_ratings_keep_their_bytes_in_both_ranking_shapes(client, labeler):
    dataset = DatasetFactory(ratings=Asked.OPTIONAL)
    prompt = make_prompt(dataset, completions=2)
    first, second = prompt.completions.order_by("position")
    submit(
        prompt,
        labeler,
        best_first=["c1", "c0"],
        ratings={"c0": {"helpful": 2, "harmless": 3}, "c1": {"helpful": 7, "honest": 6}},
    )
    stored = {
        str(first.pk): {"helpful": 2, "harmless": 3},
        str(second.pk): {"helpful": 7, "honest": 6},
    }
    [v1] = raw_lines(client, dataset, "rankings", shape="v1")
    assert f'"ratings": {json.dumps(as_the_json_column_held_it(stored))}, "flags": {{}}' in v1
    [v2] = raw_lines(client, dataset, "rankings")
    assert '"rank": 2, "ratings": {"helpful": 2, "honest": null, "harmless": 3}' in v2
    assert '"rank": 1, "ratings": {"helpful": 7, "honest": 6, "harmless": null}' in v2
    [pair] = raw_lines(client, dataset, "comparisons", include="ratings")
    assert pair.endswith(
        '"chosen_ratings": {"helpful": 7, "honest": 6, "harmless": null}, '
        '"rejected_ratings": {"helpful": 2, "honest": null, "harmless": 3}}'
    )


@pytest.fixture
def concise(db):
    dataset = datasets.create_dataset(
        slug="concise", status="active", criteria=[CONCISE, {"key": "helpful"}]
    )
    dataset.ratings = Asked.OPTIONAL
    dataset.save()
    return dataset


def test_a_custom_criterion_appears_in_every_export(client, concise, labeler):
    prompt = make_prompt(concise, completions=2)
    first = prompt.completions.get(position=0)
    submit(prompt, labeler, best_first=["c0", "c1"], ratings={"c0": {"concise": 5}})
    [row], _ = pull(client, concise, "rankings")
    assert [c["ratings"] for c in row["completions"]] == [
        {"concise": 5, "helpful": None},
        {"concise": None, "helpful": None},
    ]
    [old], _ = pull(client, concise, "rankings", shape="v1")
    assert old["ratings"] == {str(first.pk): {"concise": 5}}
    [pair], _ = pull(client, concise, include="ratings")
    assert pair["chosen_ratings"] == {"concise": 5, "helpful": None}
    assert pair["rejected_ratings"] == {"concise": None, "helpful": None}
    table = parquet_pull(client, concise, include="ratings")
    assert table.to_pylist()[0]["chosen_ratings"] == {"concise": 5, "helpful": None}
    assert table.schema == parquet.pair_schema(
        "trl",
        include=("ratings",),
        include_ids=False,
        consensus=False,
        criteria=["concise", "helpful"],
    )


def test_a_dataset_without_criteria_exports_empty_ratings(client, labeler):
    dataset = DatasetFactory(criteria=[])
    prompt = make_prompt(dataset, completions=2)
    submit(prompt, labeler, best_first=["c0", "c1"])
    [row], _ = pull(client, dataset, "rankings")
    assert [c["ratings"] for c in row["completions"]] == [{}, {}]
    [pair], _ = pull(client, dataset, include="ratings")
    assert (pair["chosen_ratings"], pair["rejected_ratings"]) == ({}, {})
    table = parquet_pull(client, dataset, include="ratings")  # Parquet: no such columns
    assert "chosen_ratings" not in table.column_names and table.num_rows == 1


def test_rankings_export_reads_ratings_once_per_chunk(client, concise, labeler, other_labeler):
    for _ in range(5):
        prompt = make_prompt(concise, completions=3)
        for user in (labeler, other_labeler):
            submit(prompt, user, best_first=["c0", "c1", "c2"], ratings={"c2": {"concise": 1}})
    with CaptureQueriesContext(connection) as captured:
        rows, _ = pull(client, concise, "rankings")
    queries = [q["sql"] for q in captured if not q["sql"].startswith(TRANSACTION_CONTROL)]
    # The token, the dataset, the cursor (and PostgreSQL's lock for it), a chunk of rankings,
    # their ratings, completions and prompts, the empty chunk after them, and the audit trail's
    # record of the pull.
    assert len(queries) <= 10, "\n".join(queries)
    assert sum(bool(re.search(r'FROM "?labeling_rating\b', sql)) for sql in queries) == 1
    assert len(rows) == 10
    assert json.dumps(rows).count('"concise": 1') == 10
