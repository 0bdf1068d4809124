"""Each dataset's `criteria` JSON list (keys of helpful, honest, harmless) becomes its
RatingCriterion rows, with the default labels, descriptions and 1-7 scale; backwards, the rows'
keys become the list again. The conversion is `labeling.criteria.criteria_rows_from_json`."""

from typing import Any

from django.db import migrations

from labeling.criteria import criteria_rows_from_json


def criteria_to_rows(apps: Any, schema_editor: Any) -> None:
    Dataset = apps.get_model("labeling", "Dataset")
    RatingCriterion = apps.get_model("labeling", "RatingCriterion")
    # values_list, not instances: the historical Dataset has both the JSON field and the rows'
    # reverse accessor named `criteria`.
    RatingCriterion.objects.bulk_create(
        RatingCriterion(dataset_id=dataset_id, **fields)
        for dataset_id, keys in Dataset.objects.values_list("pk", "criteria")
        for fields in criteria_rows_from_json(keys)
    )


def rows_to_criteria(apps: Any, schema_editor: Any) -> None:
    Dataset = apps.get_model("labeling", "Dataset")
    RatingCriterion = apps.get_model("labeling", "RatingCriterion")
    keys: dict[int, list[str]] = {}
    for dataset_id, key in RatingCriterion.objects.order_by("position", "pk").values_list(
        "dataset_id", "key"
    ):
        keys.setdefault(dataset_id, []).append(key)
    for dataset_id in Dataset.objects.values_list("pk", flat=True):
        Dataset.objects.filter(pk=dataset_id).update(criteria=keys.get(dataset_id, []))
    RatingCriterion.objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0016_rating_criterion"),
    ]

    operations = [
        migrations.RunPython(criteria_to_rows, rows_to_criteria, elidable=False),
    ]
