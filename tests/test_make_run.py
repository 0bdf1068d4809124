"""`make run`: installs only what running needs, once, and ends with one box that shows the URL
and each demo account's password (`manage.py demo_accounts`)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import call_command

from labeling.tasks import WORKER_SEEN_KEY

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_TARGETS = ["run", "demo", "migrate", "worker", "release", "serve", "serve-web"]
DEV_TARGETS = ["test", "lint", "format", "test-postgres"]

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def planned_commands(target: str, venv: Path) -> str:
    """What `make TARGET` would run (make -n), with the virtualenv at `venv`."""
    result = subprocess.run(
        ["make", "-n", target, f"VENV={venv}", "PYTHON=python3"],
        cwd=ROOT,
        env={**os.environ, "MAKEFLAGS": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@needs_make
@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_running_installs_the_runtime_dependencies_only(target, tmp_path):
    planned = planned_commands(target, tmp_path / "venv")
    installs = [line for line in planned.splitlines() if "pip install" in line]
    assert installs, planned
    assert not any("dev" in line for line in installs), installs
    assert all("--disable-pip-version-check" in line for line in installs)


@needs_make
@pytest.mark.parametrize("target", DEV_TARGETS)
def test_tests_and_lint_install_the_development_tools(target, tmp_path):
    planned = planned_commands(target, tmp_path / "venv")
    assert any('-e ".[dev]"' in line for line in planned.splitlines() if "pip install" in line)


@needs_make
def test_a_second_make_run_installs_nothing(tmp_path):
    venv = tmp_path / "venv"
    first = planned_commands("run", venv)
    stamp = next(line.split()[-1] for line in first.splitlines() if line.startswith("touch"))
    (venv / "bin").mkdir(parents=True)
    Path(stamp).touch()
    assert "pip install" not in planned_commands("run", venv)


def make_demo() -> str:
    out = io.StringIO()
    call_command("load_demo", stdout=out)
    return out.getvalue()


def show_box(**options: object) -> str:
    out = io.StringIO()
    call_command("demo_accounts", stdout=out, **options)
    return out.getvalue()


def test_the_box_shows_the_url_and_each_demo_accounts_password(db, demo_accounts_file):
    make_demo()
    shown = show_box(url="http://127.0.0.1:8777/")
    lines = shown.strip().splitlines()
    assert lines[0].startswith("+--") and lines[-1] == lines[0]
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines[1:-1])
    assert "http://127.0.0.1:8777/" in shown
    for username in ("admin", "labeler1", "labeler2"):
        (row,) = [line for line in lines if line.startswith(f"|   {username} ")]
        password = row.split()[2]
        assert User.objects.get(username=username).check_password(password)
    assert "(staff, /admin/)" in shown


def test_the_box_says_when_a_password_was_changed_since(db, demo_accounts_file):
    make_demo()
    user = User.objects.get(username="labeler2")
    user.set_password("chosen-by-the-labeler-2")
    user.save()
    shown = show_box()
    assert "(changed: manage.py changepassword labeler2)" in shown
    assert "chosen-by-the-labeler-2" not in shown


def test_the_box_waits_for_the_server_and_a_worker(db, live_server, demo_accounts_file):
    make_demo()
    cache.set(WORKER_SEEN_KEY, 2_000_000_000.0)  # a worker seen after --since
    shown = show_box(url=live_server.url, wait=30, since=1_900_000_000.0)
    assert live_server.url + "/" in shown
    assert "did not answer" not in shown and "No worker" not in shown


def test_the_box_says_what_did_not_come_up(db, demo_accounts_file):
    make_demo()
    cache.set(WORKER_SEEN_KEY, 1_000.0)  # a previous run's worker
    shown = show_box(url="http://127.0.0.1:9/", wait=0.01)
    assert "The server did not answer" in shown
    assert "No worker started" in shown
    assert "labeler1" in shown
