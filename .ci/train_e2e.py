"""CI: one training run end to end through a `celery worker` process and a real broker.

Run by .ci/run with DATABASE_URL and CELERY_BROKER_URL set and a worker started on them: it
imports the HH dev file (or a synthetic set when ../shared/data is absent), has simulated labelers
rank every prompt, queues a training run, waits for the worker to finish it and prints metrics.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from labeling.models import Dataset  # noqa: E402
from labeling.services import datasets, imports, workspaces  # noqa: E402
from rewards.models import TrainingRun  # noqa: E402
from rewards.services import runs  # noqa: E402
from tests.factories import UserFactory, rank_as_the_file_prefers  # noqa: E402

HH = ROOT.parent / "shared" / "data" / "hh_harmless_dev.jsonl.gz"


def main() -> int:
    call_command("migrate", verbosity=0)
    slug = f"ci-{uuid.uuid4().hex[:8]}"
    dataset = datasets.create_dataset(
        slug=slug, status=Dataset.Status.ACTIVE, labels_per_prompt=1, criteria=[]
    )
    if HH.exists():
        with HH.open("rb") as stream:
            imports.import_dataset(dataset=dataset, stream=stream, filename=HH.name)
    else:
        rows = [
            {
                "id": f"q{i}",
                "prompt": f"Question {i}?",
                "completions": [f"Gladly: answer {i}.", f"No. {i}"],
            }
            for i in range(300)
        ]
        path = Path("/tmp") / f"{slug}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        with path.open("rb") as stream:
            imports.import_dataset(dataset=dataset, stream=stream, filename=path.name)
    labeler = UserFactory(username=f"{slug}-labeler")
    workspaces.change_pool(dataset=dataset, add_labelers=[labeler])
    rank_as_the_file_prefers(dataset, labeler)
    run = runs.start_training_run(datasets=[dataset])
    print(
        f"queued training run {run.pk} on {dataset.prompts.count()} prompts; waiting for the worker"
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.is_finished:
            break
        time.sleep(0.5)
    print(f"run {run.pk}: {run.status} {run.error}")
    if run.status != TrainingRun.Status.SUCCEEDED:
        return 1
    held_out = run.metrics["held_out"]
    print(
        f"held-out pairwise accuracy {held_out['accuracy']:.3f}, "
        f"log loss {held_out['log_loss']:.3f}, "
        f"model v{run.reward_model.version} files {sorted(run.reward_model.files)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
