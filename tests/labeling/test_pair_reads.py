"""A pair export's reads on PostgreSQL: prompts and completions by id range, and the rows they
make, equal to the joined query's on any order of ids (SQLite reads that joined query)."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connection
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

# Imported before any test shrinks exports.CHUNK_SIZE: they take their own chunk sizes from it.
from labeling import consensus_exports, exports, pair_reads, ranking_exports  # noqa: F401
from labeling.models import Comparison, Prompt
from labeling.pair_reads import GAP, MAX_RUNS, id_filter
from tests.factories import DatasetFactory, UserFactory, make_prompt
from tests.labeling.test_exports import rank


def test_dense_ids_are_read_as_one_range_whatever_their_order_and_repeats():
    assert id_filter([7, 5, 6, 5, 9]) == ("id BETWEEN %s AND %s", [5, 9])


def test_runs_of_ids_are_read_as_ranges():
    ids = [1, 2, 3, 100, 101, 101 + GAP, 500]  # ids at most GAP apart make one run
    where, params = id_filter(ids)
    assert where == " OR ".join(["id BETWEEN %s AND %s"] * 3)
    assert params == [1, 3, 100, 101 + GAP, 500, 500]


def test_scattered_ids_are_read_by_id():
    # A few lone ids are as many one-id ranges: each costs what a probe by id does.
    assert id_filter([1, 50, 100]) == (
        " OR ".join(["id BETWEEN %s AND %s"] * 3),
        [1, 1, 50, 50, 100, 100],
    )
    too_many_runs = [run * 100 + offset for run in range(MAX_RUNS + 1) for offset in range(3)]
    assert id_filter(too_many_runs)[0] == "id = ANY(%s)"
    mostly_gaps = [run * GAP for run in range(10)]  # one run, but 3 rows of 4 not wanted
    assert id_filter(mostly_gaps) == ("id = ANY(%s)", [mostly_gaps])


@pytest.fixture
def staff_client(staff):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff).key}")
    return client


@pytest.mark.parametrize(
    "chunk_size, prompt_count, other_completions, read_by",
    [
        (1, 6, 2, "BETWEEN"),  # a chunk a pair
        (3, 6, 2, "BETWEEN"),  # the other dataset's ids between, read and dropped
        (1000, 6, 30, " OR "),  # one run of ids a prompt
        (1000, 20, 30, "ANY"),  # more runs than MAX_RUNS
    ],
)
def test_rows_equal_the_comparisons_whatever_the_order_of_their_ids(
    staff_client, monkeypatch, chunk_size, prompt_count, other_completions, read_by
):
    """Two datasets imported in turns (their ids interleaved), labeled last prompt first, with
    a gold prompt among them: each line is the comparison's, in id order, in every chunking
    and however the ids are read."""
    monkeypatch.setattr(exports, "CHUNK_SIZE", chunk_size)
    filters = []

    def spied(ids):
        filters.append(id_filter(ids)[0])
        return filters[-1], id_filter(ids)[1]

    monkeypatch.setattr(pair_reads, "id_filter", spied)
    dataset, other = DatasetFactory(labels_per_prompt=1), DatasetFactory(labels_per_prompt=1)
    prompts = []
    for number in range(prompt_count):
        prompts.append(make_prompt(dataset, completions=3, metadata={"n": number}))
        make_prompt(other, completions=other_completions)
    gold = make_prompt(dataset, completions=3, is_gold=True, gold_order=[["c0"], ["c1"], ["c2"]])
    labeler = UserFactory()
    for prompt in [*reversed(prompts), gold]:
        rank(dataset, labeler, prompt=prompt, order=[[2], [0], [1]])
    rank(other, labeler, prompt=other.prompts.first())

    response = staff_client.get(
        reverse("labeling-api:comparisons", args=[dataset.slug]),
        {"format": "trl", "include_ids": "true", "include": "models,metadata"},
    )
    assert response.status_code == 200
    lines = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]

    expected = Comparison.objects.filter(dataset=dataset, prompt__is_gold=False).order_by("pk")
    assert [line["ids"]["comparison"] for line in lines] == [c.pk for c in expected]
    for line, comparison in zip(lines, expected, strict=True):
        assert line["prompt"] == comparison.prompt.messages[-1]["content"]
        assert (line["chosen"], line["rejected"]) == (
            comparison.chosen.text,
            comparison.rejected.text,
        )
        assert line["ids"]["chosen_external"] == comparison.chosen.external_id
        assert line["ids"]["rejected_external"] == comparison.rejected.external_id
        assert line["prompt_metadata"] == comparison.prompt.metadata
        assert line["chosen_model"] == (comparison.chosen.model_name or None)
    if connection.vendor == "postgresql":
        assert any(read_by in where for where in filters), filters
    else:
        assert filters == []  # SQLite reads one joined query


def test_gold_prompts_pairs_come_with_exclude_gold_off(staff_client):
    dataset = DatasetFactory(labels_per_prompt=1)
    gold = make_prompt(dataset, completions=2, is_gold=True, gold_order=[["c0"], ["c1"]])
    make_prompt(dataset, completions=2)
    labeler = UserFactory()
    rank(dataset, labeler, prompt=gold)
    rank(dataset, labeler, prompt=dataset.prompts.exclude(pk=gold.pk).get())
    url = reverse("labeling-api:comparisons", args=[dataset.slug])
    for params, count in (({}, 1), ({"exclude_gold": "false"}, 2)):
        response = staff_client.get(url, {"format": "trl", **params})
        assert b"".join(response.streaming_content).count(b"\n") == count


def test_a_lone_surrogate_is_encoded_as_the_standard_library_does():
    assert exports.encode("a\ud800b") == json.dumps("a\ud800b", ensure_ascii=False)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_export_reads_prompts_as_they_were_when_it_began(staff_client, monkeypatch):
    """Prompts are read a chunk at a time, on a second connection, after the comparisons'
    cursor opened: a prompt marked gold and another's metadata edited meanwhile (by an admin,
    say) do not show."""
    monkeypatch.setattr(exports, "CHUNK_SIZE", 1)
    snapshots = []

    def spied(snapshot):
        snapshots.append(snapshot)
        return pair_reads.side_cursor(snapshot)

    monkeypatch.setattr(exports, "side_cursor", spied)
    dataset = DatasetFactory(labels_per_prompt=1)
    prompts = [make_prompt(dataset, completions=2, metadata={"n": n}) for n in range(3)]
    labeler = UserFactory()
    for prompt in prompts:
        rank(dataset, labeler, prompt=prompt)
    response = staff_client.get(
        reverse("labeling-api:comparisons", args=[dataset.slug]), {"include": "metadata"}
    )
    body = iter(response.streaming_content)
    first = next(body)

    def edit() -> None:
        try:
            marked = {"is_gold": True, "gold_order": [["c0"], ["c1"]]}
            Prompt.objects.filter(pk=prompts[1].pk).update(**marked)
            Prompt.objects.filter(pk=prompts[2].pk).update(metadata={"n": "edited"})
        finally:
            connection.close()

    editor = threading.Thread(target=edit)
    editor.start()
    editor.join()
    lines = [json.loads(line) for line in (first + b"".join(body)).splitlines()]
    response.close()
    assert [line["prompt_metadata"] for line in lines] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert Prompt.objects.get(pk=prompts[2].pk).metadata == {"n": "edited"}
    # Read on a second connection, which took the export's snapshot.
    assert len(snapshots) == 1 and snapshots[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_export_refused_a_second_connection_reads_on_its_own(staff_client, monkeypatch):
    import psycopg

    def refused(*args, **kwargs):
        raise psycopg.OperationalError("too many clients already")

    monkeypatch.setattr(psycopg, "connect", refused)
    dataset = DatasetFactory(labels_per_prompt=1)
    for _ in range(3):
        rank(dataset, UserFactory(), prompt=make_prompt(dataset, completions=3))
    response = staff_client.get(reverse("labeling-api:comparisons", args=[dataset.slug]))
    assert b"".join(response.streaming_content).count(b"\n") == 9
