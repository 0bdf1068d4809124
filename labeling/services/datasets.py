"""Creating datasets and changing their settings."""

from __future__ import annotations

from typing import Any

from labeling.models import Dataset
from labeling.services.quality_report import invalidate_reports


def create_dataset(*, slug: str, name: str = "", **fields: Any) -> Dataset:
    dataset = Dataset(slug=slug, name=name or slug, **fields)
    dataset.full_clean()
    dataset.save()
    return dataset


def update_dataset(*, dataset: Dataset, **fields: Any) -> Dataset:
    """Change a dataset's settings; new guidelines raise `guidelines_version`."""
    old_guidelines = Dataset.objects.values_list("guidelines", flat=True).get(pk=dataset.pk)
    for name, value in fields.items():
        setattr(dataset, name, value)
    if dataset.guidelines != old_guidelines:
        dataset.guidelines_version += 1
    dataset.full_clean()
    dataset.save()
    if {"criteria", "ratings", "labels_per_prompt"} & set(fields):
        invalidate_reports([dataset.pk])  # what is rated and what counts as done changed
    return dataset
