"""Model leaderboard benchmark: counting, fitting and bootstrapping 1M comparisons of 50 models.

Run from the repo root (needs the PostgreSQL server that bench/export_bench.py uses):
    .venv/bin/python bench/leaderboard_bench.py [--comparisons 1000000] [--models 50]
        [--rounds 1000] [--runs 3]

A fresh PostgreSQL database is migrated and filled with COPY (export_bench's code): prompts of 4
completions, each from a different one of the models (strengths drawn once, seeded), ranked by 3
labelers each by a Plackett-Luce draw from those strengths; one ranking in ten ties its last two
completions. Then each run is a child process with DEBUG off that times, one after the other:
the two counting queries, the fit, the fit with its bootstrap, the leaderboard API (JSON) and the
staff page end to end, with its peak RSS. The table gives the median of the runs and each run's
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

from export_bench import LABELERS, PG_SERVER, ROOT, SLUG, peak_rss_mib, postgres_admin

COLUMNS = {  # the columns each COPY gives, in the order of `arena_rows`' tuples
    "auth_user": "id, password, is_superuser, username, first_name, last_name, email, is_staff, "
    "is_active, date_joined",
    "labeling_dataset": "id, name, slug, description, guidelines, guidelines_version, criteria, "
    "labels_per_prompt, gold_rate, status, created_at, ratings, strength",
    "labeling_prompt": "id, external_id, messages, metadata, content_hash, is_gold, created_at, "
    "dataset_id",
    "labeling_completion": "id, external_id, text, model_name, metadata, position, prompt_id",
    "labeling_assignment": "id, status, leased_at, expires_at, finished_at, skip_reason, "
    "labeler_id, prompt_id",
    "labeling_ranking": 'id, "order", ratings, flags, all_unacceptable, rationale, seconds_spent, '
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
    dataset = (1, "Bench", SLUG, "", "", 1, "[]", 3, 0.0, "active", now, "off", "off")
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
            ranking_row = (ranking, json.dumps(groups), "{}", "{}", False, "", 10.0, 1)
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
    import psycopg
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    rows = arena_rows(comparisons, models=models)
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn, conn.cursor() as cur:
        for table, columns in COLUMNS.items():
            with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:  # type: ignore[arg-type]
                for row in rows[table]:
                    copy.write_row(row)
            sequence = f"pg_get_serial_sequence('{table}', 'id')"
            cur.execute(f"SELECT setval({sequence}, MAX(id)) FROM {table}")  # type: ignore[arg-type]
        conn.commit()
        conn.execute("ANALYZE")
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
    from labeling.models import Dataset
    from labeling.services import leaderboard as service

    dataset = Dataset.objects.get(slug=SLUG)
    rss_before = peak_rss_mib()
    start = time.perf_counter()
    battles = service.count_battles(dataset_ids=[dataset.pk])
    count_s = time.perf_counter() - start
    start = time.perf_counter()
    leaderboard.standings(battles["names"], battles["wins"], battles["ties"], rounds=0)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    standings = leaderboard.standings(
        battles["names"], battles["wins"], battles["ties"], rounds=rounds
    )
    bootstrap_s = time.perf_counter() - start
    client = Client()
    client.force_login(get_user_model().objects.get(username="user1"))
    start = time.perf_counter()
    api = client.get(f"/api/v1/datasets/{SLUG}/leaderboard/", {"rounds": rounds})
    api_s = time.perf_counter() - start
    start = time.perf_counter()
    page = client.get(f"/quality/{SLUG}/leaderboard/", {"rounds": rounds})
    page_s = time.perf_counter() - start
    assert api.status_code == 200 and page.status_code == 200, (api.status_code, page.status_code)
    truth = model_strengths(len(battles["names"]))
    fitted = {row["model"]: row["score"] for row in standings["models"]}
    order_truth = sorted(range(len(truth)), key=lambda i: -truth[i])
    order_fit = [int(row["model"].split("-")[1]) for row in standings["models"]]
    return {
        "battles": standings["battles"],
        "models": len(fitted),
        "count_s": count_s,
        "fit_s": fit_s,
        "bootstrap_s": bootstrap_s,
        "api_s": api_s,
        "page_s": page_s,
        "rss": peak_rss_mib() - rss_before,
        "rss_total": peak_rss_mib(),
        "order_recovered": sum(a == b for a, b in zip(order_truth, order_fit, strict=True)),
        "api_kib": len(api.content) / 1024,
        "page_kib": len(page.content) / 1024,
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
        ("count_s", "counting queries (2 GROUP BYs)"),
        ("fit_s", "fit (Newton, no bootstrap)"),
        ("bootstrap_s", f"fit + {rounds} bootstrap rounds"),
        ("api_s", "API GET leaderboard/ end to end"),
        ("page_s", "staff page end to end"),
    ]:
        each = " ".join(f"{run[key]:.3f}" for run in runs)
        print(f"  {label:<34} {statistics.median(r[key] for r in runs):>7.3f} s   ({each})")
    print(
        f"  peak RSS of a run: {max(r['rss_total'] for r in runs):.0f} MiB, "
        f"+{max(r['rss'] for r in runs):.0f} MiB over Django at rest"
    )
    print(
        f"  true order recovered at {first['order_recovered']} of {first['models']} places; "
        f"API {first['api_kib']:.0f} KiB, page {first['page_kib']:.0f} KiB"
    )


if __name__ == "__main__":
    main()
