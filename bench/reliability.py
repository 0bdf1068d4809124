"""Reliability-weighted training against labelers who answer at random, on real preferences.

Each pair of ../shared/data/hh_harmless_dev.jsonl.gz is one prompt, labeled by 3 distinct
simulated labelers (so agreement can be estimated, as in a real campaign): 10 reliable labelers
who follow the file's preference and, in the noisy campaigns, random labelers (who pick either
reply with even odds) giving 20% and then 40% of the labels. Reliabilities come from the quality
report's own code (`labeling.report.ReportBuilder` fed the simulated rankings, then
`reliabilities()`: agreement with the other labelers on shared prompts; no gold is simulated),
weights from the training option's (`rewards.services.reliability.weigh_labelers`), and each
model is fitted by `rewards.fitting.fit_bradley_terry` on arrays (default features and fit), not
through the web. Accuracy is on held-out prompts (5-fold, prompt-grouped, per seed) against the
file's preference. Run from the repo root:

    .venv/bin/python bench/reliability.py [--seeds 0 1 2 3 4] [--shares 0.2 0.4]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HH_FILE = ROOT.parent / "shared" / "data" / "hh_harmless_dev.jsonl.gz"
RELIABLE_LABELERS = 10
LABELS_PER_PROMPT = 3
FOLDS = 5
THRESHOLD = 0.7
TARGET_RECOVERY = 0.5


def setup_django(folder: str) -> None:
    """Settings for importing the project's modules; nothing touches the database."""
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["DATABASE_URL"] = f"sqlite:///{folder}/unused.sqlite3"
    os.environ["PREFLAB_DATA_DIR"] = folder
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("SECRET_KEY", "bench")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def read_pairs() -> list[tuple[list[dict[str, str]], str, str]]:
    """(prompt messages, chosen reply, rejected reply) of each line the importer would take."""
    from labeling.formats import split_hh_pair

    pairs = []
    with gzip.open(HH_FILE, "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            split = split_hh_pair(row["chosen"], row["rejected"])
            if split is not None:
                pairs.append(split)
    return pairs


def campaign(prompts: int, share: float, rng: Any) -> tuple[Any, Any]:
    """Who labeled each prompt (prompts x 3 labeler numbers; random labelers from 10 on) and
    whether each label follows the file (a random labeler's does with even odds). Each label
    slot is a random labeler's with probability `share`."""
    import numpy as np

    random_labelers = max(LABELS_PER_PROMPT, round(RELIABLE_LABELERS * share / (1 - share)))
    labelers = np.empty((prompts, LABELS_PER_PROMPT), dtype=np.int64)
    for prompt in range(prompts):
        slots = rng.random(LABELS_PER_PROMPT) < share
        chosen_random = rng.choice(random_labelers, int(slots.sum()), replace=False)
        chosen_reliable = rng.choice(RELIABLE_LABELERS, int((~slots).sum()), replace=False)
        labelers[prompt, slots] = RELIABLE_LABELERS + chosen_random
        labelers[prompt, ~slots] = chosen_reliable
    is_random = labelers >= RELIABLE_LABELERS
    follows = ~is_random | (rng.random(labelers.shape) < 0.5)
    return labelers, follows


def reliabilities(labelers: Any, follows: Any) -> dict[int, Any]:
    """Each labeler's reliability, by the quality report's code, from the simulated rankings."""
    from labeling import report

    builder = report.ReportBuilder(criteria=[], counted_labelers=set(labelers.ravel().tolist()))
    facts = report.PromptFacts(is_gold=False, gold_since=None, gold_order=None)
    now = datetime.now(UTC)
    for prompt, (who, agrees) in enumerate(zip(labelers, follows, strict=True)):
        chosen, rejected = 2 * prompt, 2 * prompt + 1
        rows = [
            report.RankingRow(
                prompt_id=prompt,
                labeler=int(labeler),
                order=[[chosen], [rejected]] if follow else [[rejected], [chosen]],
                ratings={},
                flags={},
                all_unacceptable=False,
                seconds=10.0,
                created_at=now,
            )
            for labeler, follow in zip(who, agrees, strict=True)
        ]
        builder.add_prompt(facts, rows)
    found, _ = builder.reliabilities()
    return found


def held_out_accuracies(
    matrix: Any, labelers: Any, follows: Any, weights: dict[str, Any], seed: int
) -> dict[str, float]:
    """Held-out accuracy against the file of each weighting, 5-fold over prompts."""
    import numpy as np

    from rewards import fitting

    prompts = len(labelers)
    chosen_truth, rejected_truth = 2 * np.arange(prompts), 2 * np.arange(prompts) + 1
    # One comparison per label: the reply the labeler preferred first.
    label_prompt = np.repeat(np.arange(prompts), LABELS_PER_PROMPT)
    flat_follows = follows.ravel()
    label_chosen = np.where(flat_follows, chosen_truth[label_prompt], rejected_truth[label_prompt])
    label_rejected = np.where(
        flat_follows, rejected_truth[label_prompt], chosen_truth[label_prompt]
    )
    fold_of = np.random.default_rng(seed).permutation(prompts) % FOLDS
    right = {name: 0.0 for name in weights}
    for fold in range(FOLDS):
        train = fold_of[label_prompt] != fold
        test = fold_of == fold
        for name, sample_weight in weights.items():
            model = fitting.fit_bradley_terry(
                matrix,
                label_chosen[train],
                label_rejected[train],
                fitting.FitConfig(),
                sample_weight=None if sample_weight is None else sample_weight[train],
            )
            scores = fitting.rewards(matrix, model)
            differences = scores[chosen_truth[test]] - scores[rejected_truth[test]]
            right[name] += np.count_nonzero(differences > 0) + 0.5 * np.count_nonzero(
                differences == 0
            )
    return {name: total / prompts for name, total in right.items()}


def label_weights(labelers: Any, found: dict[int, Any], weighting: str, threshold: float) -> Any:
    """Each label's weight, by the training option's code."""
    import numpy as np

    from rewards.services.reliability import weigh_labelers

    weighed = weigh_labelers(found, weighting, threshold)
    return np.array([weighed.weights[int(labeler)] for labeler in labelers.ravel()])


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.2, 0.4])
    args = parser.parse_args()
    if not HH_FILE.exists():
        print(f"skipped: {HH_FILE} is absent")
        return
    with tempfile.TemporaryDirectory() as folder:
        setup_django(folder)
        import numpy as np

        from rewards import features

        started = time.perf_counter()
        pairs = read_pairs()
        items = [item for messages, a, b in pairs for item in ((messages, a), (messages, b))]
        matrix = features.featurize(items, features.FeatureConfig())
        print(
            f"{len(pairs)} pairs from {HH_FILE.name}, featurized in "
            f"{time.perf_counter() - started:.1f} s; load average {os.getloadavg()}"
        )
        for share in args.shares:
            results: dict[str, list[float]] = {}
            reliability_figures: list[tuple[float, float]] = []
            for seed in args.seeds:
                rng = np.random.default_rng(1000 + seed)
                labelers, follows = campaign(len(pairs), share, rng)
                clean = np.ones_like(follows)
                found = reliabilities(labelers, follows)
                random_r = [r.reliability for pk, r in found.items() if pk >= RELIABLE_LABELERS]
                reliable_r = [r.reliability for pk, r in found.items() if pk < RELIABLE_LABELERS]
                reliability_figures.append((statistics.mean(reliable_r), statistics.mean(random_r)))
                noisy = held_out_accuracies(
                    matrix,
                    labelers,
                    follows,
                    {
                        "noisy, unweighted": None,
                        "noisy, weighting=reliability": label_weights(
                            labelers, found, "reliability", 0.0
                        ),
                        "noisy, weighting=chance_corrected": label_weights(
                            labelers, found, "chance_corrected", 0.0
                        ),
                        f"noisy, min_reliability={THRESHOLD}": label_weights(
                            labelers, found, "none", THRESHOLD
                        ),
                    },
                    seed,
                )
                clean_accuracy = held_out_accuracies(matrix, labelers, clean, {"clean": None}, seed)
                for name, value in (clean_accuracy | noisy).items():
                    results.setdefault(name, []).append(value)
            reliable_mean = statistics.mean(r for r, _ in reliability_figures)
            random_mean = statistics.mean(r for _, r in reliability_figures)
            print(
                f"\nrandom labelers' share of labels {share:.0%}: mean reliability of reliable "
                f"labelers {reliable_mean:.3f}, of random ones {random_mean:.3f}"
            )
            print(
                f"  {'training data':40} held-out accuracy (mean ± sd over {len(args.seeds)} "
                "seeds)  share of the loss recovered"
            )
            clean_mean = statistics.mean(results["clean"])
            noisy_mean = statistics.mean(results["noisy, unweighted"])
            for name, values in results.items():
                recovered = ""
                if name.startswith("noisy,") and name != "noisy, unweighted":
                    lost = clean_mean - noisy_mean
                    share_back = (statistics.mean(values) - noisy_mean) / lost if lost else 0
                    recovered = f"{share_back:.0%}" + (
                        " (target met)" if share_back >= TARGET_RECOVERY else ""
                    )
                print(f"  {name:40} {summary(values):>26}  {recovered}")
        print(f"\ntook {time.perf_counter() - started:.0f} s; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
