"""Training through real Celery workers: the testing worker in-process, and a `celery worker`
process that is killed mid-run (PostgreSQL, so that the worker process shares the database)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.db import connection
from django.utils import timezone

from config.celery import app
from labeling.models import Assignment, Comparison, Completion, Prompt, Ranking
from rewards.models import TrainingRun
from rewards.services import runs
from tests.conftest import use_broker
from tests.factories import DatasetFactory, UserFactory
from tests.rewards.conftest import ranked_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db(transaction=True)
def test_testing_worker_trains_a_queued_run():
    dataset = ranked_dataset(prompts=20)
    done = threading.Event()

    def finished(**kwargs: object) -> None:
        done.set()

    use_broker("memory://")
    task_postrun.connect(finished, weak=False)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
            run = runs.start_training_run(datasets=[dataset])
            assert done.wait(120)
    finally:
        task_postrun.disconnect(finished)
    run.refresh_from_db()
    assert (run.status, run.error) == ("succeeded", "")
    assert run.reward_model.is_active


def bulk_ranked_dataset(prompts: int):
    """Many ranked prompts written in bulk: enough work that a worker can be killed mid-run."""
    dataset = DatasetFactory(labels_per_prompt=1, criteria=[])
    user = UserFactory()
    now = timezone.now()
    rows = Prompt.objects.bulk_create(
        Prompt(
            dataset=dataset,
            external_id=f"q{i}",
            content_hash=f"{i:064d}",
            messages=[{"role": "user", "content": f"Question {i} about subject {i % 50}?"}],
        )
        for i in range(prompts)
    )
    completions = Completion.objects.bulk_create(
        Completion(
            prompt=prompt,
            external_id=str(k),
            position=k,
            text=f"{'Happy to help, here is how' if k == 0 else 'No idea'} {prompt.pk} {k}",
        )
        for prompt in rows
        for k in range(3)
    )
    assignments = Assignment.objects.bulk_create(
        Assignment(prompt=p, labeler=user, status="submitted", leased_at=now, expires_at=now)
        for p in rows
    )
    rankings = Ranking.objects.bulk_create(
        Ranking(
            assignment=a,
            dataset=dataset,
            prompt=a.prompt,
            labeler=user,
            order=[],
            seconds_spent=1,
            guidelines_version=1,
            request_id=uuid.uuid4(),
            created_at=now,
        )
        for a in assignments
    )
    Comparison.objects.bulk_create(
        Comparison(
            dataset=dataset,
            prompt=r.prompt,
            chosen=completions[3 * i + a],
            rejected=completions[3 * i + b],
            margin=b - a,
            labeler=user,
            ranking=r,
            created_at=now,
        )
        for i, r in enumerate(rankings)
        for a, b in ((0, 1), (0, 2), (1, 2))
    )
    return dataset


def worker_process(tmp_path: Path) -> subprocess.Popen:
    database = connection.settings_dict
    env = os.environ | {
        "DATABASE_URL": (
            f"postgres://{database['USER']}@{database['HOST']}:{database['PORT'] or 5432}"
            f"/{database['NAME']}"
        ),
        "CELERY_BROKER_URL": "filesystem://",
        "PREFLAB_DATA_DIR": str(tmp_path),
    }
    with (tmp_path / "worker.log").open("ab") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--pool=solo",
                "--loglevel=WARNING",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def wait_for(condition, seconds: float = 120) -> bool:
    """Poll the database: the worker is another process, so there is nothing else to wait on."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_killed_worker_leaves_a_failed_run_that_a_retry_finishes(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    dataset = bulk_ranked_dataset(4000)
    for folder in ("queue", "control"):
        (tmp_path / "celery" / folder).mkdir(parents=True, exist_ok=True)
    use_broker(
        "filesystem://",
        data_folder_in=str(tmp_path / "celery" / "queue"),
        data_folder_out=str(tmp_path / "celery" / "queue"),
        control_folder=str(tmp_path / "celery" / "control"),
    )

    worker = worker_process(tmp_path)
    try:
        run = runs.start_training_run(datasets=[dataset])
        assert wait_for(lambda: TrainingRun.objects.get(pk=run.pk).status == "running"), (
            tmp_path / "worker.log"
        ).read_text()[-3000:]
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    finally:
        worker.kill()
        worker.wait(30)
    run.refresh_from_db()
    assert run.status == "running"  # until the lost heartbeat is noticed
    later = timezone.now() + timedelta(seconds=settings.PREFLAB_RUN_STALE_SECONDS + 1)
    assert runs.reclaim_stale_runs(now=later) == 1
    run.refresh_from_db()
    assert run.status == "failed"
    assert not any((tmp_path / "media").rglob("*.onnx")) if (tmp_path / "media").exists() else True

    retry = runs.retry_training_run(run=run)
    worker = worker_process(tmp_path)
    try:
        assert wait_for(lambda: TrainingRun.objects.get(pk=retry.pk).is_finished, seconds=300), (
            tmp_path / "worker.log"
        ).read_text()[-3000:]
    finally:
        worker.kill()
        worker.wait(30)
    retry.refresh_from_db()
    assert (retry.status, retry.error) == ("succeeded", "")
    assert retry.reward_model.files["onnx"]["bytes"] > 0
