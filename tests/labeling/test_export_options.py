"""Pair export options: include= fields, exclude_unacceptable, the train/test split, Parquet,
and the rankings export's v2 shape."""

from __future__ import annotations

import io
import json
import uuid

import pyarrow.parquet as pq
import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling import export_options, exports, parquet
from labeling.models import Asked
from labeling.services import rankings
from tests.factories import (
    CompletionFactory,
    DatasetFactory,
    PromptFactory,
    UserFactory,
    make_lease,
    make_prompt,
)
from tests.labeling.test_exports import pull, rank

ALL_INCLUDES = ",".join(export_options.INCLUDES)


@pytest.fixture
def dataset(db):
    """Ratings optional, so a test rates only what it asserts on."""
    return DatasetFactory(ratings=Asked.OPTIONAL)


@pytest.fixture
def client(staff):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff).key}")
    return client


def two_model_prompt(dataset, **fields):
    """A prompt with metadata and two completions of named models (the second unnamed)."""
    prompt = PromptFactory(dataset=dataset, metadata={"source": "forum", "turns": 1}, **fields)
    CompletionFactory(prompt=prompt, position=0, external_id="a", model_name="gpt-x")
    CompletionFactory(prompt=prompt, position=1, external_id="b", model_name="")
    return prompt


def submit(prompt, labeler, *, best_first, all_unacceptable=False, flags=None, ratings=None):
    """`labeler` ranks `prompt`'s completions in the order of these external ids."""
    ids = dict(prompt.completions.values_list("external_id", "pk"))
    return rankings.submit_ranking(
        assignment=make_lease(prompt, labeler),
        order=[[ids[name]] for name in best_first],
        ratings={ids[name]: values for name, values in (ratings or {}).items()},
        flags={ids[name]: values for name, values in (flags or {}).items()},
        request_id=uuid.uuid4(),
        seconds_spent=3,
        strength="slightly" if len(ids) == 2 else "",
        all_unacceptable=all_unacceptable,
    )


def parquet_pull(client, dataset, **params):
    response = client.get(
        reverse("labeling-api:comparisons", args=[dataset.slug]), {"output": "parquet", **params}
    )
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/vnd.apache.parquet"
    assert response["Content-Disposition"].endswith('.parquet"')
    assert int(response["X-PrefLab-Cursor"]) >= 0
    return pq.read_table(io.BytesIO(b"".join(response.streaming_content)))


# --- include= ---------------------------------------------------------------------------------


@pytest.mark.parametrize("format", exports.COMPARISON_FORMATS)
def test_include_adds_models_ratings_flags_metadata_strength_and_agreement(
    client, dataset, labeler, other_labeler, format
):
    prompt = two_model_prompt(dataset)
    submit(
        prompt,
        labeler,
        best_first=["b", "a"],
        ratings={"a": {"helpful": 2}, "b": {"helpful": 6, "honest": 7}},
        flags={"a": ["hallucination"]},
    )
    submit(prompt, other_labeler, best_first=["a", "b"])
    rows, _ = pull(client, dataset, format=format, include=ALL_INCLUDES)
    first = rows[0]
    base = exports.comparison_row(format, prompt.messages, *texts(prompt, "b", "a"))
    assert {key: first[key] for key in base} == base
    assert {key: value for key, value in first.items() if key not in base} == {
        "chosen_model": None,
        "rejected_model": "gpt-x",
        "chosen_ratings": {"helpful": 6, "honest": 7, "harmless": None},
        "rejected_ratings": {"helpful": 2, "honest": None, "harmless": None},
        "chosen_flags": [],
        "rejected_flags": ["hallucination"],
        "all_unacceptable": False,
        "prompt_metadata": {"source": "forum", "turns": 1},
        "strength": "slightly",
        "agreement": 0.5,
        "voters": 2,
        # No reward model has scored the dataset: null predictions, in the same shape.
        "chosen_reward": None,
        "rejected_reward": None,
        "chosen_criterion_rewards": {"helpful": None, "honest": None, "harmless": None},
        "rejected_criterion_rewards": {"helpful": None, "honest": None, "harmless": None},
    }


def texts(prompt, *external_ids):
    by_id = dict(prompt.completions.values_list("external_id", "text"))
    return [by_id[external_id] for external_id in external_ids]


def test_include_asks_for_only_what_is_named(client, dataset, labeler):
    submit(two_model_prompt(dataset), labeler, best_first=["a", "b"])
    [row], _ = pull(client, dataset, include="models", include_ids="true")
    assert set(row) == {
        "prompt",
        "chosen",
        "rejected",
        "chosen_model",
        "rejected_model",
        "ids",
        "margin",
        "strength",
    }


def test_unknown_include_names_are_a_400_naming_them(client, dataset):
    response = client.get(
        reverse("labeling-api:comparisons", args=[dataset.slug]),
        {"include": "models,colour,size"},
    )
    assert response.status_code == 400
    [message] = response.json()["include"]
    assert "colour, size" in message and "models, ratings" in message


def test_consensus_takes_the_includes_of_a_pair_of_many_labelers(
    client, dataset, labeler, other_labeler
):
    prompt = two_model_prompt(dataset)
    submit(prompt, labeler, best_first=["a", "b"])
    submit(prompt, other_labeler, best_first=["a", "b"])
    [row], _ = pull(client, dataset, consensus="true", include="models,metadata,agreement")
    assert (row["chosen_model"], row["rejected_model"], row["agreement"], row["voters"]) == (
        "gpt-x",
        None,
        1.0,
        2,
    )
    assert row["prompt_metadata"] == {"source": "forum", "turns": 1}
    response = client.get(
        reverse("labeling-api:comparisons", args=[dataset.slug]),
        {"consensus": "true", "include": "models,ratings"},
    )
    assert response.status_code == 400
    assert "ratings belong to one labeler" in response.json()["include"][0]


# --- exclude_unacceptable ---------------------------------------------------------------------


def test_exclude_unacceptable_drops_the_pairs_and_rankings_of_such_rankings(
    client, dataset, labeler, other_labeler
):
    prompt = make_prompt(dataset, completions=3)
    submit(prompt, labeler, best_first=["c0", "c1", "c2"], all_unacceptable=True)
    kept = submit(prompt, other_labeler, best_first=["c2", "c1", "c0"])
    assert len(pull(client, dataset)[0]) == 6
    rows, _ = pull(client, dataset, exclude_unacceptable="true", include_ids="true")
    assert {row["ids"]["ranking"] for row in rows} == {kept.pk} and len(rows) == 3
    consensus, _ = pull(client, dataset, consensus="true", exclude_unacceptable="true")
    assert len(consensus) == 3  # the one ranking left is a strict majority on every pair
    assert pull(client, dataset, consensus="true")[0] == []  # 1 vote each way: no majority
    ranked, _ = pull(client, dataset, "rankings", exclude_unacceptable="true", include_ids="true")
    assert [row["ids"]["ranking"] for row in ranked] == [kept.pk]


# --- split= -----------------------------------------------------------------------------------


def test_split_of_a_thousand_prompts_is_disjoint_covering_and_near_its_share():
    ids = [f"prompt-{n}" for n in range(1000)]
    test = {i for i in ids if export_options.Split("test", 0.2, seed=3).keeps(i)}
    train = {i for i in ids if export_options.Split("train", 0.2, seed=3).keeps(i)}
    assert test.isdisjoint(train) and test | train == set(ids)
    assert 150 <= len(test) <= 250
    assert test == {i for i in ids if export_options.in_test_part(3, i, 0.2)}  # the same every time
    assert test != {
        i for i in ids if export_options.in_test_part(4, i, 0.2)
    }  # another seed, another
    # A fixed value, so a change of the hash (which would move prompts between parts) shows.
    assert sorted(test)[:3] == ["prompt-1", "prompt-102", "prompt-106"]


def test_split_keeps_every_pair_of_a_prompt_together(client, dataset, labeler, other_labeler):
    prompts = [make_prompt(dataset, completions=3) for _ in range(30)]
    for prompt in prompts:
        submit(prompt, labeler, best_first=["c0", "c1", "c2"])
        submit(prompt, other_labeler, best_first=["c1", "c0", "c2"])
    params = {"include_ids": "true", "split": "test", "test_share": "0.3", "seed": "7"}
    test, _ = pull(client, dataset, **params)
    train, _ = pull(client, dataset, **(params | {"split": "train"}))
    assert pull(client, dataset, **params)[0] == test
    per_prompt = {}
    for part, rows in (("test", test), ("train", train)):
        for row in rows:
            per_prompt.setdefault(row["ids"]["prompt"], []).append((part, row["ids"]["comparison"]))
    assert len(test) + len(train) == 30 * 6
    assert all(
        len(pairs) == 6 and len({part for part, _ in pairs}) == 1 for pairs in per_prompt.values()
    )
    external = {prompt.pk: prompt.external_id for prompt in prompts}
    assert {prompt for prompt, pairs in per_prompt.items() if pairs[0][0] == "test"} == {
        pk for pk in external if export_options.in_test_part(7, external[pk], 0.3)
    }
    test_rankings, _ = pull(client, dataset, "rankings", split="test", test_share="0.3", seed="7")
    assert {row["prompt_id"] for row in test_rankings} == {
        external[row["ids"]["prompt"]] for row in test
    }


@pytest.mark.parametrize(
    ("params", "field", "hint"),
    [
        ({"split": "validation"}, "split", "train or test"),
        ({"split": "test", "test_share": "0"}, "test_share", "between 0 and 1"),
        ({"split": "test", "test_share": "1"}, "test_share", "between 0 and 1"),
        ({"split": "test", "test_share": "nan"}, "test_share", "between 0 and 1"),
        ({"split": "test", "seed": "-1"}, "seed", "0 to 4294967295"),
        ({"split": "test", "seed": "4294967296"}, "seed", "0 to 4294967295"),
        ({"test_share": "0.2"}, "test_share", "only with split"),
        ({"seed": "2"}, "seed", "only with split"),
        ({"output": "csv"}, "output", "jsonl or parquet"),
        ({"include": "x" * 201}, "include", "200"),
        ({"exclude_unacceptable": "perhaps"}, "exclude_unacceptable", "true or false"),
    ],
)
def test_bad_option_is_a_400_saying_what_is_accepted(client, dataset, params, field, hint):
    response = client.get(reverse("labeling-api:comparisons", args=[dataset.slug]), params)
    assert response.status_code == 400
    assert hint in str(response.json()[field])


def test_rankings_shape_is_v2_or_v1(client, dataset):
    response = client.get(reverse("labeling-api:rankings", args=[dataset.slug]), {"shape": "v3"})
    assert response.status_code == 400
    assert "v2 or v1" in response.json()["shape"][0]


# --- the rankings export ----------------------------------------------------------------------


def test_rankings_v2_lists_completion_records_and_the_order_by_import_ids(client, dataset, labeler):
    prompt = make_prompt(dataset, completions=3)
    ranking = rankings.submit_ranking(
        assignment=make_lease(prompt, labeler),
        order=[[c.pk] for c in prompt.completions.order_by("-position")[:1]]
        + [[c.pk for c in prompt.completions.order_by("position")[:2]]],
        ratings={prompt.completions.get(external_id="c0").pk: {"helpful": 5}},
        flags={prompt.completions.get(external_id="c1").pk: ["hallucination"]},
        request_id=uuid.uuid4(),
        seconds_spent=4,
    )
    [row], _ = pull(client, dataset, "rankings")
    c0, c1, c2 = prompt.completions.order_by("position")
    none = {"helpful": None, "honest": None, "harmless": None}
    assert row["prompt"] == prompt.messages and row["prompt_id"] == prompt.external_id
    assert row["completions"] == [
        {
            "id": "c0",
            "text": c0.text,
            "model": "model-x",
            "rank": 2,
            "ratings": none | {"helpful": 5},
            "flags": [],
        },
        {
            "id": "c1",
            "text": c1.text,
            "model": "model-x",
            "rank": 2,
            "ratings": none,
            "flags": ["hallucination"],
        },
        {"id": "c2", "text": c2.text, "model": "model-x", "rank": 1, "ratings": none, "flags": []},
    ]
    assert row["order"] == [["c2"], ["c0", "c1"]]
    [old], _ = pull(client, dataset, "rankings", shape="v1", include_ids="true")
    assert old["order"] == ranking.order
    assert old["ratings"] == {str(c0.pk): {"helpful": 5}}
    assert old["completions"][0] == {
        "id": c0.pk,
        "external_id": "c0",
        "text": c0.text,
        "model": "model-x",
    }


# --- Parquet ----------------------------------------------------------------------------------


def jsonl_as_parquet_reads_it(row, *, include_ids, consensus=False):
    """A JSON Lines row as its Parquet twin reads back: metadata as JSON text, and a strength
    column that is None where the JSON line leaves it out (for consensus rows: the margin and
    adjudication id that only adjudicated rows have)."""
    if "prompt_metadata" in row:
        row["prompt_metadata"] = json.dumps(row["prompt_metadata"], ensure_ascii=False)
    if include_ids and not consensus:
        row.setdefault("strength", None)
    if consensus and "ids" in row:
        row["ids"].setdefault("adjudication", None)
        row.setdefault("margin", None)
    return row


@pytest.mark.parametrize("format", exports.COMPARISON_FORMATS)
@pytest.mark.parametrize("options", [{}, {"include": ALL_INCLUDES, "include_ids": "true"}])
def test_parquet_holds_the_rows_of_the_jsonl_export(
    client, dataset, labeler, other_labeler, monkeypatch, format, options
):
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 4)  # several row groups
    for prompt in [two_model_prompt(dataset) for _ in range(3)] + [
        make_prompt(dataset, completions=3)
    ]:
        rank(
            dataset,
            labeler,
            prompt=prompt,
            order=[[1], [0]] + [[2]] * (prompt.completions.count() > 2),
        )
    params = {"format": format, **options}
    rows, _ = pull(client, dataset, **params)
    table = parquet_pull(client, dataset, **params)
    expected = [
        jsonl_as_parquet_reads_it(row, include_ids="include_ids" in options) for row in rows
    ]
    assert table.to_pylist() == expected
    assert table.schema == parquet.pair_schema(
        format,
        include=export_options.INCLUDES if options else (),
        include_ids=bool(options),
        consensus=False,
        criteria=["helpful", "honest", "harmless"],
    )


def test_parquet_of_consensus_pairs_and_of_an_empty_export(client, dataset, labeler, other_labeler):
    empty = parquet_pull(client, dataset, format="trl-conversational", consensus="true")
    assert empty.num_rows == 0 and empty.column_names == ["prompt", "chosen", "rejected", "source"]
    prompt = two_model_prompt(dataset)
    submit(prompt, labeler, best_first=["a", "b"])
    submit(prompt, other_labeler, best_first=["a", "b"])
    params = {"consensus": "true", "include": "models,metadata,agreement", "include_ids": "true"}
    rows, _ = pull(client, dataset, format="openai", **params)
    table = parquet_pull(client, dataset, format="openai", **params)
    expected = [jsonl_as_parquet_reads_it(row, include_ids=False, consensus=True) for row in rows]
    assert table.to_pylist() == expected


def test_parquet_export_reads_a_fixed_number_of_queries(
    client, dataset, django_assert_max_num_queries
):
    dataset.labels_per_prompt = 3
    dataset.save()
    for _ in range(10):
        make_prompt(dataset, completions=4)
    for user in UserFactory.create_batch(3):
        for _ in range(10):
            rank(dataset, user)
    # One chunk: on PostgreSQL, two of these read its prompts and completions by id range.
    with django_assert_max_num_queries(16):
        table = parquet_pull(client, dataset, include=ALL_INCLUDES, split="train", seed="1")
    assert 0 < table.num_rows <= 10 * 3 * 6
