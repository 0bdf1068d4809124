"""Predictions as data: the active reward model's rewards of its datasets' completions."""

from __future__ import annotations

import io
import json
from itertools import pairwise
from typing import Any

import pytest

from labeling.models import Completion, Dataset, Prompt
from labeling.services import imports
from labeling.services.prompt_stats import Scorer
from rewards.models import Prediction, PredictionJob, RewardModel
from rewards.services import model_versions, predictions, runs
from tests.rewards.conftest import start


def trained(dataset: Dataset, **config: Any) -> RewardModel:
    """A model trained on `dataset` and activated; its scoring job queued, not run (a test
    never commits)."""
    return runs.run_training(run_id=start(dataset, **config).pk).reward_model


def trained_and_scored(dataset: Dataset, capture: Any, **config: Any) -> RewardModel:
    """A model trained on `dataset`, activated, and its scoring run (eager Celery)."""
    with capture(execute=True):
        return trained(dataset, **config)


def activate(model: RewardModel, capture: Any) -> None:
    """Activate `model` and run what it queues after commit (eager Celery: the job itself)."""
    with capture(execute=True):
        model_versions.activate_reward_model(model=model)


def test_activation_scores_every_completion_and_sets_uncertainty(
    trained_on, eager_celery, django_capture_on_commit_callbacks
):
    model = trained_and_scored(trained_on, django_capture_on_commit_callbacks)
    job = PredictionJob.objects.get(reward_model=model)
    completions = Completion.objects.filter(prompt__dataset=trained_on)
    assert (job.status, job.progress, job.scored) == ("succeeded", 1.0, completions.count())
    assert Prediction.objects.filter(reward_model=model).count() == completions.count()
    prompt = Prompt.objects.get(dataset=trained_on, external_id="q3")
    expected = Scorer(model).scores([prompt.pk])[prompt.pk]
    stored = dict(
        Prediction.objects.filter(completion__prompt=prompt).values_list("completion_id", "reward")
    )
    assert stored == pytest.approx(expected)
    ordered = sorted(expected.values())
    assert prompt.uncertainty == pytest.approx(min(b - a for a, b in pairwise(ordered)))
    assert Prediction.objects.first().criteria == {}


def test_scoring_again_writes_nothing_twice(
    trained_on, eager_celery, django_capture_on_commit_callbacks
):
    model = trained_and_scored(trained_on, django_capture_on_commit_callbacks)
    before = list(Prediction.objects.order_by("pk").values_list("pk", "reward"))
    activate(model, django_capture_on_commit_callbacks)
    second = PredictionJob.objects.order_by("pk").last()
    assert (second.status, second.scored) == ("succeeded", 0)
    assert list(Prediction.objects.order_by("pk").values_list("pk", "reward")) == before
    # A second delivery of the same task finds nothing to claim.
    assert predictions.run_prediction_job(job_id=second.pk) is None


def test_new_imports_of_a_dataset_with_an_active_model_are_scored(
    trained_on, eager_celery, django_capture_on_commit_callbacks
):
    model = trained_and_scored(trained_on, django_capture_on_commit_callbacks)
    line = {
        "id": "new-1",
        "prompt": [{"role": "user", "content": "A new question?"}],
        "completions": [{"id": "a", "text": "Yes."}, {"id": "b", "text": "Happy to help: yes."}],
    }
    with django_capture_on_commit_callbacks(execute=True):
        imports.import_dataset(
            dataset=trained_on,
            stream=io.BytesIO(json.dumps(line).encode()),
            filename="new.jsonl",
        )
    new = Prompt.objects.get(dataset=trained_on, external_id="new-1")
    assert Prediction.objects.filter(reward_model=model, completion__prompt=new).count() == 2
    assert new.uncertainty is not None
    assert PredictionJob.objects.order_by("pk").last().scored == 2


def test_a_failed_job_says_why_and_can_be_retried(
    trained_on, eager_celery, django_capture_on_commit_callbacks, monkeypatch
):
    def broken(self: Scorer, prompt_ids: list[int]) -> None:
        raise OSError("model file unreadable")

    monkeypatch.setattr(Scorer, "head_scores", broken)
    trained_and_scored(trained_on, django_capture_on_commit_callbacks)  # the task raised
    failed = PredictionJob.objects.get()
    assert failed.status == "failed" and "model file unreadable" in failed.error
    monkeypatch.undo()
    with django_capture_on_commit_callbacks(execute=True):
        retry = predictions.retry_prediction_job(job=failed)
    retry.refresh_from_db()
    assert (retry.status, retry.retry_of) == ("succeeded", failed)
    assert Prediction.objects.count() == Completion.objects.count()


def test_a_deactivated_models_job_stops(trained_on, django_capture_on_commit_callbacks):
    first = trained(trained_on)
    trained(trained_on, seed=1)  # now the active one
    job = PredictionJob.objects.get(reward_model=first)
    assert predictions.run_prediction_job(job_id=job.pk).scored == 0
    assert not Prediction.objects.exists()


def test_uncertainty_is_the_smallest_margin():
    assert predictions.uncertainty([0.5, -1.0, 0.2]) == pytest.approx(0.3)
    assert predictions.uncertainty([0.4]) is None


def test_activating_another_model_makes_its_datasets_reports_recompute(trained_on):
    from labeling.models import QualityReport
    from labeling.services import quality_report

    first = trained(trained_on)
    quality_report.refresh_report(dataset_id=trained_on.pk)
    assert not QualityReport.objects.get(dataset=trained_on).invalidated
    trained(trained_on, seed=1)  # activated: the stats' model contradiction was the first's
    assert QualityReport.objects.get(dataset=trained_on).invalidated
    assert RewardModel.objects.get(pk=first.pk).is_active is False
