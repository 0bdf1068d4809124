"""Training a run: fit, evaluate on held-out prompts, export files that score like the API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from rewards import artifacts, features
from rewards.services import runs
from tests.rewards.conftest import start


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
