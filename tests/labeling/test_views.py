"""The labeler pages: wiring, scoping to the labeler, escaping of model output."""

from __future__ import annotations

import re
import uuid

import pytest
from django.urls import reverse

from labeling.models import Assignment, Comparison, Dataset, Ranking, display_order
from labeling.services import leasing
from tests.factories import CompletionFactory, DatasetFactory, PromptFactory, make_prompt


def rank_url(assignment: Assignment) -> str:
    return reverse("labeling:rank", args=[assignment.pk])


def form_data(assignment: Assignment, ranks: dict[int, int], **extra) -> dict:
    data = {"request_id": str(uuid.uuid4()), "seconds_spent": "7.5"}
    for cid, rank in ranks.items():
        data[f"rank_{cid}"] = str(rank)
        for criterion in assignment.prompt.dataset.criterion_keys:
            data[f"{criterion}_{cid}"] = "6"
    return data | extra


@pytest.fixture
def assignment(dataset, prompt, labeler):
    return leasing.lease_next_assignment(dataset=dataset, labeler=labeler)


@pytest.mark.parametrize("name", ["labeling:home"])
def test_pages_need_login(client, db, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_rank_and_submit_need_login(client, assignment):
    assert client.get(rank_url(assignment)).status_code == 302
    response = client.post(reverse("labeling:submit", args=[assignment.pk]), {})
    assert response.status_code == 302
    assert not Ranking.objects.exists()


def test_home_lists_active_datasets_with_progress(client, labeler, dataset, prompt):
    DatasetFactory(name="Hidden draft", status=Dataset.Status.DRAFT)
    client.force_login(labeler)
    page = client.get(reverse("labeling:home")).content.decode()
    assert dataset.name in page
    assert "Hidden draft" not in page
    assert "0 done today" in page


def test_next_leases_and_redirects_to_the_task(client, labeler, dataset, prompt):
    client.force_login(labeler)
    response = client.post(reverse("labeling:next", args=[dataset.slug]))
    assignment = Assignment.objects.get(labeler=labeler)
    assert response.status_code == 302
    assert response.url == rank_url(assignment)
    # Opening the link again goes back to the same task.
    assert client.get(reverse("labeling:next", args=[dataset.slug])).url == rank_url(assignment)


def test_following_a_link_leases_nothing(client, labeler, dataset, prompt):
    client.force_login(labeler)
    response = client.get(reverse("labeling:next", args=[dataset.slug]))
    assert response.status_code == 200
    assert 'method="post"' in response.content.decode()
    assert not Assignment.objects.exists()


def test_next_says_when_nothing_is_left(client, labeler, dataset):
    client.force_login(labeler)
    response = client.post(reverse("labeling:next", args=[dataset.slug]), follow=True)
    assert response.redirect_chain == [(reverse("labeling:done", args=[dataset.slug]), 302)]
    assert "Nothing left to rank" in response.content.decode()


def test_task_page_shows_conversation_completions_and_no_model_names(client, labeler, dataset):
    prompt = PromptFactory(
        dataset=dataset,
        messages=[
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer"},
            {"role": "user", "content": "Follow-up question"},
        ],
    )
    for position in range(3):
        CompletionFactory(prompt=prompt, position=position, model_name=f"secret-model-{position}")
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    client.force_login(labeler)
    page = client.get(rank_url(assignment)).content.decode()
    assert "First answer" in page
    assert "Follow-up question" in page
    assert page.count('class="card"') == 3
    assert "secret-model" not in page
    assert "Guidelines (version 1)" in page
    assert "<strong>honest</strong>" in page


def test_model_output_renders_inert(client, labeler, dataset):
    prompt = PromptFactory(dataset=dataset)
    CompletionFactory(prompt=prompt, position=0, text='<script>alert("x")</script>')
    CompletionFactory(prompt=prompt, position=1, text="<img src=x onerror=alert(1)>")
    CompletionFactory(prompt=prompt, position=2, text="[click](javascript:alert(1))")
    dataset.guidelines = "See [this](javascript:alert(2)) <script>alert(3)</script>"
    dataset.save()
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    client.force_login(labeler)
    page = client.get(rank_url(assignment)).content.decode()
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    assert 'href="javascript:' not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_completion_order_is_shuffled_per_labeler_and_stable(dataset, labeler, other_labeler):
    prompt = make_prompt(dataset, completions=9)
    completions = list(prompt.completions.all())
    mine = display_order(completions, labeler_id=labeler.pk, prompt_id=prompt.pk)
    assert display_order(completions, labeler_id=labeler.pk, prompt_id=prompt.pk) == mine
    orders = {
        tuple(c.pk for c in display_order(completions, labeler_id=user_id, prompt_id=prompt.pk))
        for user_id in range(1, 20)
    }
    assert len(orders) > 10


def test_another_labelers_task_is_not_found(client, assignment, other_labeler):
    client.force_login(other_labeler)
    assert client.get(rank_url(assignment)).status_code == 404
    ids = assignment.prompt.completions.values_list("pk", flat=True)
    data = form_data(assignment, {cid: i + 1 for i, cid in enumerate(ids)})
    response = client.post(reverse("labeling:submit", args=[assignment.pk]), data)
    assert response.status_code == 404
    skip = client.post(reverse("labeling:skip", args=[assignment.pk]), {"reason": "unsure"})
    assert skip.status_code == 404
    assert not Ranking.objects.exists()
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.LEASED


def test_submitting_the_form_stores_the_ranking_and_moves_on(client, labeler, assignment, dataset):
    a, b, c = assignment.prompt.completions.order_by("position").values_list("pk", flat=True)
    client.force_login(labeler)
    data = form_data(assignment, {a: 2, b: 1, c: 2}, **{f"flags_{c}": ["hallucination"]})
    response = client.post(reverse("labeling:submit", args=[assignment.pk]), data)
    assert response.status_code == 302
    assert response.url == reverse("labeling:done", args=[dataset.slug])  # the only prompt
    ranking = Ranking.objects.get()
    assert ranking.order == [[b], [a, c]]
    assert ranking.seconds_spent == 7.5
    assert ranking.flags == {str(c): ["hallucination"]}
    assert set(Comparison.objects.values_list("chosen_id", "rejected_id")) == {(b, a), (b, c)}


def test_double_post_of_the_same_form_stores_one_ranking(client, labeler, assignment):
    ids = assignment.prompt.completions.values_list("pk", flat=True)
    data = form_data(assignment, {cid: i + 1 for i, cid in enumerate(ids)})
    client.force_login(labeler)
    url = reverse("labeling:submit", args=[assignment.pk])
    assert client.post(url, data).status_code == 302
    assert client.post(url, data).status_code == 302
    assert Ranking.objects.count() == 1


def test_invalid_form_says_what_is_wrong_and_stores_nothing(client, labeler, assignment):
    a, b, c = assignment.prompt.completions.values_list("pk", flat=True)
    data = form_data(assignment, {a: 1, b: 2, c: 3})
    del data[f"rank_{c}"]
    data[f"helpful_{a}"] = "9"
    client.force_login(labeler)
    response = client.post(reverse("labeling:submit", args=[assignment.pk]), data)
    assert response.status_code == 400
    page = response.content.decode()
    shown = [c.pk for c in assignment.display_completions()]
    letter = {cid: "ABC"[shown.index(cid)] for cid in shown}
    assert "Nothing was stored" in page
    assert f"Response {letter[c]}: Give it a rank." in page
    assert f"Response {letter[a]}: Rate helpful from 1 to 7." in page
    assert not Ranking.objects.exists()


def test_skip_with_a_reason_moves_on(client, labeler, assignment, dataset):
    client.force_login(labeler)
    response = client.post(
        reverse("labeling:skip", args=[assignment.pk]), {"reason": "distressing"}
    )
    assert response.status_code == 302
    assignment.refresh_from_db()
    assert (assignment.status, assignment.skip_reason) == (Assignment.Status.SKIPPED, "distressing")


def test_two_completions_ask_for_strength(client, labeler, dataset):
    make_prompt(dataset, completions=2)
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    client.force_login(labeler)
    page = client.get(rank_url(assignment)).content.decode()
    assert "How much better is your first choice?" in page
    a, b = assignment.prompt.completions.values_list("pk", flat=True)
    data = form_data(assignment, {a: 1, b: 2}, strength="significantly")
    assert client.post(reverse("labeling:submit", args=[assignment.pk]), data).status_code == 302
    assert Comparison.objects.get().strength == "significantly"


def test_progress_counts_todays_work(client, labeler, assignment, dataset):
    make_prompt(dataset)
    ids = assignment.prompt.completions.values_list("pk", flat=True)
    client.force_login(labeler)
    client.post(
        reverse("labeling:submit", args=[assignment.pk]),
        form_data(assignment, {cid: i + 1 for i, cid in enumerate(ids)}),
    )
    nxt = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    page = client.get(rank_url(nxt)).content.decode()
    # One of two prompts x two labels per prompt.
    assert re.search(r"1 done today, dataset 25% labeled", page)


def test_task_page_query_count_does_not_grow_with_completions(
    client, labeler, dataset, django_assert_max_num_queries
):
    make_prompt(dataset, completions=9)
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    client.force_login(labeler)
    with django_assert_max_num_queries(8):
        client.get(rank_url(assignment))
