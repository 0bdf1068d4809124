"""Creating datasets, changing their settings (both recorded in the audit trail), and their
rating criteria."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max, Min

from labeling.criteria import default_criteria
from labeling.criteria_models import CRITERION_FIELDS
from labeling.models import AuditEvent, Dataset, Rating, RatingCriterion
from labeling.services import audit
from labeling.services.quality_report import invalidate_reports

# The ranking form names a rating field "<key>_<completion id>", beside "rank_" and "flags_".
RESERVED_KEYS = {"rank", "flags"}


def create_dataset(
    *,
    slug: str,
    name: str = "",
    criteria: list[dict[str, Any]] | None = None,
    user: Any = None,
    request: Any = None,
    **fields: Any,
) -> Dataset:
    """A new dataset (in `workspace`, else the default one) with its criteria: the HHH
    defaults (1-7) unless `criteria` is given."""
    dataset = Dataset(slug=slug, name=name or slug, **fields)
    with transaction.atomic():
        add_dataset(dataset=dataset, user=user, request=request)
        set_criteria(dataset=dataset, criteria=default_criteria() if criteria is None else criteria)
    return dataset


def add_dataset(*, dataset: Dataset, user: Any = None, request: Any = None) -> Dataset:
    """Save a new, unsaved dataset (an admin form's, whose criteria come after it: see
    `make_default_criteria`), recorded in the audit trail."""
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
    *,
    dataset: Dataset,
    criteria: list[dict[str, Any]] | None = None,
    user: Any = None,
    request: Any = None,
    **fields: Any,
) -> Dataset:
    """Change a dataset's settings (and its criteria, when given: `set_criteria`); new
    guidelines raise `guidelines_version` and go into the audit trail (both versions' lengths
    and the new version)."""
    with transaction.atomic():
        old_guidelines = Dataset.objects.values_list("guidelines", flat=True).get(pk=dataset.pk)
        for name, value in fields.items():
            setattr(dataset, name, value)
        changed = dataset.guidelines != old_guidelines
        if changed:
            dataset.guidelines_version += 1
        dataset.full_clean()
        dataset.save()
        if criteria is not None:
            set_criteria(dataset=dataset, criteria=criteria)
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
    if criteria is not None or {"ratings", "labels_per_prompt"} & set(fields):
        invalidate_reports([dataset.pk])  # what is rated and what counts as done changed
    return dataset


def make_default_criteria(*, dataset: Dataset) -> list[RatingCriterion]:
    """Give a dataset without criteria the HHH defaults (the admin's add form, which saves the
    dataset before its criteria)."""
    if dataset.criteria.exists():
        return list(dataset.criteria.all())
    return set_criteria(dataset=dataset, criteria=default_criteria())


def set_criteria(*, dataset: Dataset, criteria: list[dict[str, Any]]) -> list[RatingCriterion]:
    """Make the dataset's criteria those of `criteria`, in that order: criteria are matched by
    key, so changing a label or a scale keeps its ratings.

    Raises ValidationError naming the criterion by its index ("criteria[1].scale_max: ...") for
    an invalid or repeated one, and refuses to drop a criterion that has ratings or to narrow a
    scale below ratings already given (set the dataset's ratings off to stop asking instead)."""
    wanted = [_checked_criterion(dataset, index, fields) for index, fields in enumerate(criteria)]
    keys = [criterion.key for criterion in wanted]
    for index, key in enumerate(keys):
        if key in keys[:index]:
            raise ValidationError({"criteria": f"criteria[{index}].key: {key!r} appears twice."})
    with transaction.atomic():
        existing = {c.key: c for c in RatingCriterion.objects.filter(dataset=dataset)}
        rated = _rated_ranges(list(existing.values()))
        for key in sorted(set(existing) - set(keys)):
            if key in rated:
                raise ValidationError(
                    {
                        "criteria": f"{key!r} has ratings and cannot be removed; set the "
                        "dataset's ratings off to stop asking for them."
                    }
                )
        RatingCriterion.objects.filter(dataset=dataset).exclude(key__in=keys).delete()
        for index, criterion in enumerate(wanted):
            low_high = rated.get(criterion.key)
            if low_high and not criterion.scale_min <= low_high[0] <= low_high[1] <= (
                criterion.scale_max
            ):
                raise ValidationError(
                    {
                        "criteria": f"criteria[{index}]: {criterion.key!r} has ratings from "
                        f"{low_high[0]} to {low_high[1]}; its scale must include them."
                    }
                )
            if criterion.key in existing:
                criterion.pk = existing[criterion.key].pk
            criterion.save()
    for name in ("rated_criteria", "all_criteria", "criteria_json"):
        dataset.__dict__.pop(name, None)
    return wanted


def _checked_criterion(dataset: Dataset, index: int, fields: dict[str, Any]) -> RatingCriterion:
    unknown = sorted(set(fields) - {*CRITERION_FIELDS, "position"})
    if unknown:
        raise ValidationError({"criteria": f"criteria[{index}]: unknown fields {unknown}."})
    criterion = RatingCriterion(dataset=dataset, **(fields | {"position": index}))
    if not criterion.label:
        criterion.label = criterion.key.replace("_", " ").replace("-", " ").capitalize()
    try:
        criterion.full_clean(exclude=["dataset"], validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        field, messages = next(iter(error.message_dict.items()))
        raise ValidationError({"criteria": f"criteria[{index}].{field}: {messages[0]}"}) from None
    if criterion.key in RESERVED_KEYS:
        raise ValidationError(
            {"criteria": f"criteria[{index}].key: {criterion.key!r} is reserved; choose another."}
        )
    if criterion.scale_min >= criterion.scale_max:
        raise ValidationError(
            {"criteria": f"criteria[{index}].scale_max: must be above scale_min."}
        )
    return criterion


def _rated_ranges(criteria: list[RatingCriterion]) -> dict[str, tuple[int, int]]:
    """key -> (lowest, highest) rating given, of those of `criteria` that have ratings."""
    keys = {criterion.pk: criterion.key for criterion in criteria}
    rows = (
        Rating.objects.filter(criterion__in=criteria)
        .values("criterion")
        .annotate(low=Min("value"), high=Max("value"))
        .values_list("criterion", "low", "high")
    )
    return {keys[pk]: (low, high) for pk, low, high in rows}
