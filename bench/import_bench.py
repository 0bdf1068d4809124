"""Import benchmark: how fast `imports.import_dataset` loads files into SQLite and PostgreSQL.

Run from the repo root:
    .venv/bin/python bench/import_bench.py [--prompts N] [--only sqlite|postgres] [--runs 3]
        [--profile]

Each (database, file) measurement runs in its own child process with a fresh database, so Django
reads its settings for that database and the peak RSS is that run's alone. The children run with
DEBUG off, as in production: with DEBUG on, Django keeps the SQL of every query in memory.

Where the time goes: before the import, the child reads the file three more times, to time on
their own reading and decompressing, parsing the JSON, building and validating the records, and
hashing their content; during the import it times the database's stages (looking up existing
ids, drawing prompt ids, COPY of prompts, COPY of completions, commit). On PostgreSQL the floor
follows: the rows just imported are copied out, the tables emptied, and the same rows loaded
again with plain COPY in one transaction, so the import is shown beside what the database alone
takes for the same rows, in the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HH_FILE = ROOT.parent / "shared" / "data" / "hh_harmless_dev.jsonl.gz"
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
TARGET_PROMPTS_PER_S = 10_000
TARGET_SHARE_OF_COPY = 0.5  # of plain COPY's prompts/s, same rows, same database, same run
FLAT_MEMORY_SLACK_MIB = 25.0  # the big file may peak at most this much above the one 10x smaller
VOCABULARY = (
    "the model should answer question about data user assistant explain why how when where "
    "reward ranking preference safe helpful honest harmless label prompt completion policy "
    "training gradient sample token context reason example better worse clear short long"
)


# --- Inputs ----------------------------------------------------------------------------------


def write_synthetic(path: Path, prompts: int, seed: int = 7) -> Path:
    """A PrefLab JSONL file: `prompts` lines, ~200-char prompt, 3 completions of ~400 chars."""
    rng = random.Random(seed)
    words = VOCABULARY.split()
    corpus = " ".join(rng.choice(words) for _ in range(200_000))
    with path.open("w", encoding="utf-8") as out:
        for i in range(prompts):
            cuts = [rng.randrange(len(corpus) - 400) for _ in range(4)]
            row = {
                "id": f"s{i}",
                "prompt": f"Prompt {i}: " + corpus[cuts[0] : cuts[0] + 190],
                "completions": [
                    {"id": name, "text": f"{name}{i} " + corpus[cut : cut + 395]}
                    for name, cut in zip("abc", cuts[1:], strict=True)
                ],
            }
            out.write(json.dumps(row) + "\n")
    return path


# --- Child: one measurement ------------------------------------------------------------------


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Stopwatch:
    """Seconds per stage, summed over the calls of the functions it wraps."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def wrap(self, stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - start)

        return timed


def time_reading(path: Path) -> dict[str, float]:
    """The importer's reading steps on their own: each pass does one more step than the last."""
    from django.conf import settings

    from labeling import formats
    from labeling.services import import_batches

    limits = import_batches.read_limits()
    passes: dict[str, float] = {}

    def lines() -> Iterator[bytes]:
        with path.open("rb") as stream:
            binary = io.BufferedReader(
                formats._Capped(formats.open_binary(stream), limits.max_bytes)
            )  # type: ignore[arg-type]
            while raw := binary.readline(limits.max_line_bytes + 1):
                yield raw

    start = time.perf_counter()
    for _ in lines():
        pass
    passes["read"] = time.perf_counter() - start
    start = time.perf_counter()
    for raw in lines():
        orjson.loads(raw)  # as the importer parses
    passes["parse"] = time.perf_counter() - start
    hashing = 0.0
    start = time.perf_counter()
    with path.open("rb") as stream:
        for record in formats.read_records(stream, filename=path.name, limits=limits):
            if isinstance(record, formats.ParsedPrompt):
                formats.validate_record(record, max_text_chars=settings.PREFLAB_MAX_TEXT_CHARS)
                started = time.perf_counter()
                record.content_hash  # noqa: B018 (the property is what is timed)
                hashing += time.perf_counter() - started
    records = time.perf_counter() - start - hashing
    return {
        "read and decompress": passes["read"],
        "parse JSON": passes["parse"] - passes["read"],
        "records and validation": records - passes["parse"],
        "content hash": hashing,
    }


def copy_floor(dataset_id: int) -> dict[str, float]:
    """Copy the imported rows out, empty the tables, and time plain COPY of the same rows back
    in, in one transaction (PostgreSQL only)."""
    from django.db import connection, transaction

    from labeling.models import Completion, Prompt

    tables = [
        (Prompt._meta.db_table, [f.column for f in Prompt._meta.concrete_fields]),
        (Completion._meta.db_table, [f.column for f in Completion._meta.concrete_fields]),
    ]
    stopwatch = Stopwatch()
    with tempfile.TemporaryDirectory(prefix="preflab_floor_") as tmp:
        files = []
        with connection.cursor() as cursor:
            for table, columns in tables:
                out = Path(tmp) / table
                with (
                    out.open("wb") as sink,
                    cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) TO STDOUT") as copy,
                ):
                    for block in copy:
                        sink.write(block)
                files.append(out)
            cursor.execute(f"TRUNCATE {', '.join(t for t, _ in tables)} CASCADE")
        with transaction.atomic():
            connection.commit = stopwatch.wrap("commit", connection.commit)  # type: ignore[method-assign]
            with connection.cursor() as cursor:
                for (table, columns), source in zip(tables, files, strict=True):
                    start = time.perf_counter()
                    with (
                        source.open("rb") as data,
                        cursor.cursor.copy(
                            f"COPY {table} ({', '.join(columns)}) FROM STDIN"
                        ) as copy,
                    ):
                        while block := data.read(1 << 20):
                            copy.write(block)
                    stage = "COPY prompts" if table == tables[0][0] else "COPY completions"
                    stopwatch.add(stage, time.perf_counter() - start)
        del connection.commit
    assert Prompt.objects.filter(dataset_id=dataset_id).exists()
    return stopwatch.seconds


def run_child(path: Path, profile: bool) -> dict[str, Any]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from labeling.models import Completion
    from labeling.services import datasets, import_batches, imports

    call_command("migrate", verbosity=0)
    dataset = datasets.create_dataset(slug="bench", name=f"bench {path.name}")
    size = path.stat().st_size
    reading = time_reading(path)
    rss_before = peak_rss_mib()

    def run_import() -> imports.ImportResult:
        with path.open("rb") as stream:
            return imports.import_dataset(
                dataset=dataset, stream=stream, filename=path.name, size=size
            )

    stopwatch = Stopwatch()
    stages = {
        "_existing_hashes": "look up existing ids",
        "_draw_prompt_ids": "draw prompt ids",
        "_copy_prompt_rows": "COPY prompts",
        "_copy_completion_rows": "COPY completions",
        "_bulk_create_prompts": "INSERT prompts and completions",
    }
    originals = {name: getattr(import_batches, name) for name in stages}
    for name, stage in stages.items():
        setattr(import_batches, name, stopwatch.wrap(stage, originals[name]))
    connection.ensure_connection()
    connection.commit = stopwatch.wrap("commit", connection.commit)  # type: ignore[method-assign]
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start = time.perf_counter()
    first = run_import()
    seconds = time.perf_counter() - start
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    del connection.commit
    for name, function in originals.items():
        setattr(import_batches, name, function)
    peak = peak_rss_mib()
    start = time.perf_counter()
    second = run_import()
    again_seconds = time.perf_counter() - start
    completions = Completion.objects.filter(prompt__dataset=dataset).count()
    floor = copy_floor(dataset.pk) if connection.vendor == "postgresql" else None
    return {
        "prompts": first.created,
        "skipped": len(first.skipped),
        "completions": completions,
        "seconds": seconds,
        "reading": reading,
        "database": stopwatch.seconds,
        "floor": floor,
        "rss_before": rss_before,
        "peak_rss": peak,
        "again_created": second.created,
        "again_seconds": again_seconds,
    }


# --- Parent: databases, children, table ------------------------------------------------------


def postgres_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def measure(database_url: str, path: Path, profile: bool = False) -> dict[str, Any]:
    env = dict(os.environ, DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE="config.settings")
    env.update(DEBUG="false", SECRET_KEY="import-bench-only-not-a-real-secret", LOG_LEVEL="WARNING")
    command = [sys.executable, __file__, "--child", str(path)] + (["--profile"] if profile else [])
    done = subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_on(database: str, path: Path, workdir: Path, run: int, profile: bool) -> dict[str, Any]:
    if database == "sqlite":
        return measure(f"sqlite:///{workdir / f'bench_{run}.sqlite3'}", path, profile)
    name = f"preflab_bench_{os.getpid()}_{run}"
    postgres_admin(f"CREATE DATABASE {name}")
    try:
        return measure(f"{PG_SERVER}/{name}", path, profile)
    finally:
        postgres_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def postgres_problem() -> str | None:
    try:
        postgres_admin("SELECT 1")
    except Exception as error:  # any failure to connect means: skip PostgreSQL
        return (str(error).strip() or type(error).__name__).splitlines()[0]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000, help="synthetic file size")
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument("--runs", type=int, default=1, help="runs of each import (median shown)")
    parser.add_argument("--profile", action="store_true", help="cProfile each import (stderr)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.profile)))
        return
    if not 1 <= args.runs <= 10:
        parser.error("--runs must be in 1..10")

    print(f"import bench; load average {Path('/proc/loadavg').read_text().strip()}")
    databases = [args.only] if args.only else ["sqlite", "postgres"]
    if "postgres" in databases and (problem := postgres_problem()):
        print(f"skipping postgres: cannot connect to {PG_SERVER} ({problem})")
        databases.remove("postgres")
    with tempfile.TemporaryDirectory(prefix="preflab_bench_") as tmp:
        workdir = Path(tmp)
        small, big = max(args.prompts // 10, 1), args.prompts
        inputs = []
        if HH_FILE.exists():
            inputs.append(("hh_harmless_dev", HH_FILE))
        else:
            print(f"skipping HH input: {HH_FILE} is absent")
        started = time.perf_counter()
        for count in (small, big):
            path = write_synthetic(workdir / f"synthetic_{count}.jsonl", count)
            inputs.append((f"synthetic {count:,}", path))
        print(
            f"wrote synthetic files in {time.perf_counter() - started:.1f}s: "
            + ", ".join(f"{p.name} {p.stat().st_size / 2**20:.0f} MiB" for _, p in inputs[-2:])
        )

        header = (
            f"{'database':<9} {'input':<18} {'prompts':>8} {'compl.':>8} {'seconds':>8} "
            f"{'prompts/s':>10} {'rows/s':>8} {'RSS MiB':>8} {'(+import)':>9} "
            f"{'re-import':>14} {'COPY floor':>11}"
        )
        print(header + "\n" + "-" * len(header))
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        number = 0
        for database in databases:
            for label, path in inputs:
                for _ in range(args.runs):
                    r = run_on(database, path, workdir, number, args.profile)
                    number += 1
                    results.setdefault((database, label), []).append(r)
                    print_run(database, label, r)
    report_target(results, f"synthetic {small:,}", f"synthetic {big:,}")
    print(f"\nload average {Path('/proc/loadavg').read_text().strip()}")


def print_run(database: str, label: str, r: dict[str, Any]) -> None:
    rows = r["prompts"] + r["completions"]
    again = f"{r['again_seconds']:.2f}s +{r['again_created']}"
    floor = f"{sum(r['floor'].values()):.2f}s" if r["floor"] else "-"
    print(
        f"{database:<9} {label:<18} {r['prompts']:>8,} {r['completions']:>8,} "
        f"{r['seconds']:>8.2f} {r['prompts'] / r['seconds']:>10,.0f} "
        f"{rows / r['seconds']:>8,.0f} {r['peak_rss']:>8.1f} "
        f"{r['peak_rss'] - r['rss_before']:>+9.1f} {again:>14} {floor:>11}",
        flush=True,
    )
    if r["skipped"]:
        print(f"{'':<9} ({r['skipped']} lines skipped by the importer)")


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median speed (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]


def print_stages(r: dict[str, Any]) -> None:
    """Where the time of one import went, beside plain COPY of the same rows."""
    total = r["seconds"]
    database = r["database"]
    in_python = total - sum(database.values())
    reading = r["reading"]
    print(f"\nwhere the time goes ({r['prompts']:,} prompts, {total:.2f}s in all):")
    print(f"  {'stage':<34} {'seconds':>8} {'share':>6}")
    print("  reading, on their own (before the import, same file):")
    for stage, seconds in reading.items():
        print(f"    {stage:<32} {seconds:>8.2f} {seconds / total:>6.0%}")
    print(f"    {'(sum)':<32} {sum(reading.values()):>8.2f} {sum(reading.values()) / total:>6.0%}")
    print("  the import:")
    print(f"    {'reading, parsing, checking':<32} {in_python:>8.2f} {in_python / total:>6.0%}")
    for stage, seconds in database.items():
        print(f"    {stage:<32} {seconds:>8.2f} {seconds / total:>6.0%}")
    floor = r["floor"]
    if floor:
        floor_total = sum(floor.values())
        print(f"  plain COPY of the same rows (the floor), {floor_total:.2f}s in all:")
        for stage, seconds in floor.items():
            print(f"    {stage:<32} {seconds:>8.2f}")


def report_target(
    results: dict[tuple[str, str], list[dict[str, Any]]], small: str, big: str
) -> None:
    if ("postgres", big) in results:
        print_stages(median_run(results["postgres", big]))
    print(
        f"\ntarget: >= {TARGET_PROMPTS_PER_S:,} prompts/s into PostgreSQL and at least "
        f"{TARGET_SHARE_OF_COPY:.0%} of plain COPY's speed, memory flat as the file grows"
    )
    if ("postgres", big) not in results:
        print("not checked: no PostgreSQL run")
        return
    runs, smalls = results["postgres", big], results["postgres", small]
    r = median_run(runs)
    rates = ", ".join(f"{run['prompts'] / run['seconds']:,.0f}" for run in runs)
    rate = r["prompts"] / r["seconds"]
    floor_rate = r["prompts"] / sum(r["floor"].values())
    share = rate / floor_rate
    peak_small = statistics.median(run["peak_rss"] for run in smalls)
    peak_big = statistics.median(run["peak_rss"] for run in runs)
    growth = peak_big - peak_small
    fast = rate >= TARGET_PROMPTS_PER_S
    near_floor = share >= TARGET_SHARE_OF_COPY
    flat = growth <= FLAT_MEMORY_SLACK_MIB
    print(
        f"speed:  {rate:,.0f} prompts/s on {big} (median of {len(runs)}: {rates}) -> "
        f"{'met' if fast else 'NOT met'}"
    )
    print(
        f"floor:  plain COPY of the same rows {floor_rate:,.0f} prompts/s in the same run; the "
        f"import reaches {share:.0%} of it -> {'met' if near_floor else 'NOT met'}"
    )
    print(
        f"memory: peak {peak_small:.0f} MiB ({small}) -> {peak_big:.0f} MiB ({big}), "
        f"{growth:+.0f} MiB for 10x the file (allowed +{FLAT_MEMORY_SLACK_MIB:.0f}) -> "
        f"{'met' if flat else 'NOT met'}"
    )
    print("target met" if fast and near_floor and flat else "target NOT met")


if __name__ == "__main__":
    main()
