"""Quality dashboard benchmark: computing the report and rendering the page on big datasets.

Run from the repo root:
    .venv/bin/python bench/dashboard_bench.py [--rankings N ...] [--renders 30]

For each size, a fresh PostgreSQL database is filled by export_bench's COPY code (3 rankings per
prompt by 30 labelers, 4 completions per prompt, random orders). A child process then computes
the dataset's quality report as the worker does (timed, with its peak RSS) and renders the staff
dashboard through Django's test Client with DEBUG off, several times; the target is a render
under 300 ms at 100,000 rankings. The page reads the precomputed report, so a render costs a
few indexed queries and the template, whatever the number of rankings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import export_bench
from export_bench import PG_SERVER, SLUG, peak_rss_mib, postgres_admin

TARGET_MS = 300


def measure(renders: int) -> dict[str, Any]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from labeling.models import Dataset
    from labeling.services import quality_report

    dataset = Dataset.objects.get(slug=SLUG)
    rss_before = peak_rss_mib()
    start = time.perf_counter()
    report = quality_report.refresh_report(dataset_id=dataset.pk)
    compute = time.perf_counter() - start
    assert report is not None
    client = Client()
    client.force_login(get_user_model().objects.get(username="user1"))
    url = f"/quality/{SLUG}/"
    times, status, queries = [], 0, []

    def count(execute: Any, sql: str, *args: Any) -> Any:
        queries.append(sql)
        return execute(sql, *args)

    for i in range(renders + 1):
        queries.clear()
        with connection.execute_wrapper(count):
            start = time.perf_counter()
            response = client.get(url, {"sort": "agreement"} if i % 2 else {})
            content = response.content
            elapsed = time.perf_counter() - start
        status = response.status_code
        if i:  # the first render warms templates and URL resolvers
            times.append(elapsed * 1000)
    prompt = report.data["disputed"][0]["prompt"]
    start = time.perf_counter()
    prompt_page = client.get(f"/quality/{SLUG}/prompts/{prompt}/")
    prompt_ms = (time.perf_counter() - start) * 1000
    return {
        "rankings": report.data["rankings"],
        "compute_s": compute,
        "compute_rss": peak_rss_mib() - rss_before,
        "status": status,
        "bytes": len(content),
        "queries": len(queries),
        "median_ms": statistics.median(times),
        "p95_ms": sorted(times)[max(0, round(0.95 * len(times)) - 1)],
        "max_ms": max(times),
        "prompt_ms": prompt_ms,
        "prompt_status": prompt_page.status_code,
        "alpha": report.data["agreement"]["alpha_rankings"]["alpha"],
        "pairwise": report.data["agreement"]["pairwise"]["rate"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rankings", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--renders", type=int, default=30)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.renders)))
        return
    import subprocess

    print(
        f"{'rankings':>9} {'report s':>9} {'report RSS':>10} {'page median ms':>15} "
        f"{'p95 ms':>7} {'max ms':>7} {'queries':>7} {'KiB':>5} {'prompt ms':>9}"
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="preflab_dashboard_bench_") as data_dir:
        for n in args.rankings:
            database = f"preflab_dashboard_bench_{os.getpid()}_{n}"
            postgres_admin(f"CREATE DATABASE {database}")
            try:
                export_bench.child("fill", database, data_dir, "--comparisons", str(6 * n))
                env = dict(os.environ, DATABASE_URL=f"{PG_SERVER}/{database}")
                env.update(PREFLAB_DATA_DIR=data_dir, DEBUG="false", LOG_LEVEL="WARNING")
                env.update(SECRET_KEY="dashboard-bench-only", ALLOWED_HOSTS="testserver")
                done = subprocess.run(
                    [sys.executable, __file__, "--child", "--renders", str(args.renders)],
                    env=env,
                    stdout=subprocess.PIPE,
                    text=True,
                    check=True,
                )
                r = json.loads(done.stdout.strip().splitlines()[-1])
                assert r["status"] == 200 and r["prompt_status"] == 200, r
                results[n] = r
                print(
                    f"{r['rankings']:>9,} {r['compute_s']:>9.2f} {r['compute_rss']:>7.0f} MiB "
                    f"{r['median_ms']:>15.1f} {r['p95_ms']:>7.1f} {r['max_ms']:>7.1f} "
                    f"{r['queries']:>7} {r['bytes'] / 1024:>5.0f} {r['prompt_ms']:>9.1f}",
                    flush=True,
                )
            finally:
                postgres_admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    big = max(results)
    median = results[big]["median_ms"]
    print(
        f"\ntarget: dashboard under {TARGET_MS} ms at {big:,} rankings: median {median:.1f} ms, "
        f"p95 {results[big]['p95_ms']:.1f} ms -> {'met' if median < TARGET_MS else 'NOT met'}"
    )
    print(
        "The report is computed by a worker (the 'report s' column) and read by the page; it is "
        "refreshed when newer rankings exist and it is older than "
        "PREFLAB_QUALITY_REFRESH_SECONDS, and at once after an exclusion or a gold change."
    )


if __name__ == "__main__":
    main()
