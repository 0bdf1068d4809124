"""A task that is no longer the labeler's to rank (submitted, skipped, lease ended) says so at
its own address and offers the next one: after a reload, Back, a second tab or a late submit."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.template.defaultfilters import date
from django.urls import reverse
from django.utils import timezone

from labeling.models import Assignment, Dataset, Ranking
from labeling.services import leasing, rankings, slots
from tests.factories import make_prompt

SHOWN = "j M Y, H:i T"


def rank_url(assignment: Assignment) -> str:
    return reverse("labeling:rank", args=[assignment.pk])


def submit_url(assignment: Assignment) -> str:
    return reverse("labeling:submit", args=[assignment.pk])


def skip_url(assignment: Assignment) -> str:
    return reverse("labeling:skip", args=[assignment.pk])


def form_data(assignment: Assignment, **extra: str) -> dict[str, str]:
    """A complete ranking form: the completions in position order, each rated 6."""
    data = {"request_id": str(uuid.uuid4()), "seconds_spent": "7.5"}
    ids = assignment.prompt.completions.order_by("position").values_list("pk", flat=True)
    for rank, cid in enumerate(ids, start=1):
        data[f"rank_{cid}"] = str(rank)
        for criterion in assignment.prompt.dataset.criterion_keys:
            data[f"{criterion}_{cid}"] = "6"
    return data | extra


def submit_directly(assignment: Assignment) -> Ranking:
    ids = assignment.prompt.completions.values_list("pk", flat=True)
    criteria = assignment.prompt.dataset.criterion_keys
    return rankings.submit_ranking(
        assignment=assignment,
        order=[[cid] for cid in ids],
        ratings={cid: dict.fromkeys(criteria, 5) for cid in ids},
        flags={},
        request_id=uuid.uuid4(),
        seconds_spent=3.0,
    )


def next_button(dataset: Dataset) -> str:
    return f'<form method="post" action="{reverse("labeling:next", args=[dataset.slug])}">'


@pytest.fixture
def assignment(dataset, prompt, labeler):
    return leasing.lease_next_assignment(dataset=dataset, labeler=labeler)


@pytest.fixture
def second_prompt(dataset):
    return make_prompt(dataset)


def assert_gone_page(response, dataset: Dataset, heading: str) -> str:
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    assert heading in page
    assert 'id="ranking-form"' not in page
    assert next_button(dataset) in page
    assert 'name="csrfmiddlewaretoken"' in page
    assert '<button class="primary" autofocus>Next task</button>' in page
    assert f'href="{reverse("labeling:home")}"' in page
    return page


def test_a_submitted_task_says_when_and_offers_the_next(client, labeler, assignment, dataset):
    ranking = submit_directly(assignment)
    client.force_login(labeler)
    page = assert_gone_page(
        client.get(rank_url(assignment)), dataset, "You already submitted this task"
    )
    assert f"Your ranking was stored at {date(ranking.created_at, SHOWN)}." in page


def test_a_skipped_task_says_so(client, labeler, assignment, dataset):
    leasing.skip_assignment(assignment=assignment, reason="unsure")
    assignment.refresh_from_db()
    client.force_login(labeler)
    page = assert_gone_page(client.get(rank_url(assignment)), dataset, "You skipped this task")
    assert date(assignment.finished_at, SHOWN) in page


def test_an_expired_lease_says_when_it_ended(client, labeler, assignment, dataset):
    slots.expire_stale_leases(now=assignment.expires_at + timedelta(minutes=1))
    client.force_login(labeler)
    page = assert_gone_page(
        client.get(rank_url(assignment)), dataset, "Your lease on this task ended"
    )
    assert f"Your lease ended at {date(assignment.expires_at, SHOWN)}" in page


def test_a_lease_taken_back_by_an_admin_says_when(client, labeler, assignment, dataset):
    slots.release_assignments(assignments=Assignment.objects.filter(pk=assignment.pk))
    assignment.refresh_from_db()
    client.force_login(labeler)
    page = assert_gone_page(
        client.get(rank_url(assignment)), dataset, "Your lease on this task ended"
    )
    assert date(assignment.expires_at, SHOWN) in page


def test_a_lease_past_its_expiry_but_not_taken_back_still_shows_the_form(
    client, labeler, dataset, prompt
):
    past = leasing.lease_next_assignment(
        dataset=dataset, labeler=labeler, now=timezone.now() - timedelta(hours=2)
    )
    client.force_login(labeler)
    response = client.get(rank_url(past))
    assert response.status_code == 200
    assert 'id="ranking-form"' in response.content.decode()


def test_a_closed_dataset_offers_no_next_task(client, labeler, assignment, dataset):
    submit_directly(assignment)
    Dataset.objects.filter(pk=dataset.pk).update(status=Dataset.Status.ARCHIVED)
    client.force_login(labeler)
    response = client.get(rank_url(assignment))
    page = response.content.decode()
    assert response.status_code == 200
    assert "You already submitted this task" in page
    assert "is closed for labeling now" in page
    assert next_button(dataset) not in page
    assert f'<a href="{reverse("labeling:home")}" autofocus>' in page


@pytest.mark.parametrize("state", ["leased", "submitted", "skipped", "expired"])
def test_another_labelers_task_is_still_not_found(client, assignment, other_labeler, state):
    if state == "submitted":
        submit_directly(assignment)
    elif state == "skipped":
        leasing.skip_assignment(assignment=assignment, reason="unsure")
    elif state == "expired":
        slots.release_assignments(assignments=Assignment.objects.filter(pk=assignment.pk))
    client.force_login(other_labeler)
    assert client.get(rank_url(assignment)).status_code == 404
    assert client.post(submit_url(assignment), form_data(assignment)).status_code == 404
    assert client.post(skip_url(assignment), {"reason": "unsure"}).status_code == 404


def test_a_task_that_never_existed_is_not_found(client, labeler, assignment):
    client.force_login(labeler)
    assert client.get(reverse("labeling:rank", args=[assignment.pk + 1000])).status_code == 404


def test_the_next_button_leases_a_new_task(client, labeler, assignment, dataset, second_prompt):
    submit_directly(assignment)
    client.force_login(labeler)
    response = client.post(reverse("labeling:next", args=[dataset.slug]))
    new = Assignment.objects.get(labeler=labeler, status=Assignment.Status.LEASED)
    assert new.prompt == second_prompt
    assert response.url == rank_url(new)


def test_the_ranking_page_is_never_cached(client, labeler, assignment):
    client.force_login(labeler)
    response = client.get(rank_url(assignment))
    assert "no-store" in response["Cache-Control"]
    invalid = client.post(submit_url(assignment), {"request_id": str(uuid.uuid4())})
    assert invalid.status_code == 400
    assert "no-store" in invalid["Cache-Control"]


def test_the_second_tabs_submit_lands_on_the_task_gone_page(
    client, labeler, assignment, dataset, second_prompt
):
    client.force_login(labeler)
    first, second = form_data(assignment), form_data(assignment)  # two tabs, two request ids
    moved_on = client.post(submit_url(assignment), first)
    assert moved_on.url != rank_url(assignment)
    response = client.post(submit_url(assignment), second)
    assert response.status_code == 302
    assert response.url == rank_url(assignment)
    assert "no-store" in response["Cache-Control"]
    page = assert_gone_page(client.get(response.url), dataset, "You already submitted this task")
    assert "Nothing from that page was stored." in page
    assert Ranking.objects.get().request_id == uuid.UUID(first["request_id"])


def test_an_incomplete_submit_of_a_submitted_task_lands_on_the_task_gone_page(
    client, labeler, assignment
):
    submit_directly(assignment)
    client.force_login(labeler)
    response = client.post(submit_url(assignment), {"request_id": str(uuid.uuid4())})
    assert (response.status_code, response.url) == (302, rank_url(assignment))


def test_a_submit_of_a_task_skipped_in_another_tab_lands_on_the_task_gone_page(
    client, labeler, assignment, dataset
):
    client.force_login(labeler)
    data = form_data(assignment)
    client.post(skip_url(assignment), {"reason": "unsure"})
    response = client.post(submit_url(assignment), data)
    assert (response.status_code, response.url) == (302, rank_url(assignment))
    page = assert_gone_page(client.get(response.url), dataset, "You skipped this task")
    assert "Nothing from that page was stored." in page
    assert not Ranking.objects.exists()


def test_a_retried_submit_still_moves_on_to_the_next_task(
    client, labeler, assignment, dataset, second_prompt
):
    client.force_login(labeler)
    data = form_data(assignment)
    client.post(submit_url(assignment), data)
    retry = client.post(submit_url(assignment), data)
    new = Assignment.objects.get(labeler=labeler, status=Assignment.Status.LEASED)
    assert retry.url == rank_url(new)
    assert Ranking.objects.count() == 1


def test_a_skip_of_a_submitted_task_lands_on_the_task_gone_page(client, labeler, assignment):
    submit_directly(assignment)
    client.force_login(labeler)
    response = client.post(skip_url(assignment), {"reason": "unsure"})
    assert (response.status_code, response.url) == (302, rank_url(assignment))
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.SUBMITTED
    page = client.get(response.url).content.decode()
    assert "Nothing from that page was stored." in page


def test_a_second_skip_moves_on_like_the_first(client, labeler, assignment, dataset, second_prompt):
    client.force_login(labeler)
    client.post(skip_url(assignment), {"reason": "unsure"})
    again = client.post(skip_url(assignment), {"reason": "unsure"})
    new = Assignment.objects.get(labeler=labeler, status=Assignment.Status.LEASED)
    assert again.url == rank_url(new)
    page = client.get(again.url).content.decode()
    assert "already submitted or skipped" not in page
    assert "Nothing from that page was stored." not in page


def test_a_submit_after_expiry_is_kept_while_the_slot_is_free(client, labeler, assignment, dataset):
    slots.expire_stale_leases(now=assignment.expires_at + timedelta(minutes=1))
    client.force_login(labeler)
    response = client.post(submit_url(assignment), form_data(assignment))
    assert response.url == reverse("labeling:done", args=[dataset.slug])
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.SUBMITTED
    assert Ranking.objects.filter(assignment=assignment).exists()


def test_a_submit_after_the_slot_went_to_another_labeler_says_when_the_lease_ended(
    client, labeler, other_labeler, assignment, dataset
):
    Dataset.objects.filter(pk=dataset.pk).update(labels_per_prompt=1)
    dataset.refresh_from_db()
    slots.expire_stale_leases(now=assignment.expires_at + timedelta(minutes=1))
    assert leasing.lease_next_assignment(dataset=dataset, labeler=other_labeler) is not None
    client.force_login(labeler)
    response = client.post(submit_url(assignment), form_data(assignment))
    assert (response.status_code, response.url) == (302, rank_url(assignment))
    page = assert_gone_page(client.get(response.url), dataset, "Your lease on this task ended")
    assert f"Your lease ended at {date(assignment.expires_at, SHOWN)}" in page
    assert "Nothing from that page was stored." in page
    assert not Ranking.objects.exists()
