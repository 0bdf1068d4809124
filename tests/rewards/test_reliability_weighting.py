"""Reliability-weighted training: the labelers' weights, the threshold, the card, the options in
the API and the form, and a weighted run through Celery."""

from __future__ import annotations

import uuid

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from labeling.models import Completion, Dataset, Prompt
from labeling.report import Reliability
from labeling.services import leasing, rankings
from labeling.services.quality_report import compute_report
from rewards.models import TrainingRun
from rewards.services import reliability, runs
from tests.factories import DatasetFactory, UserFactory, token_client
from tests.rewards.conftest import BAD, GOOD


def dataset_with_a_random_labeler(prompts: int = 30) -> tuple[Dataset, list]:
    """Prompts with a polite, a rude and (every third) a neutral completion, each ranked by the
    same three labelers: two prefer polite > neutral > rude, the third reverses every other
    prompt, as good as a coin."""
    dataset = DatasetFactory(slug="noisy", labels_per_prompt=3, criteria=[])
    for index in range(prompts):
        prompt = Prompt.objects.create(
            dataset=dataset,
            external_id=f"q{index}",
            content_hash=f"{index:064d}",
            messages=[{"role": "user", "content": f"Question {index} about topic {index % 7}?"}],
        )
        texts = [f"{GOOD} ({index})", f"{BAD} ({index})"]
        if index % 3 == 0:
            texts.append(f"Maybe, it depends on topic {index % 7}.")
        for position, text in enumerate(texts):
            Completion.objects.create(
                prompt=prompt, external_id=str(position), text=text, position=position
            )
    labelers = UserFactory.create_batch(3)
    for number, user in enumerate(labelers):
        while assignment := leasing.lease_next_assignment(dataset=dataset, labeler=user):
            completions = list(assignment.prompt.completions.order_by("position"))
            order = [completions[0], *completions[2:], completions[1]]
            if number == 2 and int(assignment.prompt.external_id[1:]) % 2 == 0:
                order.reverse()
            rankings.submit_ranking(
                assignment=assignment,
                order=[[c.pk] for c in order],
                ratings={},
                flags={},
                request_id=uuid.uuid4(),
                seconds_spent=3.0,
                strength="better" if len(completions) == 2 else "",
            )
    return dataset, labelers


@pytest.fixture
def noisy(db: None) -> tuple[Dataset, list]:
    return dataset_with_a_random_labeler()


def test_reliabilities_are_the_quality_reports(noisy):
    dataset, _ = noisy
    found = reliability.labeler_weights(
        datasets=[dataset], weighting="reliability", min_reliability=0.0
    )
    table = compute_report(dataset=dataset, cursor=10**9)["labelers"]
    assert {(dataset.pk, row["id"]): row["reliability"] for row in table} == pytest.approx(
        found.by_labeler
    )


def test_the_random_labelers_comparisons_weigh_less(noisy):
    dataset, (steady, other, coin) = noisy
    found = reliability.labeler_weights(
        datasets=[dataset], weighting="chance_corrected", min_reliability=0.0
    )
    weights = {pk: found.of(dataset.pk, pk) for pk in (steady.pk, other.pk, coin.pk)}
    assert weights[coin.pk] < 0.5 * min(weights[steady.pk], weights[other.pk])
    assert found.summary["dropped"] == 0
    assert found.summary["weights"]["min"] == weights[coin.pk]
    assert found.summary["weights"]["max"] == max(weights.values())


def test_the_threshold_drops_labelers_under_it(noisy):
    dataset, (steady, _, coin) = noisy
    found = reliability.labeler_weights(datasets=[dataset], weighting="none", min_reliability=0.7)
    assert found.of(dataset.pk, coin.pk) == 0.0
    assert found.of(dataset.pk, steady.pk) == 1.0
    assert found.summary["dropped"] == 1


def test_labelers_with_too_little_data_get_the_median_weight_and_are_never_dropped():
    estimated = Reliability(0.9, 40)
    found = reliability.weigh_labelers(
        {
            1: estimated,
            2: Reliability(0.8, 40),
            3: Reliability(0.2, 3),
        },
        "reliability",
        0.5,
    )
    assert found.weights == {1: 0.9, 2: 0.8, 3: pytest.approx(0.85)}
    assert (found.dropped, found.defaulted) == (0, 1)


def test_a_weighted_run_records_its_weights_in_the_card(noisy, media_root, settings):
    dataset, (_, _, coin) = noisy
    run = runs.start_training_run(
        datasets=[dataset],
        config={"weighting": "chance_corrected", "min_reliability": 0.7},
        enqueue=False,
    )
    finished = runs.run_training(run_id=run.pk)
    assert finished.status == TrainingRun.Status.SUCCEEDED
    card = finished.reward_model.card
    weighting = card["weighting"]
    assert card["config"]["weighting"] == "chance_corrected"
    assert weighting["formula"] == "max(0, 2 * reliability - 1)"
    assert "not a stored report" in weighting["source"]
    assert weighting["cursors"] == {"noisy": max(dataset.rankings.values_list("pk", flat=True))}
    assert weighting["dropped"] == 1
    assert set(weighting["weights"]) == {"min", "median", "max"}
    dropped_pairs = dataset.comparisons.filter(labeler=coin).count()
    held_out = finished.metrics["held_out_weighted"]
    assert (
        weighting["train_pairs_dropped"]
        + (finished.metrics["comparisons"]["held_out"] - held_out["pairs"])
        == dropped_pairs
    )
    assert 0 <= held_out["accuracy"] <= 1


def test_an_unweighted_run_has_no_weighting_record(noisy, media_root):
    dataset, _ = noisy
    run = runs.start_training_run(datasets=[dataset], enqueue=False)
    finished = runs.run_training(run_id=run.pk)
    assert finished.reward_model.card["weighting"] is None
    assert "held_out_weighted" not in finished.metrics
    assert finished.config["weighting"] == "none"


def test_a_threshold_that_drops_everyone_fails_the_run_clearly(noisy, media_root):
    dataset, _ = noisy
    run = runs.start_training_run(
        datasets=[dataset], config={"min_reliability": 1.0}, enqueue=False
    )
    with pytest.raises(ValidationError, match="drops the labelers of every training"):
        runs.run_training(run_id=run.pk)
    assert TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.FAILED


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"weighting": "votes"}, "weighting"),
        ({"weighting": None}, "weighting"),
        ({"min_reliability": 1.5}, "min_reliability"),
        ({"min_reliability": -0.1}, "min_reliability"),
        ({"min_reliability": True}, "min_reliability"),
        ({"min_reliability": "0.5"}, "min_reliability"),
    ],
)
def test_bad_weighting_options_name_the_field(config, field):
    with pytest.raises(ValidationError) as error:
        runs.run_config(config)
    assert field in error.value.message_dict


def test_api_starts_a_weighted_run_end_to_end_through_celery(
    noisy, staff, media_root, eager_celery, django_capture_on_commit_callbacks
):
    client = token_client(staff)
    body = {"datasets": ["noisy"], "config": {"weighting": "reliability", "min_reliability": 0.6}}
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("rewards-api:runs"), body, format="json")
    assert response.status_code == 201, response.json()
    run = client.get(reverse("rewards-api:run", args=[response.json()["id"]])).json()
    assert run["status"] == "succeeded"
    assert run["config"]["weighting"] == "reliability"
    assert run["metrics"]["weighting"]["dropped"] == 1
    assert run["reward_model"] is not None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"datasets": ["noisy"], "config": {"weighting": "votes"}}, "weighting"),
        ({"datasets": ["noisy"], "config": {"min_reliability": 2}}, "min_reliability"),
        ({"datasets": ["noisy"], "config": {"bogus": 1}}, "config"),
        ({"datasets": ["nowhere"]}, "datasets"),
        ({"datasets": []}, "datasets"),
        ({"datasets": ["noisy"] * 51}, "datasets"),
        ({"datasets": ["noisy"], "config": [1]}, "config"),
    ],
)
def test_api_refuses_bad_run_options_with_a_400_naming_them(noisy, staff, body, field):
    response = token_client(staff).post(reverse("rewards-api:runs"), body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize(("role", "code"), [("labeler", 403), ("anonymous", 401)])
def test_only_staff_start_runs_through_the_api(noisy, labeler, role, code):
    client = token_client(labeler if role == "labeler" else None)
    response = client.post(reverse("rewards-api:runs"), {"datasets": ["noisy"]}, format="json")
    assert response.status_code == code
    assert not TrainingRun.objects.exists()


def test_form_sets_the_weighting_options_and_checks_them(
    client, staff, noisy, django_capture_on_commit_callbacks
):
    dataset, _ = noisy
    client.force_login(staff)
    form = {"datasets": [dataset.pk], "held_out_share": 0.2, "seed": 0, "weighting": "none"}
    page = client.post(reverse("rewards:runs"), form | {"min_reliability": 1.2}).content.decode()
    assert "less than or equal to 1" in page
    page = client.post(reverse("rewards:runs"), form | {"weighting": "votes"}).content.decode()
    assert "Select a valid choice" in page
    assert not TrainingRun.objects.exists()
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            reverse("rewards:runs"),
            form | {"weighting": "chance_corrected", "min_reliability": 0.6},
        )
    assert response.status_code == 302
    config = TrainingRun.objects.get().config
    assert (config["weighting"], config["min_reliability"]) == ("chance_corrected", 0.6)
    page = client.get(response.url).content.decode()
    assert "weighting <strong>chance_corrected</strong>" in page
    assert "under reliability <strong>0.6</strong>" in page


def test_run_page_shows_the_weights(client, staff, noisy, media_root):
    dataset, _ = noisy
    run = runs.start_training_run(
        datasets=[dataset], config={"weighting": "chance_corrected"}, enqueue=False
    )
    runs.run_training(run_id=run.pk)
    client.force_login(staff)
    page = client.get(reverse("rewards:run", args=[run.pk])).content.decode()
    assert "Reliability weights" in page
    assert "max(0, 2 * reliability - 1)" in page
    assert "each pair weighted by its labeler" in page
