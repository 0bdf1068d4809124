"""The AI labeler's admin pages: a workspace manager adds one, sees which data leaves, starts,
pauses, resumes and cancels its runs; another workspace sees none of it; a model's answer is
shown as text."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from labeling.models import AIJudgment, AILabeler, AIRun, AuditEvent
from labeling.services import ai_labeling
from tests.factories import make_prompt, make_team
from tests.openai_stub import Stub, chat_reply

pytestmark = pytest.mark.django_db


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def add_form(dataset_id: int, base_url: str, **changes: Any) -> dict[str, Any]:
    form = {
        "dataset": dataset_id,
        "name": "Judge",
        "base_url": base_url,
        "api": "chat",
        "model": "stub-model",
        "api_key_env": "",
        "principles": "Be helpful.\n\nBe harmless.\n",
        "temperature": "0",
        "max_tokens": "256",
        "concurrency": "2",
        "requests_per_minute": "6000",
        "timeout_seconds": "5",
        "max_retries": "0",
        "budget_prompts": "10",
        "review_rate": "1",
        "use_logprobs": "on",
        "runs-TOTAL_FORMS": "0",
        "runs-INITIAL_FORMS": "0",
    }
    return {**form, **changes}


def test_a_manager_adds_an_ai_labeler_and_runs_it(
    openai_stub: Stub, eager_celery: Any, django_capture_on_commit_callbacks: Any
) -> None:
    workspace, people = make_team("t")
    dataset = workspace.datasets.get()
    for _ in range(3):
        make_prompt(dataset, completions=2)
    manager = signed_in(people["manager"])

    page = manager.get(reverse("admin:labeling_ailabeler_add"))
    assert page.status_code == 200
    assert "What leaves this server" in page.content.decode()
    response = manager.post(
        reverse("admin:labeling_ailabeler_add"), add_form(dataset.pk, openai_stub.base_url)
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    labeler = AILabeler.objects.get()
    assert labeler.principles == ["Be helpful.", "Be harmless."]
    assert not labeler.user.has_usable_password()
    assert AuditEvent.objects.filter(action="ai_labeler_changed").exists()

    page = manager.get(reverse("admin:labeling_ailabeler_change", args=[labeler.pk]))
    assert "It may still judge 10 prompts" in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = manager.post(reverse("admin:labeling_ailabeler_start", args=[labeler.pk]))
    run = AIRun.objects.get()
    assert response.url == reverse("admin:labeling_airun_change", args=[run.pk])
    run.refresh_from_db()
    assert (run.status, run.judged) == ("succeeded", 3)  # the eager worker ran it
    page = manager.get(response.url).content.decode()
    assert "3 ranked and 0 failed of 3 prompts" in page

    bad = manager.post(reverse("admin:labeling_ailabeler_start", args=[labeler.pk]), {"limit": "x"})
    assert bad.status_code == 302 and AIRun.objects.count() == 1


def test_run_buttons_pause_resume_and_cancel(openai_stub: Stub) -> None:
    workspace, people = make_team("t")
    labeler = ai_labeling.add_ai_labeler(
        dataset=workspace.datasets.get(), name="J", base_url=openai_stub.base_url, model="m"
    )
    run = ai_labeling.start_run(ai_labeler=labeler)
    manager = signed_in(people["manager"])

    for action, status in [("pause", "paused"), ("resume", "queued"), ("cancel", "cancelled")]:
        manager.post(reverse("admin:labeling_airun_act", args=[run.pk, action]))
        run.refresh_from_db()
        assert run.status == status
    response = manager.post(
        reverse("admin:labeling_airun_act", args=[run.pk, "pause"]), follow=True
    )
    assert "Only a queued or running run can be paused." in response.content.decode()
    assert (
        manager.get(reverse("admin:labeling_airun_act", args=[run.pk, "pause"])).status_code == 405
    )


def test_other_workspaces_and_labelers_see_none_of_it(openai_stub: Stub) -> None:
    workspace, people = make_team("t")
    _, others = make_team("o")
    labeler = ai_labeling.add_ai_labeler(
        dataset=workspace.datasets.get(), name="J", base_url=openai_stub.base_url, model="m"
    )
    run = ai_labeling.start_run(ai_labeler=labeler)
    outsider = signed_in(others["manager"])

    assert outsider.get(
        reverse("admin:labeling_ailabeler_change", args=[labeler.pk])
    ).status_code in (302, 404)
    assert (
        outsider.post(reverse("admin:labeling_ailabeler_start", args=[labeler.pk])).status_code
        == 404
    )
    assert (
        outsider.post(reverse("admin:labeling_airun_act", args=[run.pk, "cancel"])).status_code
        == 404
    )
    run.refresh_from_db()
    assert run.status == "queued" and AIRun.objects.count() == 1
    listing = outsider.get(reverse("admin:labeling_ailabeler_changelist")).content.decode()
    assert openai_stub.base_url not in listing and "0 AI labelers" in listing
    # A manager of the workspace cannot put a labeler on another workspace's dataset.
    form = add_form(workspace.datasets.get().pk, openai_stub.base_url)
    response = outsider.post(reverse("admin:labeling_ailabeler_add"), form)
    assert response.status_code == 200 and AILabeler.objects.count() == 1
    labeler_page = signed_in(people["labeler"]).get(reverse("admin:labeling_ailabeler_changelist"))
    assert labeler_page.status_code in (302, 403)


def test_a_models_answer_is_shown_as_text(openai_stub: Stub) -> None:
    workspace, people = make_team("t")
    dataset = workspace.datasets.get()
    make_prompt(dataset, completions=2)
    labeler = ai_labeling.add_ai_labeler(
        dataset=dataset, name="J", base_url=openai_stub.base_url, model="m", max_retries=0
    )
    openai_stub.default = lambda body: (200, chat_reply("<script>alert(1)</script> A"), 0.0)
    run = ai_labeling.start_run(ai_labeler=labeler)
    ai_labeling.run_ai_labeler(run_id=run.pk)

    judgment = AIJudgment.objects.get()
    page = signed_in(people["manager"]).get(
        reverse("admin:labeling_aijudgment_change", args=[judgment.pk])
    )
    html = page.content.decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)" in html
