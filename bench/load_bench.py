"""Load benchmark: simulated labelers through the REST labeling loop of the production server.

Run from the repo root (loopback only; PostgreSQL at 127.0.0.1:5432, Redis at 127.0.0.1:6379):
    .venv/bin/python bench/load_bench.py                 # full: ~6 min build, ~10 min runs
    .venv/bin/python bench/load_bench.py --quick         # smoke run: small data, 5 s runs
    .venv/bin/python bench/load_bench.py --scenario big --labelers 1 16 --seconds 20 \
        --prompts-1m 100000
    .venv/bin/python bench/load_bench.py --repeat 3       # every run 3 times, targets on medians

What it does:
1. Drops and recreates the database `preflab_load_bench`, migrates it and fills it with SQL
   (COPY and INSERT ... SELECT generate_series, not the ORM), then VACUUM ANALYZE:
   - `history`: prompts of 2 completions labeled 3 times each, 1,000,000 assignments
     (`--history`) by 1,000 labelers, 9 in 10 submitted with their ranking and comparison,
     1 in 10 expired: the tables are as big as a busy installation's.
   - `hh-2312`: 2,312 prompts shaped like real data: each of the 1,156 Anthropic HH pairs in
     ../shared/data/hh_harmless_dev.jsonl.gz (synthetic text if absent) twice, with its 2
     replies, so a ranking gives one pair, as in HH: the hardest shape for CPU per pair.
   - `prompts-1m`: 1,000,000 prompts (`--prompts-1m`), 2 and 4 completions alternately.
   All three rate helpful, honest and harmless, with labels_per_prompt 3 and no gold. The
   simulated labelers are the first history labelers, each with their DRF token.
2. Starts the app as production does: the gunicorn command of the Makefile's `serve-web` (read
   with `make -n`, so a stale install stamp cannot run pip), DEBUG off, on 127.0.0.1:8790, the
   cache in Redis db 12, the API throttle raised to 100000/second so nothing is throttled.
3. For each scenario (`small`: hh-2312, `big`: prompts-1m) and each number of labelers
   (1, 16, 32, 64), runs the labelers for 60 s (`--seconds`), each a thread with its own
   http.client connection and zero think time: next-task, then a valid ranking (a random order,
   ratings for each criterion, a strength for two completions, a fresh request_id), again.
   Every run starts equal: the dataset's assignments, rankings and comparisons are deleted
   (and its prompts' slot counts zeroed) before it.
4. Prints per run: pairs/s (the `comparisons` of each 201), next-task and submit latency
   p50/p95/p99, errors, and CPU per pair from /proc. App: the gunicorn master and workers,
   with the workers --max-requests recycled. PostgreSQL: the backends, parallel and autovacuum
   workers of the bench database, and the cluster's shared background processes (postmaster,
   checkpointer, background and WAL writers), read every 0.5 s so processes that end mid-run
   count; other databases' processes do not. This 2-core machine is shared, so the client's
   CPU and what everything else used are shown too. After each run SQL checks that no prompt
   holds more than labels_per_prompt slots or rankings, that no labeler was given a prompt
   twice, that the maintained slot count (if the schema has one) matches the assignments, and
   that the rankings and comparisons stored are those the client was told of.
5. Before the big runs, prints EXPLAIN (ANALYZE, BUFFERS) of the candidate query that next-task
   runs, captured from `lease_next_assignment` in a rolled-back transaction.

Targets (2-core machine): at 16 labelers at most 20 ms of CPU (app + PostgreSQL) per labeled
pair; next-task p50 under 10 ms at 1 labeler on prompts-1m; at 32 labelers at least 80 pairs/s
with next-task p99 under 300 ms. Every loop is bounded in count and time, and the server is
stopped (its process group) on Ctrl-C and on errors.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import http.client
import json
import math
import os
import pwd
import random
import re
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HH_FILE = ROOT.parent / "shared" / "data" / "hh_harmless_dev.jsonl.gz"
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
DATABASE = "preflab_load_bench"
HOST, PORT = "127.0.0.1", 8790
REDIS = "redis://127.0.0.1:6379"
CACHE_DB, BROKER_DB = 12, 11  # .ci/run uses 13-15
HISTORY, SMALL, BIG = "history", "hh-2312", "prompts-1m"
SCENARIOS = {"small": SMALL, "big": BIG}
HISTORY_LABELERS = 1_000
LABELS_PER_PROMPT = 3
CRITERIA = ["helpful", "honest", "harmless"]
PROMPT_COLUMNS = (
    "id, external_id, messages, metadata, content_hash, is_gold, created_at, dataset_id"
)

TARGET_CPU_MS_PER_PAIR, TARGET_CPU_LABELERS = 20.0, 16
TARGET_NEXT_P50_MS, TARGET_NEXT_P50_LABELERS = 10.0, 1
TARGET_PAIRS_PER_S, TARGET_NEXT_P99_MS, TARGET_THROUGHPUT_LABELERS = 80.0, 300.0, 32

REQUEST_TIMEOUT = 30.0  # seconds a request may take before the labeler counts an error
MAX_TASKS_PER_SECOND = 200  # a labeler's loop ends after seconds x this many tasks at most
SERVER_START_SECONDS = 90
SERVER_STOP_SECONDS = 40
TICKS = os.sysconf("SC_CLK_TCK")

FULL = {"seconds": 60.0, "labelers": [1, 16, 32, 64], "prompts_1m": 1_000_000, "history": 1_000_000}
QUICK = {"seconds": 5.0, "labelers": [1, 16], "prompts_1m": 20_000, "history": 30_000}


# --- Building the database -------------------------------------------------------------------


def admin_sql(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def unfilled_defaults(cur: Any, table: str, filled: list[str]) -> dict[str, Any]:
    """The model's defaults for the NOT NULL columns of `table` this bench does not fill (fields
    added after it was written, such as a maintained counter), so its inserts keep working."""
    from django.apps import apps
    from django.db import connection

    cur.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
        "AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'",
        [table],
    )
    missing = [name for (name,) in cur.fetchall() if name not in filled]
    models = apps.get_models(include_auto_created=True)  # with many-to-many tables
    model = next(m for m in models if m._meta.db_table == table)
    fields = {f.column: f for f in model._meta.concrete_fields}
    return {
        name: fields[name].get_db_prep_save(fields[name].get_default(), connection)
        for name in missing
    }


def insert_select(cur: Any, table: str, columns: str, select: str, **params: Any) -> int:
    """INSERT INTO table (columns) SELECT ...: `select` gives the values of `columns` (names
    separated by commas) up to the word FROM; the columns this bench does not know get their
    model defaults."""
    filled = columns.split(", ")
    extra = unfilled_defaults(cur, table, filled)
    names = ", ".join(f'"{name}"' for name in [*filled, *extra])
    values, rest = select.split(" FROM ", 1)
    values += "".join(f", %(default_{name})s" for name in extra)
    params.update({f"default_{name}": value for name, value in extra.items()})
    cur.execute(f"INSERT INTO {table} ({names}) {values} FROM {rest}", params)
    return int(cur.rowcount)


def copy_rows(cur: Any, table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
    filled = columns.split(", ")
    extra = unfilled_defaults(cur, table, filled)
    names = ", ".join(f'"{name}"' for name in [*filled, *extra])
    with cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row((*row, *extra.values()))


def move_sequences(cur: Any, *tables: str) -> None:
    """After rows were given their ids, let the id sequences continue above them."""
    for table in tables:
        cur.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"GREATEST(1, (SELECT MAX(id) FROM {table})))"
        )


def has_column(cur: Any, table: str, column: str) -> bool:
    cur.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s",
        [table, column],
    )
    return cur.fetchone() is not None


def hh_prompts() -> tuple[list[tuple[list[dict[str, str]], list[str]]], str]:
    """The small dataset's 2,312 prompts as (messages, completion texts), and where they came
    from: each HH pair twice, with its 2 replies."""
    pairs: list[tuple[list[dict[str, str]], str, str]] = []
    if HH_FILE.exists():
        source = f"{HH_FILE.name} (real HH dialogues)"
        with gzip.open(HH_FILE, "rt", encoding="utf-8") as file:
            for line in file:
                row = json.loads(line)
                prefix, chosen = row["chosen"].rsplit("\n\nAssistant:", 1)
                rejected = row["rejected"].rsplit("\n\nAssistant:", 1)[1]
                # The prompt is the chosen dialogue's prefix (a few pairs differ before it).
                turns = re.split(r"\n\n(Human|Assistant):", prefix)[1:]
                messages = [
                    {"role": "user" if who == "Human" else "assistant", "content": text.strip()}
                    for who, text in zip(turns[::2], turns[1::2], strict=True)
                ]
                pairs.append((messages, chosen.strip(), rejected.strip()))
    else:
        source = "synthetic text (the HH file is absent)"
        rng = random.Random(7)
        words = ["the", "a", "model", "answer", "question", "user", "data", "why", "help"]
        texts = [" ".join(rng.choices(words, k=60)) for _ in range(2 * 1_156)]
        for i in range(1_156):
            messages = [{"role": "user", "content": f"Question {i}: {texts[2 * i][:150]}"}]
            pairs.append((messages, texts[2 * i], texts[2 * i + 1]))
    # Twice each, the replies in both orders: 2 completions a prompt, one pair a ranking, as in
    # HH and most preference data. It is the hardest shape for CPU per pair.
    prompts = []
    for messages, chosen, rejected in pairs:
        prompts.append((messages, [chosen, rejected]))
        prompts.append((messages, [rejected, chosen]))
    return prompts, source


def build_database(
    args: argparse.Namespace, env: dict[str, str]
) -> tuple[dict[str, int], list[str]]:
    """Create, migrate and fill the bench database; return the datasets' ids by slug and the
    simulated labelers' tokens."""
    import psycopg

    admin_sql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    admin_sql(f"CREATE DATABASE {DATABASE}")
    started = time.perf_counter()
    manage = [sys.executable, "manage.py", "migrate", "--noinput", "-v0"]
    subprocess.run(manage, cwd=ROOT, env=env, check=True, timeout=600)
    print(f"migrated in {time.perf_counter() - started:.1f}s", flush=True)
    labelers = max(HISTORY_LABELERS, max(args.labelers))
    with psycopg.connect(env["DATABASE_URL"]) as conn, conn.cursor() as cur:
        # Foreign keys unchecked while filling (no triggers fire): the rows are consistent by
        # construction, and Django's deferred checks of 10M references took most of the build.
        cur.execute("SET session_replication_role = replica")
        cur.execute("SET synchronous_commit = off")
        step = time.perf_counter()
        insert_select(
            cur,
            "auth_user",
            "id, password, is_superuser, username, first_name, last_name, email, is_staff, "
            "is_active, date_joined",
            "SELECT i, '!', false, 'labeler' || lpad(i::text, 4, '0'), '', '', '', false, true, "
            "now() - interval '200 days' FROM generate_series(1, %(n)s) i",
            n=labelers,
        )
        tokens = [secrets.token_hex(20) for _ in range(max(args.labelers))]
        rows = [(key, user, "now") for user, key in enumerate(tokens, start=1)]
        copy_rows(cur, "authtoken_token", "key, user_id, created", rows)
        move_sequences(cur, "auth_user")
        datasets = {HISTORY: 1, SMALL: 2, BIG: 3}
        fill_datasets(cur, datasets)
        pool_everyone(cur, labelers, list(datasets.values()))
        conn.commit()
        history = fill_history(cur, args.history, labelers)
        conn.commit()
        print(
            f"{HISTORY}: {history:,} assignments on {history // LABELS_PER_PROMPT:,} prompts by "
            f"{labelers:,} labelers in {time.perf_counter() - step:.0f}s",
            flush=True,
        )
        step = time.perf_counter()
        prompts, source = fill_small(cur)
        conn.commit()
        print(
            f"{SMALL}: {prompts:,} prompts from {source}, 2 completions each (1 pair a "
            f"ranking) in {time.perf_counter() - step:.1f}s",
            flush=True,
        )
        if "big" in args.scenario:
            step = time.perf_counter()
            completions = fill_big(cur, args.prompts_1m)
            conn.commit()
            print(
                f"{BIG}: {args.prompts_1m:,} prompts, {completions:,} completions (2 and 4 "
                f"alternately) in {time.perf_counter() - step:.0f}s",
                flush=True,
            )
    step = time.perf_counter()
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        conn.execute("CHECKPOINT")  # so the checkpointer does not write the build during a run
    print(
        f"every dataset: labels_per_prompt {LABELS_PER_PROMPT}, rates {', '.join(CRITERIA)}, "
        "no gold; the labelers are history labelers with a token"
    )
    print(
        f"VACUUM ANALYZE and CHECKPOINT in {time.perf_counter() - step:.0f}s; built in "
        f"{time.perf_counter() - started:.0f}s",
        flush=True,
    )
    return datasets, tokens


def fill_datasets(cur: Any, datasets: dict[str, int]) -> None:
    """The datasets (slug: id) and their HHH criteria: rows from migration 0017 on, a JSON
    list before it."""
    criteria_rows = not has_column(cur, "labeling_dataset", "criteria")
    shared = (LABELS_PER_PROMPT, 0.0, "active", "now")
    copy_rows(
        cur,
        "labeling_dataset",
        "id, name, slug, description, guidelines, guidelines_version, "
        "labels_per_prompt, gold_rate, status, created_at"
        + ("" if criteria_rows else ", criteria"),
        [
            (pk, slug, slug, "", "Rank best first.", 1, *shared)
            + (() if criteria_rows else (json.dumps(CRITERIA),))
            for slug, pk in datasets.items()
        ],
    )
    move_sequences(cur, "labeling_dataset")
    if criteria_rows:
        copy_rows(
            cur,
            "labeling_ratingcriterion",
            "id, key, label, description, scale_min, scale_max, min_label, max_label, "
            "position, dataset_id",
            [
                (3 * (pk - 1) + c + 1, key, key.capitalize(), "", 1, 7, "", "", c, pk)
                for pk in datasets.values()
                for c, key in enumerate(CRITERIA)
            ],
        )
        move_sequences(cur, "labeling_ratingcriterion")


def pool_everyone(cur: Any, labelers: int, datasets: list[int]) -> None:
    """The labelers are members of the datasets' workspace (the default one) and in a group in
    every dataset's pool, as `make run`'s are: a dataset is offered to its pool only."""
    cur.execute("SELECT workspace_id FROM labeling_dataset WHERE id = %s", [datasets[0]])
    (workspace,) = cur.fetchone()
    insert_select(
        cur,
        "labeling_membership",
        "workspace_id, user_id, role, created_at",
        "SELECT %(workspace)s, i, 'labeler', now() FROM generate_series(1, %(n)s) i",
        workspace=workspace,
        n=labelers,
    )
    cur.execute(
        "INSERT INTO labeling_labelergroup (workspace_id, name) VALUES (%s, 'Bench labelers') "
        "RETURNING id",
        [workspace],
    )
    (group,) = cur.fetchone()
    insert_select(
        cur,
        "labeling_labelergroup_members",
        "labelergroup_id, user_id",
        "SELECT %(group)s, i FROM generate_series(1, %(n)s) i",
        group=group,
        n=labelers,
    )
    rows = [(dataset, group) for dataset in datasets]
    copy_rows(cur, "labeling_dataset_pool_groups", "dataset_id, labelergroup_id", rows)


def fill_history(cur: Any, assignments: int, labelers: int) -> int:
    """Prompts i = 1..n of 2 completions (ids 2i-1, 2i), each given to 3 labelers; assignment,
    ranking and comparison ids are shared, so they are easy to join."""
    n = -(-assignments // LABELS_PER_PROMPT)
    insert_select(
        cur,
        "labeling_prompt",
        PROMPT_COLUMNS,
        "SELECT i, 'h' || i, jsonb_build_array(jsonb_build_object('role', 'user', 'content', "
        "'Earlier question ' || i || ': ' || md5(i::text) || ' ' || md5((-i)::text))), '{}', "
        "md5(i::text) || md5((-i)::text), false, now() - interval '10 seconds' * (%(n)s - i), 1 "
        "FROM generate_series(1, %(n)s) i",
        n=n,
    )
    insert_select(
        cur,
        "labeling_completion",
        "id, external_id, text, model_name, metadata, position, prompt_id",
        "SELECT 2 * i - 1 + k, chr(97 + k), 'Earlier reply ' || k || ': ' || "
        "repeat(md5((2 * i + k)::text) || ' ', 4), 'model-' || k, '{}', k, i "
        "FROM generate_series(1, %(n)s) i, generate_series(0, 1) k",
        n=n,
    )
    done = insert_select(
        cur,
        "labeling_assignment",
        "id, status, leased_at, expires_at, finished_at, skip_reason, labeler_id, prompt_id",
        "SELECT 3 * (i - 1) + k + 1, CASE WHEN (3 * (i - 1) + k) %% 10 = 9 THEN 'expired' "
        "ELSE 'submitted' END, t, t + interval '30 minutes', CASE WHEN (3 * (i - 1) + k) %% 10 "
        "= 9 THEN NULL ELSE t + interval '40 seconds' END, '', (3 * i + k) %% %(labelers)s + 1, i "
        "FROM generate_series(1, %(n)s) i, generate_series(0, 2) k, "
        "LATERAL (SELECT now() - interval '10 seconds' * (%(n)s - i) AS t) times",
        n=n,
        labelers=labelers,
    )
    fill_history_rankings(cur)
    insert_select(
        cur,
        "labeling_comparison",
        "id, margin, strength, created_at, labeler_id, chosen_id, rejected_id, dataset_id, "
        "prompt_id, ranking_id",
        "SELECT r.id, 1, 'better', r.created_at, r.labeler_id, (r.\"order\" -> 0 ->> 0)::bigint, "
        '(r."order" -> 1 ->> 0)::bigint, r.dataset_id, r.prompt_id, r.id '
        "FROM labeling_ranking r",
    )
    if has_column(cur, "labeling_prompt", "slots_taken"):
        # The leasing's maintained count of label slots held (live leases and submissions).
        cur.execute(
            "UPDATE labeling_prompt p SET slots_taken = held.n FROM (SELECT prompt_id, count(*) "
            "AS n FROM labeling_assignment WHERE status IN ('leased', 'submitted') "
            "GROUP BY prompt_id) held WHERE p.id = held.prompt_id"
        )
    move_sequences(
        cur,
        "labeling_prompt",
        "labeling_completion",
        "labeling_assignment",
        "labeling_ranking",
        "labeling_comparison",
    )
    return done


def fill_history_rankings(cur: Any) -> None:
    """A ranking of each submitted history assignment, its completions rated on the criteria."""
    ratings = {"helpful": 5, "honest": 6, "harmless": 4}
    as_json = has_column(cur, "labeling_ranking", "ratings")  # rows from migration 0019 on
    insert_select(
        cur,
        "labeling_ranking",
        "id, order, flags, all_unacceptable, rationale, seconds_spent, "
        "guidelines_version, request_id, created_at, assignment_id, dataset_id, labeler_id, "
        "prompt_id" + (", ratings" if as_json else ""),
        "SELECT a.id, jsonb_build_array(jsonb_build_array(win), jsonb_build_array(lose)), "
        "'{}', false, '', 30.0, 1, md5('ranking' || a.id)::uuid, a.finished_at, a.id, 1, "
        "a.labeler_id, a.prompt_id"
        + (
            ", jsonb_build_object(win::text, %(ratings)s::jsonb, lose::text, %(ratings)s::jsonb)"
            if as_json
            else ""
        )
        + " FROM labeling_assignment a, LATERAL (SELECT "
        "2 * a.prompt_id - 1 + a.id %% 2 AS win, 2 * a.prompt_id - a.id %% 2 AS lose) pair "
        "WHERE a.status = 'submitted'",
        ratings=json.dumps(ratings),
    )
    if not as_json:  # each completion of each ranking rated on the history dataset's criteria
        insert_select(
            cur,
            "labeling_rating",
            "id, value, completion_id, criterion_id, ranking_id",
            "SELECT 6 * (r.id - 1) + 3 * k + c, (%(values)s::int[])[c], "
            "2 * r.prompt_id - 1 + k, c, r.id "
            "FROM labeling_ranking r, generate_series(0, 1) k, generate_series(1, 3) c",
            values=[ratings[key] for key in CRITERIA],
        )
        move_sequences(cur, "labeling_rating")


def fill_small(cur: Any) -> tuple[int, str]:
    prompts, source = hh_prompts()
    cur.execute("SELECT MAX(id) FROM labeling_prompt")
    first = (cur.fetchone()[0] or 0) + 1
    prompt_rows, completion_rows = [], []
    for offset, (messages, texts) in enumerate(prompts):
        pk = first + offset
        digest = hashlib.sha256(json.dumps([messages, texts]).encode()).hexdigest()
        external_id = f"hh-{offset // 2}-{offset % 2}"
        prompt_rows.append((pk, external_id, json.dumps(messages), "{}", digest, False, "now", 2))
        for position, text in enumerate(texts):
            completion_rows.append(("abcd"[position], text, "", "{}", position, pk))
    copy_rows(
        cur,
        "labeling_prompt",
        PROMPT_COLUMNS,
        prompt_rows,
    )
    copy_rows(
        cur,
        "labeling_completion",
        "external_id, text, model_name, metadata, position, prompt_id",
        completion_rows,
    )
    move_sequences(cur, "labeling_prompt", "labeling_completion")
    return len(prompts), source


def fill_big(cur: Any, prompts: int) -> int:
    cur.execute("SELECT MAX(id) FROM labeling_prompt")
    base = cur.fetchone()[0] or 0
    insert_select(
        cur,
        "labeling_prompt",
        PROMPT_COLUMNS,
        "SELECT %(base)s + i, 'q' || i, jsonb_build_array(jsonb_build_object('role', 'user', "
        "'content', 'Question ' || i || ': ' || repeat(md5(i::text) || ' ', 3))), '{}', "
        "md5(i::text) || md5((i + 1)::text), false, now(), 3 "
        "FROM generate_series(1, %(n)s) i",
        base=base,
        n=prompts,
    )
    completions = insert_select(
        cur,
        "labeling_completion",
        "external_id, text, model_name, metadata, position, prompt_id",
        "SELECT chr(97 + k), 'Reply ' || chr(97 + k) || ' to question ' || i || ': ' || "
        "repeat(md5((4 * i + k)::text) || ' ', 5), 'model-' || k, '{}', k, %(base)s + i "
        "FROM generate_series(1, %(n)s) i, "
        "LATERAL generate_series(0, CASE WHEN i %% 2 = 0 THEN 3 ELSE 1 END) k",
        base=base,
        n=prompts,
    )
    move_sequences(cur, "labeling_prompt", "labeling_completion")
    return completions


def reset_dataset(url: str, dataset_id: int) -> None:
    """Delete the dataset's labeling state, so each run starts from the same unlabeled data."""
    import psycopg

    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM labeling_comparison WHERE dataset_id = %s", [dataset_id])
        if has_column(cur, "labeling_rating", "ranking_id"):  # ratings are rows from 0019 on
            cur.execute(
                "DELETE FROM labeling_rating WHERE ranking_id IN "
                "(SELECT id FROM labeling_ranking WHERE dataset_id = %s)",
                [dataset_id],
            )
        cur.execute("DELETE FROM labeling_ranking WHERE dataset_id = %s", [dataset_id])
        cur.execute(
            "DELETE FROM labeling_assignment WHERE prompt_id IN "
            "(SELECT id FROM labeling_prompt WHERE dataset_id = %s)",
            [dataset_id],
        )
        if has_column(cur, "labeling_prompt", "slots_taken"):
            cur.execute(
                "UPDATE labeling_prompt SET slots_taken = 0 "
                "WHERE dataset_id = %s AND slots_taken <> 0",
                [dataset_id],
            )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "VACUUM (ANALYZE) labeling_comparison, labeling_ranking, labeling_assignment, "
            "labeling_prompt"
        )
        conn.execute("CHECKPOINT")


# --- The server ------------------------------------------------------------------------------


def server_environment(data_dir: str, workers: int | None) -> dict[str, str]:
    env = dict(
        os.environ,
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS=f"{HOST},localhost",
        DATABASE_URL=f"{PG_SERVER}/{DATABASE}",
        CACHE_URL=f"{REDIS}/{CACHE_DB}",
        CELERY_BROKER_URL=f"{REDIS}/{BROKER_DB}",
        PREFLAB_DATA_DIR=data_dir,
        STATIC_ROOT=str(Path(data_dir) / "static"),
        HOST=HOST,
        PORT=str(PORT),
        # Per second, not per minute: a throttle's history is every request in its window,
        # and zero think time would make it thousands long, which no real labeler reaches.
        PREFLAB_API_RATE="100000/second",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    if workers:
        env["WEB_CONCURRENCY"] = str(workers)
    return env


def start_server(env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    """gunicorn as `make serve-web` starts it, in its own process group, once it answers."""
    collect = [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"]
    subprocess.run(collect, cwd=ROOT, env=env, check=True, timeout=300)
    plan = subprocess.run(
        ["make", "-n", "-s", "--no-print-directory", "serve-web"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    web = next(line for line in plan.splitlines() if "gunicorn config.wsgi" in line)
    print(f"server: {web}", flush=True)
    server = subprocess.Popen(
        ["sh", "-c", f"exec {web}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited at start ({server.returncode})")
        try:
            connection = http.client.HTTPConnection(HOST, PORT, timeout=5)
            connection.request("GET", "/healthz?only=database", headers={"Host": HOST})
            if connection.getresponse().status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"the server did not answer within {SERVER_START_SECONDS}s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the whole process group, SIGKILL to what is left after the graceful timeout."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + SERVER_STOP_SECONDS
    while time.monotonic() < deadline:
        server.poll()
        try:
            os.killpg(server.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=10)


# --- CPU from /proc --------------------------------------------------------------------------


@dataclass
class Process:
    pid: int
    ppid: int
    started: int  # clock ticks after boot: with the pid, names one process even if pids recur
    title: str
    own_cpu: float  # seconds (utime + stime)
    cpu: float  # seconds, with its reaped children's (+ cutime + cstime)


def processes(uid: int | None = None) -> list[Process]:
    """The machine's processes, or those of one user, from /proc."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if uid is not None and entry.stat().st_uid != uid:
                continue
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            title = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:  # it ended while we looked
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is stat's field 3
        ticks = [int(n) for n in fields[11:15]]  # utime, stime, cutime, cstime
        found.append(
            Process(
                pid=int(entry.name),
                ppid=int(fields[1]),
                started=int(fields[19]),
                title=title.decode(errors="replace").strip(),
                own_cpu=(ticks[0] + ticks[1]) / TICKS,
                cpu=sum(ticks) / TICKS,
            )
        )
    return found


def process_database(title: str) -> str | None:
    """The database a PostgreSQL process works for, from its title: client backends
    ("postgres: 15/main: user database 127.0.0.1(5432) idle") and autovacuum workers
    ("postgres: 15/main: autovacuum worker database"); None for the shared background
    processes. A parallel worker's is its leader's: "parallel worker for PID 123"."""
    words = title.split()
    if words[:1] == ["postgres:"]:
        words = words[1:]
    if words and words[0].endswith(":"):  # the cluster's name
        words = words[1:]
    if words[:2] == ["autovacuum", "worker"] and len(words) >= 3:
        return words[2]
    if len(words) >= 3 and ("(" in words[2] or words[2] == "[local]"):
        return words[1]
    return None


class PostgresMeter(threading.Thread):
    """CPU of the PostgreSQL processes that work for the bench: the backends, parallel workers
    and autovacuum workers of its database ("database"), and the cluster's shared background
    processes (postmaster, checkpointer, background and WAL writers, launchers: "shared"), not
    other databases' processes. Read from /proc every SAMPLE_SECONDS while a run lasts, so a
    process that ends during it (a recycled gunicorn worker's connection) counts up to its last
    reading: the postmaster's total of reaped children would mix in the short-lived backends of
    whoever else uses the cluster."""

    SAMPLE_SECONDS = 0.5

    def __init__(self, max_seconds: float) -> None:
        super().__init__(daemon=True)
        self.uid = pwd.getpwnam("postgres").pw_uid
        self.max_samples = int(max_seconds / self.SAMPLE_SECONDS) + 1
        self.done = threading.Event()
        self.first: dict[tuple[int, int], float] = {}
        self.last: dict[tuple[int, int], float] = {}
        self.kind: dict[tuple[int, int], str] = {}
        self.read(first=True)

    def read(self, first: bool = False) -> None:
        found = processes(self.uid)
        databases = {process.pid: process_database(process.title) for process in found}
        for process in found:
            database = databases[process.pid]
            if leader := re.search(r"parallel worker for PID (\d+)", process.title):
                database = databases.get(int(leader[1]), "(ended)")
            if database not in (None, DATABASE):
                continue
            key = (process.pid, process.started)
            if first:
                self.first[key] = process.own_cpu
            self.last[key] = process.own_cpu
            self.kind[key] = "shared" if database is None else "database"

    def run(self) -> None:
        for _ in range(self.max_samples):
            if self.done.wait(self.SAMPLE_SECONDS):
                break
            self.read()

    def finish(self) -> dict[str, float]:
        """Seconds of CPU of the "database" and "shared" processes since the meter started."""
        self.done.set()
        self.join(timeout=5)
        self.read()
        used = {"database": 0.0, "shared": 0.0}
        for key, cpu in self.last.items():  # a process started during the run counts whole
            used[self.kind[key]] += cpu - self.first.get(key, 0.0)
        return used


@dataclass
class CpuSample:
    app: float  # the gunicorn master and workers, with the workers it reaped
    app_pids: set[int]
    client: float  # this process: the labelers' threads and the meter
    machine_busy: float
    machine_total: float


def sample_cpu(server_pid: int) -> CpuSample:
    found = processes()
    by_pid = {process.pid: process for process in found}
    children: defaultdict[int, list[int]] = defaultdict(list)
    for process in found:
        children[process.ppid].append(process.pid)
    tree: set[int] = set()
    todo = [server_pid]
    while todo and len(tree) < 10_000:
        pid = todo.pop()
        if pid in by_pid and pid not in tree:
            tree.add(pid)
            todo.extend(children[pid])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
    return CpuSample(
        app=sum(by_pid[pid].cpu for pid in tree),
        app_pids=tree,
        client=usage.ru_utime + usage.ru_stime,
        machine_busy=busy / TICKS,
        machine_total=(busy + ticks[3] + ticks[4]) / TICKS,
    )


# --- Simulated labelers ----------------------------------------------------------------------


@dataclass
class Labeler:
    token: str
    seed: int
    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    rankings: int = 0
    pairs: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    out_of_work: bool = False
    seen: dict[int, int] = field(default_factory=dict)  # prompt (lowest completion id): assignment
    repeats: int = 0

    def call(
        self, connection: http.client.HTTPConnection, path: str, body: Any, times: list[float]
    ) -> tuple[int, Any]:
        """POST; (status, JSON body). 0 when the connection failed; errors are recorded."""
        data = json.dumps(body).encode() if body is not None else b""
        headers = {"Host": HOST, "Authorization": f"Token {self.token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        start = time.perf_counter()
        try:
            connection.request("POST", path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as error:
            connection.close()  # the next request reconnects
            self.error(type(error).__name__, str(error))
            return 0, None
        times.append(1000 * (time.perf_counter() - start))
        if response.status not in (200, 201, 204):
            self.error(f"HTTP {response.status}", raw[:300].decode(errors="replace"))
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, None

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.samples) < 3:
            text = " ".join(re.sub(r"<[^>]*>", " ", detail).split())  # an HTML page on one line
            self.samples.append(f"{kind}: {text[:200]}")

    def label(self, slug: str, deadline: float, max_tasks: int) -> None:
        rng = random.Random(self.seed)
        connection = http.client.HTTPConnection(HOST, PORT, timeout=REQUEST_TIMEOUT)
        try:
            for _ in range(max_tasks):
                if time.monotonic() >= deadline:
                    break
                status, task = self.call(
                    connection, f"/api/v1/datasets/{slug}/next-task/", None, self.next_ms
                )
                if status == 204:
                    self.out_of_work = True
                    break
                if status != 200 or not task:
                    continue
                ids = [completion["id"] for completion in task["completions"]]
                prompt = min(ids)  # completion ids belong to one prompt
                if self.seen.setdefault(prompt, task["assignment"]) != task["assignment"]:
                    self.repeats += 1
                status, ranking = self.call(
                    connection,
                    f"/api/v1/assignments/{task['assignment']}/ranking/",
                    self.ranking(task, ids, rng),
                    self.submit_ms,
                )
                if status == 201 and ranking:
                    self.rankings += 1
                    self.pairs += int(ranking["comparisons"])
        finally:
            connection.close()

    @staticmethod
    def rate(task: dict[str, Any], rng: random.Random) -> dict[str, int]:
        """A value on each criterion's scale (a task lists keys before migration 0014)."""
        scales = [
            (c["key"], c["scale_min"], c["scale_max"]) if isinstance(c, dict) else (c, 1, 7)
            for c in task["criteria"]
        ]
        return {key: rng.randint(low, high) for key, low, high in scales}

    @staticmethod
    def ranking(task: dict[str, Any], ids: list[int], rng: random.Random) -> dict[str, Any]:
        order = rng.sample(ids, len(ids))
        body: dict[str, Any] = {
            "order": [[completion] for completion in order],
            "ratings": {str(completion): Labeler.rate(task, rng) for completion in ids},
            "flags": {},
            "request_id": str(uuid.uuid4()),
            "seconds_spent": round(rng.uniform(5, 60), 1),
        }
        if len(ids) == 2:
            body["strength"] = rng.choice(task["strength_levels"])
        return body


def warm_up(tokens: list[str], slug: str, requests: int = 40) -> None:
    """Every gunicorn worker imports the views and opens its database connection."""
    for i in range(requests):
        connection = http.client.HTTPConnection(HOST, PORT, timeout=REQUEST_TIMEOUT)
        headers = {"Host": HOST, "Authorization": f"Token {tokens[i % len(tokens)]}"}
        connection.request("GET", f"/api/v1/datasets/{slug}/", headers=headers)
        connection.getresponse().read()
        connection.close()


# --- One run ---------------------------------------------------------------------------------


@dataclass
class Run:
    dataset: str
    labelers: int
    seconds: float
    rankings: int
    pairs: int
    next_ms: list[float]
    submit_ms: list[float]
    errors: Counter[str]
    samples: list[str]
    out_of_work: int
    complete: int  # prompts all their labelers ranked
    partial: int  # prompts some ranked: closest to complete first keeps them few
    before: CpuSample
    after: CpuSample
    postgres: dict[str, float]  # CPU seconds of "database" and "shared" (PostgresMeter)
    checks: list[tuple[str, int, bool]]

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds

    @property
    def app_cpu(self) -> float:
        return self.after.app - self.before.app

    @property
    def postgres_cpu(self) -> float:
        return sum(self.postgres.values())

    @property
    def recycled_workers(self) -> int:
        """gunicorn workers that ended during the run (--max-requests)."""
        return len(self.before.app_pids - self.after.app_pids)

    @property
    def ms_per_pair(self) -> float:
        return 1000 * (self.app_cpu + self.postgres_cpu) / self.pairs if self.pairs else math.inf


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p95, p99 by nearest rank."""
    if not values:
        return math.nan, math.nan, math.nan
    ordered = sorted(values)

    def at(share: float) -> float:
        return ordered[max(0, math.ceil(share * len(ordered)) - 1)]

    return at(0.50), at(0.95), at(0.99)


def run_labelers(
    slug: str, tokens: list[str], seconds: float, server_pid: int
) -> tuple[list[Labeler], float, CpuSample, CpuSample, dict[str, float]]:
    labelers = [Labeler(token, seed=i) for i, token in enumerate(tokens)]
    max_tasks = int(seconds * MAX_TASKS_PER_SECOND)
    join_seconds = 2 * REQUEST_TIMEOUT + 5  # a request in flight at the deadline may finish
    meter = PostgresMeter(max_seconds=seconds + join_seconds + 10)
    meter.start()
    before = sample_cpu(server_pid)
    start = time.perf_counter()
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(target=labeler.label, args=(slug, deadline, max_tasks), daemon=True)
        for labeler in labelers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + join_seconds)
    elapsed = time.perf_counter() - start
    after = sample_cpu(server_pid)
    postgres = meter.finish()
    if any(thread.is_alive() for thread in threads):
        print(f"  ({sum(t.is_alive() for t in threads)} labelers still busy, left behind)")
    return labelers, elapsed, before, after, postgres


def check_dataset(
    url: str, dataset_id: int, rankings: int, pairs: int
) -> tuple[list[tuple[str, int, bool]], int, int]:
    """(what, how many, passed) of the invariants, read from the database after a run, and how
    many prompts all their labelers ranked and how many only some."""
    import psycopg

    queries = {
        "prompts holding more slots than labels_per_prompt": (
            "SELECT count(*) FROM (SELECT p.id FROM labeling_prompt p "
            "JOIN labeling_dataset d ON d.id = p.dataset_id "
            "JOIN labeling_assignment a ON a.prompt_id = p.id "
            "WHERE p.dataset_id = %(d)s AND NOT p.is_gold AND a.status IN ('leased', 'submitted') "
            "GROUP BY p.id, d.labels_per_prompt HAVING count(*) > d.labels_per_prompt) x"
        ),
        "prompts with more rankings than labels_per_prompt": (
            "SELECT count(*) FROM (SELECT r.prompt_id FROM labeling_ranking r "
            "JOIN labeling_prompt p ON p.id = r.prompt_id "
            "JOIN labeling_dataset d ON d.id = r.dataset_id "
            "WHERE r.dataset_id = %(d)s AND NOT p.is_gold "
            "GROUP BY r.prompt_id, d.labels_per_prompt HAVING count(*) > d.labels_per_prompt) x"
        ),
        "(prompt, labeler) pairs with two assignments": (
            "SELECT count(*) FROM (SELECT a.prompt_id FROM labeling_assignment a "
            "JOIN labeling_prompt p ON p.id = a.prompt_id WHERE p.dataset_id = %(d)s "
            "GROUP BY a.prompt_id, a.labeler_id HAVING count(*) > 1) x"
        ),
        "(prompt, labeler) pairs with two rankings": (
            "SELECT count(*) FROM (SELECT prompt_id FROM labeling_ranking WHERE dataset_id = %(d)s "
            "GROUP BY prompt_id, labeler_id HAVING count(*) > 1) x"
        ),
        "rankings stored but not acknowledged (or the reverse)": (
            "SELECT abs(count(*) - %(rankings)s) FROM labeling_ranking WHERE dataset_id = %(d)s"
        ),
        "comparisons stored but not acknowledged (or the reverse)": (
            "SELECT abs(count(*) - %(pairs)s) FROM labeling_comparison WHERE dataset_id = %(d)s"
        ),
    }
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        if has_column(cur, "labeling_prompt", "slots_taken"):
            queries["prompts whose slots_taken differs from their assignments"] = (
                "SELECT count(*) FROM labeling_prompt p LEFT JOIN (SELECT a.prompt_id, count(*) "
                "AS n FROM labeling_assignment a JOIN auth_user u ON u.id = a.labeler_id "
                "WHERE u.is_active AND a.status IN ('leased', 'submitted') GROUP BY a.prompt_id) "
                "held ON held.prompt_id = p.id "
                "WHERE p.dataset_id = %(d)s AND p.slots_taken <> coalesce(held.n, 0)"
            )
        results = []
        for what, sql in queries.items():
            cur.execute(sql, {"d": dataset_id, "rankings": rankings, "pairs": pairs})
            (count,) = cur.fetchone() or (0,)
            results.append((what, count, count == 0))
        cur.execute(
            "SELECT count(*) FILTER (WHERE n >= %(k)s), count(*) FILTER (WHERE n < %(k)s) "
            "FROM (SELECT prompt_id, count(*) AS n FROM labeling_ranking WHERE dataset_id = %(d)s "
            "GROUP BY prompt_id) x",
            {"d": dataset_id, "k": LABELS_PER_PROMPT},
        )
        complete, partial = cur.fetchone() or (0, 0)
    return results, complete, partial


def measure(
    slug: str, dataset_id: int, tokens: list[str], args: argparse.Namespace, server_pid: int
) -> Run:
    url = os.environ["DATABASE_URL"]
    reset_dataset(url, dataset_id)
    labelers, elapsed, before, after, postgres = run_labelers(
        slug, tokens, args.seconds, server_pid
    )
    errors: Counter[str] = Counter()
    samples: list[str] = []
    for labeler in labelers:
        errors.update(labeler.errors)
        samples.extend(s for s in labeler.samples if s not in samples)
    rankings = sum(labeler.rankings for labeler in labelers)
    pairs = sum(labeler.pairs for labeler in labelers)
    checks, complete, partial = check_dataset(url, dataset_id, rankings, pairs)
    repeats = sum(labeler.repeats for labeler in labelers)
    checks.append(("prompts a labeler was given twice (client's view)", repeats, repeats == 0))
    failed = sum(errors.values())
    checks.append(
        ("requests that failed (connection, timeout, not 200/201/204)", failed, not failed)
    )
    return Run(
        dataset=slug,
        labelers=len(tokens),
        seconds=elapsed,
        rankings=rankings,
        pairs=pairs,
        next_ms=[ms for labeler in labelers for ms in labeler.next_ms],
        submit_ms=[ms for labeler in labelers for ms in labeler.submit_ms],
        errors=errors,
        samples=samples[:5],
        out_of_work=sum(labeler.out_of_work for labeler in labelers),
        complete=complete,
        partial=partial,
        before=before,
        after=after,
        postgres=postgres,
        checks=checks,
    )


def report_run(run: Run) -> None:
    n50, n95, n99 = percentiles(run.next_ms)
    s50, s95, s99 = percentiles(run.submit_ms)
    client = run.after.client - run.before.client
    busy = run.after.machine_busy - run.before.machine_busy
    total = run.after.machine_total - run.before.machine_total
    others = busy - run.app_cpu - run.postgres_cpu - client
    print(
        f"  {run.pairs_per_s:.1f} pairs/s ({run.pairs:,} pairs, {run.rankings:,} rankings, "
        f"{run.rankings / run.seconds:.1f} rankings/s in {run.seconds:.1f}s)\n"
        f"  next-task ms p50 {n50:.1f}  p95 {n95:.1f}  p99 {n99:.1f}  ({len(run.next_ms):,})\n"
        f"  submit ms    p50 {s50:.1f}  p95 {s95:.1f}  p99 {s99:.1f}  ({len(run.submit_ms):,})\n"
        f"  errors: {sum(run.errors.values())} {dict(run.errors) or ''}"
        + (f"; {run.out_of_work} labelers ran out of work" if run.out_of_work else "")
        + f"\n  prompts ranked by all {LABELS_PER_PROMPT} labelers {run.complete:,}, by fewer "
        f"{run.partial:,}"
    )
    for sample in run.samples:
        print(f"    {sample}")
    print(
        f"  CPU s: app {run.app_cpu:.1f} ({run.recycled_workers} workers recycled), PostgreSQL "
        f"{run.postgres_cpu:.1f} (for {DATABASE} {run.postgres['database']:.1f}, shared "
        f"background processes {run.postgres['shared']:.1f}), client {client:.1f} "
        f"({100 * client / run.seconds:.0f}% of a core); the machine: {busy:.0f} of {total:.0f} "
        f"busy, {others:.1f} by everything else"
    )
    if run.pairs:
        print(
            f"  CPU per pair: app {1000 * run.app_cpu / run.pairs:.1f} ms + PostgreSQL "
            f"{1000 * run.postgres_cpu / run.pairs:.1f} ms = {run.ms_per_pair:.1f} ms"
        )
    for what, count, passed in run.checks:
        print(f"  {'PASS' if passed else 'FAIL'}  {what}: {count:,}")


# --- The candidate query's plan ---------------------------------------------------------------


def explain_candidate_query(slug: str, username: str) -> None:
    """Capture the SQL of one next-task's access check and lease (`access.dataset_to_label`,
    `lease_next_assignment`) in a rolled-back transaction, and print EXPLAIN (ANALYZE, BUFFERS)
    of the queries that pick candidate prompts."""
    from django.contrib.auth.models import User
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from labeling import access
    from labeling.services import leasing

    labeler = User.objects.get(username=username)
    with transaction.atomic():  # a fresh connection's first queries read the catalogs
        dataset = access.dataset_to_label(labeler, slug)
        leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
        transaction.set_rollback(True)
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        start = time.perf_counter()
        dataset = access.dataset_to_label(labeler, slug)
        assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
        elapsed = 1000 * (time.perf_counter() - start)
        transaction.set_rollback(True)
    print(
        f"\n=== next-task's queries on {slug} (access check and lease in-process, rolled back: "
        f"{elapsed:.1f} ms, {len(captured)} queries, leased: {assignment is not None}) ==="
    )
    for query in captured:
        print(f"  {float(query['time']) * 1000:8.1f} ms  {' '.join(query['sql'].split())[:110]}")
    candidates = [
        query["sql"]
        for query in captured
        if ('FROM "labeling_prompt"' in query["sql"] and "LIMIT" in query["sql"])
        or "SKIP LOCKED" in query["sql"]
        or re.match(r'UPDATE "?labeling_prompt"? ', query["sql"])
    ]
    seq_scans: set[str] = set()
    for sql in candidates:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            plan = "\n".join(f"    {row[0]}" for row in cursor.fetchall())
            transaction.set_rollback(True)
        print(f"\n  {sql}\n{plan}")
        seq_scans.update(re.findall(r"Seq Scan on (labeling_prompt|labeling_assignment)", plan))
    if not candidates:
        print("  FAIL  no query selecting candidate prompts was recognised")
    elif seq_scans:
        print(f"\n  FAIL  the candidate queries read {', '.join(sorted(seq_scans))} by Seq Scan")
    else:
        print(
            "\n  PASS  the candidate queries use indexes: no Seq Scan on labeling_prompt or "
            "labeling_assignment"
        )
    connection.close()


# --- Main ------------------------------------------------------------------------------------


def report_summary(runs: list[Run]) -> None:
    header = (
        f"{'dataset':<11}{'labelers':>9}{'pairs/s':>9}{'next p50':>9}{'p95':>8}{'p99':>8}"
        f"{'submit p50':>11}{'p95':>8}{'p99':>8}{'errors':>7}{'app ms':>8}{'PG ms':>7}"
        f"{'ms/pair':>8}  checks"
    )
    print("\n=== summary (latency in ms; CPU ms per labeled pair) ===\n" + header)
    print("-" * len(header))
    for run in runs:
        n50, n95, n99 = percentiles(run.next_ms)
        s50, s95, s99 = percentiles(run.submit_ms)
        app, postgres = (
            (f"{1000 * run.app_cpu / run.pairs:.1f}", f"{1000 * run.postgres_cpu / run.pairs:.1f}")
            if run.pairs
            else ("-", "-")
        )
        print(
            f"{run.dataset:<11}{run.labelers:>9}{run.pairs_per_s:>9.1f}{n50:>9.1f}{n95:>8.1f}"
            f"{n99:>8.1f}{s50:>11.1f}{s95:>8.1f}{s99:>8.1f}{sum(run.errors.values()):>7}"
            f"{app:>8}{postgres:>7}{run.ms_per_pair:>8.1f}  "
            + ("PASS" if all(passed for _, _, passed in run.checks) else "FAIL")
        )
    groups: dict[tuple[str, int], list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.dataset, run.labelers].append(run)
    rounds = max(len(group) for group in groups.values())
    print(
        "\n=== targets ==="
        if rounds == 1
        else f"\n=== targets (median of the {rounds} rounds; each round's value in brackets) ==="
    )

    def median(group: list[Run], value: Callable[[Run], float], digits: int = 1) -> str:
        values = [value(run) for run in group]
        each = "" if len(values) == 1 else " [" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"
        return f"{statistics.median(values):.{digits}f}{each}"

    for (dataset, labelers), group in groups.items():
        where = f"{dataset}, {labelers} labelers"
        if labelers == TARGET_CPU_LABELERS:
            cpu = statistics.median(run.ms_per_pair for run in group)
            print(
                f"{'PASS' if cpu <= TARGET_CPU_MS_PER_PAIR else 'FAIL'}  {where}: "
                f"{median(group, lambda run: run.ms_per_pair)} ms of CPU per pair "
                f"(at most {TARGET_CPU_MS_PER_PAIR:.0f})"
            )
        if dataset == BIG and labelers == TARGET_NEXT_P50_LABELERS:
            p50 = statistics.median(percentiles(run.next_ms)[0] for run in group)
            print(
                f"{'PASS' if p50 < TARGET_NEXT_P50_MS else 'FAIL'}  {where}: next-task p50 "
                f"{median(group, lambda run: percentiles(run.next_ms)[0])} ms "
                f"(under {TARGET_NEXT_P50_MS:.0f})"
            )
        if labelers == TARGET_THROUGHPUT_LABELERS:
            rate = statistics.median(run.pairs_per_s for run in group)
            p99 = statistics.median(percentiles(run.next_ms)[2] for run in group)
            met = rate >= TARGET_PAIRS_PER_S and p99 < TARGET_NEXT_P99_MS
            print(
                f"{'PASS' if met else 'FAIL'}  {where}: "
                f"{median(group, lambda run: run.pairs_per_s)} pairs/s (at least "
                f"{TARGET_PAIRS_PER_S:.0f}), next-task p99 "
                f"{median(group, lambda run: percentiles(run.next_ms)[2])} ms "
                f"(under {TARGET_NEXT_P99_MS:.0f})"
            )
    if (BIG, TARGET_NEXT_P50_LABELERS) not in groups:
        print(f"(not run: next-task p50 at {TARGET_NEXT_P50_LABELERS} labeler on {BIG})")
    for labelers in (TARGET_CPU_LABELERS, TARGET_THROUGHPUT_LABELERS):
        if not any(n == labelers for _, n in groups):
            print(f"(not run: the targets at {labelers} labelers)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    parser.add_argument("--seconds", type=float, help=f"per run (default {FULL['seconds']:.0f})")
    parser.add_argument("--labelers", type=int, nargs="+", help="default 1 16 32 64")
    parser.add_argument("--scenario", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--prompts-1m", type=int, help="prompts of prompts-1m (default 1M)")
    parser.add_argument("--history", type=int, help="assignments beside them (default 1M)")
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: the Makefile's)")
    parser.add_argument("--keep-database", action="store_true", help="do not drop it at the end")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of every run; targets use the median"
    )
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not (0 < args.seconds <= 3600 and 0 < max(args.labelers) <= 500):
        parser.error("--seconds must be in (0, 3600] and --labelers in 1..500")
    if not 1 <= args.repeat <= 10:
        parser.error("--repeat must be in 1..10")
    return args


def main() -> None:
    args = parse_args()
    print(f"load bench; load average {Path('/proc/loadavg').read_text().strip()}", flush=True)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind((HOST, PORT))
        except OSError:
            raise SystemExit(f"{HOST}:{PORT} is taken: is another load bench running?") from None
    # SIGTERM unwinds like Ctrl-C, so the `finally` below stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="preflab_load_bench_") as data_dir:
        env = server_environment(data_dir, args.workers)
        os.environ.update(env)  # this process reads the bench database through Django too
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        log_path = Path(data_dir) / "server.log"
        runs: list[Run] = []
        server = None
        try:
            datasets, tokens = build_database(args, env)
            with log_path.open("wb") as log:
                server = start_server(env, log)
                warm_up(tokens, SMALL)
                print(f"server ready: {len(gunicorn_workers(server.pid))} gunicorn workers")
                # Rounds go through every setting in turn, so drift in the machine's load
                # spreads over all settings instead of falling on one.
                for round_ in range(1, args.repeat + 1):
                    for scenario in args.scenario:
                        slug = SCENARIOS[scenario]
                        if scenario == "big" and round_ == 1:
                            reset_dataset(env["DATABASE_URL"], datasets[slug])
                            try:
                                explain_candidate_query(slug, "labeler0001")
                            except Exception as error:  # the runs say more; go on to them
                                print(f"\n  FAIL  next-task's queries not captured: {error!r}")
                        for count in args.labelers:
                            print(
                                f"\n--- {slug}: {count} labelers, {args.seconds:.0f}s, "
                                f"round {round_} of {args.repeat} ---"
                            )
                            run = measure(slug, datasets[slug], tokens[:count], args, server.pid)
                            report_run(run)
                            runs.append(run)
            if any(kind.startswith("HTTP 5") for run in runs for kind in run.errors):
                print_log_tail(log_path)
        except KeyboardInterrupt:
            raise
        except BaseException:
            print_log_tail(log_path)
            raise
        finally:
            if server is not None:
                stop_server(server)
            if not args.keep_database:
                from django.db import connections

                connections.close_all()
                admin_sql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            if runs:
                report_summary(runs)
        print(f"\nload average {Path('/proc/loadavg').read_text().strip()}")


def print_log_tail(log_path: Path, lines: int = 40) -> None:
    """The server log's last lines but its access log (errors, tracebacks)."""
    if log_path.exists():
        text = log_path.read_text(errors="replace").splitlines()
        tail = [line for line in text if not line.startswith(f"{HOST} - ")][-lines:]
        print(f"\n-- the server log's last {len(tail)} lines, access log left out:")
        print("\n".join(tail))


def gunicorn_workers(master: int) -> list[int]:
    return [process.pid for process in processes() if process.ppid == master]


if __name__ == "__main__":
    main()
