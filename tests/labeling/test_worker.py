"""Imports run by a real Celery worker (celery's testing worker on an in-memory broker)."""

from __future__ import annotations

import io
import json

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling.models import ImportJob, Prompt


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
