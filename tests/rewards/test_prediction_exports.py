"""`include=predictions` on pair exports: the active model's rewards of each side."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest
from django.urls import reverse

from labeling import parquet
from labeling.models import Comparison
from rewards.models import Prediction
from tests.factories import token_client
from tests.labeling.test_exports import pull
from tests.rewards.test_predictions import trained, trained_and_scored

NULL_CRITERIA: dict[str, None] = {}  # a reward per criterion of the dataset, which rates none


@pytest.fixture
def scored(trained_on, eager_celery, django_capture_on_commit_callbacks):
    return trained_and_scored(trained_on, django_capture_on_commit_callbacks)


def rewards_of(model):
    return dict(
        Prediction.objects.filter(reward_model=model).values_list("completion_id", "reward")
    )


def test_jsonl_rows_carry_each_sides_predicted_reward(scored, staff, trained_on):
    client = token_client(staff)
    rows, _ = pull(client, trained_on, include="predictions", include_ids="true")
    assert len(rows) == Comparison.objects.count()
    rewards = rewards_of(scored)
    for row in rows:
        assert row["chosen_reward"] == rewards[row["ids"]["chosen"]]
        assert row["rejected_reward"] == rewards[row["ids"]["rejected"]]
        assert row["chosen_criterion_rewards"] == row["rejected_criterion_rewards"] == NULL_CRITERIA
    # The model prefers what the labelers mostly preferred (it was trained on them).
    agree = sum(row["chosen_reward"] > row["rejected_reward"] for row in rows)
    assert agree > 0.8 * len(rows)


def test_consensus_rows_carry_them_too(scored, staff, trained_on):
    rows, _ = pull(
        token_client(staff), trained_on, consensus="true", include="predictions", include_ids="true"
    )
    rewards = rewards_of(scored)
    assert rows and all(row["chosen_reward"] == rewards[row["ids"]["chosen"]] for row in rows)


def test_only_the_active_models_predictions_count(scored, staff, trained_on):
    trained(trained_on, seed=1)  # the active one now; its scoring not run yet
    rows, _ = pull(token_client(staff), trained_on, include="predictions")
    assert rows and {row["chosen_reward"] for row in rows} == {None}


def test_parquet_holds_them_in_a_fixed_schema(scored, staff, trained_on):
    client = token_client(staff)
    params = {"format": "trl-conversational", "include": "predictions"}
    rows, _ = pull(client, trained_on, **params)
    response = client.get(
        reverse("labeling-api:comparisons", args=[trained_on.slug]), {"output": "parquet", **params}
    )
    table = pq.read_table(io.BytesIO(b"".join(response.streaming_content)))
    # Parquet has no struct without fields: without criteria, no criterion rewards columns.
    assert table.to_pylist() == [{k: v for k, v in row.items() if v != {}} for row in rows]
    assert table.schema == parquet.pair_schema(
        "trl-conversational",
        include=("predictions",),
        include_ids=False,
        consensus=False,
        criteria=trained_on.criterion_keys,
    )
