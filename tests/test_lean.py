"""Web processes, workers at rest and management commands leave the ML stack unimported: a
gunicorn worker stays small and a command starts fast (DESIGN.md: lean web processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("numpy", "scipy", "sklearn", "onnx", "onnxruntime", "skops", "skl2onnx", "pyarrow")

PROBE = """
import os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
import django
django.setup()
import config.urls, config.wsgi, config.celery, labeling.tasks, rewards.tasks
from django.urls import get_resolver
get_resolver().url_patterns  # every view module
from django.core.management import load_command_class
for name in ("import_dataset", "load_demo", "create_api_token", "train_reward_model"):
    load_command_class(name.startswith("train") and "rewards" or "labeling", name)
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""


def test_the_urlconf_workers_and_commands_import_no_ml_stack(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PREFLAB_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "", f"imported at start: {result.stdout.strip()}"


def test_the_wsgi_module_loads_the_views_before_gunicorn_forks_its_workers(tmp_path):
    """Under --preload the workers fork from the process that imported config.wsgi: the views
    are imported there once, not again by each worker's first request, and what it made is
    frozen, out of the workers' garbage collections."""
    probe = (
        "import os, sys; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'\n"
        "import config.wsgi\n"
        "import gc\n"
        "print('labeling.api' in sys.modules, 'rewards.api' in sys.modules)\n"
        "print(gc.get_freeze_count() > 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PREFLAB_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == ["True", "True", "True"]  # loaded, and frozen for the GC
