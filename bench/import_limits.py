"""Hostile import files: what each costs the worker that reads it, with the default limits.

Run from the repo root:
    .venv/bin/python bench/import_limits.py

Each file is imported by `imports.import_dataset` (what the worker runs) in a child process on
a fresh SQLite database, DEBUG off; the child prints its peak RSS, the time and how the import
ended. The files: a gzip of ~1 MB that expands to one line of 1 GiB; a gzip of ~3 MB holding
18 million short, identical prompt lines; 40 lines of PrefLab JSON just under the line limit
(8 MiB, long completions); and, for scale, 20,000 ordinary prompts.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_files(folder: Path) -> dict[str, Path]:
    files = {}
    path = folder / "one-huge-line.jsonl.gz"
    with gzip.open(path, "wb", compresslevel=9) as out:
        block = b"x" * (1 << 20)
        for _ in range(1024):
            out.write(block)
    files["1 GiB line in a 1 MB gzip"] = path
    path = folder / "short-lines.jsonl.gz"
    line = json.dumps({"prompt": "Hi?", "completions": ["a", "b"]}).encode() + b"\n"
    with gzip.open(path, "wb", compresslevel=9) as out:
        chunk = line * 100_000
        for _ in range(180):
            out.write(chunk)
    files["18M short lines in a 3 MB gzip"] = path
    path = folder / "long-lines.jsonl"
    with path.open("w") as out:
        for n in range(40):
            text = "word " * 19_000  # 95,000 characters, under PREFLAB_MAX_TEXT_CHARS
            row = {
                "id": f"l{n}",
                "prompt": "Compare these.",
                "completions": [text + str(k) for k in range(9)],
            }
            out.write(json.dumps(row) + "\n")
    files["40 lines of 0.9 MB (9 long completions)"] = path
    path = folder / "ordinary.jsonl"
    with path.open("w") as out:
        for n in range(20_000):
            row = {"id": f"o{n}", "prompt": f"Question {n}?", "completions": [f"A {n}.", f"B {n}."]}
            out.write(json.dumps(row) + "\n")
    files["20,000 ordinary prompts"] = path
    return files


def child(path: str) -> None:
    import resource

    import django

    django.setup()
    from django.core.exceptions import ValidationError
    from django.core.management import call_command

    from labeling.services import datasets, imports

    call_command("migrate", verbosity=0)
    dataset = datasets.create_dataset(slug="limits")
    started = time.perf_counter()
    try:
        with open(path, "rb") as stream:
            result = imports.import_dataset(
                dataset=dataset, stream=stream, filename=Path(path).name
            )
        outcome = f"imported: {result.summary()}"
    except ValidationError as error:
        outcome = "refused: " + "; ".join(error.messages)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "outcome": outcome[:160]}))


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2])
        return 0
    with tempfile.TemporaryDirectory() as folder:
        files = write_files(Path(folder))
        print(f"{'file':<42} {'size':>9} {'seconds':>8} {'peak RSS':>9}  outcome")
        for name, path in files.items():
            environment = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "DEBUG": "false",
                "SECRET_KEY": "bench-" + "k" * 60,
                "PREFLAB_DATA_DIR": tempfile.mkdtemp(dir=folder),
            }
            environment.pop("DATABASE_URL", None)
            output = subprocess.run(
                [sys.executable, __file__, "--child", str(path)],
                env=environment,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            figures: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
            size = f"{path.stat().st_size / 2**20:.1f} MiB"
            print(
                f"{name:<42} {size:>9} {figures['seconds']:8.1f} "
                f"{figures['peak_mib']:7.0f} MiB  {figures['outcome']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
