"""Predictions where people read them: the API, the admin and the quality prompt page."""

from __future__ import annotations

import pytest
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator
from openapi_core import OpenAPI
from openapi_core.contrib.django import DjangoOpenAPIRequest, DjangoOpenAPIResponse

from labeling.models import Completion, Prompt, Role
from rewards.models import Prediction
from tests.factories import DatasetFactory, UserFactory, token_client
from tests.rewards.test_predictions import trained, trained_and_scored


@pytest.fixture
def scored(trained_on, eager_celery, django_capture_on_commit_callbacks):
    return trained_and_scored(trained_on, django_capture_on_commit_callbacks)


def url_of(slug="rm-data"):
    return reverse("rewards-api:predictions", args=[slug])


def test_pages_of_predictions_follow_the_cursor(scored, staff, django_assert_max_num_queries):
    client = token_client(staff)
    seen = []
    after = 0
    while True:
        with django_assert_max_num_queries(6):
            page = client.get(url_of(), {"limit": 25, "after": after}).json()
        assert page["model"] == scored.version
        seen += page["results"]
        if page["cursor"] is None:
            break
        after = page["cursor"]
    assert len(seen) == Completion.objects.count() == len({row["id"] for row in seen})
    first = seen[0]
    prediction = Prediction.objects.get(pk=first["id"])
    completion = prediction.completion
    assert first == {
        "id": prediction.pk,
        "prompt": completion.prompt_id,
        "prompt_external_id": completion.prompt.external_id,
        "completion": completion.pk,
        "completion_external_id": completion.external_id,
        "reward": prediction.reward,
        "criteria": {},
    }


def test_an_older_version_is_asked_by_number(scored, staff, trained_on):
    newer = trained(trained_on, seed=1)  # active, its scoring not run
    client = token_client(staff)
    assert client.get(url_of()).json() == {"model": newer.version, "results": [], "cursor": None}
    older = client.get(url_of(), {"version": scored.version}).json()
    assert older["model"] == scored.version and older["results"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 5001}, "limit"),
        ({"after": "x"}, "after"),
        ({"after": -1}, "after"),
        ({"version": "two"}, "version"),
        ({"version": 99}, "version"),
    ],
)
def test_bad_parameters_are_a_400_naming_them(scored, staff, query, field):
    response = token_client(staff).get(url_of(), query)
    assert response.status_code == 400
    assert field in response.json()


def test_roles_and_missing_things(scored, labeler):
    service = UserFactory(role=Role.SERVICE)
    as_service = token_client(service)
    assert as_service.get(url_of()).status_code == 200
    assert token_client(labeler).get(url_of()).status_code == 403
    assert token_client(None).get(url_of()).status_code == 401
    assert as_service.get(url_of("nope")).status_code == 404
    DatasetFactory(slug="no-model")
    response = as_service.get(url_of("no-model"))
    assert response.status_code == 404 and "no active reward model" in response.json()["detail"]


def test_the_response_matches_the_schema(scored, staff):
    spec = OpenAPI.from_dict(SchemaGenerator().get_schema(request=None, public=True))
    response = token_client(staff).get(url_of(), {"limit": 3})
    spec.validate_response(
        DjangoOpenAPIRequest(response.wsgi_request), DjangoOpenAPIResponse(response)
    )


def test_admin_lists_and_filters_predictions_read_only(client, scored, staff):
    client.force_login(staff)
    url = reverse("admin:rewards_prediction_changelist")
    prompt = Prompt.objects.get(external_id="q4")
    response = client.get(url, {"q": "q4", "reward_model__id__exact": scored.pk})
    assert response.status_code == 200
    assert {p.completion.prompt for p in response.context["cl"].result_list} == {prompt}
    assert client.get(reverse("admin:rewards_prediction_add")).status_code == 403
    jobs = client.get(reverse("admin:rewards_predictionjob_changelist"))
    assert jobs.status_code == 200 and b"succeeded" in jobs.content.lower()


def test_the_quality_prompt_page_shows_each_completions_reward(client, scored, staff):
    prompt = Prompt.objects.get(external_id="q3")
    client.force_login(staff)
    url = reverse("labeling:quality-prompt", args=[prompt.dataset.slug, prompt.pk])
    response = client.get(url)
    page = response.content.decode()
    assert f"active reward model v{scored.version}" in page
    for prediction in Prediction.objects.filter(completion__prompt=prompt):
        assert f"reward {prediction.reward:.4f}" in page
    assert page.count("predicted-reward") == prompt.completions.count()
