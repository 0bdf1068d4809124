"""The models of what labelers rate: a dataset's rating criteria, each with its own scale, and the
ratings of a ranking, one row per completion and criterion. `labeling.models` imports them at its
end, so Django registers them with the app and `labeling.models.Rating` still names them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import connection, models
from django.db.models import Aggregate, F, Func, JSONField, OuterRef, Q, Subquery

from labeling.criteria import SCALE_CEILING, SCALE_FLOOR, ratings_json
from labeling.models import Completion, Dataset, Ranking

SCALE_VALIDATORS = [MinValueValidator(SCALE_FLOOR), MaxValueValidator(SCALE_CEILING)]
# A criterion's fields a caller sets (its position is its place in the dataset's list).
CRITERION_FIELDS = (
    "key",
    "label",
    "description",
    "scale_min",
    "scale_max",
    "min_label",
    "max_label",
)
CRITERION_COLUMNS = (*CRITERION_FIELDS, "position")


class JSONArrayAgg(Aggregate):
    """Rows' values as one JSON array (SQLite's json_group_array, PostgreSQL's jsonb_agg)."""

    function = "JSON_GROUP_ARRAY"
    output_field = JSONField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, function="JSONB_AGG", **extra)


class JSONFields(Func):
    """A row's columns as a JSON object, its keys written into the SQL: Django's JSONObject
    probes SQLite's JSON support with a query of its own the first time, and PostgreSQL cannot
    type a key sent as a parameter of jsonb_build_object."""

    function = "JSON_OBJECT"
    output_field = JSONField()

    def __init__(self, *names: str) -> None:
        if not all(name.isidentifier() for name in names):
            raise ValueError(f"Column names only: {names}")  # they are written into the SQL
        super().__init__(*(F(name) for name in names))
        self.names = names

    def as_sql(
        self,
        compiler: Any,
        connection: Any,
        function: str | None = None,
        template: str | None = None,
        arg_joiner: str | None = None,
        **extra: Any,
    ) -> Any:
        parts, params = [], []
        for name, expression in zip(self.names, self.get_source_expressions(), strict=True):
            sql, expression_params = compiler.compile(expression)
            parts.append(f"'{name}', {sql}")
            params.extend(expression_params)
        return f"{function or self.function}({', '.join(parts)})", params

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, function="JSONB_BUILD_OBJECT", **extra)


def criteria_json() -> Subquery:
    """The dataset's criteria as a JSON array of their fields, in no particular order (for
    `DatasetQuerySet.with_criteria`, which reads them in the dataset's own query)."""
    rows = RatingCriterion.objects.filter(dataset=OuterRef("pk")).order_by().values("dataset")
    fields = JSONFields(*CRITERION_COLUMNS)
    return Subquery(rows.annotate(criteria=JSONArrayAgg(fields)).values("criteria"))


class RatingCriterion(models.Model):
    """One thing labelers rate each response on, on a scale of whole numbers
    `scale_min`..`scale_max`, whose ends mean `min_label` and `max_label`."""

    dataset = models.ForeignKey(
        Dataset, on_delete=models.CASCADE, related_name="criteria", db_index=False
    )
    key = models.SlugField(max_length=50, help_text="Names the criterion in the API and exports.")
    label = models.CharField(max_length=100)
    description = models.TextField(blank=True, help_text="Shown to labelers beside the scale.")
    scale_min = models.SmallIntegerField(default=1, validators=SCALE_VALIDATORS)
    scale_max = models.SmallIntegerField(default=7, validators=SCALE_VALIDATORS)
    min_label = models.CharField(max_length=100, blank=True, help_text="What the lowest means.")
    max_label = models.CharField(max_length=100, blank=True, help_text="What the highest means.")
    position = models.PositiveSmallIntegerField(default=0, help_text="Order on the page.")

    class Meta:
        ordering = ["position", "pk"]
        constraints = [
            # Its dataset's criteria are read by this index too (no index of the FK's own).
            models.UniqueConstraint(fields=["dataset", "key"], name="criterion_key_per_dataset"),
            models.CheckConstraint(
                condition=Q(scale_min__lt=F("scale_max"))
                & Q(scale_min__gte=SCALE_FLOOR)
                & Q(scale_max__lte=SCALE_CEILING),
                name="criterion_scale",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.scale_min}-{self.scale_max})"

    @property
    def values(self) -> range:
        return range(self.scale_min, self.scale_max + 1)


class RatingQuerySet(models.QuerySet["Rating"]):
    def as_json(self) -> dict[int, dict[str, dict[str, int]]]:
        """ranking id -> {"<completion id>": {"<criterion key>": value}}, the shape the rankings
        export and the review page show, in one query (completions, then criteria in order)."""
        rows = self.order_by("ranking_id", "completion_id", "criterion__position", "criterion_id")
        by_ranking: dict[int, list[tuple[int, str, int]]] = {}
        for ranking_id, completion_id, key, value in rows.values_list(
            "ranking_id", "completion_id", "criterion__key", "value"
        ):
            by_ranking.setdefault(ranking_id, []).append((completion_id, key, value))
        return {ranking_id: ratings_json(rows) for ranking_id, rows in by_ranking.items()}

    def of_rankings(self, ranking_ids: Iterable[int]) -> dict[int, dict[str, dict[str, int]]]:
        """`as_json` of the rankings of `ranking_ids` ({} for those without ratings), in one
        query. On PostgreSQL the database builds each ranking's JSON (`RATINGS_JSON`): a
        rankings export reads a row per ranking instead of one per rating, and stays as fast
        as when the JSON was a column."""
        ids = list(set(ranking_ids))
        if not ids:
            return {}
        if connection.vendor != "postgresql":
            return self.filter(ranking_id__in=ids).as_json()
        with connection.cursor() as cursor:
            cursor.execute(RATINGS_JSON, [ids])
            return {
                ranking_id: json.loads(ratings) if isinstance(ratings, str) else ratings
                for ranking_id, ratings in cursor.fetchall()
            }


# `RatingQuerySet.of_rankings` on PostgreSQL: the `as_json` shape, built by the database. As
# jsonb, its keys come in jsonb's order (shorter first, then bytewise), as they did from the
# jsonb column `Ranking.ratings` was: a rankings export (shape v1) gives the same bytes.
RATINGS_JSON = """
SELECT ranking_id, jsonb_object_agg(completion_id, ratings)
FROM (
    SELECT r.ranking_id, r.completion_id, jsonb_object_agg(c.key, r.value) AS ratings
    FROM labeling_rating r JOIN labeling_ratingcriterion c ON c.id = r.criterion_id
    WHERE r.ranking_id = ANY(%s)
    GROUP BY r.ranking_id, r.completion_id
) per_completion
GROUP BY ranking_id
"""


class Rating(models.Model):
    """One labeler's rating of one completion on one criterion, in a ranking. The value lies in
    the criterion's scale: `submit_ranking` checks it, the database bounds every scale."""

    # No index of its own: the unique (ranking, completion, criterion) serves lookups.
    ranking = models.ForeignKey(
        Ranking, on_delete=models.CASCADE, related_name="ratings", db_index=False
    )
    completion = models.ForeignKey(Completion, on_delete=models.CASCADE, related_name="ratings")
    # A criterion with ratings is kept (deleting it would take labelers' work with it) unless
    # its ratings go too, as when their dataset or ranking is deleted.
    criterion = models.ForeignKey(
        RatingCriterion, on_delete=models.RESTRICT, related_name="ratings"
    )
    value = models.SmallIntegerField()

    objects = RatingQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["ranking", "completion", "criterion"], name="rating_once_per_ranking"
            ),
            models.CheckConstraint(
                condition=Q(value__gte=SCALE_FLOOR) & Q(value__lte=SCALE_CEILING),
                name="rating_value_bounds",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.criterion_id}={self.value} of {self.completion_id} in {self.ranking_id}"
