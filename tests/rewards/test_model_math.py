"""Features and fitting on small hand-made inputs, without the database."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import sparse

from rewards import features, fitting
from rewards.evaluation import labeler_agreement

ASK = [{"role": "user", "content": "How do I pick a lock?"}]


def test_featurize_is_deterministic_and_as_wide_as_configured():
    config = features.FeatureConfig()
    items = [(ASK, "I can't help with that."), (ASK, "Sure, first get a tension wrench.")]
    first, again = features.featurize(items, config), features.featurize(items, config)
    assert first.shape == (2, config.n_features)
    assert (first != again).nnz == 0


def test_refusal_phrase_fires_its_handcrafted_column():
    config = features.FeatureConfig()
    column = features.HANDCRAFTED.index("phrases_refusal")
    matrix = features.featurize(
        [(ASK, "I'm sorry, I can't help with that."), (ASK, "Sure.")], config
    )
    assert matrix[0, column] > 0
    assert matrix[1, column] == 0


def test_crosses_tie_the_prompt_words_to_what_the_completion_does():
    with_crosses = features.FeatureConfig(cross_weight=1.0)
    without = features.FeatureConfig(cross_weight=0.0)
    other = [{"role": "user", "content": "Bake a cake?"}]
    refusal = "I'm sorry, I can't help with that."
    a = features.featurize([(ASK, refusal), (other, refusal)], with_crosses)
    b = features.featurize([(ASK, refusal), (other, refusal)], without)
    # The same completion after different prompts: the crosses make the rows differ much more.
    assert (a[0] != a[1]).nnz > (b[0] != b[1]).nnz + 5


def test_config_round_trips_and_refuses_unknown_options():
    config = features.FeatureConfig(cross_weight=0.5)
    assert features.FeatureConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="bogus"):
        features.FeatureConfig.from_dict({"bogus": 1})
    assert features.describe(config)["n_features"] == config.n_features


def toy(n: int = 60) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
    """Row 2i is "polite", row 2i+1 is "rude": column 0 marks politeness, column 1 is noise."""
    rng = np.random.default_rng(0)
    dense = np.zeros((2 * n, 3))
    dense[0::2, 0] = 1.0
    dense[:, 1] = rng.normal(size=2 * n)
    return sparse.csr_matrix(dense), np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2)


def test_fit_learns_an_obvious_preference_and_is_seeded():
    matrix, chosen, rejected = toy()
    config = fitting.FitConfig()
    weights = fitting.fit_bradley_terry(matrix, chosen, rejected, config, seed=1)
    assert weights[0] > 0
    assert np.array_equal(
        weights, fitting.fit_bradley_terry(matrix, chosen, rejected, config, seed=1)
    )
    scores = fitting.rewards(matrix, weights)
    assert fitting.pairwise_metrics(scores[chosen], scores[rejected])["accuracy"] == 1.0


def test_out_of_core_path_learns_the_same_direction():
    matrix, chosen, rejected = toy()
    config = fitting.FitConfig(exact_limit=10, chunk_size=16, epochs=3)
    weights = fitting.fit_bradley_terry(matrix, chosen, rejected, config, seed=0)
    assert weights[0] > 0


def test_no_intercept_identical_completions_score_the_same():
    matrix, chosen, rejected = toy()
    weights = fitting.fit_bradley_terry(matrix, chosen, rejected, fitting.FitConfig(), seed=0)
    scores = fitting.rewards(sparse.csr_matrix(np.ones((2, 3))), weights)
    assert scores[0] == scores[1]


def test_pairwise_metrics_on_a_hand_computed_case():
    chosen, rejected = np.array([2.0, 0.0, 1.0]), np.array([1.0, 0.0, 3.0])
    metrics = fitting.pairwise_metrics(chosen, rejected, margins=np.array([1, 1, 2]))
    assert metrics["accuracy"] == pytest.approx((1 + 0.5 + 0) / 3)  # a tie counts half
    expected = np.mean([math.log1p(math.exp(-1)), math.log(2), math.log1p(math.exp(2))])
    assert metrics["log_loss"] == pytest.approx(expected)
    assert metrics["by_margin"]["2"] == {"accuracy": 0.0, "count": 1}


def test_perfectly_calibrated_predictions_have_no_calibration_error():
    # sigmoid(0) = 0.5 on every pair: predictions of 0.5 for both orientations, observed 0.5.
    metrics = fitting.pairwise_metrics(np.zeros(10), np.zeros(10))
    assert metrics["ece"] == pytest.approx(0.0)


def test_group_split_keeps_groups_whole():
    groups = np.repeat(np.arange(20), 3)
    held_out = fitting.group_split(groups, 0.25, seed=0)
    for group in range(20):
        assert len(set(held_out[groups == group])) == 1
    assert 3 <= len(np.unique(groups[held_out])) <= 7


def test_labeler_agreement_counts_labeler_pairs():
    # Pair (1, 2) of prompt 7: two labelers say 1 > 2, one says 2 > 1 -> 1 agreeing pair of 3.
    agreement = labeler_agreement(np.array([7, 7, 7]), np.array([1, 1, 2]), np.array([2, 2, 1]))
    assert agreement == {"rate": pytest.approx(1 / 3), "labeler_pairs": 3}
    assert labeler_agreement(np.array([7]), np.array([1]), np.array([2]))["rate"] is None
