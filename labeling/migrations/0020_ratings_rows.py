"""Each ranking's `ratings` JSON ({"<completion id>": {"<key>": value}}) becomes Rating rows,
a chunk of rankings at a time; a key its dataset no longer lists (its criteria changed after
labelers rated it) first gets its default criterion back, so no rating is lost. Backwards, the
rows become the JSON again. The conversions are in `labeling.criteria`."""

from typing import Any

from django.db import migrations

from labeling.criteria import (
    default_criteria,
    keys_missing_rows,
    rating_rows_from_json,
    ratings_json,
)

CHUNK = 2000


def ratings_to_rows(apps: Any, schema_editor: Any) -> None:
    Ranking = apps.get_model("labeling", "Ranking")
    Completion = apps.get_model("labeling", "Completion")
    Rating = apps.get_model("labeling", "Rating")
    RatingCriterion = apps.get_model("labeling", "RatingCriterion")
    criteria: dict[int, dict[str, int]] = {}
    for dataset_id, key, pk in RatingCriterion.objects.values_list("dataset_id", "key", "pk"):
        criteria.setdefault(dataset_id, {})[key] = pk
    # values_list, not instances: the historical Ranking has both the JSON field and the rows'
    # reverse accessor named `ratings`.
    rated = Ranking.objects.exclude(ratings={}).order_by("pk")
    last = 0
    while chunk := list(
        rated.filter(pk__gt=last).values_list("pk", "dataset_id", "prompt_id", "ratings")[:CHUNK]
    ):
        last = chunk[-1][0]
        completions: dict[int, list[int]] = {}
        for prompt_id, pk in Completion.objects.filter(
            prompt_id__in={row[2] for row in chunk}
        ).values_list("prompt_id", "pk"):
            completions.setdefault(prompt_id, []).append(pk)
        rows = []
        for ranking_id, dataset_id, prompt_id, ratings in chunk:
            ids = criteria.setdefault(dataset_id, {})
            for fields in default_criteria(keys_missing_rows(ratings, ids)):
                fields["position"] += len(ids)
                ids[fields["key"]] = RatingCriterion.objects.create(
                    dataset_id=dataset_id, **fields
                ).pk
            rows += [
                Rating(ranking_id=ranking_id, completion_id=cid, criterion_id=criterion, value=v)
                for cid, criterion, v in rating_rows_from_json(
                    ratings, ids, completions.get(prompt_id, [])
                )
            ]
        Rating.objects.bulk_create(rows, batch_size=5000)


def rows_to_ratings(apps: Any, schema_editor: Any) -> None:
    Ranking = apps.get_model("labeling", "Ranking")
    Rating = apps.get_model("labeling", "Rating")
    rows = (
        Rating.objects.order_by("ranking_id", "completion_id", "criterion__position", "criterion")
        .values_list("ranking_id", "completion_id", "criterion__key", "value")
        .iterator(chunk_size=5000)
    )
    by_ranking: dict[int, list[tuple[int, str, int]]] = {}
    for ranking_id, completion_id, key, value in rows:
        by_ranking.setdefault(ranking_id, []).append((completion_id, key, value))
    for ranking_id, values in by_ranking.items():
        Ranking.objects.filter(pk=ranking_id).update(ratings=ratings_json(values))
    Rating.objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0019_rating"),
    ]

    operations = [
        migrations.RunPython(ratings_to_rows, rows_to_ratings, elidable=False),
    ]
