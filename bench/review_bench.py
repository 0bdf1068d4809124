"""Review queue benchmark: the queue page of a dataset with 100,000 prompts and their stats rows.

Run from the repo root:
    .venv/bin/python bench/review_bench.py [--prompts 100000] [--renders 30]

A fresh PostgreSQL database is migrated and filled with SQL (INSERT ... SELECT over
generate_series): a superuser, a dataset, its prompts with two completions each, and one
`PromptStats` row per prompt with random agreement, margins, safety flags and reward-model
contradictions, the need computed in SQL by `labeling.review.need_score`'s formula, so most
prompts are queued (the queue reads only the stats rows and the prompts: no rankings). A child
process with DEBUG off then renders the reviewer's queue through Django's test Client (the first
page and a deep one) and a prompt's review page, several times each; the target is a queue page
under 300 ms at 100,000 prompts. The page reads the stats rows through the partial index
`promptstats_review_queue`: a count and one page of 50 rows, whatever the number of prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from export_bench import PG_SERVER, SLUG, postgres_admin

ROOT = Path(__file__).resolve().parent.parent

TARGET_MS = 300

# One stats row per prompt. need = (1 - agreement) + 0.5 (1 - min_margin) + [flagged]
# + max(0, 2 p - 1), as labeling.review.need_score; random() is seeded for repeatable rows.
FILL_SQL = """
INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name, email,
                       is_staff, is_active, date_joined)
VALUES (1, '!', true, 'user1', '', '', '', true, true, now());
INSERT INTO labeling_dataset (id, name, slug, description, guidelines, guidelines_version,
    ratings, strength, labels_per_prompt, gold_rate, status, created_at, workspace_id)
VALUES (1, 'Bench', 'bench', '', '', 1, 'off', 'off', 3, 0.0, 'active', now(),
        (SELECT id FROM labeling_workspace WHERE slug = 'default'));
INSERT INTO labeling_prompt (id, dataset_id, external_id, messages, metadata, content_hash,
                             is_gold, slots_taken, created_at)
SELECT n, 1, 'p' || n,
       jsonb_build_array(jsonb_build_object('role', 'user', 'content',
           'Question ' || n || ': ' || repeat('how would you explain this? ', 6))),
       '{}', lpad(to_hex(n), 64, '0'), false, 3, now()
FROM generate_series(1, %(prompts)s) n;
INSERT INTO labeling_completion (id, prompt_id, external_id, text, model_name, metadata, position)
SELECT 2 * n - k, n, 'c' || k, repeat('An answer of some length. ', 15), 'model-' || k, '{}', k
FROM generate_series(1, %(prompts)s) n CROSS JOIN generate_series(0, 1) k;
SELECT setseed(0.42);
INSERT INTO labeling_promptstats (
    prompt_id, dataset_id, labels, agreement, consensus, min_margin, flags, safety_flags,
    is_gold, adjudicated, model_version, model_scores, model_contradiction, need, computed_at
)
SELECT p.id, p.dataset_id, 3, s.agreement, '[]', s.margin,
       (CASE WHEN s.flagged THEN '{"harmful_advice": 1}' ELSE '{}' END)::jsonb,
       CASE WHEN s.flagged THEN 1 ELSE 0 END, false, false, 1, '{}', s.contradiction,
       (1 - s.agreement) + 0.5 * (1 - s.margin) + CASE WHEN s.flagged THEN 1 ELSE 0 END
       + GREATEST(0, 2 * s.contradiction - 1),
       now()
FROM labeling_prompt p
CROSS JOIN LATERAL (  -- p.id makes it run per prompt, each with its own random()
    SELECT (round((random() * 3)::numeric) / 3)::float AS agreement,
           (round((random() * 3)::numeric) / 3)::float AS margin,
           random() < 0.05 AS flagged, random() AS contradiction, p.id AS seen
) s;
ANALYZE;
"""


def counted(seen: list[str], execute: Any, sql: str, *args: Any) -> Any:
    seen.append(sql)
    return execute(sql, *args)


def measure(prompts: int, renders: int) -> dict[str, Any]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from labeling.models import PromptStats

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for statement in FILL_SQL.split(";"):
            if statement.strip():
                cursor.execute(statement.replace("%(prompts)s", str(int(prompts))))
    fill_seconds = time.perf_counter() - started
    queued = PromptStats.objects.in_review_queue().count()
    first = PromptStats.objects.in_review_queue().values_list("prompt_id", flat=True).first()
    client = Client()
    client.force_login(get_user_model().objects.get(username="user1"))  # a superuser

    def timed(url: str) -> tuple[list[float], int, int]:
        times, queries = [], 0
        status = 0
        for i in range(renders + 1):
            seen: list[str] = []
            with connection.execute_wrapper(partial(counted, seen)):
                start = time.perf_counter()
                response = client.get(url)
                _ = response.content
                elapsed = time.perf_counter() - start
            status, queries = response.status_code, len(seen)
            if i:  # the first render warms templates and URL resolvers
                times.append(elapsed * 1000)
        return times, status, queries

    queue, queue_status, queue_queries = timed(f"/review/{SLUG}/")
    deep, deep_status, _ = timed(f"/review/{SLUG}/?page=1000")
    page, page_status, page_queries = timed(f"/review/{SLUG}/prompts/{first}/")
    return {
        "prompts": PromptStats.objects.count(),
        "fill_s": fill_seconds,
        "queued": queued,
        "status": [queue_status, deep_status, page_status],
        "queue_ms": statistics.median(queue),
        "queue_p95_ms": sorted(queue)[max(0, round(0.95 * len(queue)) - 1)],
        "queue_queries": queue_queries,
        "deep_ms": statistics.median(deep),
        "prompt_ms": statistics.median(page),
        "prompt_queries": page_queries,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--renders", type=int, default=30)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.prompts, args.renders)))
        return
    with tempfile.TemporaryDirectory(prefix="preflab_review_bench_") as data_dir:
        database = f"preflab_review_bench_{os.getpid()}"
        postgres_admin(f"CREATE DATABASE {database}")
        try:
            env = dict(os.environ, DATABASE_URL=f"{PG_SERVER}/{database}", PYTHONPATH=str(ROOT))
            env.update(PREFLAB_DATA_DIR=data_dir, DEBUG="false", LOG_LEVEL="WARNING")
            env.update(SECRET_KEY="review-bench-only", ALLOWED_HOSTS="testserver")
            done = subprocess.run(
                [
                    *(sys.executable, __file__, "--child"),
                    *("--prompts", str(args.prompts), "--renders", str(args.renders)),
                ],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
                check=True,
            )
        finally:
            postgres_admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["status"] == [200, 200, 200], r
    print(
        f"{r['prompts']:,} prompts, {r['queued']:,} in the queue (filled in {r['fill_s']:.1f} s)\n"
        f"queue page:  median {r['queue_ms']:.1f} ms, p95 {r['queue_p95_ms']:.1f} ms, "
        f"{r['queue_queries']} queries\n"
        f"page 1000:   median {r['deep_ms']:.1f} ms\n"
        f"review page: median {r['prompt_ms']:.1f} ms, {r['prompt_queries']} queries\n"
        f"load average: {os.getloadavg()[0]:.2f}"
    )
    verdict = "met" if r["queue_ms"] < TARGET_MS else "NOT met"
    print(f"target: queue page under {TARGET_MS} ms at {r['prompts']:,} prompts -> {verdict}")


if __name__ == "__main__":
    main()
