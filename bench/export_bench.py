"""Export benchmark: how fast the JSON Lines exports stream comparisons and rankings.

Run from the repo root:
    .venv/bin/python bench/export_bench.py [--comparisons N ...] [--formats F ...]
        [--shapes ranked hh] [--runs N] [--profile]

For each shape and size, a fresh PostgreSQL database is migrated and filled with psycopg COPY:
`ranked` is 3 rankings of 4 completions a prompt (18 comparisons a prompt), `hh` one ranking of
2 completions a prompt (one comparison a prompt, as Anthropic HH). Then each export runs in its own
child process through Django's test Client, as a staff user, with DEBUG off; the child counts the
streamed lines (a Parquet pull, `trl.parquet` say, is written to a file whose footer gives the
rows once the pull is timed) and reports its peak RSS growth. The floor is a plain COPY of the
joined rows.
With --runs N each export (and the floor) runs N times on the same data and the table gives the
run of median time, the rates of all runs and the load average before them: the machine may
be shared.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import combinations
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
PAIR_FORMATS = ("trl", "trl-conversational", "hh", "openai")
PARQUET = ".parquet"  # a pair format with this suffix: the same pull with output=parquet
FORMATS = (*PAIR_FORMATS, "rankings", *(format + PARQUET for format in PAIR_FORMATS))
SLUG = "bench"
WORKSPACE = 1  # the default workspace, which migrating a fresh database makes first
LABELERS = 30
TARGET_RATIO, TARGET_ROWS_PER_S = 1 / 3, 100_000
FLAT_MEMORY_SLACK_MIB = 25.0  # the biggest export may peak at most this much above the one before
VOCABULARY = (
    "the model should answer question about data user assistant explain why how when where "
    "reward ranking preference safe helpful honest harmless label prompt completion policy "
    "training gradient sample token context reason example better worse clear short long"
)
FLOOR_SQL = (
    "COPY (SELECT c.id, p.messages, ch.text, rj.text FROM labeling_comparison c "
    "JOIN labeling_prompt p ON p.id = c.prompt_id "
    "JOIN labeling_completion ch ON ch.id = c.chosen_id "
    "JOIN labeling_completion rj ON rj.id = c.rejected_id "
    "WHERE c.dataset_id = {dataset} ORDER BY c.id) TO STDOUT"
)


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- Child: fill a database with COPY --------------------------------------------------------


COLUMNS = {  # the columns each COPY gives, in the order of `synthetic_rows`' tuples
    "auth_user": "id, password, is_superuser, username, first_name, last_name, email, is_staff, "
    "is_active, date_joined",
    "labeling_dataset": "id, name, slug, description, guidelines, guidelines_version, "
    "labels_per_prompt, gold_rate, status, created_at, ratings, strength, workspace_id",
    "labeling_ratingcriterion": "id, key, label, description, scale_min, scale_max, min_label, "
    "max_label, position, dataset_id",
    "labeling_prompt": "id, external_id, messages, metadata, content_hash, is_gold, created_at, "
    "dataset_id",
    "labeling_completion": "id, external_id, text, model_name, metadata, position, prompt_id",
    "labeling_assignment": "id, status, leased_at, expires_at, finished_at, skip_reason, "
    "labeler_id, prompt_id",
    "labeling_ranking": 'id, "order", flags, all_unacceptable, rationale, seconds_spent, '
    "guidelines_version, request_id, created_at, assignment_id, dataset_id, labeler_id, prompt_id",
    "labeling_rating": "id, value, completion_id, criterion_id, ranking_id",
    "labeling_comparison": "id, margin, strength, created_at, labeler_id, chosen_id, rejected_id, "
    "dataset_id, prompt_id, ranking_id",
}


def synthetic_rows(
    comparisons: int, seed: int = 7, per_prompt: int = 3, completions: int = 4
) -> dict[str, list[tuple[Any, ...]]]:
    """Rows of every table: ranking r labels prompt (r - 1) // per_prompt + 1 (each by another
    of the LABELERS labelers) and is assignment r; a prompt has `completions` completions, so a
    ranking makes C(completions, 2) comparisons, and rates each completion on helpful, honest
    and harmless (1-7)."""
    assert 1 <= per_prompt <= LABELERS and 2 <= completions <= 4
    pairs = len(list(combinations(range(completions), 2)))
    rng = random.Random(seed)
    corpus = " ".join(rng.choice(VOCABULARY.split()) for _ in range(100_000))

    def text(size: int) -> str:
        start = rng.randrange(len(corpus) - size)
        return corpus[start : start + size]

    now, rankings = datetime.now(UTC), -(-comparisons // pairs)
    rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in COLUMNS}
    for u in range(1, LABELERS + 2):  # user1 is the staff user who exports
        rows["auth_user"].append((u, "!", u == 1, f"user{u}", "", "", "", u == 1, True, now))
    dataset = (1, "Bench", SLUG, "", "", 1, 3, 0.0, "active", now, "optional", "optional")
    rows["labeling_dataset"].append((*dataset, WORKSPACE))
    for c, key in enumerate(("helpful", "honest", "harmless"), start=1):
        row = (c, key, key.capitalize(), "", 1, 7, "", "", c - 1, 1)
        rows["labeling_ratingcriterion"].append(row)
    for r in range(1, rankings + 1):
        p, label = (r - 1) // per_prompt + 1, (r - 1) % per_prompt
        first = completions * (p - 1) + 1
        if label == 0:
            messages = json.dumps([{"role": "user", "content": f"Q{p}: {text(190)}"}])
            rows["labeling_prompt"].append((p, f"p{p}", messages, "{}", f"{p:064x}", False, now, 1))
            for k in range(completions):
                completion = (first + k, "abcd"[k], f"{p}{'abcd'[k]} {text(395)}", "", "{}", k, p)
                rows["labeling_completion"].append(completion)
        labeler = 2 + (p + label) % LABELERS
        order = rng.sample(range(first, first + completions), completions)
        done = now + timedelta(seconds=10)
        rows["labeling_assignment"].append((r, "submitted", now, done, done, "", labeler, p))
        ranking = (json.dumps([[c] for c in order]), "{}", False, "", 10.0, 1)
        rows["labeling_ranking"].append((r, *ranking, uuid.UUID(int=r), done, r, 1, labeler, p))
        for rated in range(first, first + completions):
            for criterion_id in (1, 2, 3):
                value = rng.randint(1, 7)
                rating = (len(rows["labeling_rating"]) + 1, value, rated, criterion_id, r)
                rows["labeling_rating"].append(rating)
        for j, (better, worse) in enumerate(combinations(range(completions), 2)):
            if (pk := pairs * (r - 1) + j + 1) <= comparisons:
                pair = (order[better], order[worse], 1, p, r)
                rows["labeling_comparison"].append((pk, worse - better, "", done, labeler, *pair))
    return rows


SHAPES = {
    # name: (rankings per prompt, completions per prompt) -> comparisons per prompt
    "ranked": (3, 4),  # 3 labelers rank 4 completions: 18 comparisons a prompt
    "hh": (1, 2),  # Anthropic HH: one labeler, two completions, one comparison a prompt
}


def fill(
    comparisons: int,
    per_prompt: int = 3,
    make_rows: Callable[..., Any] | None = None,
    completions: int = 4,
) -> dict[str, Any]:
    """Migrate, then COPY the synthetic rows with their ids, move the sequences on, VACUUM."""
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from labeling.models import default_workspace_id

    assert default_workspace_id() == WORKSPACE, "the dataset's rows name workspace 1"
    started = time.perf_counter()
    if make_rows is None:
        rows = synthetic_rows(comparisons, per_prompt=per_prompt, completions=completions)
    else:
        rows = make_rows(comparisons, per_prompt=per_prompt)
    copy_tables(rows)
    return {
        "seconds": time.perf_counter() - started,
        "prompts": len(rows["labeling_prompt"]),
        "rankings": len(rows["labeling_ranking"]),
    }


def copy_tables(
    rows: dict[str, list[tuple[Any, ...]]], tables: dict[str, str] | None = None
) -> None:
    """COPY each table's rows (`tables`: table -> its columns, COLUMNS by default, in an order
    that keeps foreign keys) into DATABASE_URL, set the id sequences past them, VACUUM
    (ANALYZE)."""
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"]) as conn, conn.cursor() as cur:
        for table, columns in (tables or COLUMNS).items():
            with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:  # type: ignore[arg-type]
                for row in rows[table]:
                    copy.write_row(row)
            sequence = f"pg_get_serial_sequence('{table}', 'id')"
            cur.execute(f"SELECT setval({sequence}, MAX(id)) FROM {table}")  # type: ignore[arg-type]
        conn.commit()
        # As autovacuum leaves a table some time after a bulk load: hint bits set, the
        # visibility map written, statistics gathered. Without it the first exports set the
        # hint bits and race autovacuum's own pass over the new rows, which the COPY floor,
        # run first, partly escapes.
        conn.autocommit = True
        conn.execute("VACUUM (ANALYZE)")


# --- Child: one export, or the COPY floor ----------------------------------------------------


def export(format: str, profile: bool) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username="user1"))
    parquet = format.endswith(PARQUET)
    format = format.removesuffix(PARQUET)
    query = {"format": format} if format != "rankings" else {}
    if parquet:
        query["output"] = "parquet"
    path = f"/api/v1/datasets/{SLUG}/{'rankings' if format == 'rankings' else 'comparisons'}/"
    written = tempfile.NamedTemporaryFile(suffix=PARQUET)  # noqa: SIM115 (the child ends soon)

    def pull(params: dict[str, Any]) -> tuple[int, int]:
        response = client.get(path, params)
        assert response.status_code == 200, response.status_code
        rows = size = 0
        written.seek(0)
        written.truncate()
        for chunk in response.streaming_content:  # type: ignore[attr-defined]
            if parquet:
                written.write(chunk)
            else:
                rows += chunk.count(b"\n")
            size += len(chunk)
        response.close()
        return rows, size

    from django.db.models import Max

    from labeling.models import Comparison, Ranking

    model = Ranking if format == "rankings" else Comparison
    head = model.objects.filter(dataset__slug=SLUG).aggregate(top=Max("pk"))["top"] or 0
    pull({**query, "since": head})  # warm up: imports, URLs, permissions, an empty export
    rss_before = peak_rss_mib()
    with cProfile.Profile() if profile else contextlib.nullcontext() as profiler:
        start = time.perf_counter()
        rows, size = pull(query)
        seconds = time.perf_counter() - start
    rss = peak_rss_mib() - rss_before
    if parquet:
        import pyarrow.parquet as pq

        written.flush()
        rows = pq.ParquetFile(written.name).metadata.num_rows
    if profiler is not None:
        for order, lines in (("cumulative", 35), ("tottime", 25)):
            pstats.Stats(profiler, stream=sys.stderr).sort_stats(order).print_stats(lines)
    return {"rows": rows, "mib": size / 2**20, "seconds": seconds, "rss": rss}


def copy_floor() -> dict[str, Any]:
    """The joined rows of a trl export, straight out of PostgreSQL; the second (warm) run counts."""
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"]) as conn, conn.cursor() as cur:
        for _ in range(2):
            rows = size = 0
            start = time.perf_counter()
            with cur.copy(FLOOR_SQL.format(dataset=1)) as copy:  # type: ignore[arg-type]
                for block in copy:
                    rows += bytes(block).count(b"\n")
                    size += len(block)
            seconds = time.perf_counter() - start
    return {"rows": rows, "mib": size / 2**20, "seconds": seconds, "rss": 0.0}


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    if args.child == "fill":
        per_prompt, completions = SHAPES[args.shape]
        return fill(args.comparisons[0], per_prompt=per_prompt, completions=completions)
    if args.child == "copy":
        return copy_floor()
    return export(args.child, args.profile)


# --- Parent: databases, children, table ------------------------------------------------------


def postgres_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def child(what: str, database: str, data_dir: str, *extra: str) -> dict[str, Any]:
    env = dict(os.environ, DATABASE_URL=f"{PG_SERVER}/{database}", PREFLAB_DATA_DIR=data_dir)
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DEBUG="false", LOG_LEVEL="WARNING")
    env.update(
        SECRET_KEY="export-bench-only-not-a-real-secret", ALLOWED_HOSTS="testserver,127.0.0.1"
    )
    command = [sys.executable, __file__, "--child", what, *extra]
    done = subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comparisons", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--profile", action="store_true", help="cProfile each export (stderr)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each export; median shown")
    parser.add_argument(
        "--shapes",
        nargs="+",
        choices=SHAPES,
        default=list(SHAPES),
        help="ranked: 18 comparisons a prompt; hh: 1 a prompt",
    )
    parser.add_argument("--shape", choices=SHAPES, default="ranked", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args)))
        return

    header = (
        f"{'comparisons':>11} {'format':<26} {'rows':>9} {'MiB':>7} {'seconds':>8} "
        f"{'rows/s':>9} {'x COPY':>7} {'RSS +MiB':>8}  rows/s of each run"
    )
    for shape in args.shapes:
        per_prompt, completions = SHAPES[shape]
        pairs = per_prompt * completions * (completions - 1) // 2
        print(f"\n=== shape {shape}: {pairs} comparisons a prompt ===")
        results = measure_shape(args, shape, header)
        report_targets(results, args.comparisons, args.formats)


def measure_shape(
    args: argparse.Namespace, shape: str, header: str
) -> dict[tuple[int, str], dict[str, Any]]:
    results: dict[tuple[int, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="preflab_export_bench_") as data_dir:
        for n in args.comparisons:
            database = f"preflab_export_bench_{os.getpid()}_{n}"
            postgres_admin(f"CREATE DATABASE {database}")
            try:
                filled = child(
                    "fill", database, data_dir, "--comparisons", str(n), "--shape", shape
                )
                print(
                    f"\n{n:,} comparisons: filled {filled['prompts']:,} prompts, "
                    f"{filled['rankings']:,} rankings in {filled['seconds']:.1f}s"
                )
                print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
                print(header + "\n" + "-" * len(header))
                profile = ["--profile"] if args.profile else []
                for format in ["COPY", *args.formats]:
                    what = "copy" if format == "COPY" else format
                    runs = [child(what, database, data_dir, *profile) for _ in range(args.runs)]
                    results[n, format] = median_run(runs)
                    r, floor = results[n, format], results[n, "COPY"]
                    rate, floor_rate = r["rows"] / r["seconds"], floor["rows"] / floor["seconds"]
                    each = " ".join(f"{run['rows'] / run['seconds']:,.0f}" for run in runs)
                    print(
                        f"{n:>11,} {format:<26} {r['rows']:>9,} {r['mib']:>7.1f} "
                        f"{r['seconds']:>8.2f} {rate:>9,.0f} {rate / floor_rate:>7.2f} "
                        f"{r['rss']:>8.1f}  {each}",
                        flush=True,
                    )
                print(f"load average after:  {Path('/proc/loadavg').read_text().strip()}")
            finally:
                postgres_admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    print("(rankings: one row per ranking, with every completion of its prompt)")
    return results


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median time (the slower middle one of an even number); its RSS growth is the
    largest of all runs, so one lucky run cannot hide a leak."""
    middle = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]
    return {**middle, "rss": max(run["rss"] for run in runs)}


def report_targets(
    results: dict[tuple[int, str], dict[str, Any]], sizes: list[int], formats: list[str]
) -> None:
    print(
        f"\ntargets: pair exports >= 1/3 of COPY speed and >= {TARGET_ROWS_PER_S:,} rows/s; "
        f"memory flat from {min(sizes):,} to {max(sizes):,}"
    )
    big = max(sizes)
    floor = results[big, "COPY"]
    floor_rate = floor["rows"] / floor["seconds"]
    for format in formats:
        if format == "rankings" or format.endswith(PARQUET):
            continue
        pairs = results[big, format]
        rate = pairs["rows"] / pairs["seconds"]
        met = rate >= TARGET_RATIO * floor_rate and rate >= TARGET_ROWS_PER_S
        print(
            f"speed:  {format:<26} {rate:,.0f} rows/s = {rate / floor_rate:.2f} x COPY "
            f"({floor_rate:,.0f} rows/s) at {big:,} -> {'met' if met else 'NOT met'}"
        )
    for format in formats:
        if format.endswith(PARQUET) and (jsonl := format.removesuffix(PARQUET)) in formats:
            rate, jsonl_rate = (
                results[big, name]["rows"] / results[big, name]["seconds"]
                for name in (format, jsonl)
            )
            print(
                f"parquet: {format:<26} {rate:,.0f} rows/s beside {jsonl} JSON Lines "
                f"{jsonl_rate:,.0f} rows/s ({rate / jsonl_rate:.2f} x) at {big:,}"
            )
    # Below one chunk (5,000 rows) an export holds less, so flat is judged over the last 10x.
    before = sorted(sizes)[-2] if len(sizes) > 1 else big
    for format in formats:
        trail = " -> ".join(f"+{results[n, format]['rss']:.1f}" for n in sorted(sizes))
        growth = results[big, format]["rss"] - results[before, format]["rss"]
        print(
            f"memory: {format:<26} {trail} MiB; {growth:+.1f} MiB from {before:,} to {big:,} "
            f"(allowed +{FLAT_MEMORY_SLACK_MIB:.0f}) -> "
            f"{'met' if growth <= FLAT_MEMORY_SLACK_MIB else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
