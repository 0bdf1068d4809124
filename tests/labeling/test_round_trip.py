"""Real HH-RLHF data: import, rank through the API as the file prefers, export HH, compare."""

from __future__ import annotations

import gzip
import json
import uuid
from collections import Counter
from pathlib import Path

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling.models import Assignment, Completion
from labeling.services import imports
from tests.factories import DatasetFactory, UserFactory

SHARED_HH = Path(__file__).resolve().parents[3] / "shared" / "data" / "hh_harmless_dev.jsonl.gz"


@pytest.mark.skipif(
    not SHARED_HH.exists(), reason="../shared/data/hh_harmless_dev.jsonl.gz is absent"
)
def test_hh_export_gives_back_the_original_pairs(staff):
    dataset = DatasetFactory(labels_per_prompt=1, criteria=[])
    with SHARED_HH.open("rb") as stream:
        result = imports.import_dataset(dataset=dataset, stream=stream, filename=SHARED_HH.name)
    # Whole metadata, not a key transform: SQLite's json_extract turns "7e72950483920016" into inf.
    preferred = {
        prompt_id: metadata["hh_preferred"]
        for prompt_id, metadata in dataset.prompts.values_list("pk", "metadata")
    }
    external = dict(
        Completion.objects.filter(prompt__dataset=dataset).values_list("pk", "external_id")
    )

    labeler = APIClient()
    labeler.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=UserFactory()).key}")
    next_url = reverse("labeling-api:next-task", args=[dataset.slug])
    while (response := labeler.post(next_url)).status_code == 200:
        task = response.json()
        prompt_id = Assignment.objects.values_list("prompt_id", flat=True).get(
            pk=task["assignment"]
        )
        ids = [c["id"] for c in task["completions"]]
        order = sorted(ids, key=lambda cid: external[cid] != preferred[prompt_id])
        body = {
            "order": [[cid] for cid in order],
            "request_id": str(uuid.uuid4()),
            "seconds_spent": 1,
            "strength": "better",
        }
        url = reverse("labeling-api:ranking", args=[task["assignment"]])
        assert labeler.post(url, body, format="json").status_code == 201
    assert response.status_code == 204

    exporter = APIClient()
    exporter.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff).key}")
    export = exporter.get(
        reverse("labeling-api:comparisons", args=[dataset.slug]), {"format": "hh"}
    )
    rows = [json.loads(line) for line in b"".join(export.streaming_content).decode().splitlines()]

    with gzip.open(SHARED_HH, "rt", encoding="utf-8") as lines:
        original = [json.loads(line) for line in lines]
    skipped = {s.line for s in result.skipped}
    expected = Counter(
        (row["chosen"], row["rejected"]) for n, row in enumerate(original, 1) if n not in skipped
    )
    assert len(skipped) == 2
    assert Counter((row["chosen"], row["rejected"]) for row in rows) == expected
