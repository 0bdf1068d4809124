"""Features and fitting on small hand-made inputs, without the database."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from rewards import features, fitting

ASK = [{"role": "user", "content": "How do I pick a lock?"}]


def test_featurize_is_deterministic_and_as_wide_as_configured():
    config = features.FeatureConfig()
    items = [(ASK, "I can't help with that."), (ASK, "Sure, first get a tension wrench.")]
    first, again = features.featurize(items, config), features.featurize(items, config)
    assert first.shape == (2, config.n_features)
    assert (first != again).nnz == 0


def test_default_rows_are_float32_with_character_trigrams():
    config = features.FeatureConfig()
    matrix = features.featurize([(ASK, "No way.")], config)
    assert matrix.dtype == np.float32
    trigrams = features.FeatureConfig(word_weight=0, cross_weight=0, handcrafted_weight=0)
    # " no ", " way " -> " no", "no ", " wa", "way", "ay ": five trigrams, equal weights.
    row = features.featurize([(ASK, "No way.")], trigrams)
    assert row.nnz == 5
    assert np.allclose(row.data, 1 / np.sqrt(5))


@pytest.mark.parametrize("words", [(1, 1), (1, 3), (2, 2)])
def test_word_and_char_blocks_hash_each_word_once_with_the_same_result(words):
    config = features.FeatureConfig(word_ngram_range=words, char_ngram_range=(2, 4))
    texts = ["I can't, sorry!", "", "?!", "Sorry sorry SORRY: can't can't", "Ünïcode ﬁne ǅ"]
    tokens = [features.TOKEN.findall(features.normalize(t)) for t in texts]
    vocabulary, counts = features._word_counts(tokens)
    fast_words = features._word_block(vocabulary, counts, tokens, config)
    fast_chars = features._char_block(vocabulary, counts, config)
    names = (features.word_ngrams(t, *words) for t in tokens)
    slow_words = features._hashed_block(names, config, config.word_weight)
    names = (features.char_ngrams(t, 2, 4) for t in tokens)
    slow_chars = features._hashed_block(names, config, config.char_weight)
    assert fast_words.shape == slow_words.shape == fast_chars.shape == slow_chars.shape
    assert abs(fast_words - slow_words).max() == 0
    assert abs(fast_chars - slow_chars).max() == 0
    assert fast_words.nnz > 0 and fast_chars.nnz > 0


def test_phrase_counts_match_searching_every_phrase():
    text = "i'm sorry, i can't help. maybe you could try? sure, sure. i am not sure what you mean"
    tokens = features.TOKEN.findall(text)
    joined = " " + " ".join(tokens) + " "
    expected = {
        name: sum(joined.count(f" {phrase} ") for phrase in phrases)
        for name, phrases in features.PHRASES.items()
    }
    assert features.phrase_counts(tokens) == expected
    assert expected["refusal"] >= 2 and expected["hedge"] >= 2


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


def test_fit_learns_an_obvious_preference_and_is_deterministic():
    matrix, chosen, rejected = toy()
    config = fitting.FitConfig()
    weights = fitting.fit_bradley_terry(matrix, chosen, rejected, config)
    assert weights[0] > 0
    assert np.array_equal(weights, fitting.fit_bradley_terry(matrix, chosen, rejected, config))
    scores = fitting.rewards(matrix, weights)
    assert fitting.pairwise_metrics(scores[chosen], scores[rejected])["accuracy"] == 1.0


def random_problem(
    rows: int = 40, columns: int = 12, pairs: int = 150
) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
    """Sparse rows and pairs whose winners follow a hidden linear reward, with some noise."""
    rng = np.random.default_rng(3)
    dense = rng.normal(size=(rows, columns)) * (rng.random((rows, columns)) < 0.4)
    first, second = rng.integers(0, rows, size=(2, pairs))
    keep = first != second
    first, second = first[keep], second[keep]
    utility = dense @ rng.normal(size=columns) + rng.normal(size=rows)
    better = utility[first] > utility[second]
    chosen, rejected = np.where(better, first, second), np.where(better, second, first)
    return sparse.csr_matrix(dense), chosen, rejected


def test_fit_matches_logistic_regression_on_explicit_differences():
    matrix, chosen, rejected = random_problem()
    l2_penalty = 3.0
    config = fitting.FitConfig(l2_penalty=l2_penalty, tol=1e-12, max_iter=1000)
    weights = fitting.fit_bradley_terry(matrix, chosen, rejected, config)
    # The textbook recipe: differences with random sign flips, labels = sign, no intercept.
    signs = np.random.default_rng(0).choice([-1, 1], size=len(chosen))
    differences = (matrix[chosen] - matrix[rejected]).toarray() * signs[:, None]
    reference = LogisticRegression(
        C=1 / l2_penalty, fit_intercept=False, tol=1e-12, max_iter=10_000
    ).fit(differences, signs > 0)
    assert np.allclose(weights, reference.coef_.ravel(), atol=1e-5)


def test_gradient_matches_finite_differences():
    matrix, chosen, rejected = random_problem()
    weights = np.random.default_rng(1).normal(size=matrix.shape[1])
    loss, gradient = fitting.loss_and_gradient(weights, matrix, chosen, rejected, 0.1)
    step = 1e-6
    numeric = [
        (
            fitting.loss_and_gradient(weights + step * e, matrix, chosen, rejected, 0.1)[0]
            - fitting.loss_and_gradient(weights - step * e, matrix, chosen, rejected, 0.1)[0]
        )
        / (2 * step)
        for e in np.eye(len(weights))
    ]
    assert np.allclose(gradient, numeric, atol=1e-7)
    margin = (matrix @ weights)[chosen] - (matrix @ weights)[rejected]
    assert loss == pytest.approx(np.mean(np.log1p(np.exp(-margin))) + 0.05 * weights @ weights)


def test_rows_no_pair_uses_change_nothing():
    matrix, chosen, rejected = random_problem()
    config = fitting.FitConfig(tol=1e-10)
    alone = fitting.fit_bradley_terry(matrix, chosen, rejected, config)
    # 200 extra rows in front: the fit drops them and lands on the same weights.
    padded = sparse.vstack(
        [sparse.random(200, matrix.shape[1], density=0.5, random_state=0), matrix]
    )
    shifted = fitting.fit_bradley_terry(padded.tocsr(), chosen + 200, rejected + 200, config)
    assert np.allclose(alone, shifted, atol=1e-8)


def test_columns_no_row_uses_keep_a_zero_weight():
    matrix, chosen, rejected = toy()
    wide = sparse.hstack([matrix, sparse.csr_matrix((matrix.shape[0], 5))], format="csr")
    weights = fitting.fit_bradley_terry(wide, chosen, rejected, fitting.FitConfig())
    assert weights.shape == (wide.shape[1],)
    assert np.all(weights[3:] == 0)
    assert np.allclose(
        weights[:3], fitting.fit_bradley_terry(matrix, chosen, rejected, fitting.FitConfig())
    )


def test_fit_reports_progress_from_0_to_1():
    matrix, chosen, rejected = toy()
    seen: list[float] = []
    fitting.fit_bradley_terry(
        matrix, chosen, rejected, fitting.FitConfig(), on_progress=seen.append
    )
    assert seen[0] == 0.0 and seen[-1] == 1.0
    assert seen == sorted(seen) and len(seen) > 2


def test_fit_config_checks_values_and_reads_the_options_of_the_liblinear_fit():
    assert fitting.FitConfig.from_dict(fitting.FitConfig().to_dict()) == fitting.FitConfig()
    for bad in ({"l2_penalty": 0}, {"l2_penalty": -1.0}, {"tol": "small"}, {"max_iter": 0}):
        with pytest.raises(ValueError):
            fitting.FitConfig.from_dict(bad)
    with pytest.raises(ValueError, match="bogus"):
        fitting.FitConfig.from_dict({"bogus": 1})
    # liblinear's C is the inverse of the penalty; its solver switches no longer mean anything.
    old = {"regularization": 4.0, "exact_limit": 200_000, "epochs": 5, "chunk_size": 50_000}
    assert fitting.FitConfig.from_dict(old) == fitting.FitConfig(l2_penalty=0.25)
    with pytest.raises(ValueError, match="above 0"):
        fitting.FitConfig.from_dict({"regularization": 0})


def test_no_intercept_identical_completions_score_the_same():
    matrix, chosen, rejected = toy()
    weights = fitting.fit_bradley_terry(matrix, chosen, rejected, fitting.FitConfig())
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
