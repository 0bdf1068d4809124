"""Active learning on real human preferences: does labeling the prompts the reward model is least
sure about first reach a given accuracy with fewer labels than labeling them at random?

Simulates a labeling campaign on ../shared/data/hh_harmless_dev.jsonl.gz (one prompt, two
replies and the human's choice a line) for each seed: a prompt-grouped held-out fifth
(`rewards.fitting.group_split`), the rest the pool. A random 10% of the pool is labeled first;
then at each 10% step the reward model is trained on the labels so far (the project's own
`features.featurize` and `fitting.fit_bradley_terry`, default options, on arrays), its held-out
pairwise accuracy recorded, the unlabeled pool scored, and the next 10% picked as
`labeling.services.leasing` picks with `order = "uncertainty"`: `share` of it the prompts with the
smallest reward margin between their completions (`rewards.services.predictions.uncertainty`),
the rest at random. Share 0 is random order. Prints accuracy against labels used per share, the
mean over seeds, and the labels each share needs to reach random order's final accuracy (the
mean at 100% of the pool, where every order has labeled the same prompts). Run from the repo root:

    .venv/bin/python bench/active_learning.py [--seeds 0 1 2 3 4] [--shares 0 0.5 1]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HH_FILE = ROOT.parent / "shared" / "data" / "hh_harmless_dev.jsonl.gz"
STEPS = 10  # 10% of the pool each
TEST_SHARE = 0.2


def load_pairs(path: Path) -> tuple[list[tuple[list[dict[str, str]], str]], np.ndarray]:
    """Items (conversation, reply): the chosen reply of pair i at 2i, the rejected at 2i + 1;
    and each pair's group, its conversation, so the split keeps a prompt on one side."""
    from labeling.formats import split_hh_pair

    items: list[tuple[list[dict[str, str]], str]] = []
    groups: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            split = split_hh_pair(row["chosen"], row["rejected"])
            if split is None:
                continue
            conversation, chosen, rejected = split
            items += [(conversation, chosen), (conversation, rejected)]
            groups.append(json.dumps(conversation))
    return items, np.asarray(groups)


def accuracy(rewards: np.ndarray, pairs: np.ndarray) -> float:
    """Share of the pairs whose chosen reply (row 2i) the rewards put above the rejected."""
    return float(np.mean(rewards[2 * pairs] > rewards[2 * pairs + 1]))


def campaign(matrix, pool: np.ndarray, test: np.ndarray, share: float, seed: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Held-out accuracy after each 10% step of labels, picking by `share` uncertainty."""
    from rewards import fitting
    from rewards.services.predictions import uncertainty

    rng = np.random.default_rng(seed)
    targets = [round(len(pool) * (k + 1) / STEPS) for k in range(STEPS)]
    order = rng.permutation(pool)
    labeled, unlabeled = list(order[: targets[0]]), list(order[targets[0] :])
    curve = []
    for target in [*targets[1:], None]:
        chosen = 2 * np.asarray(labeled)
        weights = fitting.fit_bradley_terry(matrix, chosen, chosen + 1, fitting.FitConfig())
        rewards = fitting.rewards(matrix, weights)
        curve.append(accuracy(rewards, test))
        if target is None:
            return curve
        batch = target - len(labeled)
        by_uncertainty = round(share * batch)
        margins = [uncertainty([rewards[2 * p], rewards[2 * p + 1]]) for p in unlabeled]
        ranked = [unlabeled[i] for i in np.argsort(margins, kind="stable")]
        picked = ranked[:by_uncertainty]
        rest = ranked[by_uncertainty:]
        picked += list(rng.permutation(rest)[: batch - by_uncertainty]) if rest else []
        taken = set(picked)
        labeled += picked
        unlabeled = [p for p in unlabeled if p not in taken]
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    args = parser.parse_args()
    if not HH_FILE.exists():
        print(f"skipped: {HH_FILE} is absent (the shared HH harmless dev file)")
        return
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("SECRET_KEY", "bench")
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # no log line per fit
    import django

    django.setup()  # the uncertainty of rewards.services.predictions sits beside its models
    from rewards import features, fitting

    started = time.perf_counter()
    items, groups = load_pairs(HH_FILE)
    matrix = features.featurize(items, features.FeatureConfig())
    pairs = np.arange(len(groups))
    print(f"{len(pairs)} pairs from {HH_FILE.name}; load average {os.getloadavg()[0]:.2f}")
    curves: dict[float, list[list[float]]] = {share: [] for share in args.shares}
    labels: list[int] = []
    for seed in args.seeds:
        test_mask = fitting.group_split(groups, TEST_SHARE, seed)
        pool, test = pairs[~test_mask], pairs[test_mask]
        labels = [round(len(pool) * (k + 1) / STEPS) for k in range(STEPS)]
        for share in args.shares:
            curve = campaign(matrix, pool, test, share, seed)
            curves[share].append(curve)
            print(
                f"seed {seed} share {share:.1f} ({len(test)} held out): "
                + " ".join(f"{a:.3f}" for a in curve)
            )
    print("\nmean held-out accuracy against labels used (10% steps; the last seed's counts):")
    print("labels        " + " ".join(f"{n:>6d}" for n in labels))
    means = {share: np.mean(np.asarray(c), axis=0) for share, c in curves.items()}
    for share, mean in means.items():
        name = "random" if share == 0 else f"uncert {share:.1f}"
        print(f"{name:<13} " + " ".join(f"{a:6.3f}" for a in mean))
    if 0.0 in means:
        target = means[0.0][-1]
        print(f"\nlabels needed to reach random order's final accuracy ({target:.3f}):")
        for share, mean in means.items():
            reached = np.flatnonzero(mean >= target - 1e-9)
            first = labels[reached[0]] if len(reached) else None
            print(f"  share {share:.1f}: {first} of {labels[-1]}")
    print(f"\n{time.perf_counter() - started:.1f} s; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
