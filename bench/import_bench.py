"""Import benchmark: how fast `imports.import_dataset` loads files into SQLite and PostgreSQL.

Run from the repo root:
    .venv/bin/python bench/import_bench.py [--prompts N] [--only sqlite|postgres] [--profile]

Each (database, file) measurement runs in its own child process with a fresh database, so Django
reads its settings for that database and the peak RSS is that run's alone. The children run with
DEBUG off, as in production: with DEBUG on, Django keeps the SQL of every query in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HH_FILE = ROOT.parent / "shared" / "data" / "hh_harmless_dev.jsonl.gz"
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
TARGET_PROMPTS_PER_S = 10_000
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


def run_child(path: Path, profile: bool) -> dict[str, Any]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from labeling.models import Completion
    from labeling.services import datasets, imports

    call_command("migrate", verbosity=0)
    dataset = datasets.create_dataset(slug="bench", name=f"bench {path.name}")
    size = path.stat().st_size
    rss_before = peak_rss_mib()

    def run_import() -> imports.ImportResult:
        with path.open("rb") as stream:
            return imports.import_dataset(
                dataset=dataset, stream=stream, filename=path.name, size=size
            )

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
    peak = peak_rss_mib()
    start = time.perf_counter()
    second = run_import()
    again_seconds = time.perf_counter() - start
    return {
        "prompts": first.created,
        "skipped": len(first.skipped),
        "completions": Completion.objects.filter(prompt__dataset=dataset).count(),
        "seconds": seconds,
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
    parser.add_argument("--profile", action="store_true", help="cProfile each import (stderr)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.profile)))
        return

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
            f"{'re-import':>14}"
        )
        print(header + "\n" + "-" * len(header))
        results: dict[tuple[str, str], dict[str, Any]] = {}
        for database in databases:
            for label, path in inputs:
                r = run_on(database, path, workdir, len(results), args.profile)
                results[database, label] = r
                rows = r["prompts"] + r["completions"]
                again = f"{r['again_seconds']:.2f}s +{r['again_created']}"
                print(
                    f"{database:<9} {label:<18} {r['prompts']:>8,} {r['completions']:>8,} "
                    f"{r['seconds']:>8.2f} {r['prompts'] / r['seconds']:>10,.0f} "
                    f"{rows / r['seconds']:>8,.0f} {r['peak_rss']:>8.1f} "
                    f"{r['peak_rss'] - r['rss_before']:>+9.1f} {again:>14}",
                    flush=True,
                )
                if r["skipped"]:
                    print(f"{'':<9} ({r['skipped']} lines skipped by the importer)")
    report_target(results, f"synthetic {small:,}", f"synthetic {big:,}")


def report_target(results: dict[tuple[str, str], dict[str, Any]], small: str, big: str) -> None:
    print(
        f"\ntarget: >= {TARGET_PROMPTS_PER_S:,} prompts/s into PostgreSQL, "
        "memory flat as the file grows"
    )
    if ("postgres", big) not in results:
        print("not checked: no PostgreSQL run")
        return
    r, s = results["postgres", big], results["postgres", small]
    rate = r["prompts"] / r["seconds"]
    growth = r["peak_rss"] - s["peak_rss"]
    fast, flat = rate >= TARGET_PROMPTS_PER_S, growth <= FLAT_MEMORY_SLACK_MIB
    print(f"speed:  {rate:,.0f} prompts/s on {big} -> {'met' if fast else 'NOT met'}")
    print(
        f"memory: peak {s['peak_rss']:.0f} MiB ({small}) -> {r['peak_rss']:.0f} MiB ({big}), "
        f"{growth:+.0f} MiB for 10x the file (allowed +{FLAT_MEMORY_SLACK_MIB:.0f}) -> "
        f"{'met' if flat else 'NOT met'}"
    )
    print("target met" if fast and flat else "target NOT met")


if __name__ == "__main__":
    main()
