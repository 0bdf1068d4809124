"""Label-quality statistics on hand-computed cases; alpha cross-checked with `krippendorff`."""

from __future__ import annotations

import krippendorff
import numpy as np
import pytest

from labeling import quality
from labeling.consensus import consensus_pairs, ranked_pairs
from labeling.orders import comparison_pairs, pair_relations
from labeling.quality import (
    agreement_by_labeler,
    alpha,
    bootstrap_ratio,
    comparison_agreement,
    gold_agreement,
    pair_score,
    prompt_agreement,
    ranking_units,
)

# Labelers 1, 2, 3 on completions 1, 2, 3:
#   labeler 1: 1 > 2 > 3      relations (1,2)=+1 (1,3)=+1 (2,3)=+1
#   labeler 2: 1 = 2 > 3      relations (1,2)= 0 (1,3)=+1 (2,3)=+1
#   labeler 3: 3 > 2 > 1      relations (1,2)=-1 (1,3)=-1 (2,3)=-1
ONE_TWO_THREE = [[1], [2], [3]]
ONE_TWO_TIED = [[1, 2], [3]]
THREE_TWO_ONE = [[3], [2], [1]]


# Pairwise agreement --------------------------------------------------------------------------


def test_pair_relations() -> None:
    # [[3], [1, 2]]: 3 is best, 1 and 2 tie, so 1 and 2 are both below 3.
    assert pair_relations([[3], [1, 2]]) == {(1, 2): 0, (1, 3): -1, (2, 3): -1}
    assert pair_relations(ONE_TWO_THREE) == {(1, 2): 1, (1, 3): 1, (2, 3): 1}
    assert pair_relations([[5]]) == {}


def test_pair_relations_rejects_a_repeated_id() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        pair_relations([[1], [2, 1]])


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        (1, 1, 1.0),
        (-1, -1, 1.0),
        (0, 0, 1.0),
        (1, -1, 0.0),
        (-1, 1, 0.0),
        (1, 0, 0.5),
        (0, -1, 0.5),
    ],
)
def test_pair_score(x: int, y: int, expected: float) -> None:
    assert pair_score(x, y) == expected


def test_prompt_agreement_two_labelers_one_tie() -> None:
    # Labeler 1 vs 2: (1,2) +1 vs 0 -> 0.5; (1,3) +1 vs +1 -> 1; (2,3) +1 vs +1 -> 1.
    assert prompt_agreement([(1, ONE_TWO_THREE), (2, ONE_TWO_TIED)]) == (2.5, 3)


def test_prompt_agreement_three_labelers() -> None:
    # 1 vs 2: 2.5 over 3 (above).
    # 1 vs 3: every pair strictly opposite -> 0 over 3.
    # 2 vs 3: (1,2) 0 vs -1 -> 0.5; (1,3) and (2,3) opposite -> 0. Total 0.5 over 3.
    rankings = [(1, ONE_TWO_THREE), (2, ONE_TWO_TIED), (3, THREE_TWO_ONE)]
    assert prompt_agreement(rankings) == (3.0, 9)


def test_prompt_agreement_counts_only_pairs_both_ordered() -> None:
    # Labeler 1 ordered only 1 and 2; the one common pair (1,2) is opposite.
    assert prompt_agreement([(1, [[1], [2]]), (2, [[2], [1], [3]])]) == (0.0, 1)


def test_prompt_agreement_needs_two_labelers() -> None:
    assert prompt_agreement([(1, ONE_TWO_THREE)]) == (0.0, 0)
    assert prompt_agreement([]) == (0.0, 0)


def test_labeler_agreement() -> None:
    prompts = [
        # Prompt A, pairwise as in test_prompt_agreement_three_labelers:
        # 1-2: 2.5/3, 1-3: 0/3, 2-3: 0.5/3.
        [(1, ONE_TWO_THREE), (2, ONE_TWO_TIED), (3, THREE_TWO_ONE)],
        # Prompt B: labeler 1 says 5 > 6, labeler 4 ties them -> 0.5/1 for both.
        [(1, [[5], [6]]), (4, [[5, 6]])],
        # Prompt C: labeler 5 alone, nothing to compare.
        [(5, [[7], [8]])],
    ]
    assert agreement_by_labeler(prompts) == {
        1: (2.5 + 0.0 + 0.5, 3 + 3 + 1),
        2: (2.5 + 0.5, 3 + 3),
        3: (0.0 + 0.5, 3 + 3),
        4: (0.5, 1),
        5: (0.0, 0),
    }


def test_gold_agreement() -> None:
    # Labeler 1 > 2 = 3: (1,2)=+1 (1,3)=+1 (2,3)=0.
    # Gold     2 > 1 > 3: (1,2)=-1 (1,3)=+1 (2,3)=+1.
    # Scores: 0 + 1 + 0.5.
    assert gold_agreement([[1], [2, 3]], [[2], [1], [3]]) == (1.5, 3)
    # Only the pair (1,2) is in both: same direction.
    assert gold_agreement([[1], [2], [4]], [[1], [2], [3]]) == (1.0, 1)
    assert gold_agreement([[1], [4]], [[2], [3]]) == (0.0, 0)


# Krippendorff's alpha ------------------------------------------------------------------------


def test_alpha_hand_computed_two_values() -> None:
    # Units (1,1), (1,2), (2,2): o_11 = 2, o_12 = o_21 = 1, o_22 = 2; n_1 = n_2 = 3, n = 6.
    # Nominal and interval (delta_12 = 1): D_o = 2/6, D_e = 2*3*3/30 = 0.6 -> 1 - (1/3)/0.6 = 4/9.
    # Ordinal: delta_12 = (3 + 3 - 3)^2 = 9; D_o = 18/6 = 3, D_e = 2*9*9/30 = 5.4 -> 4/9.
    # The unit (3,) has one value: not pairable, left out.
    units = [[1, 1], [1, 2], [2, 2], [3]]
    for metric in quality.METRICS:
        result = alpha(units, metric, bootstrap=0)
        assert result["alpha"] == pytest.approx(4 / 9, abs=1e-12)
        assert (result["units"], result["values"]) == (3, 6)
        assert (result["low"], result["high"]) == (None, None)


def test_alpha_hand_computed_three_values() -> None:
    # Units (1,2), (2,3), (1,1): o_12 = o_21 = 1, o_23 = o_32 = 1, o_11 = 2.
    # n_1 = 3, n_2 = 2, n_3 = 1, n = 6; n (n - 1) = 30.
    # Nominal: sum o delta = 4; sum n_c n_k delta = 2 (6 + 3 + 2) = 22.
    #   alpha = 1 - (4/6) / (22/30) = 1 - 10/11 = 1/11.
    # Interval: sum o delta = 4; sum n_c n_k delta = 2 (6*1 + 3*4 + 2*1) = 40.
    #   alpha = 1 - (4/6) / (40/30) = 1/2.
    # Ordinal: delta_12 = (5 - 2.5)^2 = 6.25, delta_23 = (3 - 1.5)^2 = 2.25,
    #   delta_13 = (6 - 2)^2 = 16; sum o delta = 2*6.25 + 2*2.25 = 17;
    #   sum n_c n_k delta = 2 (6*6.25 + 3*16 + 2*2.25) = 180.
    #   alpha = 1 - (17/6) / (180/30) = 1 - 17/36 = 19/36.
    units = [[1, 2], [2, 3], [1, 1]]
    expected: dict[quality.Metric, float] = {
        "nominal": 1 / 11,
        "interval": 1 / 2,
        "ordinal": 19 / 36,
    }
    for metric, value in expected.items():
        assert alpha(units, metric, bootstrap=0)["alpha"] == pytest.approx(value, abs=1e-12)


def test_alpha_published_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units.
    data = np.array(
        [
            [1, 2, 3, 3, 2, 1, 4, 1, 2, np.nan, np.nan, np.nan],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, np.nan, 3],
            [np.nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, np.nan],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, np.nan],
        ]
    )
    units = [[float(v) for v in column if not np.isnan(v)] for column in data.T]
    published: dict[quality.Metric, float] = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849}
    for metric, value in published.items():
        result = alpha(units, metric, bootstrap=0)
        assert result["alpha"] == pytest.approx(value, abs=5e-4)
        assert (result["units"], result["values"]) == (11, 40)


def _defined(*values: float | None) -> list[float]:
    """The values, none of which may be None."""
    assert all(value is not None for value in values)
    return [value for value in values if value is not None]


def _random_reliability_data(seed: int, fractional: bool) -> np.ndarray:
    """Coders x units with about 30% missing values."""
    rng = np.random.default_rng(seed)
    coders, n_units = int(rng.integers(2, 6)), int(rng.integers(5, 60))
    if fractional:  # fractional ranks of three completions
        data = rng.choice([1.0, 1.5, 2.0, 2.5, 3.0], size=(coders, n_units))
    else:  # ratings 1..7, loosely agreeing
        truth = rng.integers(1, 8, size=n_units)
        data = np.clip(truth + rng.integers(-2, 3, size=(coders, n_units)), 1, 7).astype(float)
    data[rng.random(data.shape) < 0.3] = np.nan
    return data


@pytest.mark.parametrize("metric", quality.METRICS)
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fractional", [False, True])
def test_alpha_matches_krippendorff_package(metric: quality.Metric, seed: int, fractional: bool):
    data = _random_reliability_data(seed, fractional)
    units = [[float(v) for v in column if not np.isnan(v)] for column in data.T]
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement=metric)
    result = alpha(units, metric, bootstrap=0)
    assert result["alpha"] == pytest.approx(expected, abs=1e-9)
    pairable = (~np.isnan(data)).sum(axis=0)
    assert result["units"] == (pairable >= 2).sum()
    assert result["values"] == pairable[pairable >= 2].sum()


def test_alpha_perfect_agreement() -> None:
    units = [[1, 1, 1], [2, 2], [3, 3, 3], [7, 7]]
    for metric in quality.METRICS:
        result = alpha(units, metric, bootstrap=200)
        assert result["alpha"] == 1.0
        assert (result["low"], result["high"]) == (1.0, 1.0)


def test_alpha_undefined() -> None:
    # A single value everywhere: D_e = 0.
    assert alpha([[2, 2], [2, 2, 2]], "nominal")["alpha"] is None
    # No pairable unit.
    assert alpha([[1], [2], []], "interval") == {
        "alpha": None,
        "low": None,
        "high": None,
        "units": 0,
        "values": 0,
    }
    assert alpha([], "ordinal")["alpha"] is None


def test_alpha_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="metric"):
        alpha([[1, 2]], "ratio")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cluster ids"):
        alpha([[1, 2], [1, 1]], "nominal", clusters=[0])
    with pytest.raises(ValueError, match="confidence"):
        alpha([[1, 2], [1, 1]], "nominal", confidence=1.0)


@pytest.mark.parametrize("metric", quality.METRICS)
def test_alpha_bootstrap_interval(metric: quality.Metric) -> None:
    data = _random_reliability_data(4, fractional=False)  # 4 coders, 56 units
    units = [[float(v) for v in column if not np.isnan(v)] for column in data.T]
    clusters = [i // 2 for i in range(len(units))]
    first = alpha(units, metric, clusters, bootstrap=500, seed=7)
    low, point, high = _defined(first["low"], first["alpha"], first["high"])
    assert low <= point <= high
    assert low < high
    assert alpha(units, metric, clusters, bootstrap=500, seed=7) == first
    other = alpha(units, metric, clusters, bootstrap=500, seed=8)
    assert other["alpha"] == first["alpha"]
    assert (other["low"], other["high"]) != (first["low"], first["high"])
    narrow = alpha(units, metric, clusters, bootstrap=500, seed=7, confidence=0.5)
    narrow_low, narrow_high = _defined(narrow["low"], narrow["high"])
    assert low <= narrow_low <= narrow_high <= high


@pytest.mark.parametrize("metric", quality.METRICS)
def test_alpha_bootstrap_replicates_are_alphas_of_resampled_clusters(
    metric: quality.Metric,
) -> None:
    # With two clusters A and B every replicate is A+A, A+B or B+B (each with probability
    # 1/4, 1/2, 1/4), so the 2.5% and 97.5% quantiles of 1000 replicates are the smallest and
    # largest of those three alphas, each computed here by the package on duplicated units.
    # For ordinal this checks that delta is recomputed from the replicate's n_g.
    a_units = [[1.0, 2.0, 2.0], [3.0, 3.0], [1.0, 1.0, 4.0]]
    b_units = [[2.0, 4.0], [4.0, 4.0, 3.0], [1.0, 2.0]]

    def package_alpha(units: list[list[float]]) -> float:
        data = np.full((3, len(units)), np.nan)
        for column, unit in enumerate(units):
            data[: len(unit), column] = unit
        return float(krippendorff.alpha(reliability_data=data, level_of_measurement=metric))

    candidates = [
        package_alpha(a_units + a_units),
        package_alpha(a_units + b_units),
        package_alpha(b_units + b_units),
    ]
    result = alpha(a_units + b_units, metric, clusters=[0, 0, 0, 1, 1, 1], bootstrap=1000)
    assert result["alpha"] == pytest.approx(candidates[1], abs=1e-9)
    assert result["low"] == pytest.approx(min(candidates), abs=1e-9)
    assert result["high"] == pytest.approx(max(candidates), abs=1e-9)


def test_alpha_bootstrap_on_35000_prompts() -> None:
    rng = np.random.default_rng(0)
    prompts = []
    for index in range(35_000):
        ids = [3 * index, 3 * index + 1, 3 * index + 2]
        best = ids[int(rng.integers(3))]
        rankings = []
        for labeler in range(3):
            rest = [int(c) for c in rng.permutation([c for c in ids if c != best])]
            rankings.append((labeler, [[best], *([c] for c in rest)]))
        prompts.append((ids, rankings))
    units, clusters = ranking_units(prompts)
    result = alpha(units, "ordinal", clusters, bootstrap=1000, seed=1)
    assert (result["units"], result["values"]) == (105_000, 315_000)
    low, point, high = _defined(result["low"], result["alpha"], result["high"])
    assert low < point < high
    # Labelers agree on the best of three and guess the rest: alpha well between 0 and 1.
    assert 0.2 < point < 0.8
    assert high - low < 0.02


def test_ranking_units() -> None:
    prompts = [
        # Labeler 7: 3 > 1 = 2 -> ranks 3: 1.0, 1: 2.5, 2: 2.5 (positions 2 and 3 shared).
        # Labeler 8: 1 > 2 > 3 -> ranks 1: 1.0, 2: 2.0, 3: 3.0.
        ([1, 2, 3], [(7, [[3], [1, 2]]), (8, [[1], [2], [3]])]),
        # Labeler 7 ties 4 and 5 -> 1.5 each; completion 6 is in no order -> empty unit.
        ([4, 5, 6], [(7, [[4, 5]])]),
    ]
    units, clusters = ranking_units(prompts)
    assert units == [[2.5, 1.0], [2.5, 2.0], [1.0, 3.0], [1.5], [1.5], []]
    assert clusters == [0, 0, 0, 1, 1, 1]


# Bootstrap of a ratio ------------------------------------------------------------------------


def test_bootstrap_ratio() -> None:
    # Rows (1 of 2) and (3 of 3): rate (1 + 3) / (2 + 3) = 0.8. Each replicate is a mix of the
    # two rows, so its rate lies between 1/2 and 1.
    sums, counts = np.array([1.0, 3.0]), np.array([2, 3])
    result = bootstrap_ratio(sums, counts, bootstrap=400, seed=3)
    assert result["rate"] == 0.8
    assert result["count"] == 5
    assert result["low"] is not None and result["high"] is not None
    assert 0.5 <= result["low"] <= 0.8 <= result["high"] <= 1.0
    assert bootstrap_ratio(sums, counts, bootstrap=400, seed=3) == result


def test_bootstrap_ratio_interval_is_deterministic_per_seed() -> None:
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 4, size=300)
    sums = rng.binomial(counts, 0.7).astype(float)
    first = bootstrap_ratio(sums, counts, seed=11)
    assert first["rate"] == pytest.approx(sums.sum() / counts.sum())
    low, rate, high = _defined(first["low"], first["rate"], first["high"])
    assert low < rate < high
    assert bootstrap_ratio(sums, counts, seed=11) == first
    assert bootstrap_ratio(sums, counts, seed=12) != first


def test_bootstrap_ratio_edge_cases() -> None:
    assert bootstrap_ratio(np.zeros(3), np.zeros(3)) == {
        "rate": None,
        "low": None,
        "high": None,
        "count": 0,
    }
    assert bootstrap_ratio(np.array([]), np.array([]))["rate"] is None
    # One row: every replicate is that row.
    assert bootstrap_ratio(np.array([1.5]), np.array([2])) == {
        "rate": 0.75,
        "low": 0.75,
        "high": 0.75,
        "count": 2,
    }
    assert bootstrap_ratio(np.array([1.5]), np.array([2]), bootstrap=0)["low"] is None
    with pytest.raises(ValueError, match="same length"):
        bootstrap_ratio(np.array([1.0]), np.array([1, 2]))


# Consensus by ranked pairs -------------------------------------------------------------------


def test_consensus_condorcet_winner() -> None:
    # Votes: 1>2 by labelers 1 and 3 (2-1); 1>3 by all (3-0); 2>3 by labelers 1 and 3 (2-1).
    # Locked by margin: 1>3 (3), then 1>2 and 2>3 (margin 1, winner votes 2, by ids).
    orders = [[[1], [2], [3]], [[1], [3], [2]], [[2], [1], [3]]]
    result = ranked_pairs([1, 2, 3], orders)
    assert result["order"] == [[1], [2], [3]]
    assert result["pairs"] == [
        {"a": 1, "b": 2, "a_votes": 2.0, "b_votes": 1.0, "voters": 3},
        {"a": 1, "b": 3, "a_votes": 3.0, "b_votes": 0.0, "voters": 3},
        {"a": 2, "b": 3, "a_votes": 2.0, "b_votes": 1.0, "voters": 3},
    ]


def test_consensus_condorcet_cycle_with_different_margins() -> None:
    # a = 3, b = 1, c = 2. Four labelers a>b>c, three b>c>a, two c>a>b (nine voters).
    #   a vs b: a above b for 4 + 2 = 6, b above a for 3 -> a wins by 3.
    #   b vs c: 4 + 3 = 7 against 2 -> b wins by 5.
    #   c vs a: 3 + 2 = 5 against 4 -> c wins by 1.
    # Lock b>c (5), a>b (3); c>a (1) would close the cycle a>b>c>a: skipped. Order a, b, c.
    orders = [[[3], [1], [2]]] * 4 + [[[1], [2], [3]]] * 3 + [[[2], [3], [1]]] * 2
    result = ranked_pairs([1, 2, 3], orders)
    assert result["order"] == [[3], [1], [2]]
    assert result["pairs"] == [
        {"a": 1, "b": 2, "a_votes": 7.0, "b_votes": 2.0, "voters": 9},
        {"a": 1, "b": 3, "a_votes": 3.0, "b_votes": 6.0, "voters": 9},
        {"a": 2, "b": 3, "a_votes": 5.0, "b_votes": 4.0, "voters": 9},
    ]
    # The majority directions form a cycle; the pairs follow the order, so 2 > 3 (5 of 9),
    # which the order goes against, is left out.
    assert consensus_pairs([1, 2, 3], orders) == [
        {"chosen": 1, "rejected": 2, "vote_share": 7 / 9, "voters": 9},
        {"chosen": 3, "rejected": 1, "vote_share": 6 / 9, "voters": 9},
    ]


def test_consensus_cycle_with_equal_margins_breaks_by_ids() -> None:
    # 1>2>3, 2>3>1, 3>1>2: every majority is 2-1. Sorted by (winner, loser): 1>2, 2>3, 3>1;
    # 3>1 would close the cycle.
    orders = [[[1], [2], [3]], [[2], [3], [1]], [[3], [1], [2]]]
    assert ranked_pairs([1, 2, 3], orders)["order"] == [[1], [2], [3]]


def test_consensus_even_split_is_one_tie_group() -> None:
    result = ranked_pairs([1, 2], [[[1], [2]], [[2], [1]]])
    assert result["order"] == [[1, 2]]
    assert result["pairs"] == [{"a": 1, "b": 2, "a_votes": 1.0, "b_votes": 1.0, "voters": 2}]
    assert consensus_pairs([1, 2], [[[1], [2]], [[2], [1]]]) == []


def test_consensus_counts_a_tie_as_half_a_vote() -> None:
    # Labeler 1 ties 1 and 2, labeler 2 puts 1 first: 1.5 against 0.5.
    orders = [[[1, 2]], [[1], [2]]]
    assert ranked_pairs([1, 2], orders) == {
        "order": [[1], [2]],
        "pairs": [{"a": 1, "b": 2, "a_votes": 1.5, "b_votes": 0.5, "voters": 2}],
    }
    assert consensus_pairs([1, 2], orders) == [
        {"chosen": 1, "rejected": 2, "vote_share": 0.75, "voters": 2}
    ]


def test_consensus_sources_form_tie_groups() -> None:
    # 1>2 locked; 3 is in no order, so it has no locked edge and joins the first group.
    result = ranked_pairs([1, 2, 3], [[[1], [2]]])
    assert result["order"] == [[1, 3], [2]]
    assert result["pairs"][1] == {"a": 1, "b": 3, "a_votes": 0.0, "b_votes": 0.0, "voters": 0}
    assert ranked_pairs([], []) == {"order": [], "pairs": []}


def test_comparison_agreement_counts_labeler_pairs():
    # Pair (1, 2) of prompt 7: two labelers say 1 > 2, one says 2 > 1 -> 1 agreeing pair of 3.
    agreement = comparison_agreement(np.array([7, 7, 7]), np.array([1, 1, 2]), np.array([2, 2, 1]))
    assert agreement == {"rate": pytest.approx(1 / 3), "labeler_pairs": 3}
    assert comparison_agreement(np.array([7]), np.array([1]), np.array([2]))["rate"] is None


def test_comparison_agreement_matches_counting_votes_pair_by_pair():
    rng = np.random.default_rng(5)
    prompts = rng.integers(0, 4, size=300)
    first, second = rng.integers(0, 4, size=(2, 300))
    keep = first != second
    prompts, first, second = prompts[keep], first[keep], second[keep]
    chosen, rejected = 10 * prompts + first, 10 * prompts + second
    votes: dict[tuple[int, int, int], int] = {}
    for vote in zip(prompts.tolist(), chosen.tolist(), rejected.tolist(), strict=True):
        votes[vote] = votes.get(vote, 0) + 1
    agreeing = total = 0
    for (prompt, a, b), forward in votes.items():
        if a < b:
            backward = votes.get((prompt, b, a), 0)
            agreeing += forward * (forward - 1) // 2 + backward * (backward - 1) // 2
            total += (forward + backward) * (forward + backward - 1) // 2
    for prompt, a, b in votes:  # pairs only ever voted the other way round
        if a > b and (prompt, b, a) not in votes:
            agreeing += votes[(prompt, a, b)] * (votes[(prompt, a, b)] - 1) // 2
            total += votes[(prompt, a, b)] * (votes[(prompt, a, b)] - 1) // 2
    result = comparison_agreement(prompts, chosen, rejected)
    assert result == {"rate": pytest.approx(agreeing / total), "labeler_pairs": total}
    assert (
        comparison_agreement(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int))["rate"] is None
    )


def votes_of(rankings: list[tuple[int, list[list[int]]]]) -> tuple[np.ndarray, ...]:
    """The comparisons of one prompt's rankings, as training loads them (prompt 0)."""
    pairs = [
        (chosen, rejected)
        for _, order in rankings
        for chosen, rejected, _ in comparison_pairs(order)
    ]
    chosen, rejected = (np.array(column) for column in zip(*pairs, strict=True))
    return np.zeros(len(pairs), dtype=int), chosen, rejected


def test_the_ceiling_is_the_dashboards_agreement_when_nobody_ties():
    rankings = [(1, [[1], [2], [3]]), (2, [[2], [1], [3]]), (3, [[1], [3], [2]])]
    pairwise_sum, pairwise_count = prompt_agreement(rankings)
    assert comparison_agreement(*votes_of(rankings))["rate"] == pytest.approx(
        pairwise_sum / pairwise_count
    )


def test_a_tie_counts_half_on_the_dashboard_and_not_at_all_in_the_ceiling():
    rankings = [(1, [[1], [2]]), (2, [[1, 2]]), (3, [[1], [2]])]
    pairwise_sum, pairwise_count = prompt_agreement(rankings)
    assert pairwise_sum / pairwise_count == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert comparison_agreement(*votes_of(rankings))["rate"] == 1.0
