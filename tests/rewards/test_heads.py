"""Per-criterion heads: pairs from ratings, options, training, card, score API, exported files;
and the sparse scoring path every model has."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path
from typing import cast

import numpy as np
import onnxruntime
import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from labeling.models import Completion, Dataset, Prompt
from labeling.services import leasing, rankings
from rewards import artifacts, features, heads
from rewards.models import TrainingRun
from rewards.services import runs
from tests.factories import DatasetFactory, UserFactory, make_criterion, token_client
from tests.rewards.conftest import BAD, GOOD

NEUTRAL = "Maybe, it depends."
# Ratings by kind of completion: helpful orders all three; harmless ties the polite and the
# neutral one, so that pair makes no harmless pair.
RATINGS = {
    GOOD: {"helpful": 6, "harmless": 7},
    NEUTRAL: {"helpful": 4, "harmless": 7},
    BAD: {"helpful": 2, "harmless": 1},
}


def rated_dataset(
    prompts: int = 30, labelers: int = 2, ratings: dict[str, dict[str, int]] | None = None
) -> Dataset:
    """Like conftest's `ranked_dataset` (polite > neutral > rude, a neutral completion on every
    third prompt), with every completion rated on helpful and harmless by `RATINGS` (or on a
    1-5 "concise" criterion of the dataset's own by `ratings`)."""
    ratings = ratings or RATINGS
    dataset = DatasetFactory(
        slug="rated", labels_per_prompt=labelers, criteria=["helpful", "harmless"]
    )
    if ratings is not RATINGS:
        dataset.criteria.all().delete()
        make_criterion(cast(Dataset, dataset), "concise", scale_min=1, scale_max=5)
    for index in range(prompts):
        prompt = Prompt.objects.create(
            dataset=dataset,
            external_id=f"q{index}",
            content_hash=f"{index:064d}",
            messages=[{"role": "user", "content": f"Question {index} about topic {index % 7}?"}],
        )
        texts = [GOOD, BAD] + ([NEUTRAL] if index % 3 == 0 else [])
        for position, text in enumerate(texts):
            Completion.objects.create(
                prompt=prompt,
                external_id=str(position),
                text=f"{text} ({index})",
                position=position,
            )
    for user in UserFactory.create_batch(labelers):
        while assignment := leasing.lease_next_assignment(dataset=dataset, labeler=user):
            completions = list(assignment.prompt.completions.order_by("position"))
            order = [completions[0], *completions[2:], completions[1]]
            rankings.submit_ranking(
                assignment=assignment,
                order=[[c.pk] for c in order],
                ratings={c.pk: ratings[c.text.rsplit(" (", 1)[0]] for c in completions},
                flags={},
                request_id=uuid.uuid4(),
                seconds_spent=3.0,
                strength="better" if len(completions) == 2 else "",
            )
    return dataset


@pytest.fixture
def rated(db: None) -> Dataset:
    return rated_dataset()


@pytest.fixture
def headed(rated: Dataset, media_root: str) -> TrainingRun:
    run = runs.start_training_run(
        datasets=[rated], config={"heads": ["harmless", "helpful"]}, enqueue=False
    )
    finished = runs.run_training(run_id=run.pk)
    assert finished is not None
    return finished


def test_pairs_from_ratings_order_by_rating_and_leave_ties_out():
    ratings = {
        "1": {"helpful": 5, "harmless": 3},
        "2": {"helpful": 2, "harmless": 3},
        "3": {"helpful": 7},
    }
    pairs = heads.pairs_from_ratings([(10, ratings)], ["helpful", "harmless"])
    helpful = pairs["helpful"]
    assert sorted(zip(helpful.chosen.tolist(), helpful.rejected.tolist(), strict=True)) == [
        (1, 2),
        (3, 1),
        (3, 2),
    ]
    assert sorted(helpful.margins.tolist()) == [2, 3, 5]
    assert helpful.prompts.tolist() == [10, 10, 10]
    assert len(pairs["harmless"].chosen) == 0  # 1 and 2 tie; 3 is not rated on it


def test_best_possible_accuracy_takes_each_pairs_majority():
    # Pair (1, 2): three votes 1 > 2, one 2 > 1; pair (3, 4): one vote.
    prompts = np.array([0, 0, 0, 0, 1])
    chosen = np.array([1, 1, 2, 1, 3])
    rejected = np.array([2, 2, 1, 2, 4])
    assert heads.best_possible_accuracy(prompts, chosen, rejected) == pytest.approx(4 / 5)
    assert heads.best_possible_accuracy(prompts[:0], chosen[:0], rejected[:0]) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("helpful", "Must be a list"),
        (["helpful", "Not a key!"], "Not criterion keys: ['Not a key!']"),
        (["helpful", "helpful"], "once"),
    ],
)
def test_heads_option_is_checked(value, message):
    with pytest.raises(ValidationError) as error:
        runs.run_config({"heads": value})
    assert message in str(error.value.message_dict["heads"])


def test_a_head_needs_a_dataset_that_rates_its_criterion(rated):
    with pytest.raises(ValidationError) as error:
        runs.start_training_run(datasets=[rated], config={"heads": ["honest"]}, enqueue=False)
    assert "rate honest" in error.value.message_dict["heads"][0]
    assert not TrainingRun.objects.exists()
    run = runs.start_training_run(
        datasets=[rated], config={"heads": ["helpful", "harmless"]}, enqueue=False
    )
    assert run.config["heads"] == ["helpful", "harmless"]  # canonical order
    assert "heads" not in runs.run_config({})  # no heads: the config runs always had


def test_the_run_form_refuses_a_criterion_no_dataset_rates_with_a_400(
    client, staff, rated, django_capture_on_commit_callbacks
):
    client.force_login(staff)
    DatasetFactory(criteria=["honest"])  # so honest is a choice, of another dataset
    form = {"datasets": [rated.pk], "held_out_share": 0.2, "seed": 0}
    response = client.post(reverse("rewards:runs"), form | {"heads": ["honest"]})
    assert response.status_code == 400
    assert "No chosen dataset asks labelers to rate honest" in response.content.decode()
    bad = client.post(reverse("rewards:runs"), form | {"heads": ["kind"]})
    assert bad.status_code == 400
    assert not TrainingRun.objects.exists()
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("rewards:runs"), form | {"heads": ["helpful"]})
    assert response.status_code == 302
    assert TrainingRun.objects.get().config["heads"] == ["helpful"]


def test_heads_are_trained_on_rating_pairs_with_ties_left_out(headed):
    assert headed.status == "succeeded", headed.error
    by_name = {head["criterion"]: head for head in headed.metrics["heads"]}
    assert [h["criterion"] for h in headed.metrics["heads"]] == ["helpful", "harmless"]
    # 2 labelers x (10 prompts with 3 completions + 20 with 2): helpful orders 3 pairs of a
    # 3-completion ranking, harmless 2 (polite and neutral tie), both 1 of a 2-completion one.
    assert by_name["helpful"]["pairs"]["total"] == 2 * (10 * 3 + 20)
    assert by_name["harmless"]["pairs"]["total"] == 2 * (10 * 2 + 20)
    for head in by_name.values():
        pairs = head["pairs"]
        assert pairs["train"] + pairs["held_out"] == pairs["total"]
        assert pairs["held_out"] > 0 and pairs["left_out"] == 0
        assert head["held_out"]["accuracy"] == 1.0
        assert head["labeler_agreement"]["rate"] == 1.0
        assert head["held_out_best"] == 1.0
    assert [h["output"] for h in headed.metrics["heads"]] == [1, 2]


def test_the_card_lists_the_heads_and_the_overall_head_is_unchanged(headed, rated, media_root):
    model = headed.reward_model
    assert model.card["heads"] == ["helpful", "harmless"]
    assert "column 0 the overall head" in model.card["outputs"]
    assert model.card["metrics"]["heads"][0]["held_out"]["accuracy"] == 1.0
    plain = runs.run_training(run_id=runs.start_training_run(datasets=[rated], enqueue=False).pk)
    assert plain is not None
    assert plain.metrics["held_out"] == headed.metrics["held_out"]
    assert "heads" not in plain.reward_model.card and "heads" not in plain.metrics
    with_heads = artifacts.load_model(Path(media_root) / model.directory).coef_
    without = artifacts.load_model(Path(media_root) / plain.reward_model.directory).coef_
    assert with_heads.shape == (3, without.shape[0])
    assert np.array_equal(with_heads[0], without)


def test_a_head_is_trained_on_a_datasets_own_criterion_from_the_ratings_table(db, media_root):
    concise = {GOOD: {"concise": 2}, NEUTRAL: {"concise": 5}, BAD: {"concise": 5}}
    dataset = rated_dataset(prompts=12, ratings=concise)
    run = runs.start_training_run(datasets=[dataset], config={"heads": ["concise"]}, enqueue=False)
    done = runs.run_training(run_id=run.pk)
    assert done is not None and done.status == "succeeded", run.error
    (head,) = done.metrics["heads"]
    # 2 labelers x (4 prompts with 3 completions: 2 pairs, neutral and rude tie + 8 with 2).
    assert (head["criterion"], head["pairs"]["total"]) == ("concise", 2 * (4 * 2 + 8))
    assert done.reward_model.card["heads"] == ["concise"]


def test_rating_pairs_compare_places_on_the_scale():
    ratings = [(1, {"10": {"concise": 1.0}, "11": {"concise": 0.25}, "12": {"concise": 0.25}})]
    pairs = heads.pairs_from_ratings(ratings, ["concise"])["concise"]
    assert (pairs.chosen.tolist(), pairs.rejected.tolist()) == ([10, 10], [11, 12])
    assert pairs.margins.tolist() == [0.75, 0.75]


def test_a_head_without_training_pairs_fails_the_run_naming_it(db, media_root):
    dataset = rated_dataset(prompts=6)
    make_criterion(dataset, "honest")
    run = runs.start_training_run(datasets=[dataset], config={"heads": ["honest"]}, enqueue=False)
    with pytest.raises(ValidationError):
        runs.run_training(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == "failed"
    assert "Cannot train the honest head" in run.error


def test_score_api_returns_each_heads_reward(headed, staff):
    client = token_client(staff)
    body = {
        "items": [
            {"prompt": "How do I boil an egg?", "completion": GOOD},
            {"prompt": "How do I boil an egg?", "completion": BAD},
        ]
    }
    version = headed.reward_model.version
    response = client.post(reverse("rewards-api:score", args=[version]), body, format="json")
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == {"model", "rewards", "criteria"}
    assert set(answer["criteria"]) == {"helpful", "harmless"}
    for rewards in (answer["rewards"], *answer["criteria"].values()):
        polite, rude = rewards
        assert polite > rude


def test_score_api_of_a_model_without_heads_has_no_criteria(rated, staff, media_root):
    run = runs.run_training(run_id=runs.start_training_run(datasets=[rated], enqueue=False).pk)
    assert run is not None
    body = {"items": [{"prompt": "Hi?", "completion": GOOD}]}
    response = token_client(staff).post(
        reverse("rewards-api:score", args=[run.reward_model.version]), body, format="json"
    )
    assert set(response.json()) == {"model", "rewards"}


def exported_featurizer(directory: Path, monkeypatch):  # type: ignore[no-untyped-def]
    """The model's own featurizer.py, imported from its file as a user outside PrefLab would
    (registered as a module for the test only: its dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location("featurizer", directory / "featurizer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "featurizer", module)
    spec.loader.exec_module(module)
    return module


def random_items(count: int, seed: int = 0) -> list[tuple[list[dict[str, str]], str]]:
    rng = np.random.default_rng(seed)
    words = ["please", "help", "sorry", "cannot", "idiot", "answer", "careful", "steps"]
    words += ["topic", "question", "maybe", "no", "yes", "figure", "polite"]
    return [
        (
            [{"role": "user", "content": " ".join(rng.choice(words, 8))}],
            " ".join(rng.choice(words, int(rng.integers(1, 40)))),
        )
        for _ in range(count)
    ]


def test_onnx_and_exported_featurizer_reproduce_every_head(headed, staff, media_root, monkeypatch):
    model = headed.reward_model
    directory = Path(media_root) / model.directory
    featurizer = exported_featurizer(directory, monkeypatch)
    config = featurizer.FeatureConfig.from_dict(model.card["config"]["features"])
    items = random_items(100)
    weights = featurizer.load_weights(str(directory / "weights.npy"))
    assert weights.shape == (3, config.n_features)
    sparse_rewards = featurizer.score(items, config, weights)
    session = onnxruntime.InferenceSession(
        str(directory / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    dense = featurizer.featurize(items, config).toarray().astype(np.float32)
    onnx_rewards = session.run(None, {"features": dense})[0]
    assert onnx_rewards.shape == (100, 3)
    assert np.abs(onnx_rewards - sparse_rewards).max() < 1e-5
    assert sparse_rewards.std(axis=0).min() > 0
    body = {"items": [{"prompt": m, "completion": c} for m, c in items]}
    answer = (
        token_client(staff)
        .post(reverse("rewards-api:score", args=[model.version]), body, format="json")
        .json()
    )
    assert np.abs(np.array(answer["rewards"]) - sparse_rewards[:, 0]).max() < 1e-9
    for column, name in enumerate(model.card["heads"], start=1):
        assert np.abs(np.array(answer["criteria"][name]) - sparse_rewards[:, column]).max() < 1e-9


@pytest.mark.parametrize("shape", [(features.FeatureConfig().n_features,), (3, 1 << 18)])
def test_the_sparse_path_equals_the_dense_one(shape, monkeypatch):
    monkeypatch.setattr(features, "SCORE_CHUNK_SIZE", 7)  # several chunks, one short
    config = features.FeatureConfig()
    weights = np.random.default_rng(1).normal(size=shape)
    items = random_items(30, seed=2)
    dense = features.featurize(items, config).toarray().astype(np.float64) @ weights.T
    sparse_rewards = features.score(items, config, weights)
    assert sparse_rewards.shape == dense.shape
    assert np.abs(sparse_rewards - dense).max() < 1e-9


def test_run_page_shows_the_heads(client, staff, headed):
    client.force_login(staff)
    page = client.get(reverse("rewards:run", args=[headed.pk])).content.decode()
    assert "Per-criterion heads" in page
    assert "<td>helpful</td>" in page and "<td>harmless</td>" in page
    assert "weights.npy" in page


def test_predictions_of_a_model_with_heads_store_each_heads_reward(
    rated, media_root, eager_celery, django_capture_on_commit_callbacks
):
    from labeling.services.prompt_stats import Scorer
    from rewards.models import Prediction

    run = runs.start_training_run(datasets=[rated], config={"heads": ["helpful"]}, enqueue=False)
    with django_capture_on_commit_callbacks(execute=True):
        model = runs.run_training(run_id=run.pk).reward_model
    prediction = Prediction.objects.filter(reward_model=model).select_related("completion").first()
    assert prediction is not None and set(prediction.criteria) == {"helpful"}
    expected = Scorer(model).head_scores([prediction.completion.prompt_id])
    overall, helpful = expected[prediction.completion.prompt_id][prediction.completion_id]
    assert (prediction.reward, prediction.criteria["helpful"]) == pytest.approx((overall, helpful))
