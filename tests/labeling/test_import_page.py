"""The admin's import progress page: what it says at each stage, its reloading, its Cancel
button and where it leads once the import has ended."""

from __future__ import annotations

import io
import json

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.urls import reverse

from labeling.models import ImportJob, Role
from labeling.services import imports
from tests.factories import UserFactory


def upload(client, dataset, content: bytes):
    """Post a file to the admin's import form; return the response."""
    file = io.BytesIO(content)
    file.name = "prompts.jsonl"
    return client.post(
        reverse("admin:labeling_dataset_import", args=[dataset.pk]), {"file": file, "format": ""}
    )


def lines(count: int) -> bytes:
    return "".join(
        json.dumps({"id": f"q{n}", "prompt": f"Q{n}?", "completions": ["yes", "no"]}) + "\n"
        for n in range(count)
    ).encode()


def page_of(client, job: ImportJob) -> str:
    return client.get(reverse("admin:labeling_importjob_change", args=[job.pk])).content.decode()


def test_the_upload_runs_the_worker_task_and_its_page_shows_the_result(
    client, staff, dataset, eager_celery, django_capture_on_commit_callbacks
):
    client.force_login(staff)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = upload(client, dataset, lines(3))
    job = ImportJob.objects.get()
    assert len(callbacks) == 1  # the Celery task, sent after the upload was committed
    assert response.url == reverse("admin:labeling_importjob_change", args=[job.pk])
    page = client.get(response.url).content.decode()
    assert "3 prompts imported, 0 already present" in page
    assert 'http-equiv="refresh"' not in page
    assert f'href="{reverse("admin:labeling_dataset_change", args=[dataset.pk])}"' in page
    assert f'href="{reverse("admin:labeling_dataset_import", args=[dataset.pk])}"' in page
    assert dataset.prompts.count() == 3


def test_a_queued_import_page_reloads_itself_and_cancels_back_to_itself(
    client, staff, dataset, django_capture_on_commit_callbacks
):
    client.force_login(staff)
    with django_capture_on_commit_callbacks(execute=False):
        upload(client, dataset, lines(3))
    job = ImportJob.objects.get()
    page = page_of(client, job)
    cancel = reverse("admin:labeling_importjob_cancel", args=[job.pk])
    assert '<meta http-equiv="refresh" content="3">' in page
    assert "Waiting for a worker" in page
    assert f'action="{cancel}"' in page
    assert reverse("admin:labeling_dataset_import", args=[dataset.pk]) not in page
    response = client.post(cancel)
    assert response.url == reverse("admin:labeling_importjob_change", args=[job.pk])
    job.refresh_from_db()
    assert job.status == ImportJob.Status.CANCELLED and not job.file
    page = page_of(client, job)
    assert "Cancelled before it started; nothing was imported." in page
    assert 'http-equiv="refresh"' not in page and f'action="{cancel}"' not in page
    client.post(cancel)
    assert "already cancelled" in page_of(client, job)


def test_a_failed_import_page_shows_the_line_and_leads_back(
    client, staff, dataset, django_capture_on_commit_callbacks
):
    client.force_login(staff)
    with django_capture_on_commit_callbacks(execute=False):
        upload(client, dataset, lines(2) + b"oops\n")
    job = ImportJob.objects.get()
    with pytest.raises(ValidationError):
        imports.run_import_job(job_id=job.pk)
    page = page_of(client, job)
    assert '<p class="errornote">line 3: is not valid JSON' in page
    assert f'href="{reverse("admin:labeling_dataset_import", args=[dataset.pk])}"' in page


def test_only_staff_who_may_change_imports_cancel_them(client, labeler, dataset, staff):
    job = imports.queue_import(
        dataset=dataset, upload=io.BytesIO(lines(1)), filename="p.jsonl", size=10, user=staff
    )
    cancel = reverse("admin:labeling_importjob_cancel", args=[job.pk])
    client.force_login(labeler)
    assert client.post(cancel).status_code == 403  # a labeler: the 403 page, no admin login
    viewer = UserFactory(is_staff=True, role=Role.REVIEWER)  # may view, manages no workspace
    viewer.user_permissions.add(Permission.objects.get(codename="view_importjob"))
    client.force_login(viewer)
    assert client.post(cancel).status_code == 403
    assert "Cancel the import" not in page_of(client, job)
    client.force_login(staff)
    assert client.get(cancel).status_code == 405
    job.refresh_from_db()
    assert job.status == ImportJob.Status.QUEUED
