"""Rating criteria as rows and ratings as a table: the dataset services that make and change
criteria, the submit checks against each criterion's scale, the rows written with the ranking,
the database's own checks, and the conversions the data migrations run."""

from __future__ import annotations

import uuid

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from labeling import criteria
from labeling.models import Asked, Comparison, Ranking, Rating, RatingCriterion
from labeling.services import datasets, leasing, ranking_store, rankings
from tests.factories import (
    DatasetFactory,
    everyone_in_default_workspace,
    make_criterion,
    make_prompt,
)
from tests.labeling.test_leasing_scale import TRANSACTION_CONTROL

CONCISE = {
    "key": "concise",
    "label": "Concise",
    "description": "No padding.",
    "scale_min": 1,
    "scale_max": 5,
    "min_label": "Rambling",
    "max_label": "Tight",
}


def lease(dataset, labeler, completions=2):
    make_prompt(dataset, completions=completions)
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    ids = list(assignment.prompt.completions.order_by("position").values_list("pk", flat=True))
    return assignment, ids


def submit(assignment, ids, ratings, **overrides):
    return rankings.submit_ranking(
        assignment=assignment,
        order=[[cid] for cid in ids],
        ratings=ratings,
        flags={},
        request_id=uuid.uuid4(),
        seconds_spent=4.0,
        strength="better" if len(ids) == 2 else "",
        **overrides,
    )


@pytest.fixture
def concise(db):
    """A dataset that rates one criterion of its own, on 1 to 5, offered to every test user."""
    dataset = datasets.create_dataset(slug="concise", status="active", criteria=[CONCISE])
    dataset.pool_groups.add(everyone_in_default_workspace())
    return dataset


# --- Making and changing criteria ------------------------------------------------------------


def test_a_new_dataset_gets_helpful_honest_harmless_on_one_to_seven(db):
    dataset = datasets.create_dataset(slug="plain")
    made = list(dataset.criteria.values_list("key", "position", "scale_min", "scale_max"))
    assert made == [("helpful", 0, 1, 7), ("honest", 1, 1, 7), ("harmless", 2, 1, 7)]
    helpful = dataset.criteria.get(key="helpful")
    assert helpful.label == "Helpful" and helpful.description
    assert (helpful.min_label, helpful.max_label) == ("Not helpful at all", "Extremely helpful")


def test_a_dataset_can_be_made_with_its_own_criteria_or_none(concise):
    (criterion,) = concise.criteria.all()
    assert (criterion.key, criterion.scale_min, criterion.scale_max) == ("concise", 1, 5)
    assert (criterion.min_label, criterion.max_label) == ("Rambling", "Tight")
    bare = datasets.create_dataset(slug="bare", criteria=[])
    assert not bare.criteria.exists()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([CONCISE, CONCISE], "criteria[1].key: 'concise' appears twice"),
        ([CONCISE | {"scale_max": 1}], "criteria[0].scale_max: must be above scale_min"),
        ([CONCISE | {"scale_max": 12}], "criteria[0].scale_max:"),
        ([{"key": "not a slug"}], "criteria[0].key:"),
        ([{"key": "rank"}], "criteria[0].key: 'rank' is reserved"),
        ([{"key": "kind", "colour": "red"}], "criteria[0]: unknown fields ['colour']"),
    ],
)
def test_invalid_criteria_are_refused_naming_the_index(db, given, message):
    with pytest.raises(ValidationError) as error:
        datasets.create_dataset(slug="bad", criteria=given)
    assert message in error.value.message_dict["criteria"][0]
    assert not RatingCriterion.objects.exists()


def test_changing_criteria_keeps_them_by_key_and_their_ratings(concise, labeler):
    assignment, ids = lease(concise, labeler)
    submit(assignment, ids, {ids[0]: {"concise": 5}, ids[1]: {"concise": 2}})
    before = concise.criteria.get().pk
    datasets.update_dataset(
        dataset=concise,
        criteria=[{"key": "clear", "label": "Clear"}, CONCISE | {"label": "Brief"}],
    )
    assert list(concise.criteria.values_list("key", "position")) == [("clear", 0), ("concise", 1)]
    kept = concise.criteria.get(key="concise")
    assert (kept.pk, kept.label) == (before, "Brief")
    assert Rating.objects.filter(criterion=kept).count() == 2


def test_a_rated_criterion_cannot_be_dropped_nor_its_scale_cut_below_its_ratings(concise, labeler):
    assignment, ids = lease(concise, labeler)
    submit(assignment, ids, {ids[0]: {"concise": 5}, ids[1]: {"concise": 2}})
    with pytest.raises(ValidationError, match="'concise' has ratings and cannot be removed"):
        datasets.update_dataset(dataset=concise, criteria=[{"key": "clear"}])
    with pytest.raises(ValidationError, match=r"criteria\[0\]: 'concise' has ratings from 2 to 5"):
        datasets.update_dataset(dataset=concise, criteria=[CONCISE | {"scale_max": 4}])
    assert list(concise.criteria.values_list("key", "scale_max")) == [("concise", 5)]


def test_a_dataset_with_ratings_can_still_be_deleted_with_them(concise, labeler):
    assignment, ids = lease(concise, labeler)
    submit(assignment, ids, {ids[0]: {"concise": 5}, ids[1]: {"concise": 2}})
    concise.delete()
    assert not Rating.objects.exists() and not RatingCriterion.objects.exists()


# --- Submitting ratings ----------------------------------------------------------------------


def test_ratings_on_a_one_to_five_criterion_are_stored_as_rows(concise, labeler):
    assignment, ids = lease(concise, labeler)
    ranking = submit(assignment, ids, {ids[0]: {"concise": 5}, ids[1]: {"concise": 1}})
    rows = set(Rating.objects.values_list("ranking", "completion", "criterion__key", "value"))
    assert rows == {(ranking.pk, ids[0], "concise", 5), (ranking.pk, ids[1], "concise", 1)}
    assert ranking.rating_values == {str(ids[0]): {"concise": 5}, str(ids[1]): {"concise": 1}}
    assert Ranking.objects.get().rating_values == ranking.rating_values  # read from the table


@pytest.mark.parametrize("value", [0, 6])
def test_a_rating_outside_its_criterions_scale_is_refused_naming_completion_and_criterion(
    concise, labeler, value
):
    assignment, ids = lease(concise, labeler)
    with pytest.raises(ValidationError) as error:
        submit(assignment, ids, {ids[0]: {"concise": value}, ids[1]: {"concise": 3}})
    assert error.value.message_dict["ratings"] == [
        f"Completion {ids[0]}: concise must be a whole number from 1 to 5."
    ]
    assert not Ranking.objects.exists() and not Rating.objects.exists()


def test_a_rating_on_a_criterion_the_dataset_lacks_is_refused(concise, labeler):
    assignment, ids = lease(concise, labeler)
    ratings = {ids[0]: {"concise": 3, "helpful": 7}, ids[1]: {"concise": 3}}
    with pytest.raises(ValidationError, match="unknown criterion 'helpful'; rate concise"):
        submit(assignment, ids, ratings)
    assert not Rating.objects.exists()


def test_another_datasets_criterion_of_the_same_key_is_not_used(concise, labeler):
    other = DatasetFactory(criteria=[])
    make_criterion(other, "concise", scale_min=0, scale_max=10)
    assignment, ids = lease(concise, labeler)
    with pytest.raises(ValidationError, match="from 1 to 5"):
        submit(assignment, ids, {ids[0]: {"concise": 9}, ids[1]: {"concise": 3}})
    submit(assignment, ids, {ids[0]: {"concise": 4}, ids[1]: {"concise": 3}})
    assert set(Rating.objects.values_list("criterion__dataset", flat=True)) == {concise.pk}


def test_ratings_are_written_in_the_rankings_transaction(concise, labeler, monkeypatch):
    assignment, ids = lease(concise, labeler)
    if connection.vendor == "postgresql":
        # One statement stores everything: a comparison the database refuses undoes it all.
        refused = ranking_store.STORE.replace("c.margin, %(strength)s", "0, %(strength)s")
        assert refused != ranking_store.STORE
        monkeypatch.setattr(ranking_store, "STORE", refused)
    else:

        def fail(*args, **kwargs):
            raise IntegrityError("comparisons refused")

        monkeypatch.setattr(ranking_store, "store_comparisons", fail)
    with pytest.raises(IntegrityError):
        submit(assignment, ids, {ids[0]: {"concise": 4}, ids[1]: {"concise": 3}})
    assert not Ranking.objects.exists() and not Rating.objects.exists()
    assert not Comparison.objects.exists()
    assignment.refresh_from_db()
    assert assignment.status == assignment.Status.LEASED


def test_submit_with_ratings_stores_them_in_as_few_queries(concise, labeler):
    assignment, ids = lease(concise, labeler)
    with CaptureQueriesContext(connection) as captured:
        ranking = submit(assignment, ids, {ids[0]: {"concise": 4}, ids[1]: {"concise": 3}})
    queries = [q["sql"] for q in captured if not q["sql"].startswith(TRANSACTION_CONTROL)]
    if connection.vendor == "postgresql":
        # The assignment with its criteria; then the ranking, ratings, comparisons and status.
        assert len(queries) == 2, "\n".join(queries)
        assert "INSERT INTO labeling_rating" in queries[1]
    else:
        # The assignment with its criteria, the ranking, its ratings, the comparisons, the status.
        assert len(queries) == 5, "\n".join(queries)
        assert sum('INSERT INTO "labeling_rating"' in sql for sql in queries) == 1
    stored = Ranking.objects.get()
    assert ranking.pk == stored.pk and stored.rating_values == ranking.rating_values
    assert ranking.rating_values == {str(ids[0]): {"concise": 4}, str(ids[1]): {"concise": 3}}
    assert ranking.comparison_count == stored.comparisons.count() == 1


def test_optional_ratings_store_only_what_was_given(concise, labeler):
    concise.ratings = Asked.OPTIONAL
    concise.save()
    assignment, ids = lease(concise, labeler)
    ranking = submit(assignment, ids, {ids[1]: {"concise": 2}})
    assert ranking.rating_values == {str(ids[1]): {"concise": 2}}
    assert Rating.objects.count() == 1


# --- The database's own checks ---------------------------------------------------------------


def test_the_database_refuses_a_scale_out_of_order_or_bounds(concise):
    for scale in [{"scale_min": 5, "scale_max": 5}, {"scale_min": 0, "scale_max": 11}]:
        with pytest.raises(IntegrityError), transaction.atomic():
            RatingCriterion.objects.create(dataset=concise, key="x", label="X", **scale)


def test_the_database_refuses_a_second_rating_of_the_same_thing(concise, labeler):
    assignment, ids = lease(concise, labeler)
    ranking = submit(assignment, ids, {ids[0]: {"concise": 4}, ids[1]: {"concise": 3}})
    with pytest.raises(IntegrityError), transaction.atomic():
        Rating.objects.create(
            ranking=ranking, completion_id=ids[0], criterion=concise.criteria.get(), value=2
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        Rating.objects.filter(completion_id=ids[0]).update(value=11)


# --- The conversions of the data migrations (0013 and 0016) ----------------------------------


def test_a_criteria_list_becomes_default_rows_in_canonical_order():
    rows = criteria.criteria_rows_from_json(["harmless", "helpful"])
    assert [(row["key"], row["position"]) for row in rows] == [("helpful", 0), ("harmless", 1)]
    assert all((row["scale_min"], row["scale_max"]) == (1, 7) for row in rows)
    assert rows[0]["label"] == "Helpful" and rows[0]["max_label"] == "Extremely helpful"
    assert criteria.criteria_rows_from_json([]) == []
    assert criteria.criteria_rows_from_json(None) == []


def test_ratings_json_becomes_rows_and_back():
    ids = {"helpful": 10, "harmless": 12}
    stored = {"7": {"helpful": 5, "harmless": 2}, "8": {"helpful": 1}}
    rows = criteria.rating_rows_from_json(stored, ids, completion_ids=[7, 8])
    assert sorted(rows) == [(7, 10, 5), (7, 12, 2), (8, 10, 1)]
    keys = {10: "helpful", 12: "harmless"}
    assert criteria.ratings_json((cid, keys[pk], value) for cid, pk, value in rows) == stored


def test_what_was_never_valid_is_left_out_and_dropped_criteria_are_named():
    ids = {"helpful": 10}
    stored = {"7": {"helpful": 4.5, "honest": 3}, "99": {"helpful": 2}, "x": 1, "8": []}
    assert criteria.rating_rows_from_json(stored, ids, completion_ids=[7, 8]) == []
    assert criteria.keys_missing_rows(stored, ids) == {"honest"}
    assert criteria.keys_missing_rows({"7": {"kind": 3}}, ids) == set()
    assert criteria.rating_rows_from_json(None, ids, completion_ids=[7]) == []
