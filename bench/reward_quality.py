"""Reward model quality on real human preferences: 5-fold prompt-grouped cross-validation.

Imports ../shared/data/hh_harmless_dev.jsonl.gz into a fresh SQLite database, has a simulated
labeler rank every prompt as the file prefers, loads the comparisons the way a training run does
(`rewards.services.training_data.load_training_data`) and fits the default configuration on four
folds of the prompts, scoring pairwise accuracy on the fifth. Run from the repo root:

    .venv/bin/python bench/reward_quality.py [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HH_FILE = ROOT.parent / "shared" / "data" / "hh_harmless_dev.jsonl.gz"
TARGET = 0.63
REFERENCES = [
    ("length alone", 0.55),
    ("best linear n-gram + handcrafted models", "0.627-0.635"),
    ("a 435M-parameter public reward model", "0.56-0.59"),
]


def setup_django(folder: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["DATABASE_URL"] = f"sqlite:///{folder}/quality.sqlite3"
    os.environ["PREFLAB_DATA_DIR"] = folder
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("SECRET_KEY", "bench")
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # no log line per fit
    import django

    django.setup()


def ranked_hh_dataset():  # type: ignore[no-untyped-def]
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from labeling.services import datasets, imports, workspaces
    from tests.factories import rank_as_the_file_prefers

    call_command("migrate", verbosity=0)
    dataset = datasets.create_dataset(slug="hh", status="active", labels_per_prompt=1, criteria=[])
    with HH_FILE.open("rb") as stream:
        result = imports.import_dataset(dataset=dataset, stream=stream, filename=HH_FILE.name)
    labeler = User.objects.create(username="simulated")
    workspaces.change_pool(dataset=dataset, add_labelers=[labeler])
    rank_as_the_file_prefers(dataset, labeler)
    print(f"imported {result.created} pairs ({len(result.skipped)} lines skipped by the importer)")
    return dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    if not HH_FILE.exists():
        print(f"skipped: {HH_FILE} is absent")
        return
    with tempfile.TemporaryDirectory() as folder:
        setup_django(folder)
        import numpy as np

        from rewards import features, fitting
        from rewards.services import training_data

        dataset = ranked_hh_dataset()
        feature_config, fit_config = features.FeatureConfig(), fitting.FitConfig()
        started = time.perf_counter()
        data = training_data.load_training_data(
            datasets=[dataset], feature_config=feature_config, report=lambda *a: None
        )
        print(
            f"loaded and featurized {len(data.comparison_ids)} comparisons, "
            f"{len(data.completion_ids)} completions in {time.perf_counter() - started:.2f}s"
        )
        print(f"features: {feature_config.to_dict()}")
        print(f"fit: {fit_config.to_dict()}")
        means = []
        for seed in args.seeds:
            prompts = np.unique(data.prompts)
            fold_of = dict(
                zip(
                    np.random.default_rng(seed).permutation(prompts).tolist(),
                    np.arange(len(prompts)) % args.folds,
                    strict=True,
                )
            )
            folds = np.array([fold_of[p] for p in data.prompts.tolist()])
            accuracies, seconds = [], []
            for fold in range(args.folds):
                test = folds == fold
                started = time.perf_counter()
                weights = fitting.fit_bradley_terry(
                    data.features,
                    data.chosen_rows[~test],
                    data.rejected_rows[~test],
                    fit_config,
                )
                seconds.append(time.perf_counter() - started)
                scores = fitting.rewards(data.features, weights)
                metrics = fitting.pairwise_metrics(
                    scores[data.chosen_rows[test]], scores[data.rejected_rows[test]]
                )
                accuracies.append(metrics["accuracy"])
            means.append(float(np.mean(accuracies)))
            print(
                f"seed {seed}: held-out accuracy {np.mean(accuracies):.4f} "
                f"± {np.std(accuracies):.4f} (folds {', '.join(f'{a:.3f}' for a in accuracies)}); "
                f"fit {np.mean(seconds):.2f}s a fold"
            )
        overall = float(np.mean(means))
        print(
            f"\nmean over {len(args.seeds)} seeds x {args.folds} folds: {overall:.4f} "
            f"(spread of seed means {np.std(means):.4f})"
        )
        for name, value in REFERENCES:
            print(f"  reference: {name}: {value}")
        print(
            f"target: >= {TARGET:.2f} for the default configuration -> "
            f"{'met' if overall >= TARGET else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
