"""The per-prompt statistics in the API (filters, ordering, roles, query count, schema) and in
the admin."""

from __future__ import annotations

import pytest
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator
from openapi_core import OpenAPI
from openapi_core.contrib.django import DjangoOpenAPIRequest, DjangoOpenAPIResponse

from labeling.models import Role
from tests.factories import UserFactory, make_prompt, token_client
from tests.labeling.quality_data import rank, report_of


@pytest.fixture
def computed(small):
    report_of(small["dataset"])
    return small


def url_of(dataset):
    return reverse("labeling-api:prompt-stats", args=[dataset.slug])


def prompts_of(response):
    assert response.status_code == 200, response.content
    return [row["prompt"] for row in response.json()["results"]]


def test_stats_are_ordered_by_need_by_default(computed, staff):
    body = token_client(staff).get(url_of(computed["dataset"])).json()
    assert body["count"] == 6
    first = body["results"][0]
    assert first["prompt"] == computed["p2"].pk
    assert first["agreement"] == 0.0 and first["need"] == 1.5
    assert first["reasons"] == ["agreement 0%", "thin margin 0.00"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"max_agreement": "0.5"}, ["p2", "p3"]),
        ({"min_labels": "2", "ordering": "agreement"}, ["p2", "p3", "p1"]),
        ({"max_margin": "0.6", "ordering": "-min_margin"}, ["p3", "p2"]),
        ({"in_queue": "true"}, ["p2", "p3"]),
        ({"is_gold": "true"}, ["gold"]),
        ({"flagged": "true"}, []),
        ({"adjudicated": "false", "min_need": "1"}, ["p2"]),
    ],
)
def test_filters(computed, staff, query, expected):
    response = token_client(staff).get(url_of(computed["dataset"]), query)
    assert prompts_of(response) == [computed[name].pk for name in expected]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"max_agreement": "2"}, "max_agreement"),
        ({"min_labels": "many"}, "min_labels"),
        ({"ordering": "text"}, "ordering"),
        ({"flagged": "maybe"}, "flagged"),
    ],
)
def test_bad_filters_are_a_400_naming_them(computed, staff, query, field):
    response = token_client(staff).get(url_of(computed["dataset"]), query)
    assert response.status_code == 400
    assert field in response.json()


def test_roles(computed, labeler):
    service = UserFactory(role=Role.SERVICE)
    url = url_of(computed["dataset"])
    as_service = token_client(service)
    assert as_service.get(url).status_code == 200
    assert token_client(labeler).get(url).status_code == 403
    assert token_client(None).get(url).status_code == 401
    missing = reverse("labeling-api:prompt-stats", args=["nope"])
    assert as_service.get(missing).status_code == 404


def test_stats_queries_do_not_grow_with_prompts(
    dataset, people, staff, django_assert_max_num_queries
):
    for _ in range(30):
        prompt = make_prompt(dataset, 2)
        rank(prompt, people["ann"], "c0 > c1")
    report_of(dataset)
    client = token_client(staff)
    with django_assert_max_num_queries(4):
        response = client.get(url_of(dataset))
    assert len(response.json()["results"]) == 30


def test_stats_response_matches_the_schema(computed, staff):
    spec = OpenAPI.from_dict(SchemaGenerator().get_schema(request=None, public=True))
    response = token_client(staff).get(url_of(computed["dataset"]), {"min_labels": 1})
    spec.validate_response(
        DjangoOpenAPIRequest(response.wsgi_request), DjangoOpenAPIResponse(response)
    )


def test_admin_lists_and_filters_stats(client, computed, staff):
    client.force_login(staff)
    url = reverse("admin:labeling_promptstats_changelist")
    response = client.get(url, {"flagged": "no", "q": computed["p2"].external_id})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [computed["p2"].stats]
    assert client.get(reverse("admin:labeling_adjudication_changelist")).status_code == 200
