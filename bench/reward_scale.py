"""Reward model training at scale: `runs.run_training` on 100k and 1M comparisons.

Run from the repo root:
    .venv/bin/python bench/reward_scale.py [--comparisons N ...] [--profile]

For each size, a fresh PostgreSQL database is filled by export_bench's COPY code in one child
process, with the completion texts and rankings rewritten so there is something to learn: texts
of ~400 chars from a 3,000-word Zipf vocabulary, and labelers who rank by the number of words from
a hidden "good" list plus Gumbel noise. A second child (DEBUG off, model files in a temp folder)
trains the run the Celery worker would, while a thread polls the run row every 0.5 s for its
stage and samples the RSS; --profile runs the training under cProfile (stderr). The row's stages
are coarse (a stage under 0.5 s may be missed, and the learning curve's fits count as
"evaluating"), so the big calls are timed too, by wrapping them in the child.

The sizes grow by adding prompts (3 rankings each), so the feature matrix grows with the new
completions. To see what the comparisons themselves cost, the biggest size is run once more on
the smallest size's prompts with 10x the rankings on each (the same completions): its peak RSS
against the smallest run's is the memory that grows with comparisons.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib
import json
import math
import os
import pstats
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from itertools import accumulate, combinations
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]
import export_bench  # noqa: E402
from export_bench import PG_SERVER, SLUG, peak_rss_mib, postgres_admin  # noqa: E402

TARGET_SECONDS, TARGET_MIB = 120.0, 2048.0
# With the same completions, 10x the comparisons may raise the peak by this much (2^18 weights
# are 2 MiB; the rest is the pairs' row numbers and per-pair numbers of the fit).
MODEL_SLACK_MIB = 50.0
WATCHED = {  # the calls timed in the training child
    # Names as the training module calls them (it imported the first and the last).
    "rewards.services.training": ("load_training_data", "_learning_curve", "comparison_agreement"),
    "rewards.features": ("featurize",),
    "rewards.fitting": ("fit_bradley_terry",),
    "rewards.artifacts": ("write_artifacts",),
}


def current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# --- Child: fill, with texts and rankings that carry a hidden preference --------------------


def signal_rows(
    comparisons: int, seed: int = 7, per_prompt: int = 3
) -> dict[str, list[tuple[Any, ...]]]:
    """export_bench's rows, with new completion texts and rankings (and so comparisons)."""
    rows = export_bench.synthetic_rows(comparisons, seed, per_prompt)
    rng = random.Random(seed)
    vocabulary = sorted(
        {"".join(rng.choices("abcdefghiklmnoprstuvw", k=rng.randint(2, 9))) for _ in range(3400)}
    )[:3000]
    rng.shuffle(vocabulary)
    cumulative = list(accumulate(1 / (rank + 1) for rank in range(len(vocabulary))))
    good = set(vocabulary[100:250])
    good_words, utility = sorted(good), {}
    completions, pairs = rows["labeling_completion"], rows["labeling_comparison"]
    for i, (pk, external, _, *rest) in enumerate(completions):
        bonus = rng.randint(0, 8)
        words = rng.choices(vocabulary, cum_weights=cumulative, k=72 - bonus)
        words += rng.choices(good_words, k=bonus)
        rng.shuffle(words)
        text = " ".join(words)[:400]
        utility[pk] = sum(word in good for word in text.split())
        completions[i] = (pk, external, text, *rest)
    for r, ranking in enumerate(rows["labeling_ranking"]):
        first = 4 * (ranking[13] - 1) + 1  # the prompt's four completions
        noisy = {
            c: utility[c] - 1.5 * math.log(-math.log(rng.random())) for c in range(first, first + 4)
        }
        order = sorted(noisy, key=noisy.__getitem__, reverse=True)
        rows["labeling_ranking"][r] = (r + 1, json.dumps([[c] for c in order]), *ranking[2:])
        for j, (better, worse) in enumerate(combinations(range(4), 2)):
            if (pk := 6 * r + j + 1) <= comparisons:
                row = pairs[pk - 1]
                pairs[pk - 1] = (*row[:5], order[better], order[worse], *row[7:])
    return rows


# --- Child: one training run, observed -----------------------------------------------------


def timed(function: Callable[..., Any], name: str, calls: dict[str, list[float]]) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            calls.setdefault(name, []).append(time.perf_counter() - start)

    return wrapper


def train(profile: bool) -> dict[str, Any]:
    from django.db import connection

    from labeling.models import Dataset
    from rewards.models import TrainingRun
    from rewards.services import runs

    calls: dict[str, list[float]] = {}
    for module_name, names in WATCHED.items():
        module = importlib.import_module(module_name)
        for name in names:
            setattr(module, name, timed(getattr(module, name), name, calls))
    run = runs.start_training_run(datasets=[Dataset.objects.get(slug=SLUG)], enqueue=False)
    rss_before, seen, stage_rss = current_rss_mib(), dict[str, float](), dict[str, float]()
    finished = threading.Event()

    def poll() -> None:
        while not finished.wait(0.5 if seen else 0.05):
            stage = TrainingRun.objects.filter(pk=run.pk).values_list("stage", flat=True).first()
            if stage:
                seen.setdefault(stage, time.perf_counter() - start)
            if seen:
                last = max(seen, key=seen.__getitem__)
                stage_rss[last] = max(stage_rss.get(last, 0.0), current_rss_mib())
        connection.close()

    start = time.perf_counter()
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    with cProfile.Profile() if profile else contextlib.nullcontext() as profiler:
        finished_run = runs.run_training(run_id=run.pk)
    seconds = time.perf_counter() - start
    finished.set()
    poller.join()
    if profiler is not None:
        for order, lines in (("cumulative", 45), ("tottime", 30)):
            pstats.Stats(profiler, stream=sys.stderr).sort_stats(order).print_stats(lines)
    assert finished_run is not None, "the run was not queued"
    metrics = finished_run.metrics
    return {
        "comparisons": metrics["comparisons"]["total"],
        "completions": metrics["completions"],
        "seconds": seconds,
        "stages": seen,
        "stage_rss": stage_rss,
        "calls": calls,
        "rss_before": rss_before,
        "peak_rss": peak_rss_mib(),
        "accuracy": metrics["held_out"]["accuracy"],
        "train_accuracy": metrics["train"]["accuracy"],
        "curve": metrics["learning_curve"],
    }


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    if args.child == "fill":
        return export_bench.fill(args.comparisons[0], args.per_prompt, make_rows=signal_rows)
    return train(args.profile)


# --- Parent: databases, children, report ----------------------------------------------------


def child(what: str, database: str, data_dir: str, *extra: str) -> dict[str, Any]:
    env = dict(os.environ, DATABASE_URL=f"{PG_SERVER}/{database}", PREFLAB_DATA_DIR=data_dir)
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DEBUG="false", LOG_LEVEL="WARNING")
    env.update(SECRET_KEY="reward-scale-bench-only-not-a-real-secret")
    command = [sys.executable, __file__, "--child", what, *extra]
    done = subprocess.run(
        command, env=env, cwd=BENCH.parent, stdout=subprocess.PIPE, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(n: int, r: dict[str, Any]) -> None:
    stages = sorted(r["stages"].items(), key=lambda item: item[1])
    ends = [at for _, at in stages[1:]] + [r["seconds"]]
    timing = ", ".join(
        f"{name} {end - at:.1f}s (peak {r['stage_rss'].get(name, 0):.0f} MiB)"
        for (name, at), end in zip(stages, ends, strict=True)
        if name != "done"
    )
    calls = ", ".join(
        f"{name} {sum(t):.1f}s" + (f" ({' + '.join(f'{x:.1f}' for x in t)})" if len(t) > 1 else "")
        for name, t in r["calls"].items()
        if name != "featurize"
    )
    calls += f"; featurize {sum(r['calls'].get('featurize', [])):.1f}s in total"
    curve = " -> ".join(f"{p['comparisons']:,}: {p['accuracy']:.3f}" for p in r["curve"])
    print(
        f"{n:,} comparisons requested: {r['comparisons']:,} comparisons, "
        f"{r['completions']:,} completions\n"
        f"  wall {r['seconds']:.1f}s: {timing}\n"
        f"  calls: {calls}\n"
        f"  RSS before training {r['rss_before']:.0f} MiB, peak {r['peak_rss']:.0f} MiB\n"
        f"  held-out accuracy {r['accuracy']:.3f} (train {r['train_accuracy']:.3f}); "
        f"learning curve {curve}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comparisons", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--per-prompt",
        type=int,
        default=3,
        help="rankings per prompt; the same-completions run uses 10x this at the biggest size",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the training (stderr)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args)))
        return
    small, big = min(args.comparisons), max(args.comparisons)
    # The same prompts and completions as the smallest run, with 10x the labels on each: what
    # memory the comparisons themselves cost, apart from the features of more completions.
    scenarios = [(n, args.per_prompt) for n in sorted(args.comparisons)]
    if big == 10 * small:
        scenarios.append((big, 10 * args.per_prompt))
    results: dict[tuple[int, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="preflab_reward_scale_") as data_dir:
        for n, per_prompt in scenarios:
            database = f"preflab_reward_scale_{os.getpid()}_{n}_{per_prompt}"
            postgres_admin(f"CREATE DATABASE {database}")
            try:
                filled = child(
                    "fill",
                    database,
                    data_dir,
                    "--comparisons",
                    str(n),
                    "--per-prompt",
                    str(per_prompt),
                )
                print(
                    f"\nfilled {filled['prompts']:,} prompts ({per_prompt} rankings each) "
                    f"in {filled['seconds']:.1f}s"
                )
                profile = ["--profile"] if args.profile else []
                results[n, per_prompt] = child("train", database, data_dir, *profile)
                report(n, results[n, per_prompt])
            finally:
                postgres_admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    first, last = results[small, args.per_prompt], results[big, args.per_prompt]
    print(
        f"\nmore prompts: peak RSS {small:,} -> {big:,} comparisons "
        f"({first['completions']:,} -> {last['completions']:,} completions): "
        f"{first['peak_rss']:.0f} -> {last['peak_rss']:.0f} MiB "
        f"({last['peak_rss'] - first['peak_rss']:+.0f} MiB, the features of the new completions)"
    )
    flat: bool | None = None
    if (big, 10 * args.per_prompt) in results:
        same = results[big, 10 * args.per_prompt]
        growth = same["peak_rss"] - first["peak_rss"]
        per_comparison = growth * 2**20 / (same["comparisons"] - first["comparisons"])
        flat = growth < MODEL_SLACK_MIB
        print(
            f"more labels, same {same['completions']:,} completions: peak RSS {small:,} -> "
            f"{big:,} comparisons: {first['peak_rss']:.0f} -> {same['peak_rss']:.0f} MiB "
            f"({growth:+.0f} MiB, {per_comparison:.0f} bytes per added comparison; "
            f"wall {first['seconds']:.1f} -> {same['seconds']:.1f}s)"
        )
    checks = {
        f"under {TARGET_SECONDS:.0f}s": last["seconds"] < TARGET_SECONDS,
        f"peak under {TARGET_MIB:.0f} MiB": last["peak_rss"] < TARGET_MIB,
    }
    if flat is not None:
        checks[f"same completions, growth under {MODEL_SLACK_MIB:.0f} MiB"] = flat
    verdicts = ", ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks.items())
    verdict = "met" if all(checks.values()) else "NOT met"
    print(
        f"target (1M comparisons trained in under 2 minutes, peak under 2 GB, memory flat "
        f"beyond the model as comparisons grow) at {big:,}: {verdicts} -> {verdict}"
    )


if __name__ == "__main__":
    main()
