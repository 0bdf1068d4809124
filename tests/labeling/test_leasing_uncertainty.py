"""Active learning: an "uncertainty" dataset opens the prompts its reward model is least sure
about first, for its `uncertainty_share` of the requests; the rest of leasing is unchanged."""

from __future__ import annotations

import threading
from collections import Counter
from itertools import cycle

import pytest
from django.db import connection
from django.urls import reverse

from labeling.models import Assignment, Dataset, Prompt, Ranking
from labeling.services import leasing
from tests.factories import DatasetFactory, UserFactory, make_prompt, token_client
from tests.labeling.test_leasing import rank_in_given_order
from tests.labeling.test_leasing_scale import (
    assert_counts_are_true,
    at_most_six_queries,
    next_task,
    submit,
)

pytestmark = pytest.mark.django_db

# Uncertainty by prompt position: the least certain are the 4th, 2nd and 5th; the 1st and 3rd
# are not scored yet.
UNCERTAINTY = [None, 0.2, None, 0.05, 0.3, 0.9]


def scored_dataset(*, share: float, order: str = Dataset.Order.UNCERTAINTY, **fields) -> Dataset:
    dataset = DatasetFactory(order=order, uncertainty_share=share, labels_per_prompt=1, **fields)
    for value in UNCERTAINTY:
        make_prompt(dataset, completions=2, uncertainty=value)
    return dataset


def lease_order(dataset: Dataset) -> list[int]:
    """Positions (as in UNCERTAINTY) of the prompts one labeler is given, one after another."""
    ids = list(Prompt.objects.filter(dataset=dataset).order_by("pk").values_list("pk", flat=True))
    labeler = UserFactory()
    order = []
    while (
        assignment := leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    ) is not None:
        order.append(ids.index(assignment.prompt_id))
        rank_in_given_order(assignment)
    return order


def test_share_one_opens_the_least_certain_prompts_first_then_the_unscored():
    assert lease_order(scored_dataset(share=1.0)) == [3, 1, 4, 5, 0, 2]


@pytest.mark.parametrize(
    "dataset_fields",
    [{"share": 0.0}, {"share": 1.0, "order": Dataset.Order.FIXED}],
    ids=["share-0", "fixed-order"],
)
def test_share_zero_or_fixed_order_keeps_the_import_order(dataset_fields):
    assert lease_order(scored_dataset(**dataset_fields)) == [0, 1, 2, 3, 4, 5]


def test_a_mixed_share_draws_each_request(monkeypatch):
    draws = cycle([0.9, 0.1])  # import order, uncertainty, import order, ...
    monkeypatch.setattr(leasing.random, "random", lambda: next(draws))
    assert lease_order(scored_dataset(share=0.5)) == [0, 3, 1, 4, 2, 5]


def test_started_prompts_still_come_first():
    dataset = scored_dataset(share=1.0)
    Dataset.objects.filter(pk=dataset.pk).update(labels_per_prompt=2)
    dataset.refresh_from_db()
    first = leasing.lease_next_assignment(dataset=dataset, labeler=UserFactory())
    assert first.prompt.uncertainty == 0.05
    rank_in_given_order(first)
    # The next labeler finishes that prompt before opening the next least certain one.
    second = leasing.lease_next_assignment(dataset=dataset, labeler=UserFactory())
    assert second.prompt_id == first.prompt_id


def test_gold_keeps_its_rate():
    dataset = scored_dataset(share=1.0, gold_rate=0.5)
    gold = make_prompt(dataset, completions=2, is_gold=True, gold_order=[["c0"], ["c1"]])
    labeler = UserFactory()
    given = []
    for _ in range(4):
        assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
        given.append(assignment.prompt_id == gold.pk)
        rank_in_given_order(assignment)
    assert given == [False, True, False, False]  # gold once (one gold prompt), at the 2nd task
    assert Ranking.objects.filter(prompt__is_gold=False).count() == 3


@pytest.mark.parametrize("gold_rate", [0.0, 0.5])
def test_next_task_and_submit_still_take_at_most_six_queries(gold_rate):
    dataset = DatasetFactory(
        order=Dataset.Order.UNCERTAINTY,
        uncertainty_share=1.0,
        labels_per_prompt=2,
        gold_rate=gold_rate,
    )
    for i in range(60):
        make_prompt(dataset, completions=2 + i % 3, uncertainty=(i * 7919 % 61) / 61)
    make_prompt(dataset, is_gold=True, gold_order=[["c0"], ["c1"], ["c2"]])
    for other in UserFactory.create_batch(3):
        rank_in_given_order(leasing.lease_next_assignment(dataset=dataset, labeler=other))
    client = token_client(UserFactory())
    for _ in range(3):
        with at_most_six_queries():
            task = next_task(client, dataset).json()
        with at_most_six_queries():
            assert submit(client, task).status_code == 201


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_labelers_at_once_drain_an_uncertainty_dataset_exactly():
    """As test_leasing_scale's drain, on a dataset ordered by uncertainty (half the requests):
    every prompt gets exactly labels_per_prompt labels, nobody ranks a prompt twice."""
    dataset = DatasetFactory(
        labels_per_prompt=3, gold_rate=0.1, order=Dataset.Order.UNCERTAINTY, uncertainty_share=0.5
    )
    prompts = [
        make_prompt(dataset, completions=2 + i % 3, uncertainty=None if i % 4 == 0 else (i % 7) / 7)
        for i in range(60)
    ]
    gold = make_prompt(dataset, is_gold=True, gold_order=[["c0"], ["c1"], ["c2"]])
    labelers = UserFactory.create_batch(32)
    errors: list[BaseException] = []
    start = threading.Barrier(len(labelers))

    def work(user) -> None:
        try:
            start.wait()
            for _ in range(len(prompts) + 2):
                assignment = leasing.lease_next_assignment(dataset=dataset, labeler=user)
                if assignment is None:
                    break
                rank_in_given_order(assignment)
        except BaseException as error:  # reported to the main thread below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(user,)) for user in labelers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not errors
    assert all(not thread.is_alive() for thread in threads)
    per_prompt = Counter(Ranking.objects.exclude(prompt=gold).values_list("prompt_id", flat=True))
    assert per_prompt == {prompt.pk: 3 for prompt in prompts}
    pairs = list(Ranking.objects.values_list("prompt_id", "labeler_id"))
    assert len(pairs) == len(set(pairs))
    assert Assignment.objects.exclude(status=Assignment.Status.SUBMITTED).count() == 0
    assert_counts_are_true()


def test_the_setting_is_changed_through_the_api_within_its_limits(staff):
    dataset = DatasetFactory()
    client = token_client(staff)
    url = reverse("labeling-api:dataset", args=[dataset.slug])
    assert client.get(url).json()["order"] == "fixed"  # off by default
    response = client.patch(url, {"order": "uncertainty", "uncertainty_share": 0.3}, format="json")
    assert response.status_code == 200
    assert (response.json()["order"], response.json()["uncertainty_share"]) == ("uncertainty", 0.3)
    for bad in ({"uncertainty_share": 1.5}, {"order": "random"}):
        response = client.patch(url, bad, format="json")
        assert response.status_code == 400 and set(bad) <= set(response.json())
