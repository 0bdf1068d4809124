"""Per-criterion heads on synthetic ratings with known per-criterion preferences.

Run from the repo root:
    .venv/bin/python bench/criterion_heads.py [--prompts 600] [--seeds 0 1 2 3 4]

Each prompt has 4 completions of ~40 filler words from a 2,000-word vocabulary, plus 0 to 3
words of a hidden HELPFUL list and, independently, 0 to 3 of a hidden HARMFUL list. Two
labelers rank each prompt and rate each completion 1..7:

- helpful = round(2 + 1.3 * helpful words + noise), harmless = round(6.5 - 1.5 * harmful
  words + noise), noise N(0, 0.8), clipped to 1..7: each criterion depends on its own words only;
- the order (every pair a comparison) sorts by helpful words - harmful words + Gumbel noise.

Then, as a run does (`rewards.services.training.train`), with the same functions: features of
each distinct completion (`features.featurize`, defaults), a prompt-grouped split (20% held out,
`fitting.group_split` with the seed), the overall head on the comparisons
(`fitting.fit_bradley_terry`), and a head per criterion on the pairs its ratings order
(`heads.pairs_from_ratings`, `heads.fit_head`). Printed per seed and as a mean over seeds:

- each head's held-out accuracy on its own criterion's pairs, against chance (0.5), against the
  other head and the overall head on the same pairs, and against the best possible;
- the overall head's held-out accuracy on the comparisons trained without heads and with them
  (the run with heads fits the overall head the same way; the figure shows it is unchanged).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rewards import features, fitting, heads

HELPFUL = ("thorough", "specific", "practical", "detailed", "concrete", "actionable")
HARMFUL = ("scam", "exploit", "threaten", "sabotage", "forge", "trespass")
CRITERIA = ["helpful", "harmless"]
COMPLETIONS, LABELERS, HELD_OUT = 4, 2, 0.2


def synthetic(prompts: int, seed: int) -> dict[str, object]:
    """Completions (prompt index, text, helpful and harmful word counts), comparisons and the
    rankings' ratings, as the database would hold them (ids are positions)."""
    rng = np.random.default_rng(seed)
    vocabulary = [f"word{i}" for i in range(2000)]
    items, helpful, harmful, prompt_of = [], [], [], []
    for prompt in range(prompts):
        question = " ".join(rng.choice(vocabulary, 12)) + "?"
        for _ in range(COMPLETIONS):
            h, r = int(rng.integers(0, 4)), int(rng.integers(0, 4))
            words = list(rng.choice(vocabulary, 40)) + list(rng.choice(HELPFUL, h))
            words += list(rng.choice(HARMFUL, r))
            rng.shuffle(words)
            items.append(([{"role": "user", "content": question}], " ".join(words) + "."))
            helpful.append(h)
            harmful.append(r)
            prompt_of.append(prompt)
    helpful_words, harmful_words = np.array(helpful), np.array(harmful)
    comparisons: list[tuple[int, int, int]] = []
    rankings: list[tuple[int, dict[str, dict[str, int]]]] = []
    for prompt in range(prompts):
        ids = np.arange(prompt * COMPLETIONS, (prompt + 1) * COMPLETIONS)
        for _ in range(LABELERS):
            utility = helpful_words[ids] - harmful_words[ids] + rng.gumbel(size=len(ids))
            order = ids[np.argsort(-utility)]
            comparisons += [
                (prompt, int(order[i]), int(order[j]))
                for i in range(len(order))
                for j in range(i + 1, len(order))
            ]
            noise = rng.normal(0, 0.8, size=(2, len(ids)))
            help_rating = np.clip(np.round(2 + 1.3 * helpful_words[ids] + noise[0]), 1, 7)
            harm_rating = np.clip(np.round(6.5 - 1.5 * harmful_words[ids] + noise[1]), 1, 7)
            ratings = {
                str(int(c)): {"helpful": int(a), "harmless": int(b)}
                for c, a, b in zip(ids, help_rating, harm_rating, strict=True)
            }
            rankings.append((prompt, ratings))
    return {
        "items": items,
        "prompt_of": np.array(prompt_of),
        "comparisons": np.array(comparisons),
        "rankings": rankings,
    }


def accuracy(scores: np.ndarray, chosen: np.ndarray, rejected: np.ndarray) -> float:
    result = fitting.difference_metrics(fitting.reward_differences(scores, chosen, rejected))
    return float(result["accuracy"])


def one_seed(prompts: int, seed: int) -> dict[str, float]:
    data = synthetic(prompts, seed)
    comparisons = data["comparisons"]
    assert isinstance(comparisons, np.ndarray)
    matrix = features.featurize(data["items"], features.FeatureConfig())  # type: ignore[arg-type]
    config = fitting.FitConfig()
    held = fitting.group_split(comparisons[:, 0], HELD_OUT, seed)
    held_out_prompts = np.zeros(prompts, dtype=bool)
    held_out_prompts[comparisons[held, 0]] = True

    def fit_overall() -> np.ndarray:
        return fitting.fit_bradley_terry(
            matrix, comparisons[~held, 1], comparisons[~held, 2], config
        )

    overall_alone = fit_overall()
    # With heads: the overall head as the run fits it, then the heads on the same matrix.
    overall = fit_overall()
    pairs = heads.pairs_from_ratings(data["rankings"], CRITERIA)  # type: ignore[arg-type]
    ids = np.arange(matrix.shape[0])
    rows = {c: heads.to_rows(pairs[c], ids, np.arange(prompts)) for c in CRITERIA}
    scores = {"overall": fitting.rewards(matrix, overall)}
    figures: dict[str, float] = {}
    for criterion in CRITERIA:
        weights, metrics = heads.fit_head(
            criterion, rows[criterion], matrix, held_out_prompts, config
        )
        scores[criterion] = fitting.rewards(matrix, weights)
        figures[f"{criterion}:best"] = float(metrics["held_out_best"])
        figures[f"{criterion}:pairs"] = metrics["pairs"]["held_out"]
    for criterion in CRITERIA:
        mask = held_out_prompts[rows[criterion].prompts]
        chosen, rejected = rows[criterion].chosen[mask], rows[criterion].rejected[mask]
        for scorer, values in scores.items():
            figures[f"{criterion}:{scorer}"] = accuracy(values, chosen, rejected)
    held_chosen, held_rejected = comparisons[held, 1], comparisons[held, 2]
    figures["overall:without heads"] = accuracy(
        fitting.rewards(matrix, overall_alone), held_chosen, held_rejected
    )
    figures["overall:with heads"] = accuracy(scores["overall"], held_chosen, held_rejected)
    figures["overall:same weights"] = float(np.array_equal(overall, overall_alone))
    figures["overall:pairs"] = int(np.count_nonzero(held))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    options = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    print(
        f"{options.prompts} prompts x {COMPLETIONS} completions, {LABELERS} labelers each, "
        f"{HELD_OUT:.0%} of prompts held out; held-out pairwise accuracy (chance 0.500)"
    )
    header = "".join(f"{name:>14}" for name in ("helpful head", "harmless head", "overall head"))
    print(f"{'seed':<6}{'pairs of':<10}{'pairs':>7}{header}{'best':>8}")
    runs = []
    for seed in options.seeds:
        started = time.perf_counter()
        figures = one_seed(options.prompts, seed)
        runs.append(figures)
        for criterion in CRITERIA:
            values = "".join(
                f"{figures[f'{criterion}:{s}']:>14.3f}" for s in ("helpful", "harmless", "overall")
            )
            print(
                f"{seed:<6}{criterion:<10}{figures[f'{criterion}:pairs']:>7}{values}"
                f"{figures[f'{criterion}:best']:>8.3f}"
            )
        print(
            f"{seed:<6}{'compar.':<10}{figures['overall:pairs']:>7}  overall head without heads "
            f"{figures['overall:without heads']:.3f}, with heads "
            f"{figures['overall:with heads']:.3f} (same weights: "
            f"{bool(figures['overall:same weights'])}; {time.perf_counter() - started:.0f} s)"
        )
    print("mean over seeds:")
    for criterion in CRITERIA:
        values = "".join(
            f"{np.mean([r[f'{criterion}:{s}'] for r in runs]):>14.3f}"
            for s in ("helpful", "harmless", "overall")
        )
        best = np.mean([r[f"{criterion}:best"] for r in runs])
        print(f"{'':<6}{criterion:<10}{'':>7}{values}{best:>8.3f}")
    without = np.mean([r["overall:without heads"] for r in runs])
    with_heads = np.mean([r["overall:with heads"] for r in runs])
    print(f"      overall head on comparisons: without heads {without:.3f}, with {with_heads:.3f}")


if __name__ == "__main__":
    main()
