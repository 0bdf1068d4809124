"""The models of what is computed from the labels and of reviewers' verdicts: a dataset's quality
report, per-prompt statistics, adjudications and model leaderboards. `labeling.models` imports
them at its end, so Django registers them with the app and `labeling.models.X` still names them."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Count, Exists, OuterRef, Q

from labeling.models import Dataset, Prompt


class QualityReport(models.Model):
    """A dataset's label-quality statistics, computed by a worker and read by the dashboard
    (over 100k rankings they take seconds). `ranking_cursor` is the newest ranking they cover;
    the periodic job refreshes the row when newer rankings exist and it is older than
    `PREFLAB_QUALITY_REFRESH_SECONDS`, or after an exclusion or a gold change (`invalidated`)."""

    dataset = models.OneToOneField(Dataset, on_delete=models.CASCADE, related_name="quality")
    data = models.JSONField(default=dict, blank=True)
    ranking_cursor = models.BigIntegerField(default=0)
    computed_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(default=0.0, help_text="How long the last computation took.")
    generation = models.PositiveIntegerField(
        default=0, help_text="Raised by each invalidation (an exclusion, a gold change, ...)."
    )
    computed_generation = models.PositiveIntegerField(
        default=0, help_text="The generation the data was computed at."
    )
    refresh_queued_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"quality of {self.dataset_id} at {self.computed_at}"

    @property
    def invalidated(self) -> bool:
        """Something that counts changed since the data was computed (or it never was)."""
        return self.computed_at is None or self.computed_generation != self.generation


class PromptStatsQuerySet(models.QuerySet["PromptStats"]):
    def in_review_queue(self) -> PromptStatsQuerySet:
        """Prompts a reviewer should settle, most needed first: some need, not gold, not yet
        adjudicated (`labeling.review.need_score` says what need is)."""
        return self.filter(need__gt=0, is_gold=False, adjudicated=False).order_by(
            "-need", "prompt_id"
        )


class PromptStats(models.Model):
    """One prompt's figures, as data: computed by the quality report's worker from the counted
    rankings (`labeling.services.prompt_stats`), so that the review queue, the admin and the API
    can filter and order prompts by them with an index instead of reading a JSON blob."""

    prompt = models.OneToOneField(
        Prompt, on_delete=models.CASCADE, primary_key=True, related_name="stats"
    )
    # Copied from the prompt so the queue reads one index: (dataset, -need).
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="+")
    labels = models.PositiveIntegerField(default=0, help_text="Counted rankings.")
    agreement = models.FloatField(
        null=True, blank=True, help_text="Pairwise agreement of its labelers (two or more)."
    )
    consensus = models.JSONField(
        default=list, blank=True, help_text="Ranked pairs order of the counted rankings (ids)."
    )
    min_margin = models.FloatField(
        null=True,
        blank=True,
        help_text="Smallest vote margin over a completion pair, (winner - loser votes) / voters:"
        " 0 is a split vote, 1 unanimous. Empty with fewer than two labels.",
    )
    flags = models.JSONField(default=dict, blank=True, help_text='{"flag": times given}')
    safety_flags = models.PositiveIntegerField(
        default=0,
        help_text="Times a safety flag (harmful, sexual, violent, denigrating) was given.",
    )
    is_gold = models.BooleanField(default=False)
    adjudicated = models.BooleanField(default=False)
    model_version = models.PositiveIntegerField(
        null=True, blank=True, help_text="The active reward model that scored its completions."
    )
    model_scores = models.JSONField(
        default=dict, blank=True, help_text='{"<completion id>": reward} by that model.'
    )
    model_contradiction = models.FloatField(
        null=True,
        blank=True,
        help_text="The model's largest probability against a pair the consensus orders.",
    )
    need = models.FloatField(default=0.0, help_text="How much the prompt needs a reviewer.")
    computed_at = models.DateTimeField()

    objects = PromptStatsQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "prompt stats"
        indexes = [
            models.Index(
                fields=["dataset", "-need", "prompt"],
                condition=Q(need__gt=0, is_gold=False, adjudicated=False),
                name="promptstats_review_queue",
            ),
            models.Index(fields=["dataset", "prompt"], name="promptstats_dataset"),
        ]

    def __str__(self) -> str:
        return f"stats of prompt {self.prompt_id}"

    def reasons(self) -> list[str]:
        """Why the prompt is in the review queue, in words (`labeling.review.reasons`)."""
        from labeling import review

        return review.reasons(
            agreement=self.agreement,
            min_margin=self.min_margin,
            flags=self.flags,
            model_contradiction=self.model_contradiction,
            model_version=self.model_version,
        )


class AdjudicationQuerySet(models.QuerySet["Adjudication"]):
    def latest_per_prompt(self) -> AdjudicationQuerySet:
        """The adjudications that count: each prompt's newest (the others are its history)."""
        newer = Adjudication.objects.filter(prompt=OuterRef("prompt"), pk__gt=OuterRef("pk"))
        return self.filter(~Exists(newer))

    def overturn_figures(self) -> dict[str, Any]:
        """How many prompts were adjudicated, how many of them overturned the labelers'
        consensus (by their newest adjudication), and that share (None before any)."""
        counts = self.latest_per_prompt().aggregate(
            adjudicated=Count("pk"), overturned=Count("pk", filter=Q(overturned=True))
        )
        adjudicated, overturned = counts["adjudicated"], counts["overturned"]
        return {
            "adjudicated": adjudicated,
            "overturned": overturned,
            "overturn_rate": overturned / adjudicated if adjudicated else None,
        }


class Adjudication(models.Model):
    """A reviewer's final order of a prompt, with a note. The newest per prompt counts: exports
    and training read it in place of the labelers' votes; older ones are kept as history."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="adjudications")
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="+")
    order = models.JSONField(help_text="Completion ids best to worst, as tie groups.")
    consensus = models.JSONField(
        default=list, blank=True, help_text="The labelers' consensus order when it was made."
    )
    overturned = models.BooleanField(
        help_text="The order differs from the labelers' consensus (ranked pairs)."
    )
    note = models.TextField(blank=True)
    promoted_to_gold = models.BooleanField(default=False)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="adjudications"
    )
    created_at = models.DateTimeField()

    objects = AdjudicationQuerySet.as_manager()

    class Meta:
        permissions = [("adjudicate_prompt", "Can adjudicate prompts in the review queue")]
        indexes = [
            models.Index(fields=["prompt", "-id"], name="adjudication_prompt_latest"),
            models.Index(fields=["dataset", "id"], name="adjudication_dataset_id"),
        ]

    def __str__(self) -> str:
        return f"adjudication {self.pk} of {self.prompt_id} by {self.reviewer_id}"


class ModelLeaderboard(models.Model):
    """A leaderboard of source models over one or more datasets, at a number of bootstrap
    rounds, computed by a worker and read by the page and the API (over a million comparisons,
    counting and bootstrapping take seconds). Refreshed like `QualityReport`: when newer rankings
    exist and it is older than `PREFLAB_QUALITY_REFRESH_SECONDS`, or at once after something
    that counts changed (an exclusion, a gold change: `invalidated`)."""

    key = models.CharField(
        max_length=300, unique=True, help_text="The datasets' ids, sorted, and rounds: '3,5:1000'."
    )
    datasets = models.ManyToManyField(Dataset, related_name="leaderboards")
    rounds = models.PositiveIntegerField()
    data = models.JSONField(default=dict, blank=True)
    ranking_cursor = models.BigIntegerField(default=0)
    computed_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(default=0.0, help_text="How long the last computation took.")
    generation = models.PositiveIntegerField(
        default=0, help_text="Raised by each invalidation (an exclusion, a gold change, ...)."
    )
    computed_generation = models.PositiveIntegerField(default=0)
    refresh_queued_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"leaderboard {self.key} at {self.computed_at}"

    @property
    def invalidated(self) -> bool:
        return self.computed_at is None or self.computed_generation != self.generation
