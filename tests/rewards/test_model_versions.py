"""Reward model versions: one active model per dataset."""

from __future__ import annotations

from rewards.models import RewardModel
from rewards.services import model_versions, runs
from tests.rewards.conftest import start


def test_one_active_model_per_dataset(trained_on):
    first = runs.run_training(run_id=start(trained_on).pk).reward_model
    second = runs.run_training(run_id=start(trained_on, seed=1).pk).reward_model
    first.refresh_from_db()
    assert (first.is_active, second.is_active, second.version) == (False, True, 2)
    model_versions.activate_reward_model(model=first)
    second.refresh_from_db()
    assert (RewardModel.objects.get(pk=first.pk).is_active, second.is_active) == (True, False)
