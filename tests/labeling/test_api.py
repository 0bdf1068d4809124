"""The REST API: roles on every endpoint, datasets, imports, labeling through the API."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling.models import Assignment, Comparison, Dataset, ImportJob, Prompt, Ranking, Role
from labeling.services import imports, leasing
from tests.factories import UserFactory, make_prompt, token_client


@pytest.fixture
def service_user(db):
    return UserFactory(username="pipeline", role=Role.SERVICE)


@pytest.fixture
def api(staff, service_user, labeler):
    return {
        "staff": token_client(staff),
        "service": token_client(service_user),
        "labeler": token_client(labeler),
        "anonymous": token_client(None),
    }


def jsonl(*rows: dict) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def upload(content: bytes, name: str = "prompts.jsonl") -> io.BytesIO:
    file = io.BytesIO(content)
    file.name = name
    return file


# --- The role matrix -------------------------------------------------------------------------

ENDPOINTS = {
    # name: (method, url, body), expected status for staff, service, labeler, anonymous
    "list datasets": (("get", "labeling-api:datasets", {}), (200, 200, 200, 401)),
    "create dataset": (
        ("post", "labeling-api:datasets", {"slug": "new", "name": "New"}),
        (201, 403, 403, 401),
    ),
    "read dataset": (("get", "labeling-api:dataset", {}), (200, 200, 200, 401)),
    "update dataset": (
        ("patch", "labeling-api:dataset", {"labels_per_prompt": 4}),
        (200, 403, 403, 401),
    ),
    "import": (("post", "labeling-api:imports", {}), (400, 403, 403, 401)),
    "prompts": (("get", "labeling-api:prompts", {}), (200, 200, 403, 401)),
    "next task": (("post", "labeling-api:next-task", {}), (200, 403, 200, 401)),
    "comparisons": (("get", "labeling-api:comparisons", {}), (200, 200, 403, 401)),
    "rankings": (("get", "labeling-api:rankings", {}), (200, 200, 403, 401)),
    "quality report": (("get", "labeling-api:quality", {}), (200, 200, 403, 401)),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("role_index", range(4))
def test_role_matrix(api, dataset, prompt, endpoint, role_index):
    (method, name, body), expected = ENDPOINTS[endpoint]
    role = ["staff", "service", "labeler", "anonymous"][role_index]
    url = reverse(name) if name == "labeling-api:datasets" else reverse(name, args=[dataset.slug])
    body_format = {"get": None, "post": "json", "patch": "json"}[method]
    if name == "labeling-api:imports":
        body_format = "multipart"
    response = getattr(api[role], method)(url, body, format=body_format)
    assert response.status_code == expected[role_index], response.content[:300]


def test_task_endpoints_are_the_labelers_own(api, dataset, prompt, staff, other_labeler):
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=other_labeler)
    for role in ("staff", "labeler"):
        ranking = api[role].post(
            reverse("labeling-api:ranking", args=[assignment.pk]), {}, format="json"
        )
        skip = api[role].post(
            reverse("labeling-api:skip", args=[assignment.pk]), {"reason": "x"}, format="json"
        )
        assert (ranking.status_code, skip.status_code) == (404, 404)
    for role, code in (("service", 404), ("anonymous", 401)):
        assert (
            api[role].post(reverse("labeling-api:skip", args=[assignment.pk]), {}).status_code
            == code
        )
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.LEASED


def test_import_status_is_for_the_workspaces_managers(api, dataset, staff):
    job = ImportJob.objects.create(dataset=dataset, filename="x.jsonl", size=1)
    url = reverse("labeling-api:import", args=[job.pk])
    codes = [
        api[role].get(url).status_code for role in ("staff", "service", "labeler", "anonymous")
    ]
    assert codes == [200, 404, 404, 401]  # another role's import is not there at all


def test_staff_cancel_a_queued_import_and_its_file_is_deleted(api, dataset, staff):
    job = imports.queue_import(
        dataset=dataset, upload=upload(jsonl(*[])), filename="x.jsonl", size=0, user=staff
    )
    path = job.file.path
    url = reverse("labeling-api:import-cancel", args=[job.pk])
    assert [api[r].post(url).status_code for r in ("service", "labeler", "anonymous")] == [
        404,
        404,
        401,
    ]
    response = api["staff"].post(url)
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert not Path(path).exists()
    assert imports.run_import_job(job_id=job.pk) is None  # the worker finds nothing to do
    again = api["staff"].post(url)
    assert again.status_code == 400
    assert "already cancelled" in again.json()["detail"][0]


# --- Datasets --------------------------------------------------------------------------------


def test_labelers_see_only_active_datasets(api, dataset):
    Dataset.objects.create(slug="draft", name="Draft")
    slugs = {d["slug"] for d in api["labeler"].get(reverse("labeling-api:datasets")).json()}
    assert slugs == {dataset.slug}
    assert api["labeler"].get(reverse("labeling-api:dataset", args=["draft"])).status_code == 404
    assert api["staff"].get(reverse("labeling-api:dataset", args=["draft"])).status_code == 200


def test_dataset_progress_counts(api, dataset, prompt, labeler):
    make_prompt(dataset)
    leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    body = api["staff"].get(reverse("labeling-api:dataset", args=[dataset.slug])).json()
    assert body["progress"] == {"prompts": 2, "labels_needed": 4, "labels_done": 0, "percent": 0}


def test_patching_guidelines_raises_their_version(api, dataset):
    url = reverse("labeling-api:dataset", args=[dataset.slug])
    body = api["staff"].patch(url, {"guidelines": "Be strict."}, format="json").json()
    assert (body["guidelines"], body["guidelines_version"]) == ("Be strict.", 2)
    body = api["staff"].patch(url, {"labels_per_prompt": 5}, format="json").json()
    assert (body["labels_per_prompt"], body["guidelines_version"]) == (5, 2)


def test_bad_dataset_fields_are_named(api, dataset):
    response = api["staff"].post(
        reverse("labeling-api:datasets"),
        {"slug": dataset.slug, "name": "Twin", "criteria": ["funny"]},
        format="json",
    )
    assert response.status_code == 400
    assert set(response.json()) == {"criteria"}


# --- Imports ---------------------------------------------------------------------------------

ROWS = [{"id": f"q{i}", "prompt": f"Q{i}?", "completions": [f"a{i}", f"b{i}"]} for i in range(3)]


def test_upload_is_queued_after_commit_and_imported_by_the_task(
    api, dataset, django_capture_on_commit_callbacks
):
    url = reverse("labeling-api:imports", args=[dataset.slug])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api["staff"].post(url, {"file": upload(jsonl(*ROWS))}, format="multipart")
    assert response.status_code == 202
    assert len(callbacks) == 1
    job = ImportJob.objects.get(pk=response.json()["id"])
    assert (job.status, job.task_id != "") == (ImportJob.Status.QUEUED, True)
    assert not Prompt.objects.exists()

    imports.run_import_job(job_id=job.pk)
    body = api["staff"].get(reverse("labeling-api:import", args=[job.pk])).json()
    assert (body["status"], body["progress"], body["created_count"]) == ("succeeded", 1.0, 3)
    assert Prompt.objects.filter(dataset=dataset).count() == 3
    job.refresh_from_db()
    assert not job.file
    assert imports.run_import_job(job_id=job.pk) is None


def test_failed_import_reports_the_line_and_changes_nothing(api, dataset):
    url = reverse("labeling-api:imports", args=[dataset.slug])
    content = jsonl(*ROWS) + b'{"prompt": "Hi", "completions": ["one"]}\n'
    job_id = api["staff"].post(url, {"file": upload(content)}, format="multipart").json()["id"]
    with pytest.raises(Exception, match="line 4"):
        imports.run_import_job(job_id=job_id)
    body = api["staff"].get(reverse("labeling-api:import", args=[job_id])).json()
    assert body["status"] == "failed"
    assert "line 4: field 'completions' has 1" in body["error"]
    assert not Prompt.objects.exists()


def test_oversized_upload_is_refused_before_queueing(api, dataset, settings):
    settings.PREFLAB_IMPORT_MAX_BYTES = 10
    url = reverse("labeling-api:imports", args=[dataset.slug])
    response = api["staff"].post(url, {"file": upload(jsonl(*ROWS))}, format="multipart")
    assert response.status_code == 400
    assert "limit is 10 bytes" in response.json()["file"][0]
    assert not ImportJob.objects.exists()


# --- Prompts ---------------------------------------------------------------------------------


def test_prompts_are_paginated_with_completions(api, dataset, django_assert_max_num_queries):
    for _ in range(60):
        make_prompt(dataset, completions=3)
    url = reverse("labeling-api:prompts", args=[dataset.slug])
    with django_assert_max_num_queries(6):
        body = api["service"].get(url).json()
    assert body["count"] == 60
    assert len(body["results"]) == 50
    assert len(body["results"][0]["completions"]) == 3
    assert api["service"].get(body["next"]).json()["previous"]


# --- Labeling through the API ----------------------------------------------------------------


def test_labeler_leases_ranks_and_gets_204_when_done(api, dataset, prompt):
    client = api["labeler"]
    task = client.post(reverse("labeling-api:next-task", args=[dataset.slug])).json()
    assert [m["content"] for m in task["messages"]] == [prompt.messages[0]["content"]]
    assert "model" not in task["completions"][0]
    ids = [c["id"] for c in task["completions"]]
    body = {
        "order": [[ids[2]], [ids[0], ids[1]]],
        "ratings": {str(cid): {"helpful": 5, "honest": 6, "harmless": 7} for cid in ids},
        "flags": {str(ids[0]): ["hallucination"]},
        "request_id": str(uuid.uuid4()),
        "seconds_spent": 31.5,
    }
    url = reverse("labeling-api:ranking", args=[task["assignment"]])
    first = client.post(url, body, format="json")
    again = client.post(url, body, format="json")
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert first.json()["comparisons"] == 2
    assert Ranking.objects.count() == 1
    assert client.post(reverse("labeling-api:next-task", args=[dataset.slug])).status_code == 204


def test_invalid_ranking_names_the_field_and_stores_nothing(api, dataset, prompt):
    client = api["labeler"]
    task = client.post(reverse("labeling-api:next-task", args=[dataset.slug])).json()
    ids = [c["id"] for c in task["completions"]]
    body = {
        "order": [[ids[0]], [ids[1]]],
        "ratings": {str(cid): {"helpful": 5, "honest": 6, "harmless": 7} for cid in ids},
        "request_id": str(uuid.uuid4()),
        "seconds_spent": 3,
    }
    response = client.post(
        reverse("labeling-api:ranking", args=[task["assignment"]]), body, format="json"
    )
    assert response.status_code == 400
    assert "Rank every completion exactly once" in response.json()["order"][0]
    body["order"] = [[cid] for cid in ids]
    body["ratings"] = {"abc": {}}
    response = client.post(
        reverse("labeling-api:ranking", args=[task["assignment"]]), body, format="json"
    )
    assert response.json() == {"ratings": ["ratings must be keyed by completion id."]}
    assert not Ranking.objects.exists()
    assert not Comparison.objects.exists()


def test_labeler_skips_through_the_api(api, dataset, prompt):
    client = api["labeler"]
    task = client.post(reverse("labeling-api:next-task", args=[dataset.slug])).json()
    response = client.post(
        reverse("labeling-api:skip", args=[task["assignment"]]), {"reason": "unsure"}, format="json"
    )
    assert response.json()["status"] == "skipped"
    assert client.post(reverse("labeling-api:next-task", args=[dataset.slug])).status_code == 204


def test_two_completion_task_lists_strength_levels(api, dataset):
    make_prompt(dataset, completions=2)
    task = api["labeler"].post(reverse("labeling-api:next-task", args=[dataset.slug])).json()
    assert task["strength_levels"] == ["significantly", "better", "slightly", "negligibly"]


def test_create_api_token_command(db, labeler, capsys):
    from django.core.management import call_command

    call_command("create_api_token", labeler.username)
    key = capsys.readouterr().out.strip()
    assert Token.objects.get(user=labeler).key == key
    call_command("create_api_token", "trainer", "--service")
    service_key = capsys.readouterr().out.strip()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {service_key}")
    assert client.get(reverse("labeling-api:datasets")).status_code == 200


def test_a_vote_dataset_through_the_api_asks_for_nothing_but_the_order(api, dataset):
    url = reverse("labeling-api:dataset", args=[dataset.slug])
    body = api["staff"].patch(url, {"ratings": "off", "strength": "optional"}, format="json")
    assert (body.json()["ratings"], body.json()["strength"]) == ("off", "optional")
    bad = api["staff"].patch(url, {"ratings": "sometimes"}, format="json")
    assert bad.status_code == 400 and set(bad.json()) == {"ratings"}
    make_prompt(dataset, completions=2)
    client = api["labeler"]
    task = client.post(reverse("labeling-api:next-task", args=[dataset.slug])).json()
    assert (task["criteria"], task["ratings"], task["strength"]) == ([], "off", "optional")
    ids = [c["id"] for c in task["completions"]]
    body = {"order": [[ids[1]], [ids[0]]], "request_id": str(uuid.uuid4()), "seconds_spent": 2}
    url = reverse("labeling-api:ranking", args=[task["assignment"]])
    response = client.post(url, body, format="json")
    assert response.status_code == 201, response.json()
    assert Comparison.objects.get().chosen_id == ids[1]


# --- The labeling loop's answers, built without serializers ----------------------------------


@pytest.mark.parametrize("completions", [2, 3])
@pytest.mark.parametrize("ratings", ["required", "off"])
def test_task_and_ranking_answers_are_what_their_serializers_give(
    dataset, labeler, settings, completions, ratings
):
    from labeling import access
    from labeling.models import Strength
    from labeling.serializers import RankingSerializer, TaskSerializer, ranking_data, task_data
    from labeling.services import rankings

    settings.TIME_ZONE = "Europe/Paris"  # the API shows times in the configured zone
    dataset.ratings = ratings
    dataset.guidelines = "Prefer <b>honest</b> & kind."
    dataset.save()
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": 'Say "hi" <script>'},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "\u2028 again \U0001f600"},
    ]
    make_prompt(dataset, completions=completions, messages=messages)
    dataset.criteria.create(
        key="clear",
        label="Clear <i>",
        description='Plain "words"',
        scale_min=0,
        scale_max=9,
        min_label="muddled",
        max_label="crisp",
        position=7,
    )
    dataset = access.dataset_to_label(labeler, dataset.slug)  # as next-task reads it
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    shown = assignment.display_completions()
    levels = list(Strength.values) if completions == 2 else []
    task = {"assignment": assignment, "completions": shown, "strength_levels": levels}
    assert task_data(assignment, shown, levels) == TaskSerializer(task).data
    assert json.dumps(task_data(assignment, shown, levels)) == json.dumps(
        TaskSerializer(task).data
    )  # the same keys in the same order
    ids = [completion.pk for completion in shown]
    ranking = rankings.submit_ranking(
        assignment=assignment,
        order=[[ids[0]], ids[1:]],
        ratings={cid: {c.key: 3 for c in dataset.rated_criteria} for cid in ids}
        if ratings == "required"
        else {},
        flags={ids[0]: ["hallucination"]},
        request_id=uuid.uuid4(),
        seconds_spent=12.5,
        rationale="First is best.",
        strength="better" if completions == 2 else "",
    )
    assert json.dumps(ranking_data(ranking)) == json.dumps(RankingSerializer(ranking).data)
    # As a later reader sees it: ratings and comparisons read from their tables.
    assert ranking_data(Ranking.objects.get(pk=ranking.pk)) == ranking_data(ranking)
