"""Rankings (one labeler's judgment of a prompt) and the comparisons derived from them, with
the QuerySet every export and statistic reads them through. `labeling.models` imports this
module at its end, so `labeling.models.Ranking` is the same class."""

from __future__ import annotations

from collections import defaultdict
from functools import cached_property
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

from labeling.choices import Labelers, Strength
from labeling.models import Assignment, Completion, Dataset, Prompt, labeler_counts
from labeling.orders import Order


class ExportQuerySet(models.QuerySet[Any]):
    def counted(self, labelers: str = Labelers.HUMAN) -> ExportQuerySet:
        """Rankings or comparisons that count (`labeler_counts`): humans' unless `labelers`
        asks for AI labelers' (`ai`) or both (`all`)."""
        return self.filter(labeler_counts(labelers=labelers))

    def orders_by_prompt(self) -> dict[int, list[Order]]:
        """Rankings only: each prompt's orders, oldest first, like `in_bulk` a dict."""
        orders: dict[int, list[Order]] = defaultdict(list)
        for prompt_id, order in self.order_by("pk").values_list("prompt_id", "order"):
            orders[prompt_id].append(order)
        return dict(orders)

    def exported(
        self,
        *,
        cursor: int,
        since: int = 0,
        exclude_gold: bool = True,
        labeler: int | None = None,
        min_margin: int | None = None,
        exclude_unacceptable: bool = False,
        labelers: str = Labelers.HUMAN,
    ) -> ExportQuerySet:
        """Rows of one export pull: after `since`, up to `cursor`, with the export's filters:
        humans' rows unless `labelers` asks for AI labelers' (`ai`) or both (`all`).

        Rows of excluded (deactivated) labelers are never exported."""
        rows = self.counted(labelers).filter(pk__gt=since, pk__lte=cursor)
        if exclude_gold:
            rows = rows.filter(prompt__is_gold=False)
        if labeler is not None:
            rows = rows.filter(labeler_id=labeler)
        if min_margin:
            rows = rows.filter(margin__gte=min_margin)
        if exclude_unacceptable:
            # A ranking's own flag, or for a comparison its ranking's.
            unacceptable = (
                "all_unacceptable" if self.model is Ranking else "ranking__all_unacceptable"
            )
            rows = rows.exclude(**{unacceptable: True})
        return rows


class Ranking(models.Model):
    assignment = models.OneToOneField(
        Assignment,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="ranking",
        help_text="The labeler's task; empty for an AI labeler's ranking, which takes no lease.",
    )
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="rankings")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="rankings")
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rankings"
    )
    order = models.JSONField(
        help_text="Completion ids best to worst, as tie groups: [[3], [1, 2]]."
    )
    flags = models.JSONField(default=dict, blank=True, help_text='{"<completion id>": [flag]}')
    all_unacceptable = models.BooleanField(default=False)
    rationale = models.TextField(blank=True)
    seconds_spent = models.FloatField()
    guidelines_version = models.PositiveIntegerField()
    request_id = models.UUIDField(unique=True)
    created_at = models.DateTimeField()

    objects = ExportQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(seconds_spent__gte=0), name="ranking_seconds_spent"),
        ]
        indexes = [
            models.Index(fields=["labeler", "created_at"], name="ranking_labeler_created"),
            models.Index(fields=["dataset", "id"], name="ranking_dataset_id"),
        ]

    def __str__(self) -> str:
        return f"ranking {self.pk} of {self.prompt} by {self.labeler}"

    @cached_property
    def comparison_count(self) -> int:
        """Its comparisons; set by the submission that stored them, counted otherwise."""
        return self.comparisons.count()

    @cached_property
    def rating_values(self) -> dict[str, dict[str, int]]:
        """Its ratings as {"<completion id>": {"<criterion key>": value}}; set by the submission
        that stored them, read from the table otherwise."""
        from labeling.criteria_models import Rating  # made after this module, beside it

        return Rating.objects.of_rankings([self.pk]).get(self.pk, {})


class Comparison(models.Model):
    # dataset is copied from the prompt so an export scans one index: (dataset, id).
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="comparisons")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="comparisons")
    chosen = models.ForeignKey(Completion, on_delete=models.CASCADE, related_name="+")
    rejected = models.ForeignKey(Completion, on_delete=models.CASCADE, related_name="+")
    margin = models.PositiveSmallIntegerField(help_text="Rank distance between the two.")
    strength = models.CharField(
        max_length=15,
        choices=Strength.choices,
        blank=True,
        help_text="How much better, asked when the prompt has exactly two completions.",
    )
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="comparisons"
    )
    ranking = models.ForeignKey(Ranking, on_delete=models.CASCADE, related_name="comparisons")
    created_at = models.DateTimeField()

    objects = ExportQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~Q(chosen=models.F("rejected")), name="comparison_distinct_completions"
            ),
            models.CheckConstraint(condition=Q(margin__gte=1), name="comparison_margin_positive"),
            models.UniqueConstraint(
                fields=["ranking", "chosen", "rejected"], name="comparison_once_per_ranking"
            ),
        ]
        indexes = [models.Index(fields=["dataset", "id"], name="comparison_dataset_id")]

    def __str__(self) -> str:
        return f"{self.chosen_id} > {self.rejected_id} ({self.prompt})"
