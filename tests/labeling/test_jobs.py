"""The bookkeeping every background job shares: one claim, progress on a running job only,
failures stored loudly."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from labeling.models import ImportJob
from labeling.services import jobs


@pytest.fixture
def job(dataset):
    return ImportJob.objects.create(dataset=dataset, filename="prompts.jsonl", size=10)


def test_a_job_is_claimed_once(job):
    now = timezone.now()
    assert jobs.claim_job(ImportJob, job.pk, now=now)
    assert not jobs.claim_job(ImportJob, job.pk, now=now)
    assert not jobs.claim_job(ImportJob, 999_999, now=now)
    job.refresh_from_db()
    assert (job.status, job.started_at, job.progress) == ("running", now, 0.0)


def test_a_running_job_is_reclaimed_only_when_it_started_before_the_limit(job):
    started = timezone.now()
    jobs.claim_job(ImportJob, job.pk, now=started)
    later = started + timezone.timedelta(hours=1)
    assert not jobs.claim_job(ImportJob, job.pk, now=later, reclaim_started_before=started)
    assert jobs.claim_job(ImportJob, job.pk, now=later, reclaim_started_before=later)


def test_progress_is_written_on_a_running_job_only(job):
    write = jobs.ProgressWriter(ImportJob, job.pk)
    write(0.5)
    job.refresh_from_db()
    assert job.progress == 0.0  # still queued
    jobs.claim_job(ImportJob, job.pk, now=timezone.now())
    write(0.5)
    write(7.0)  # clamped
    job.refresh_from_db()
    assert job.progress == 1.0
    jobs.finish_job(ImportJob, job.pk, created_count=3)
    write(0.2)
    job.refresh_from_db()
    assert (job.status, job.progress, job.created_count) == ("succeeded", 1.0, 3)


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (ValidationError({"file": "line 4: bad"}), "file: line 4: bad"),
        (ValidationError("no comparisons"), "no comparisons"),
        (RuntimeError("disk full"), "RuntimeError: disk full"),
    ],
)
def test_a_failure_is_stored_with_its_reason_and_raised_again(job, error, text):
    jobs.claim_job(ImportJob, job.pk, now=timezone.now())
    with pytest.raises(type(error)), jobs.failing_loudly(ImportJob, job.pk):
        raise error
    job.refresh_from_db()
    assert (job.status, job.error) == ("failed", text)
    assert job.finished_at is not None
