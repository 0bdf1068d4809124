"""The AI labeler API: managers add, change and run AI labelers; everyone else is refused."""

from __future__ import annotations

from typing import Any

import pytest

from labeling.models import AILabeler, AIRun
from tests.factories import make_team, token_client
from tests.openai_stub import Stub

pytestmark = pytest.mark.django_db


def body(base_url: str, **changes: Any) -> dict[str, Any]:
    return {
        "name": "Judge",
        "base_url": base_url,
        "model": "stub",
        "api_key_env": "JUDGE_KEY",
        **changes,
    }


def test_a_manager_adds_changes_and_runs_an_ai_labeler(openai_stub: Stub) -> None:
    _, people = make_team("t")
    client = token_client(people["manager"])
    url = "/api/v1/datasets/t-data/ai-labelers/"

    created = client.post(url, body(openai_stub.base_url), format="json")
    assert created.status_code == 201, created.json()
    labeler = created.json()
    assert labeler["constitution_version"] == 1 and len(labeler["principles"]) == 3
    assert labeler["api_key_env"] == "JUDGE_KEY" and labeler["budget_left"] == 100
    assert [row["id"] for row in client.get(url).json()] == [labeler["id"]]

    changed = client.patch(
        f"/api/v1/ai-labelers/{labeler['id']}/", {"principles": ["Be brief."]}, format="json"
    )
    assert changed.json()["constitution_version"] == 2

    started = client.post(f"/api/v1/ai-labelers/{labeler['id']}/runs/", {"limit": 5}, format="json")
    assert started.status_code == 202 and started.json()["status"] == "queued"
    run_id = started.json()["id"]
    paused = client.post(f"/api/v1/ai-runs/{run_id}/pause/")
    assert paused.status_code == 202 and paused.json()["status"] == "paused"
    assert client.post(f"/api/v1/ai-runs/{run_id}/explode/").status_code == 404
    assert client.post(f"/api/v1/ai-runs/{run_id}/cancel/").json()["status"] == "cancelled"
    again = client.post(f"/api/v1/ai-runs/{run_id}/cancel/")
    assert again.status_code == 400 and "ended already" in str(again.json())
    assert client.get(f"/api/v1/ai-runs/{run_id}/").json()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"base_url": "ftp://x"}, "base_url"),
        ({"principles": ["x"] * 21}, "principles"),
        ({"principles": ["x" * 1001]}, "principles"),
        ({"api_key_env": "sk-live-abc"}, "api_key_env"),
        ({"review_rate": 1.5}, "review_rate"),
        ({"concurrency": 0}, "concurrency"),
    ],
)
def test_bad_settings_are_a_400_naming_the_field(
    openai_stub: Stub, changes: dict[str, Any], field: str
) -> None:
    _, people = make_team("t")
    response = token_client(people["manager"]).post(
        "/api/v1/datasets/t-data/ai-labelers/", body(openai_stub.base_url) | changes, format="json"
    )
    assert response.status_code == 400 and field in response.json(), response.json()
    assert not AILabeler.objects.exists()


def test_others_are_refused(openai_stub: Stub) -> None:
    _, people = make_team("t")
    _, others = make_team("o")
    url = "/api/v1/datasets/t-data/ai-labelers/"
    labeler = token_client(people["manager"]).post(url, body(openai_stub.base_url), format="json")
    labeler_id = labeler.json()["id"]

    assert token_client(others["manager"]).get(url).status_code == 404
    assert token_client(people["labeler"]).post(url, body(openai_stub.base_url)).status_code == 403
    outsider = token_client(others["admin"])
    assert outsider.get(f"/api/v1/ai-labelers/{labeler_id}/").status_code == 404
    assert outsider.post(f"/api/v1/ai-labelers/{labeler_id}/runs/").status_code == 404
    assert not AIRun.objects.exists()
