"""Queued imports end one way or another, and leave no file behind: finished, failed, cancelled
while running, reclaimed when their worker died, or swept up by the periodic clean-up."""

from __future__ import annotations

import io
import json
import os
import time
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from labeling.models import ImportJob
from labeling.services import import_batches, imports, jobs


def queued(dataset, content: bytes, staff=None) -> ImportJob:
    upload = io.BytesIO(content)
    return imports.queue_import(
        dataset=dataset, upload=upload, filename="p.jsonl", size=len(content), user=staff
    )


def lines(count: int) -> bytes:
    return "".join(
        json.dumps({"id": f"p{n}", "prompt": f"Q{n}?", "completions": ["a", "b"]}) + "\n"
        for n in range(count)
    ).encode()


def test_a_finished_or_failed_import_deletes_its_upload(dataset):
    done = queued(dataset, lines(3))
    path = done.file.path
    imports.run_import_job(job_id=done.pk)
    done.refresh_from_db()
    assert (done.status, done.created_count, done.file.name) == ("succeeded", 3, "")
    assert not os.path.exists(path)
    failed = queued(dataset, b"oops\n")
    path = failed.file.path
    with pytest.raises(ValidationError):
        imports.run_import_job(job_id=failed.pk)
    failed.refresh_from_db()
    assert (failed.status, failed.file.name) == ("failed", "")
    assert failed.error == "line 1: is not valid JSON (Expecting value, column 1)"
    assert not os.path.exists(path)


def test_a_running_import_stops_when_cancelled_and_keeps_nothing(dataset, monkeypatch):
    monkeypatch.setattr(import_batches, "IMPORT_BATCH_SIZE", 2)
    job = queued(dataset, lines(9))
    batches = 0
    asked = jobs.cancel_requested

    def cancel_after_the_second_batch(model, job_id) -> bool:
        nonlocal batches
        batches += 1
        if batches == 2:
            imports.cancel_import(job=ImportJob.objects.get(pk=job_id))
        assert ImportJob.objects.get(pk=job_id).status == "running"  # until the batch ends
        return asked(model, job_id)

    monkeypatch.setattr(jobs, "cancel_requested", cancel_after_the_second_batch)
    result = imports.run_import_job(job_id=job.pk)
    assert result is not None and result.status == "cancelled"
    assert result.error == "Cancelled while importing; nothing was imported."
    assert batches == 2 and not dataset.prompts.exists()
    with pytest.raises(ValidationError, match="already cancelled"):
        imports.cancel_import(job=result)


def test_an_import_whose_worker_died_is_failed_and_its_file_deleted(dataset, settings):
    job = queued(dataset, lines(1))
    started = timezone.now()
    jobs.claim_job(ImportJob, job.pk, now=started)
    limit = settings.CELERY_TASK_TIME_LIMIT + imports.STALE_GRACE_SECONDS
    assert imports.reclaim_stale_imports(now=started + timedelta(seconds=limit - 1)) == 0
    assert imports.reclaim_stale_imports(now=started + timedelta(seconds=limit + 1)) == 1
    job.refresh_from_db()
    assert job.status == "failed" and "Upload the file again" in job.error
    assert not job.file


def test_old_uploads_no_import_needs_are_swept_up(dataset, settings):
    waiting = queued(dataset, lines(1))
    left = queued(dataset, lines(1))
    ImportJob.objects.filter(pk=left.pk).update(status="failed")  # a crash left its file
    old = time.time() - 3600 * (settings.PREFLAB_UPLOAD_RETENTION_HOURS + 1)
    for job in (waiting, left):
        os.utime(job.file.path, (old, old))
    assert imports.delete_old_uploads() == 1
    assert os.path.exists(waiting.file.path) and not os.path.exists(left.file.path)
