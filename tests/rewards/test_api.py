"""Reward model endpoints: roles, model card, scoring, downloads; and the staff pages."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.http import QueryDict
from django.template.loader import render_to_string
from django.urls import reverse

from labeling.models import Dataset, Role
from rewards import artifacts
from rewards.forms import TrainingRunForm
from rewards.models import TrainingRun
from rewards.services import runs
from tests.factories import DatasetFactory, UserFactory, token_client


@pytest.fixture
def model(trained_on):
    run = runs.start_training_run(datasets=[trained_on], enqueue=False)
    return runs.run_training(run_id=run.pk).reward_model


@pytest.fixture
def api(staff, labeler):
    service = UserFactory(username="trainer", role=Role.SERVICE)
    return {
        "staff": token_client(staff),
        "service": token_client(service),
        "labeler": token_client(labeler),
        "anonymous": token_client(None),
    }


def score_body(count: int = 2) -> dict:
    return {
        "items": [
            {
                "prompt": "How do I boil an egg?",
                "completion": "Happy to help: here are careful steps.",
            },
            {
                "prompt": [{"role": "user", "content": "How do I boil an egg?"}],
                "completion": "No. Figure it out yourself, idiot.",
            },
        ][:count]
    }


@pytest.mark.parametrize(
    ("role", "codes"),
    [
        ("staff", (200, 200, 200, 200)),
        ("service", (200, 200, 200, 200)),
        ("labeler", (200, 404, 404, 404)),  # no model of theirs to list
        ("anonymous", (401, 401, 401, 401)),
    ],
)
def test_role_matrix(api, model, role, codes):
    client = api[role]
    responses = (
        client.get(reverse("rewards-api:models")),
        client.get(reverse("rewards-api:model", args=[model.version])),
        client.post(
            reverse("rewards-api:score", args=[model.version]), score_body(), format="json"
        ),
        client.get(reverse("rewards-api:artifact", args=[model.version]), {"format": "onnx"}),
    )
    for response in responses:
        response.close()
    assert tuple(r.status_code for r in responses) == codes


def test_scores_follow_what_was_learned(api, model):
    response = api["service"].post(
        reverse("rewards-api:score", args=[model.version]), score_body(), format="json"
    )
    body = response.json()
    assert body["model"] == model.version
    polite, rude = body["rewards"]
    assert polite > rude


def test_score_batch_is_limited_and_validated(api, model, settings):
    url = reverse("rewards-api:score", args=[model.version])
    too_many = {
        "items": [{"prompt": "q", "completion": "a"}] * (settings.PREFLAB_SCORE_BATCH_MAX + 1)
    }
    response = api["staff"].post(url, too_many, format="json")
    assert response.status_code == 400
    assert "items" in response.json()
    bad = api["staff"].post(
        url, {"items": [{"prompt": [{"role": "bot"}], "completion": "a"}]}, format="json"
    )
    assert bad.status_code == 400
    assert "prompt" in str(bad.json())


def test_model_card_and_download_with_checksum(api, model):
    card = api["service"].get(reverse("rewards-api:model", args=[model.version])).json()
    assert card["id"] == model.version
    assert (
        card["card"]["data"]["comparison_ids_sha256"] == model.card["data"]["comparison_ids_sha256"]
    )
    for kind in artifacts.FILES:
        response = api["staff"].get(
            reverse("rewards-api:artifact", args=[model.version]), {"format": kind}
        )
        body = b"".join(response.streaming_content)
        assert response["X-Checksum-SHA256"] == model.files[kind]["sha256"]
        assert len(body) == model.files[kind]["bytes"]
    bad = api["staff"].get(
        reverse("rewards-api:artifact", args=[model.version]), {"format": "pickle"}
    )
    assert bad.status_code == 400
    assert "onnx" in bad.json()["format"][0]


def test_active_filter(api, model, trained_on):
    body = (
        api["service"]
        .get(reverse("rewards-api:models"), {"active": "true", "dataset": trained_on.slug})
        .json()
    )
    assert [m["id"] for m in body["results"]] == [model.version]


# --- Staff pages -----------------------------------------------------------------------------


def test_pages_are_staff_only(client, labeler, model):
    client.force_login(labeler)
    for url in (
        reverse("rewards:runs"),
        reverse("rewards:run", args=[model.run_id]),
        reverse("rewards:run-plot", args=[model.run_id, "reliability"]),
    ):
        assert client.get(url).status_code == 403


def test_staff_starts_a_run_from_the_web(
    client, staff, trained_on, django_capture_on_commit_callbacks
):
    client.force_login(staff)
    assert "Start training" in client.get(reverse("rewards:runs")).content.decode()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            reverse("rewards:runs"), {"datasets": [trained_on.pk], "held_out_share": 0.2, "seed": 0}
        )
    assert response.status_code == 302
    assert len(callbacks) == 1
    page = client.get(response.url).content.decode()
    assert "Queued" in page
    assert 'http-equiv="refresh"' in page


class FormValues(HTMLParser):
    """What a browser submits for the first form of a page left as it was loaded: the checked
    boxes and the values of the other inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, list[str]] = {}
        self.forms = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.forms += tag == "form"
        if tag != "input" or self.forms != 1 or not attributes.get("name"):
            return
        if attributes.get("type") in ("checkbox", "radio") and "checked" not in attributes:
            return
        self.values.setdefault(attributes["name"], []).append(
            attributes.get("value") or ("on" if attributes.get("type") == "checkbox" else "")
        )


def values_as_loaded(page: str) -> dict[str, list[str]]:
    parser = FormValues()
    parser.feed(page)
    return parser.values


def test_the_training_form_as_rendered_is_valid_and_picks_the_active_datasets(db):
    active, archived = DatasetFactory(), DatasetFactory(status="archived")
    DatasetFactory(status="draft")
    every = Dataset.objects.all()
    page = render_to_string(
        "rewards/run_list.html", {"form": TrainingRunForm(datasets=every), "runs": []}
    )
    data = QueryDict(mutable=True)
    for name, values in values_as_loaded(page).items():
        data.setlist(name, values)
    form = TrainingRunForm(data, datasets=every)
    assert form.is_valid(), form.errors
    assert list(form.cleaned_data["datasets"]) == [active]
    assert archived.name in page  # offered, not ticked
    assert form.config() == {"held_out_share": 0.2, "seed": 0, "include_gold": False}


def test_staff_sets_the_l2_penalty_which_must_be_positive(
    client, staff, trained_on, django_capture_on_commit_callbacks
):
    client.force_login(staff)
    form = {"datasets": [trained_on.pk], "held_out_share": 0.2, "seed": 0}
    page = client.post(reverse("rewards:runs"), form | {"l2_penalty": 0}).content.decode()
    assert "Must be above 0." in page
    assert not TrainingRun.objects.exists()
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("rewards:runs"), form | {"l2_penalty": 0.01})
    assert response.status_code == 302
    assert TrainingRun.objects.get().config["fit"]["l2_penalty"] == 0.01


def test_run_page_shows_metrics_plots_and_files(client, staff, model):
    client.force_login(staff)
    page = client.get(reverse("rewards:run", args=[model.run_id])).content.decode()
    assert "Pairwise accuracy" in page
    assert "http-equiv" not in page
    for name in ("reliability", "rewards", "learning-curve"):
        assert reverse("rewards:run-plot", args=[model.run_id, name]) in page
        svg = client.get(reverse("rewards:run-plot", args=[model.run_id, name]))
        assert svg["Content-Type"] == "image/svg+xml"
        assert svg.content.startswith(b"<svg")
    assert "model.onnx" in page


def test_failed_run_page_offers_a_retry(client, staff, trained_on):
    run = runs.start_training_run(datasets=[trained_on], enqueue=False)
    run.status, run.error = "failed", "boom"
    run.save()
    client.force_login(staff)
    page = client.get(reverse("rewards:run", args=[run.pk])).content.decode()
    assert "boom" in page
    response = client.post(reverse("rewards:run-retry", args=[run.pk]))
    assert response.status_code == 302
    assert run.retries.count() == 1


def test_a_full_batch_of_long_conversations_is_scored(api, model, settings):
    conversation = [
        {"role": "user", "content": "q" * 1000},
        {"role": "assistant", "content": "a" * 1000},
        {"role": "user", "content": "q" * 1000},
    ]
    items = [{"prompt": conversation, "completion": "c" * 1000}] * settings.PREFLAB_SCORE_BATCH_MAX
    response = api["service"].post(
        reverse("rewards-api:score", args=[model.version]), {"items": items}, format="json"
    )
    assert response.status_code == 200, response.content[:300]
    assert len(response.json()["rewards"]) == settings.PREFLAB_SCORE_BATCH_MAX


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("   ", "field 'prompt' is empty"),
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "end"),
    ],
)
def test_score_refuses_the_prompts_imports_refuse(api, model, prompt, message):
    response = api["service"].post(
        reverse("rewards-api:score", args=[model.version]),
        {"items": [{"prompt": prompt, "completion": "a"}]},
        format="json",
    )
    assert response.status_code == 400
    assert message in str(response.json()["items"])


def test_an_oversized_score_body_is_a_json_413(api, model, settings):
    settings.PREFLAB_SCORE_MAX_JSON_BYTES = 1000
    body = {"items": [{"prompt": "q", "completion": "a" * 2000}]}
    response = api["service"].post(
        reverse("rewards-api:score", args=[model.version]), body, format="json"
    )
    assert response.status_code == 413
    assert response.json() == {
        "detail": "The request body is larger than 1000 bytes, the limit here."
    }
