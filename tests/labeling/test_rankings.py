"""Submitting rankings (the rankings service): the comparisons they give and what is refused."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from labeling.models import Assignment, Comparison, Ranking
from labeling.services import leasing, rankings, slots
from tests.factories import UserFactory, make_prompt


@pytest.fixture
def assignment(dataset, prompt, labeler):
    return leasing.lease_next_assignment(dataset=dataset, labeler=labeler)


@pytest.fixture
def ids(prompt):
    return list(prompt.completions.order_by("position").values_list("pk", flat=True))


def ratings_for(ids, value=5, criteria=("helpful", "honest", "harmless")):
    return {cid: {c: value for c in criteria} for cid in ids}


def submit(assignment, order, ids, **overrides):
    arguments = {
        "assignment": assignment,
        "order": order,
        "ratings": ratings_for(ids),
        "flags": {},
        "request_id": uuid.uuid4(),
        "seconds_spent": 20.5,
    } | overrides
    return rankings.submit_ranking(**arguments)


def test_ranking_of_three_gives_three_comparisons_with_rank_distance(assignment, ids):
    a, b, c = ids
    ranking = submit(assignment, [[b], [c], [a]], ids)
    pairs = set(Comparison.objects.values_list("chosen_id", "rejected_id", "margin"))
    assert pairs == {(b, c, 1), (b, a, 2), (c, a, 1)}
    assert all(comparison.ranking == ranking for comparison in Comparison.objects.all())
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.SUBMITTED


def test_k_completions_give_k_choose_2_comparisons(dataset, labeler):
    make_prompt(dataset, completions=9)
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    ids = list(assignment.prompt.completions.values_list("pk", flat=True))
    submit(assignment, [[cid] for cid in ids], ids)
    assert Comparison.objects.count() == 9 * 8 // 2


def test_ties_make_no_comparison_between_them(assignment, ids):
    a, b, c = ids
    submit(assignment, [[a, b], [c]], ids)
    assert set(Comparison.objects.values_list("chosen_id", "rejected_id", "margin")) == {
        (a, c, 1),
        (b, c, 1),
    }


def test_all_tied_stores_the_ranking_and_no_comparison(assignment, ids):
    ranking = submit(assignment, [ids], ids)
    assert ranking.order == [ids]
    assert not Comparison.objects.exists()


def test_ranking_keeps_ratings_flags_rationale_time_and_guideline_version(assignment, ids, dataset):
    dataset.guidelines_version = 4
    dataset.save()
    ranking = submit(
        assignment,
        [[ids[0]], [ids[1]], [ids[2]]],
        ids,
        flags={ids[2]: ["hallucination", "harmful_advice"]},
        rationale="  C invents a study.  ",
        all_unacceptable=False,
    )
    ranking.refresh_from_db()
    assert ranking.rating_values[str(ids[0])] == {"helpful": 5, "honest": 5, "harmless": 5}
    assert ranking.flags == {str(ids[2]): ["hallucination", "harmful_advice"]}
    assert ranking.rationale == "C invents a study."
    assert ranking.seconds_spent == 20.5
    assert ranking.guidelines_version == 4


def test_retried_submit_returns_first_ranking(assignment, ids):
    request_id = uuid.uuid4()
    first = submit(assignment, [[cid] for cid in ids], ids, request_id=request_id)
    again = submit(assignment, [[cid] for cid in reversed(ids)], ids, request_id=request_id)
    assert again == first
    assert Ranking.objects.count() == 1
    assert Comparison.objects.count() == 3


def test_second_submit_with_another_request_id_is_refused(assignment, ids):
    submit(assignment, [[cid] for cid in ids], ids)
    with pytest.raises(ValidationError, match="already submitted"):
        submit(assignment, [[cid] for cid in ids], ids)
    assert Ranking.objects.count() == 1


def test_request_id_of_another_task_is_refused(dataset, labeler, ids, assignment):
    request_id = uuid.uuid4()
    submit(assignment, [[cid] for cid in ids], ids, request_id=request_id)
    make_prompt(dataset)
    second = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    second_ids = list(second.prompt.completions.values_list("pk", flat=True))
    with pytest.raises(ValidationError, match="used for another task"):
        submit(second, [[cid] for cid in second_ids], second_ids, request_id=request_id)


@pytest.mark.parametrize(
    ("make_order", "message"),
    [
        (lambda a, b, c: [[a], [b]], "missing"),
        (lambda a, b, c: [[a], [b], [c], [a]], "placed twice"),
        (lambda a, b, c: [[a], [b], [c, 999999]], "not in this prompt"),
        (lambda a, b, c: [[a], [], [b, c]], "non-empty groups"),
        (lambda a, b, c: [a, b, c], "non-empty groups"),
        (lambda a, b, c: [["x"], [b], [c]], "non-empty groups"),
    ],
)
def test_order_that_is_not_a_permutation_is_refused_and_stores_nothing(
    assignment, ids, make_order, message
):
    with pytest.raises(ValidationError, match=message) as error:
        submit(assignment, make_order(*ids), ids)
    assert "order" in error.value.message_dict
    assert not Ranking.objects.exists()
    assert not Comparison.objects.exists()
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.LEASED


@pytest.mark.parametrize(
    ("make_ratings", "message"),
    [
        (lambda ids: ratings_for(ids, value=8), "from 1 to 7"),
        (lambda ids: ratings_for(ids, value=0), "from 1 to 7"),
        (lambda ids: ratings_for(ids[:2]), "Rate every completion"),
        (
            lambda ids: ratings_for(ids, criteria=("helpful", "honest")),
            "rate exactly helpful, honest, harmless",
        ),
        (lambda ids: ratings_for(ids, value=4.5), "whole number"),
    ],
)
def test_ratings_out_of_range_or_incomplete_are_refused(assignment, ids, make_ratings, message):
    with pytest.raises(ValidationError, match=message):
        submit(assignment, [[cid] for cid in ids], ids, ratings=make_ratings(ids))
    assert not Ranking.objects.exists()


def test_dataset_without_criteria_takes_no_ratings(dataset, labeler, ids, assignment):
    dataset.criteria.all().delete()
    ranking = submit(assignment, [[cid] for cid in ids], ids, ratings={})
    assert ranking.rating_values == {}


def test_unknown_flag_is_refused(assignment, ids):
    with pytest.raises(ValidationError, match="Unknown flags"):
        submit(assignment, [[cid] for cid in ids], ids, flags={ids[0]: ["boring"]})


def test_two_completions_need_a_strength_stored_on_the_comparison(dataset, labeler):
    make_prompt(dataset, completions=2)
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    ids = list(assignment.prompt.completions.values_list("pk", flat=True))
    with pytest.raises(ValidationError, match="how much better"):
        submit(assignment, [[ids[0]], [ids[1]]], ids)
    submit(assignment, [[ids[1]], [ids[0]]], ids, strength="slightly")
    comparison = Comparison.objects.get()
    assert (comparison.chosen_id, comparison.strength) == (ids[1], "slightly")


def test_strength_is_refused_with_more_than_two(assignment, ids):
    with pytest.raises(ValidationError, match="only asked for two"):
        submit(assignment, [[cid] for cid in ids], ids, strength="better")


def test_negative_time_is_refused(assignment, ids):
    with pytest.raises(ValidationError, match="seconds"):
        submit(assignment, [[cid] for cid in ids], ids, seconds_spent=-1)


def test_skipped_task_cannot_be_submitted(assignment, ids):
    leasing.skip_assignment(assignment=assignment, reason="unsure")
    with pytest.raises(ValidationError, match="skipped"):
        submit(assignment, [[cid] for cid in ids], ids)


def test_late_submit_is_kept_when_the_slot_is_still_free(assignment, ids, settings):
    later = timezone.now() + timedelta(minutes=settings.PREFLAB_LEASE_MINUTES + 5)
    slots.expire_stale_leases(now=later)
    ranking = submit(assignment, [[cid] for cid in ids], ids, now=later)
    assert ranking.pk
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.SUBMITTED


def test_late_submit_is_refused_when_the_slot_went_to_someone_else(
    dataset, assignment, ids, settings
):
    dataset.labels_per_prompt = 1
    dataset.save()
    later = timezone.now() + timedelta(minutes=settings.PREFLAB_LEASE_MINUTES + 5)
    leasing.lease_next_assignment(dataset=dataset, labeler=UserFactory(), now=later)
    with pytest.raises(ValidationError, match="went to another labeler"):
        submit(assignment, [[cid] for cid in ids], ids, now=later)
    assert not Ranking.objects.exists()


def pair_assignment(dataset, labeler, **asked):
    for name, value in asked.items():
        setattr(dataset, name, value)
    dataset.save()
    make_prompt(dataset, completions=2)
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    return assignment, list(assignment.prompt.completions.values_list("pk", flat=True))


def test_optional_ratings_take_some_none_or_all_but_never_others(dataset, labeler):
    assignment, ids = pair_assignment(dataset, labeler, ratings="optional", strength="optional")
    with pytest.raises(ValidationError, match="unknown criterion 'brevity'"):
        submit(assignment, [[ids[0]], [ids[1]]], ids, ratings={ids[0]: {"brevity": 3}})
    with pytest.raises(ValidationError, match="from 1 to 7"):
        submit(assignment, [[ids[0]], [ids[1]]], ids, ratings={ids[0]: {"helpful": 9}})
    submit(assignment, [[ids[0]], [ids[1]]], ids, ratings={ids[1]: {"honest": 2}, ids[0]: {}})
    ranking = Ranking.objects.get()
    assert ranking.rating_values == {str(ids[1]): {"honest": 2}}
    assert Comparison.objects.get().strength == ""


def test_ratings_off_take_none_and_a_vote_needs_nothing_but_the_order(dataset, labeler):
    assignment, ids = pair_assignment(dataset, labeler, ratings="off", strength="optional")
    with pytest.raises(ValidationError, match="rates no criteria"):
        submit(assignment, [[ids[0]], [ids[1]]], ids, ratings=ratings_for(ids))
    submit(assignment, [[ids[1]], [ids[0]]], ids, ratings={})
    assert Comparison.objects.get().chosen_id == ids[1]


def test_strength_off_refuses_one_and_a_tie_never_takes_one(dataset, labeler):
    assignment, ids = pair_assignment(dataset, labeler, ratings="off", strength="off")
    with pytest.raises(ValidationError, match="does not ask how much better"):
        submit(assignment, [[ids[0]], [ids[1]]], ids, ratings={}, strength="better")
    dataset.strength = "optional"
    dataset.save()
    with pytest.raises(ValidationError, match="not tied"):
        submit(assignment, [[ids[0], ids[1]]], ids, ratings={}, strength="better")
    submit(assignment, [[ids[0], ids[1]]], ids, ratings={})
    assert Ranking.objects.get().order == [sorted(ids)]
