"""Leasing prompts to labelers (the leasing service): order, slots, expiry, skips and gold rate."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from labeling.models import Assignment, Dataset, Ranking
from labeling.services import leasing, rankings
from tests.factories import DatasetFactory, UserFactory, make_lease, make_prompt


def rank_in_given_order(assignment: Assignment, **extra) -> Ranking:
    completion_ids = list(assignment.prompt.completions.values_list("pk", flat=True))
    criteria = assignment.prompt.dataset.criterion_keys
    return rankings.submit_ranking(
        assignment=assignment,
        order=[[cid] for cid in completion_ids],
        ratings={cid: {c: 4 for c in criteria} for cid in completion_ids},
        flags={},
        request_id=uuid.uuid4(),
        seconds_spent=12.0,
        strength="better" if len(completion_ids) == 2 else "",
        **extra,
    )


def test_lease_gives_an_unranked_prompt_under_a_lease(dataset, prompt, labeler, settings):
    settings.PREFLAB_LEASE_MINUTES = 30
    now = timezone.now()
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler, now=now)
    assert assignment.prompt == prompt
    assert assignment.status == Assignment.Status.LEASED
    assert assignment.expires_at == now + timedelta(minutes=30)


def test_asking_again_returns_the_current_lease(dataset, labeler):
    make_prompt(dataset)
    make_prompt(dataset)
    first = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    again = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    assert again == first
    assert Assignment.objects.count() == 1


def test_labeler_never_gets_a_ranked_prompt_again(dataset, prompt, labeler):
    rank_in_given_order(leasing.lease_next_assignment(dataset=dataset, labeler=labeler))
    assert leasing.lease_next_assignment(dataset=dataset, labeler=labeler) is None


def test_skipped_prompt_is_not_offered_again_and_frees_its_slot(
    dataset, prompt, labeler, other_labeler
):
    dataset.labels_per_prompt = 1
    dataset.save()
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    leasing.skip_assignment(assignment=assignment, reason="unsure")
    assert leasing.lease_next_assignment(dataset=dataset, labeler=labeler) is None
    assert leasing.lease_next_assignment(dataset=dataset, labeler=other_labeler).prompt == prompt


def test_prompt_stops_being_offered_at_labels_per_prompt(dataset, prompt):
    dataset.labels_per_prompt = 2
    dataset.save()
    labelers = UserFactory.create_batch(3)
    assert leasing.lease_next_assignment(dataset=dataset, labeler=labelers[0]).prompt == prompt
    assert leasing.lease_next_assignment(dataset=dataset, labeler=labelers[1]).prompt == prompt
    assert leasing.lease_next_assignment(dataset=dataset, labeler=labelers[2]) is None


def test_expired_lease_returns_the_prompt_to_the_pool(
    dataset, prompt, labeler, other_labeler, settings
):
    dataset.labels_per_prompt = 1
    dataset.save()
    now = timezone.now()
    abandoned = leasing.lease_next_assignment(dataset=dataset, labeler=labeler, now=now)
    assert leasing.lease_next_assignment(dataset=dataset, labeler=other_labeler, now=now) is None
    later = now + timedelta(minutes=settings.PREFLAB_LEASE_MINUTES + 1)
    taken_over = leasing.lease_next_assignment(dataset=dataset, labeler=other_labeler, now=later)
    assert taken_over.prompt == prompt
    abandoned.refresh_from_db()
    assert abandoned.status == Assignment.Status.EXPIRED


def test_labeler_can_take_back_their_own_expired_lease(dataset, prompt, labeler, settings):
    now = timezone.now()
    first = leasing.lease_next_assignment(dataset=dataset, labeler=labeler, now=now)
    later = now + timedelta(minutes=settings.PREFLAB_LEASE_MINUTES + 1)
    again = leasing.lease_next_assignment(dataset=dataset, labeler=labeler, now=later)
    assert again.pk == first.pk
    assert again.status == Assignment.Status.LEASED
    assert again.expires_at > later


def test_prompts_closest_to_complete_come_first(dataset):
    dataset.labels_per_prompt = 3
    dataset.save()
    fresh = make_prompt(dataset)
    half_done = make_prompt(dataset)
    rank_in_given_order(make_lease(half_done, UserFactory()))
    assert leasing.lease_next_assignment(dataset=dataset, labeler=UserFactory()).prompt == half_done
    assert fresh.pk < half_done.pk


def test_gold_prompts_come_at_the_dataset_rate(labeler):
    dataset = DatasetFactory(gold_rate=0.25, labels_per_prompt=1)
    gold = [
        make_prompt(dataset, is_gold=True, gold_order=[["c0"], ["c1"], ["c2"]]) for _ in range(3)
    ]
    for _ in range(12):
        make_prompt(dataset)
    served = []
    for _ in range(12):
        assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
        served.append(assignment.prompt.is_gold)
        rank_in_given_order(assignment)
    # floor(0.25 * n) gold among the first n tasks: the 4th, 8th and 12th.
    assert [i + 1 for i, is_gold in enumerate(served) if is_gold] == [4, 8, 12]
    assert {a.prompt for a in Assignment.objects.filter(prompt__is_gold=True)} == set(gold)


def test_gold_prompts_are_not_capped_by_labels_per_prompt(labeler, other_labeler):
    dataset = DatasetFactory(gold_rate=1.0, labels_per_prompt=1)
    gold = make_prompt(dataset, is_gold=True, gold_order=[["c0"], ["c1"], ["c2"]])
    rank_in_given_order(leasing.lease_next_assignment(dataset=dataset, labeler=labeler))
    assert leasing.lease_next_assignment(dataset=dataset, labeler=other_labeler).prompt == gold


def test_inactive_dataset_gives_no_work(labeler):
    dataset = DatasetFactory(status=Dataset.Status.DRAFT)
    make_prompt(dataset)
    with pytest.raises(ValidationError, match="not open for labeling"):
        leasing.lease_next_assignment(dataset=dataset, labeler=labeler)


def test_skip_needs_a_reason_and_a_live_task(dataset, prompt, labeler):
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    with pytest.raises(ValidationError, match="Say why"):
        leasing.skip_assignment(assignment=assignment, reason=" ")
    rank_in_given_order(assignment)
    with pytest.raises(ValidationError, match="already submitted or skipped"):
        leasing.skip_assignment(assignment=assignment, reason="unsure")
