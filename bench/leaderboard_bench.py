"""Model leaderboard benchmark: counting, fitting and bootstrapping 1M comparisons of 50 models.

Run from the repo root (needs the PostgreSQL server that bench/export_bench.py uses):
    .venv/bin/python bench/leaderboard_bench.py [--comparisons 1000000] [--models 50]
        [--rounds 1000] [--runs 3]

A fresh PostgreSQL database is migrated and filled with COPY (export_bench's code): prompts of 4
completions, each from a different one of the models (strengths drawn once, seeded), ranked by 3
labelers each by a Plackett-Luce draw from those strengths; one ranking in ten ties its last two
completions. Then each run is a child process with DEBUG off that times, one after the other:
each counting query, the fit, the fit with its bootstrap, the worker's whole job (count, fit,
bootstrap, store), then the leaderboard API (JSON) and the staff page reading the stored result,
with the run's peak RSS. The table gives the median of the runs and each run's
figures; the load average is printed before and after, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from itertools import combinations
from pathlib import Path
from typing import Any

# This checkout's code first (the venv may be shared with another checkout), then bench/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from export_bench import (
    LABELERS,
    PG_SERVER,
    ROOT,
    SLUG,
    copy_tables,
    peak_rss_mib,
    postgres_admin,
)

COLUMNS = {  # the columns each COPY gives, in the order of `arena_rows`' tuples
    "auth_user": "id, password, is_superuser, username, first_name, last_name, email, is_staff, "
    "is_active, date_joined",
    "labeling_dataset": "id, name, slug, description, guidelines, guidelines_version, "
    "labels_per_prompt, gold_rate, status, created_at, ratings, strength, workspace_id",
    "labeling_prompt": "id, external_id, messages, metadata, content_hash, is_gold, created_at, "
    "dataset_id",
    "labeling_completion": "id, external_id, text, model_name, metadata, position, prompt_id",
    "labeling_assignment": "id, status, leased_at, expires_at, finished_at, skip_reason, "
    "labeler_id, prompt_id",
    "labeling_ranking": 'id, "order", flags, all_unacceptable, rationale, seconds_spent, '
    "guidelines_version, request_id, created_at, assignment_id, dataset_id, labeler_id, prompt_id",
    "labeling_comparison": "id, margin, strength, created_at, labeler_id, chosen_id, rejected_id, "
    "dataset_id, prompt_id, ranking_id",
}
COMPLETIONS = 4
PER_PROMPT = 3
TIE_SHARE = 0.1


def model_strengths(models: int, seed: int = 11) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(0, 1) for _ in range(models)]


def arena_rows(comparisons: int, *, models: int, seed: int = 7) -> dict[str, list[tuple[Any, ...]]]:
    """Rows of every table (the column order of export_bench.COLUMNS)."""
    rng = random.Random(seed)
    strengths = model_strengths(models)
    now = datetime.now(UTC)
    done = now + timedelta(seconds=10)
    rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in COLUMNS}
    for u in range(1, LABELERS + 2):  # user1 is the staff user who reads the leaderboard
        rows["auth_user"].append((u, "!", u == 1, f"user{u}", "", "", "", u == 1, True, now))
    # Workspace 1: the default one, which migrating a fresh database makes first.
    dataset = (1, "Bench", SLUG, "", "", 1, 3, 0.0, "active", now, "off", "off", 1)
    rows["labeling_dataset"].append(dataset)
    prompt = ranking = comparison = 0
    while comparison < comparisons:
        prompt += 1
        messages = json.dumps([{"role": "user", "content": f"Question {prompt}?"}])
        rows["labeling_prompt"].append(
            (prompt, f"p{prompt}", messages, "{}", f"{prompt:064x}", False, now, 1)
        )
        sources = rng.sample(range(models), COMPLETIONS)
        first = COMPLETIONS * (prompt - 1) + 1
        for k, source in enumerate(sources):
            rows["labeling_completion"].append(
                (first + k, "abcd"[k], f"Answer {k}.", f"model-{source:02d}", "{}", k, prompt)
            )
        for label in range(PER_PROMPT):
            ranking += 1
            labeler = 2 + (prompt + label) % LABELERS
            order = plackett_luce(rng, [strengths[s] for s in sources])
            groups = [[first + k] for k in order]
            if rng.random() < TIE_SHARE:
                groups[-2:] = [groups[-2] + groups[-1]]
            rows["labeling_assignment"].append(
                (ranking, "submitted", now, done, done, "", labeler, prompt)
            )
            ranking_row = (ranking, json.dumps(groups), "{}", False, "", 10.0, 1)
            rows["labeling_ranking"].append(
                (*ranking_row, uuid.UUID(int=ranking), done, ranking, 1, labeler, prompt)
            )
            for (a, better), (b, worse) in combinations(enumerate(groups), 2):
                for chosen in better:
                    for rejected in worse:
                        comparison += 1
                        rows["labeling_comparison"].append(
                            (
                                comparison,
                                b - a,
                                "",
                                done,
                                labeler,
                                chosen,
                                rejected,
                                1,
                                prompt,
                                ranking,
                            )
                        )
    return rows


def plackett_luce(rng: random.Random, strengths: list[float]) -> list[int]:
    """An order of the indexes, best first: each place drawn with odds exp(strength)."""
    left = list(range(len(strengths)))
    order = []
    while left:
        weights = [math.exp(strengths[i]) for i in left]
        pick = rng.choices(left, weights)[0]
        order.append(pick)
        left.remove(pick)
    return order


def fill(comparisons: int, models: int) -> dict[str, Any]:
    """Migrate, then COPY the rows with their ids, move the sequences on, ANALYZE."""
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    rows = arena_rows(comparisons, models=models)
    copy_tables(rows, COLUMNS)
    return {
        "seconds": time.perf_counter() - started,
        "prompts": len(rows["labeling_prompt"]),
        "rankings": len(rows["labeling_ranking"]),
        "comparisons": len(rows["labeling_comparison"]),
    }


def measure(rounds: int) -> dict[str, Any]:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from labeling import leaderboard
    from labeling.models import Dataset, ModelLeaderboard
    from labeling.services import leaderboard as service

    dataset = Dataset.objects.get(slug=SLUG)
    rss_before = peak_rss_mib()
    timings: dict[str, float] = {}

    def timed(name: str, work: Any) -> Any:
        start = time.perf_counter()
        result = work()
        timings[name] = time.perf_counter() - start
        return result

    timed("comparisons_s", lambda: service.comparison_counts([dataset.pk]))
    timed("ties_s", lambda: service.tie_counts([dataset.pk]))
    battles = timed("count_s", lambda: service.count_battles(dataset_ids=[dataset.pk]))
    names, wins, ties = battles["names"], battles["wins"], battles["ties"]
    timed("fit_s", lambda: leaderboard.standings(names, wins, ties, rounds=0))
    board = lambda: leaderboard.standings(names, wins, ties, rounds=rounds)  # noqa: E731
    standings = timed("bootstrap_s", board)
    # The worker's job: count, fit, bootstrap, store. Then the page and the API read the row.
    ModelLeaderboard.objects.all().delete()
    key = service.leaderboard_key([dataset], rounds)
    stored = ModelLeaderboard.objects.create(key=key, rounds=rounds)
    stored.datasets.set([dataset])
    timed("worker_s", lambda: service.refresh_leaderboard(leaderboard_id=stored.pk))
    client = Client()
    client.force_login(get_user_model().objects.get(username="user1"))
    reads: dict[str, list[float]] = {"api": [], "page": []}
    for _ in range(6):
        for what, url in [
            ("api", f"/api/v1/datasets/{SLUG}/leaderboard/"),
            ("page", f"/quality/{SLUG}/leaderboard/"),
        ]:
            start = time.perf_counter()
            response = client.get(url, {"rounds": rounds})
            reads[what].append(time.perf_counter() - start)
            assert response.status_code == 200, (url, response.status_code)
            assert b"computing" not in response.content[:200], "not the stored leaderboard"
    truth = model_strengths(len(names))
    order_truth = sorted(range(len(truth)), key=lambda i: -truth[i])
    order_fit = [int(row["model"].split("-")[1]) for row in standings["models"]]
    return {
        **timings,
        "api_s": statistics.median(reads["api"][1:]),  # the first read warms templates
        "page_s": statistics.median(reads["page"][1:]),
        "battles": standings["battles"],
        "models": len(names),
        "rss": peak_rss_mib() - rss_before,
        "rss_total": peak_rss_mib(),
        "order_recovered": sum(a == b for a, b in zip(order_truth, order_fit, strict=True)),
        "top_interval": standings["models"][0]["high"] - standings["models"][0]["low"],
    }


def child(what: str, database: str, data_dir: str, *extra: str) -> dict[str, Any]:
    env = dict(os.environ, DATABASE_URL=f"{PG_SERVER}/{database}", PREFLAB_DATA_DIR=data_dir)
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DEBUG="false", LOG_LEVEL="WARNING")
    env.update(SECRET_KEY="leaderboard-bench-only", ALLOWED_HOSTS="testserver,127.0.0.1")
    command = [sys.executable, __file__, "--child", what, *extra]
    done = subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comparisons", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        if args.child == "fill":
            import django

            django.setup()

            result = fill(args.comparisons, args.models)
        else:
            result = measure(args.rounds)
        print(json.dumps(result))
        return
    try:
        postgres_admin("SELECT 1")
    except Exception as error:
        sys.exit(f"needs PostgreSQL at {PG_SERVER} (as bench/export_bench.py): {error}")
    database = f"preflab_leaderboard_bench_{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="preflab_leaderboard_bench_") as data_dir:
        postgres_admin(f"CREATE DATABASE {database}")
        try:
            extra = ["--comparisons", str(args.comparisons), "--models", str(args.models)]
            filled = child("fill", database, data_dir, *extra)
            print(
                f"filled {filled['prompts']:,} prompts, {filled['rankings']:,} rankings, "
                f"{filled['comparisons']:,} comparisons "
                f"in {filled['seconds']:.1f}s"
            )
            print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
            runs = [
                child("measure", database, data_dir, "--rounds", str(args.rounds))
                for _ in range(args.runs)
            ]
            print(f"load average after:  {Path('/proc/loadavg').read_text().strip()}")
        finally:
            postgres_admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    report(runs, args.rounds)


def report(runs: list[dict[str, Any]], rounds: int) -> None:
    first = runs[0]
    print(
        f"\n{first['battles']:,} battles (comparisons and tied pairs) over {first['models']} "
        f"models, {rounds} bootstrap rounds; median of {len(runs)} runs (each run's figures)"
    )
    for key, label in [
        ("comparisons_s", "query: comparisons GROUP BY"),
        ("ties_s", "query: ties of rankings GROUP BY"),
        ("count_s", "both queries + matrices"),
        ("fit_s", "fit (Newton, no bootstrap)"),
        ("bootstrap_s", f"fit + {rounds} bootstrap rounds"),
        ("worker_s", "worker: count, fit, bootstrap, store"),
        ("api_s", "API GET (stored), median of 5"),
        ("page_s", "staff page (stored), median of 5"),
    ]:
        each = " ".join(f"{run[key]:.3f}" for run in runs)
        print(f"  {label:<34} {statistics.median(r[key] for r in runs):>7.3f} s   ({each})")
    print(
        f"  peak RSS of a run: {max(r['rss_total'] for r in runs):.0f} MiB, "
        f"+{max(r['rss'] for r in runs):.0f} MiB over Django at rest"
    )
    print(
        f"  true order recovered at {first['order_recovered']} of {first['models']} places; "
        f"the top model's 95% interval is {first['top_interval']:.1f} points wide"
    )


if __name__ == "__main__":
    main()
