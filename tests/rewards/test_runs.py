"""Training runs' lifecycle: claimed once, failures stored, stale runs reclaimed, retries,
options checked, the management command."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from rewards.models import RewardModel, TrainingRun
from rewards.services import model_versions, runs
from tests.factories import DatasetFactory, make_prompt
from tests.rewards.conftest import start


def test_second_delivery_of_a_finished_run_does_nothing(trained_on):
    run = start(trained_on)
    runs.run_training(run_id=run.pk)
    assert runs.run_training(run_id=run.pk) is None
    assert runs.run_training(run_id=999_999) is None
    assert RewardModel.objects.count() == 1


def test_failed_run_stores_the_error_and_leaves_no_files(db, media_root):
    empty = DatasetFactory()
    make_prompt(empty)
    run = start(empty)
    with pytest.raises(ValidationError, match="no comparisons"):
        runs.run_training(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == "failed"
    assert "no comparisons to train on" in run.error
    assert not RewardModel.objects.exists()
    assert not any(Path(media_root).rglob("*")) if Path(media_root).exists() else True


def test_stale_run_is_reclaimed_as_failed_and_can_be_retried(trained_on, settings):
    run = start(trained_on)
    now = timezone.now()
    TrainingRun.objects.filter(pk=run.pk).update(status="running", started_at=now, heartbeat_at=now)
    assert runs.reclaim_stale_runs(now=now) == 0
    later = now + timedelta(seconds=settings.PREFLAB_RUN_STALE_SECONDS + 1)
    assert runs.reclaim_stale_runs(now=later) == 1
    run.refresh_from_db()
    assert run.status == "failed"
    assert "stopped reporting" in run.error
    retry = runs.retry_training_run(run=run)
    assert (retry.status, retry.retry_of, retry.config) == ("queued", run, run.config)
    assert list(retry.datasets.all()) == [trained_on]


def test_a_run_from_before_the_l_bfgs_fit_is_retried_with_the_same_penalty(trained_on):
    run = start(trained_on)
    old_fit = {"regularization": 2.0, "exact_limit": 200_000, "epochs": 5, "chunk_size": 50_000}
    TrainingRun.objects.filter(pk=run.pk).update(
        status="failed", config=run.config | {"fit": old_fit}
    )
    run.refresh_from_db()
    retry = runs.retry_training_run(run=run)
    assert retry.config["fit"] == {"l2_penalty": 0.5, "max_iter": 150, "tol": 1e-6}
    assert runs.run_training(run_id=retry.pk).status == "succeeded"


def test_only_failed_runs_are_retried(trained_on):
    with pytest.raises(ValidationError, match="Only a failed run"):
        runs.retry_training_run(run=start(trained_on))


def test_bad_options_name_the_field(trained_on):
    with pytest.raises(ValidationError, match="held_out_share"):
        start(trained_on, held_out_share=1.5)
    with pytest.raises(ValidationError, match="Unknown options"):
        start(trained_on, learning_rate=3)
    with pytest.raises(ValidationError, match="seed"):
        start(trained_on, seed=-1)


def test_command_trains_in_process(trained_on, capsys):
    from django.core.management import call_command

    call_command("train_reward_model", "--dataset", trained_on.slug)
    out = capsys.readouterr().out
    assert "Reward model v1: held-out pairwise accuracy" in out
    assert TrainingRun.objects.get().status == "succeeded"


def test_a_run_reclaimed_while_finishing_stays_failed_and_its_model_inactive(
    trained_on, monkeypatch
):
    run = start(trained_on)
    save = model_versions.save_reward_model

    def reclaimed_meanwhile(**kwargs):
        model = save(**kwargs)
        TrainingRun.objects.filter(pk=run.pk).update(status="failed", error="worker stopped")
        return model

    monkeypatch.setattr(model_versions, "save_reward_model", reclaimed_meanwhile)
    monkeypatch.setattr("rewards.services.training.save_reward_model", reclaimed_meanwhile)
    finished = runs.run_training(run_id=run.pk)
    assert (finished.status, finished.error) == ("failed", "worker stopped")
    assert not finished.reward_model.is_active
