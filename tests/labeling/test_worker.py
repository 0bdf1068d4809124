"""Imports run by a real Celery worker (celery's testing worker on an in-memory broker)."""

from __future__ import annotations

import io
import json
import threading

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from config.celery import app
from labeling.models import ImportJob, Prompt
from tests.conftest import use_broker


@pytest.fixture
def worker():
    use_broker("memory://")
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        yield app


@pytest.fixture
def finished():
    done = threading.Event()

    def on_postrun(**kwargs: object) -> None:
        done.set()

    task_postrun.connect(on_postrun, weak=False)
    yield done
    task_postrun.disconnect(on_postrun)


@pytest.mark.django_db(transaction=True)
def test_uploaded_file_is_imported_by_the_worker(worker, finished, staff, dataset):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff).key}")
    rows = [{"id": f"q{i}", "prompt": f"Q{i}?", "completions": ["yes", "no"]} for i in range(25)]
    upload = io.BytesIO("".join(json.dumps(row) + "\n" for row in rows).encode())
    upload.name = "prompts.jsonl"
    response = client.post(
        reverse("labeling-api:imports", args=[dataset.slug]), {"file": upload}, format="multipart"
    )
    assert response.status_code == 202
    assert finished.wait(60)
    job = ImportJob.objects.get(pk=response.json()["id"])
    assert (job.status, job.created_count, job.error) == (ImportJob.Status.SUCCEEDED, 25, "")
    assert Prompt.objects.filter(dataset=dataset).count() == 25
