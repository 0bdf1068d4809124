"""Training on human labelers' comparisons (the default), AI labelers' or both: the run's
`labelers` option, the comparisons it loads and what the model card says of them."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from labeling.models import Comparison, Dataset
from rewards import features
from rewards.forms import TrainingRunForm
from rewards.models import TrainingRun
from rewards.services import runs, training_data
from tests.factories import AILabelerFactory, make_ai_ranking, token_client
from tests.rewards.conftest import ranked_dataset, start


@pytest.fixture
def judged(db: None) -> dict[str, Any]:
    """`ranked_dataset` (one human labeler) whose every prompt an AI labeler also ranked, the
    other way round."""
    dataset = ranked_dataset(prompts=12, labelers=1, slug="judged")
    judge = AILabelerFactory(dataset=dataset)
    for prompt in dataset.prompts.order_by("pk"):
        ids = prompt.completions.order_by("-position").values_list("pk", flat=True)
        make_ai_ranking(judge, prompt, [[pk] for pk in ids])
    comparisons = Comparison.objects.filter(dataset=dataset)
    return {
        "dataset": dataset,
        "ai": set(comparisons.filter(labeler=judge.user).values_list("pk", flat=True)),
        "human": set(comparisons.exclude(labeler=judge.user).values_list("pk", flat=True)),
    }


@pytest.mark.parametrize(
    ("labelers", "kinds"), [("human", ["human"]), ("ai", ["ai"]), ("all", ["human", "ai"])]
)
def test_training_data_loads_the_comparisons_of_the_labelers_asked_for(judged, labelers, kinds):
    data = training_data.load_training_data(
        datasets=[judged["dataset"]],
        feature_config=features.FeatureConfig(),
        report=lambda *args: None,
        labelers=labelers,
    )
    expected = set().union(*(judged[kind] for kind in kinds))
    assert set(data.comparison_ids.tolist()) == expected
    assert data.ai_comparisons == (len(judged["ai"]) if "ai" in kinds else 0)


@pytest.mark.parametrize("labelers", [None, "human", "ai", "all"])
def test_the_model_card_says_whose_comparisons_it_was_trained_on(judged, labelers):
    config = {} if labelers is None else {"labelers": labelers}
    run = runs.run_training(run_id=start(judged["dataset"], **config).pk)
    assert run is not None and run.status == TrainingRun.Status.SUCCEEDED, run and run.error
    card = run.reward_model.card
    wanted = labelers or "human"
    humans = len(judged["human"]) if wanted in ("human", "all") else 0
    machines = len(judged["ai"]) if wanted in ("ai", "all") else 0
    assert (run.config["labelers"], card["labelers"], card["config"]["labelers"]) == (wanted,) * 3
    assert (card["data"]["human_comparisons"], card["data"]["ai_comparisons"]) == (humans, machines)
    assert run.metrics["comparisons"]["total"] == humans + machines


def test_ai_only_training_without_ai_comparisons_fails_saying_so(db):
    dataset = ranked_dataset(prompts=12, labelers=1, slug="humans-only")
    run = start(dataset, labelers="ai")
    with pytest.raises(ValidationError, match="no comparisons to train on"):
        runs.run_training(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert run.error.endswith("yet by AI labelers.")


def test_a_bad_labelers_option_names_the_field(judged, staff):
    with pytest.raises(ValidationError) as error:
        start(judged["dataset"], labelers="robots")
    assert "labelers" in error.value.message_dict
    response = token_client(staff).post(
        reverse("rewards-api:runs"),
        {"datasets": ["judged"], "config": {"labelers": "robots"}},
        format="json",
    )
    assert response.status_code == 400
    assert "labelers" in response.json()
    assert not TrainingRun.objects.exists()


def test_the_api_starts_a_run_on_ai_comparisons(judged, staff, django_capture_on_commit_callbacks):
    body = {"datasets": ["judged"], "config": {"labelers": "all"}}
    with django_capture_on_commit_callbacks(execute=False):
        response = token_client(staff).post(reverse("rewards-api:runs"), body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["config"]["labelers"] == "all"


def test_the_form_sets_labelers_and_the_run_page_shows_them(
    client, staff, judged, django_capture_on_commit_callbacks
):
    client.force_login(staff)
    form = {"datasets": [judged["dataset"].pk], "held_out_share": 0.2, "seed": 0}
    page = client.post(reverse("rewards:runs"), form | {"labelers": "bogus"})
    assert page.status_code == 400
    assert not TrainingRun.objects.exists()
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("rewards:runs"), form | {"labelers": "ai"})
    assert response.status_code == 302
    run = TrainingRun.objects.get()
    assert run.config["labelers"] == "ai"
    runs.run_training(run_id=run.pk)
    page = client.get(reverse("rewards:run", args=[run.pk])).content.decode()
    assert "comparisons of <strong>AI labelers</strong>" in page
    assert f"<strong>0</strong> from human labelers, <strong>{len(judged['ai'])}</strong>" in page


@pytest.mark.parametrize(("labelers", "config"), [("human", None), ("", None), ("all", "all")])
def test_the_form_puts_labelers_in_the_config_unless_human(judged, labelers, config):
    dataset = judged["dataset"]
    form = TrainingRunForm(
        {"datasets": [dataset.pk], "held_out_share": 0.2, "seed": 0, "labelers": labelers},
        datasets=Dataset.objects.all(),
    )
    assert form.is_valid(), form.errors
    assert form.config().get("labelers") == config
