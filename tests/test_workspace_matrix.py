"""The role x endpoint matrix across two workspaces: every role of workspace "alpha" gets what
its role allows on alpha's dataset, run and model, and nothing leaks to "bravo"'s admin (who is
staff and manages a workspace of their own): not in lists, details, exports, scores,
artifacts, pages or the admin's change lists. One campaign per workspace is built once and
every request is made against it; the test reports every cell that differs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from labeling.models import Completion, Dataset, ImportJob, Prompt, Role
from labeling.services import leasing, rankings, workspaces
from rewards.services import model_versions, runs
from tests.factories import DatasetFactory, UserFactory, WorkspaceFactory, token_client
from tests.labeling.quality_data import report_of

ROLES = ("admin", "manager", "reviewer", "labeler", "service", "outsider", "superuser", "anon")
GOOD = "Happy to help: here is a careful, detailed and polite answer with steps."
BAD = "No. Figure it out yourself, idiot."


def campaign(name: str) -> dict[str, Any]:
    """A workspace with one member of each role, a dataset whose pool holds the labeler and
    two rankers, ranked prompts, an import, a trained and activated reward model."""
    workspace = WorkspaceFactory(slug=name, name=f"{name.title()} lab")
    people = {}
    for role in (Role.ADMIN, Role.MANAGER, Role.REVIEWER, Role.LABELER, Role.SERVICE):
        user = UserFactory(username=f"{name}-{role}", role=False)
        workspaces.set_role(workspace=workspace, user=user, role=role)
        people[str(role)] = user
    rankers = [UserFactory(username=f"{name}-ranker{n}", role=False) for n in range(2)]
    dataset = DatasetFactory(
        workspace=workspace,
        slug=f"{name}-data",
        name=f"{name} data",
        ratings="off",
        labels_per_prompt=3,
        pool_everyone=False,
    )
    workspaces.change_pool(dataset=dataset, add_labelers=[people["labeler"], *rankers])
    for index in range(16):
        prompt = Prompt.objects.create(
            dataset=dataset,
            external_id=f"{name}-q{index}",
            content_hash=f"{index:064d}",
            messages=[{"role": "user", "content": f"{name} question {index}?"}],
        )
        for position, text in enumerate([f"{GOOD} {index}", f"{BAD} {index}"]):
            Completion.objects.create(
                prompt=prompt, external_id=f"{name}-c{position}", text=text, position=position
            )
    for ranker in rankers:
        while (task := leasing.lease_next_assignment(dataset=dataset, labeler=ranker)) is not None:
            ids = sorted(task.prompt.completions.values_list("pk", flat=True))
            rankings.submit_ranking(
                assignment=task,
                order=[[ids[0]], [ids[1]]],
                ratings={},
                flags={},
                request_id=uuid.uuid4(),
                seconds_spent=2.0,
                strength="better",
            )
    report_of(dataset)
    run = runs.start_training_run(datasets=[dataset], enqueue=False)
    model = runs.run_training(run_id=run.pk).reward_model
    model_versions.activate_reward_model(model=model)
    job = ImportJob.objects.create(dataset=dataset, filename=f"{name}-import.jsonl", size=1)
    return {
        "workspace": workspace,
        "people": people,
        "dataset": dataset,
        "prompt": dataset.prompts.order_by("pk").first(),
        "run": run,
        "model": model,
        "import": job,
    }


@pytest.fixture
def world(db: None) -> dict[str, Any]:
    alpha, bravo = campaign("alpha"), campaign("bravo")
    users = dict(alpha["people"])
    users["outsider"] = bravo["people"]["admin"]
    users["superuser"] = UserFactory(username="root", is_staff=True, is_superuser=True, role=False)
    users["anon"] = None
    return {"alpha": alpha, "bravo": bravo, "users": users}


def api_cells(alpha: dict[str, Any]) -> dict[str, tuple[tuple[str, str, Any], tuple[int, ...]]]:
    """Each API request on alpha's things and the status each role gets, in ROLES order."""
    slug, version = alpha["dataset"].slug, alpha["model"].version
    score = {"items": [{"prompt": "Hello?", "completion": "Hi."}]}
    read = (200, 200, 200, 403, 200, 404, 200, 401)
    export = (200, 200, 403, 403, 200, 404, 200, 401)
    model = (200, 200, 404, 404, 200, 404, 200, 401)
    url = {
        "dataset": reverse("labeling-api:dataset", args=[slug]),
        "model": reverse("rewards-api:model", args=[version]),
    }
    return {
        "read dataset": (("get", url["dataset"], None), (200, 200, 200, 200, 200, 404, 200, 401)),
        "update dataset": (
            ("patch", url["dataset"], {"description": "x"}),
            (200, 200, 403, 403, 403, 404, 200, 401),
        ),
        "import": (
            ("post", reverse("labeling-api:imports", args=[slug]), {}),
            (400, 400, 403, 403, 403, 404, 400, 401),
        ),
        "import status": (
            ("get", reverse("labeling-api:import", args=[alpha["import"].pk]), None),
            (200, 200, 404, 404, 404, 404, 200, 401),
        ),
        "prompts": (("get", reverse("labeling-api:prompts", args=[slug]), None), read),
        "next task": (
            ("post", reverse("labeling-api:next-task", args=[slug]), {}),
            (403, 403, 403, 200, 403, 404, 403, 401),  # only the pool labels
        ),
        "comparisons": (("get", reverse("labeling-api:comparisons", args=[slug]), None), export),
        "rankings": (("get", reverse("labeling-api:rankings", args=[slug]), None), export),
        "quality": (("get", reverse("labeling-api:quality", args=[slug]), None), read),
        "prompt stats": (("get", reverse("labeling-api:prompt-stats", args=[slug]), None), read),
        "leaderboard": (("get", reverse("labeling-api:leaderboard", args=[slug]), None), read),
        "predictions": (("get", reverse("rewards-api:predictions", args=[slug]), None), read),
        "model": (("get", url["model"], None), model),
        "score": (("post", reverse("rewards-api:score", args=[version]), score), model),
        "artifact": (("get", reverse("rewards-api:artifact", args=[version]), None), model),
        "run": (
            ("get", reverse("rewards-api:run", args=[alpha["run"].pk]), None),
            (200, 200, 404, 404, 404, 404, 200, 401),
        ),
        "start run": (
            ("post", reverse("rewards-api:runs"), {"datasets": [slug]}),
            (201, 201, 403, 403, 403, 400, 201, 401),  # bravo's admin manages no such dataset
        ),
    }


def test_every_role_gets_what_it_may_on_the_api_and_nothing_of_another_workspace(world):
    alpha, users = world["alpha"], world["users"]
    clients = {role: token_client(users[role]) for role in ROLES}
    wrong = []
    for name, ((method, url, body), expected) in api_cells(alpha).items():
        for role, code in zip(ROLES, expected, strict=True):
            client = clients[role]
            kind = "multipart" if name == "import" else "json"
            response = getattr(client, method)(url, body, format=kind)
            if response.status_code != code:
                wrong.append(f"{name} as {role}: {response.status_code}, expected {code}")
            listed(response)  # a stream read to its end is closed (its file, its query)
    assert wrong == []


def listed(response: Any) -> str:
    """The body; a stream is read to its end, which closes it as a server would. (Closing a
    test client's response by hand fires `request_finished`, which drops the test's database
    connection on PostgreSQL.)"""
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return body.decode(errors="replace")  # a model file is bytes


def test_lists_hold_only_the_callers_workspaces(world):
    alpha, users = world["alpha"], world["users"]
    sees_dataset = {"admin", "manager", "reviewer", "labeler", "service", "superuser"}
    sees_model = {"admin", "manager", "service", "superuser"}
    clients = {role: token_client(users[role]) for role in ROLES[:-1]}
    wrong = []
    for role, client in clients.items():
        datasets = listed(client.get(reverse("labeling-api:datasets")))
        models = client.get(reverse("rewards-api:models")).json()["results"]
        if ("alpha-data" in datasets) != (role in sees_dataset):
            wrong.append(f"dataset list as {role}")
        if any(m["id"] == alpha["model"].version for m in models) != (role in sees_model):
            wrong.append(f"model list as {role}")
    outsider = clients["outsider"]
    assert "alpha" not in listed(outsider.get(reverse("labeling-api:datasets")))
    assert "alpha" not in listed(outsider.get(reverse("rewards-api:models")))
    assert wrong == []


def page_cells(alpha: dict[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    slug, prompt_id = alpha["dataset"].slug, alpha["prompt"].pk
    review = (200, 200, 200, 403, 403, 404, 200, 302)
    manage = (200, 200, 403, 403, 403, 404, 200, 302)
    return {
        "start labeling": (
            reverse("labeling:next", args=[slug]),
            (403, 403, 403, 200, 403, 404, 403, 302),
        ),
        "quality": (reverse("labeling:quality", args=[slug]), review),
        "quality prompt": (reverse("labeling:quality-prompt", args=[slug, prompt_id]), review),
        "leaderboard": (reverse("labeling:leaderboard", args=[slug]), review),
        "review queue": (reverse("labeling:review-queue", args=[slug]), review),
        "review prompt": (reverse("labeling:review-prompt", args=[slug, prompt_id]), review),
        "run": (reverse("rewards:run", args=[alpha["run"].pk]), manage),
        "model file": (
            reverse("rewards:model-download", args=[alpha["model"].version, "onnx"]),
            manage,
        ),
    }


def page_client(user: Any) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def test_every_role_gets_what_it_may_on_the_pages(world):
    alpha, users = world["alpha"], world["users"]
    clients = {role: page_client(users[role]) for role in ROLES}
    wrong = []
    for name, (url, expected) in page_cells(alpha).items():
        for role, code in zip(ROLES, expected, strict=True):
            response = clients[role].get(url)
            if response.status_code != code:
                wrong.append(f"{name} as {role}: {response.status_code}, expected {code}")
            listed(response)
    assert wrong == []


ADMIN_LISTS = [
    "admin:labeling_dataset_changelist",
    "admin:labeling_prompt_changelist",
    "admin:labeling_completion_changelist",
    "admin:labeling_assignment_changelist",
    "admin:labeling_ranking_changelist",
    "admin:labeling_comparison_changelist",
    "admin:labeling_importjob_changelist",
    "admin:labeling_promptstats_changelist",
    "admin:rewards_prediction_changelist",
    "admin:rewards_predictionjob_changelist",
]


@pytest.mark.parametrize("changelist", ADMIN_LISTS)
def test_admin_change_lists_show_only_the_managed_workspaces(world, changelist):
    users = world["users"]
    url = reverse(changelist)
    for role in ("admin", "manager", "superuser"):
        page = page_client(users[role]).get(url)
        assert page.status_code == 200, role
        assert "alpha" in page.content.decode(), role
    outsider = page_client(users["outsider"]).get(url)
    assert outsider.status_code == 200
    assert "bravo" in outsider.content.decode()
    assert "alpha" not in outsider.content.decode()
    for role in ("reviewer", "labeler", "service"):
        assert page_client(users[role]).get(url).status_code == 403, role


def test_admin_change_pages_of_another_workspace_are_not_there(world):
    alpha, outsider = world["alpha"], page_client(world["users"]["outsider"])
    for name, obj in [("dataset", alpha["dataset"]), ("prompt", alpha["prompt"])]:
        page = outsider.get(reverse(f"admin:labeling_{name}_change", args=[obj.pk]))
        assert page.status_code == 302  # "doesn't exist", back to the admin index
        assert "alpha" not in page.content.decode()
    importing = outsider.get(reverse("admin:labeling_dataset_import", args=[alpha["dataset"].pk]))
    assert importing.status_code == 404


def test_index_pages_list_only_the_callers_workspaces(world):
    users = world["users"]
    for url in (reverse("labeling:quality-index"), reverse("labeling:review-index")):
        assert "alpha" in page_client(users["reviewer"]).get(url).content.decode()
        assert "alpha" not in page_client(users["outsider"]).get(url).content.decode()
    runs_page = reverse("rewards:runs")
    assert "alpha" in page_client(users["manager"]).get(runs_page).content.decode()
    assert "alpha" not in page_client(users["outsider"]).get(runs_page).content.decode()
    home = page_client(users["labeler"]).get(reverse("labeling:home")).content.decode()
    assert "alpha data" in home
    assert (
        "alpha data"
        not in page_client(users["manager"]).get(reverse("labeling:home")).content.decode()
    )


def test_a_task_is_its_labelers_alone(world):
    alpha, users = world["alpha"], world["users"]
    task = leasing.lease_next_assignment(dataset=alpha["dataset"], labeler=users["labeler"])
    assert task is not None
    url = reverse("labeling:rank", args=[task.pk])
    for role in ROLES[:-1]:
        code = page_client(users[role]).get(url).status_code
        assert code == (200 if role == "labeler" else 404), role


def test_a_dataset_made_in_one_workspace_is_not_anothers(world):
    bravo_admin = token_client(world["users"]["outsider"])
    response = bravo_admin.post(
        reverse("labeling-api:datasets"),
        {"workspace": "alpha", "slug": "sneaky", "name": "Sneaky"},
        format="json",
    )
    assert response.status_code == 404
    made = bravo_admin.post(
        reverse("labeling-api:datasets"), {"slug": "fine", "name": "Fine"}, format="json"
    )
    assert made.status_code == 201
    assert made.json()["workspace"] == "bravo"
    assert Dataset.objects.get(slug="fine").workspace == world["bravo"]["workspace"]
