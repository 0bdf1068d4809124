"""Training runs through the service: claim, train, evaluate, export, fail, reclaim, retry."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from scipy import sparse

from rewards import artifacts, features
from rewards.models import RewardModel, TrainingRun
from rewards.services import model_versions, runs, training_data
from tests.factories import DatasetFactory, make_prompt
from tests.rewards.conftest import ranked_dataset


def start(dataset, **config) -> TrainingRun:
    return runs.start_training_run(datasets=[dataset], config=config, enqueue=False)


def test_run_trains_evaluates_and_exports_a_model(trained_on, media_root):
    run = runs.run_training(run_id=start(trained_on).pk)
    assert (run.status, run.stage, run.progress, run.error) == ("succeeded", "done", 1.0, "")
    metrics = run.metrics
    assert metrics["comparisons"]["total"] == 2 * (30 + 10 * 2)
    assert metrics["held_out"]["accuracy"] > 0.8
    assert set(metrics["held_out"]) >= {"accuracy", "log_loss", "ece", "reliability", "by_margin"}
    assert 0 < metrics["labeler_agreement"]["rate"] < 1
    assert [p["comparisons"] for p in metrics["learning_curve"]] == sorted(
        p["comparisons"] for p in metrics["learning_curve"]
    )
    model = run.reward_model
    assert (model.version, model.is_active) == (1, True)
    directory = Path(media_root) / model.directory
    assert sorted(p.name for p in directory.iterdir()) == sorted(artifacts.FILES.values())
    for kind, file in model.files.items():
        assert artifacts.sha256(directory / file["name"]) == file["sha256"], kind
    card = json.loads((directory / "model_card.json").read_text())
    assert card["data"]["comparisons"] == metrics["comparisons"]["total"]
    assert len(card["data"]["comparison_ids_sha256"]) == 64
    assert card["libraries"]["scikit-learn"]


def test_held_out_prompts_are_never_trained_on(trained_on):
    run = runs.run_training(run_id=start(trained_on, held_out_share=0.3).pk)
    prompts = run.metrics["prompts"]
    assert 0 < prompts["held_out"] < prompts["total"]
    # Every comparison of a held-out prompt is held out: the counts add up by prompt.
    assert (
        run.metrics["comparisons"]["held_out"] + run.metrics["comparisons"]["train"]
        == run.metrics["comparisons"]["total"]
    )


def test_same_data_and_options_give_the_same_model(trained_on, media_root):
    first = runs.run_training(run_id=start(trained_on, seed=3).pk)
    second = runs.run_training(run_id=start(trained_on, seed=3).pk)
    directory = Path(media_root)
    weights = [
        artifacts.load_model(directory / r.reward_model.directory).coef_ for r in (first, second)
    ]
    assert np.array_equal(weights[0], weights[1])
    assert first.metrics["held_out"] == second.metrics["held_out"]


def test_onnx_and_python_scorer_agree_on_100_pairs(trained_on, media_root):
    run = runs.run_training(run_id=start(trained_on).pk)
    model = run.reward_model
    directory = Path(media_root) / model.directory
    config = features.FeatureConfig.from_dict(model.card["config"]["features"])
    rng = np.random.default_rng(0)
    words = ["please", "help", "sorry", "cannot", "idiot", "answer", "careful", "steps"]
    words += ["topic", "question", "maybe", "no", "yes"]
    items = [
        (
            [{"role": "user", "content": " ".join(rng.choice(words, 8))}],
            " ".join(rng.choice(words, int(rng.integers(1, 40)))),
        )
        for _ in range(100)
    ]
    python = artifacts.score(artifacts.load_model(directory), items, config)
    session = onnxruntime.InferenceSession(
        str(directory / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    matrix = features.featurize(items, config).toarray().astype(np.float32)
    onnx = session.run(None, {"features": matrix})[0].ravel()
    assert np.abs(onnx - python).max() < 1e-5
    assert python.std() > 0


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


def test_failure_while_exporting_removes_half_written_files(trained_on, media_root, monkeypatch):
    def broken(model):
        raise RuntimeError("disk full")

    monkeypatch.setattr(artifacts, "onnx_model", broken)
    run = start(trained_on)
    with pytest.raises(RuntimeError, match="disk full"):
        runs.run_training(run_id=run.pk)
    run.refresh_from_db()
    assert (run.status, "disk full" in run.error) == ("failed", True)
    assert list(Path(media_root).rglob("*.skops")) == []


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


def test_feature_rows_appended_in_blocks_make_the_stacked_matrix():
    rng = np.random.default_rng(0)
    blocks = [
        sparse.random(rows, 30, density=0.2, format="csr", dtype=np.float32, random_state=rng)
        for rows in (3, 0, 5, 1)
    ]
    rows = training_data._Rows(30)
    for block in blocks:
        rows.append(block)
    matrix = rows.csr()
    assert matrix.dtype == np.float32 and matrix.indices.dtype == np.intc
    assert np.shares_memory(matrix.data, np.frombuffer(rows.values, dtype=np.float32))
    expected = sparse.vstack(blocks, format="csr")
    assert matrix.shape == expected.shape
    assert (matrix != expected).nnz == 0


def test_training_data_is_compact_and_points_at_the_loaded_rows(trained_on, monkeypatch):
    import hashlib

    from labeling.models import Comparison

    monkeypatch.setattr(training_data, "CHUNK_SIZE", 7)  # several chunks
    monkeypatch.setattr(training_data, "POSITION_BLOCK", 5)  # several blocks
    data = training_data.load_training_data(
        datasets=[trained_on], feature_config=features.FeatureConfig(), report=lambda *a: None
    )
    ids, prompts, chosen, rejected, margins = map(
        np.array,
        zip(
            *Comparison.objects.filter(dataset=trained_on)
            .order_by("pk")
            .values_list("pk", "prompt_id", "chosen_id", "rejected_id", "margin"),
            strict=True,
        ),
    )
    assert [getattr(data, name).dtype for name in data.PER_COMPARISON] == [
        np.int64,
        np.int32,
        np.int32,
        np.int32,
        np.int16,
    ]
    assert np.array_equal(data.comparison_ids, ids)
    assert np.array_equal(data.prompt_ids[data.prompts], prompts)
    assert np.array_equal(data.completion_ids[data.chosen_rows], chosen)
    assert np.array_equal(data.completion_ids[data.rejected_rows], rejected)
    assert np.array_equal(data.margins, margins)
    assert np.array_equal(data.prompt_ids, np.unique(prompts))
    assert data.features.shape[0] == len(data.completion_ids)
    expected_sha = hashlib.sha256(np.sort(ids).astype("<i8").tobytes()).hexdigest()
    assert data.ids_sha256 == expected_sha

    held_out = data.prompts % 3 == 0
    before = {name: getattr(data, name).copy() for name in data.PER_COMPARISON}
    train_count = data.put_held_out_last(held_out)
    assert train_count == np.count_nonzero(~held_out)
    for name, values in before.items():
        expected = np.concatenate([values[~held_out], values[held_out]])
        assert np.array_equal(getattr(data, name), expected), name


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


def test_one_active_model_per_dataset(trained_on):
    first = runs.run_training(run_id=start(trained_on).pk).reward_model
    second = runs.run_training(run_id=start(trained_on, seed=1).pk).reward_model
    first.refresh_from_db()
    assert (first.is_active, second.is_active, second.version) == (False, True, 2)
    model_versions.activate_reward_model(model=first)
    second.refresh_from_db()
    assert (RewardModel.objects.get(pk=first.pk).is_active, second.is_active) == (True, False)


def test_comparisons_of_deactivated_labelers_are_left_out(db):
    dataset = ranked_dataset(prompts=12, labelers=2, slug="mixed")
    total = runs.run_training(run_id=start(dataset).pk).metrics["comparisons"]["total"]
    labeler = dataset.rankings.first().labeler
    labeler.is_active = False
    labeler.save()
    fewer = runs.run_training(run_id=start(dataset).pk).metrics["comparisons"]["total"]
    assert fewer == total // 2


def test_gold_prompts_are_left_out_unless_asked_for(db):
    from labeling.models import Comparison

    dataset = ranked_dataset(prompts=12, labelers=2, slug="with-gold")
    gold = dataset.prompts.order_by("pk").first()
    gold.is_gold, gold.gold_order = True, [["0"], ["1"]]
    gold.save()
    on_gold = Comparison.objects.filter(prompt=gold).count()
    assert on_gold > 0
    everything = Comparison.objects.filter(dataset=dataset).count()
    without = runs.run_training(run_id=start(dataset).pk)
    assert without.metrics["comparisons"]["total"] == everything - on_gold
    assert without.reward_model.card["data"]["excluded"].startswith("gold prompts")
    with_gold = runs.run_training(run_id=start(dataset, include_gold=True).pk)
    assert with_gold.metrics["comparisons"]["total"] == everything
    assert with_gold.config["include_gold"] is True


def test_command_trains_in_process(trained_on, capsys):
    from django.core.management import call_command

    call_command("train_reward_model", "--dataset", trained_on.slug)
    out = capsys.readouterr().out
    assert "Reward model v1: held-out pairwise accuracy" in out
    assert TrainingRun.objects.get().status == "succeeded"
