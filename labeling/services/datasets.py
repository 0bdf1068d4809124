"""Creating datasets and changing their settings."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from labeling.models import AuditEvent, Dataset
from labeling.services import audit
from labeling.services.quality_report import invalidate_reports


def create_dataset(
    *, slug: str, name: str = "", user: Any = None, request: Any = None, **fields: Any
) -> Dataset:
    """A new dataset (in `workspace`, else the default one), recorded in the audit trail."""
    dataset = Dataset(slug=slug, name=name or slug, **fields)
    return add_dataset(dataset=dataset, user=user, request=request)


def add_dataset(*, dataset: Dataset, user: Any = None, request: Any = None) -> Dataset:
    """Save a new, unsaved dataset (an admin form's), recorded in the audit trail."""
    dataset.full_clean()
    with transaction.atomic():
        dataset.save()
        audit.record(
            action=AuditEvent.Action.DATASET_CREATED,
            workspace_id=dataset.workspace_id,
            dataset=dataset,
            actor=user,
            request=request,
            slug=dataset.slug,
        )
    return dataset


def update_dataset(
    *, dataset: Dataset, user: Any = None, request: Any = None, **fields: Any
) -> Dataset:
    """Change a dataset's settings; new guidelines raise `guidelines_version` and go into the
    audit trail (both versions' lengths and the new version)."""
    old_guidelines = Dataset.objects.values_list("guidelines", flat=True).get(pk=dataset.pk)
    for name, value in fields.items():
        setattr(dataset, name, value)
    changed = dataset.guidelines != old_guidelines
    if changed:
        dataset.guidelines_version += 1
    dataset.full_clean()
    with transaction.atomic():
        dataset.save()
        if changed:
            audit.record(
                action=AuditEvent.Action.GUIDELINES_CHANGED,
                workspace_id=dataset.workspace_id,
                dataset=dataset,
                actor=user,
                request=request,
                version=dataset.guidelines_version,
                old_chars=len(old_guidelines),
                new_chars=len(dataset.guidelines),
            )
    if {"criteria", "ratings", "labels_per_prompt"} & set(fields):
        invalidate_reports([dataset.pk])  # what is rated and what counts as done changed
    return dataset
