"""The OpenAPI schema says what the API really does: real responses are validated against it."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator
from openapi_core import OpenAPI
from openapi_core.contrib.django import DjangoOpenAPIRequest, DjangoOpenAPIResponse

from labeling.models import ImportJob
from labeling.services import leasing
from tests.factories import make_prompt, token_client


@pytest.fixture(scope="module")
def spec():
    return OpenAPI.from_dict(SchemaGenerator().get_schema(request=None, public=True))


def check(spec, response) -> None:
    spec.validate_response(
        DjangoOpenAPIRequest(response.wsgi_request), DjangoOpenAPIResponse(response)
    )


def test_schema_and_docs_are_served(client, db):
    assert client.get(reverse("api-schema")).status_code == 200
    assert client.get(reverse("api-docs")).status_code == 200


def test_staff_responses_match_the_schema(spec, staff, dataset):
    make_prompt(dataset, completions=3, metadata={"topic": "x"})
    job = ImportJob.objects.create(dataset=dataset, filename="x.jsonl", size=3)
    client = token_client(staff)
    for response in [
        client.get(reverse("labeling-api:datasets")),
        client.post(
            reverse("labeling-api:datasets"), {"slug": "made", "name": "Made"}, format="json"
        ),
        client.get(reverse("labeling-api:dataset", args=[dataset.slug])),
        client.patch(
            reverse("labeling-api:dataset", args=[dataset.slug]), {"gold_rate": 0.1}, format="json"
        ),
        client.get(reverse("labeling-api:prompts", args=[dataset.slug])),
        client.get(reverse("labeling-api:import", args=[job.pk])),
    ]:
        assert response.status_code in (200, 201), response.content
        check(spec, response)


def test_labeling_responses_match_the_schema(spec, labeler, dataset):
    make_prompt(dataset, completions=2)
    client = token_client(labeler)
    task = client.post(reverse("labeling-api:next-task", args=[dataset.slug]))
    check(spec, task)
    ids = [c["id"] for c in task.json()["completions"]]
    body = {
        "order": [[ids[0]], [ids[1]]],
        "ratings": {str(cid): {"helpful": 3, "honest": 3, "harmless": 3} for cid in ids},
        "request_id": str(uuid.uuid4()),
        "seconds_spent": 4,
        "strength": "slightly",
    }
    ranking = client.post(
        reverse("labeling-api:ranking", args=[task.json()["assignment"]]), body, format="json"
    )
    assert ranking.status_code == 201
    check(spec, ranking)
    check(spec, client.post(reverse("labeling-api:next-task", args=[dataset.slug])))


def test_skip_and_error_responses_match_the_schema(spec, labeler, dataset):
    make_prompt(dataset, completions=2)
    client = token_client(labeler)
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    skip = client.post(
        reverse("labeling-api:skip", args=[assignment.pk]), {"reason": "unsure"}, format="json"
    )
    check(spec, skip)


def test_the_schema_lists_every_error_and_the_score_limits(settings):
    schema = SchemaGenerator().get_schema(request=None, public=True)
    assert "Error" in schema["components"]["schemas"]
    score = schema["paths"]["/api/v1/reward-models/{version}/score"]["post"]
    assert {"400", "401", "403", "404", "413", "429"} <= set(score["responses"])
    assert str(settings.PREFLAB_SCORE_BATCH_MAX) in score["description"]
    export = schema["paths"]["/api/v1/datasets/{slug}/comparisons/"]["get"]
    assert "413" not in export["responses"]
    error = export["responses"]["429"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/Error"}


def test_leaderboard_responses_match_the_schema(spec, staff, dataset):
    from tests.labeling.test_leaderboard import ranked

    dataset.ratings = dataset.strength = "off"
    dataset.save()
    ranked(dataset, ["big", "small", "mid"], [[0], [1, 2]], staff)
    client = token_client(staff)
    url = reverse("labeling-api:leaderboard", args=[dataset.slug])
    board = client.get(url, {"rounds": 100})
    assert board.status_code == 200
    check(spec, board)
    bad = client.get(url, {"rounds": 1})
    assert bad.status_code == 400
    check(spec, bad)
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/v1/datasets/{slug}/leaderboard/"]["get"]
    assert {"application/json", "text/csv"} <= set(operation["responses"]["200"]["content"])
    assert {"datasets", "rounds", "format"} <= {p["name"] for p in operation["parameters"]}


def test_workspace_responses_match_the_schema(spec, db):
    from tests.factories import UserFactory, make_team

    workspace, people = make_team("schema")
    client = token_client(people["admin"])
    members = reverse("labeling-api:members", args=[workspace.slug])
    for response in [
        client.get(reverse("labeling-api:workspaces")),
        client.get(reverse("labeling-api:workspace", args=[workspace.slug])),
        client.patch(
            reverse("labeling-api:workspace", args=[workspace.slug]),
            {"description": "Ours"},
            format="json",
        ),
        client.get(members),
        client.post(members, {"username": "schema-labeler", "role": "reviewer"}, format="json"),
        client.get(reverse("labeling-api:audit", args=[workspace.slug]), {"limit": 1}),
        client.get(
            reverse("labeling-api:audit", args=[workspace.slug]), {"action": "member_changed"}
        ),
    ]:
        assert response.status_code == 200, response.content
        check(spec, response)
    removed = client.delete(reverse("labeling-api:member", args=[workspace.slug, "schema-service"]))
    assert removed.status_code == 204
    check(spec, removed)
    refused = client.post(members, {"username": "nobody", "role": "labeler"}, format="json")
    assert refused.status_code == 400
    check(spec, refused)
    superuser = UserFactory(is_staff=True, is_superuser=True, role=False)
    made = token_client(superuser).post(
        reverse("labeling-api:workspaces"), {"slug": "made", "name": "Made"}, format="json"
    )
    assert made.status_code == 201
    check(spec, made)
