"""Datasets of prompts and completions, the labelers' assignments, rankings and comparisons."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Count, Exists, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce

from labeling.choices import (  # noqa: F401  (labeling.models names them too)
    Asked,
    Flag,
    Labelers,
    Strength,
    all_criteria,
)
from labeling.workspace_models import (  # noqa: F401  (labeling.models names them too)
    DEFAULT_WORKSPACE_SLUG,
    ROLES_ABLE_TO,
    Ability,
    Exclusion,
    LabelerGroup,
    Membership,
    Role,
    Workspace,
    default_workspace_id,
    excluded_at,
    role_can,
)


def labeler_counts(
    labeler: str = "labeler", dataset: str = "dataset", labelers: str = Labelers.HUMAN
) -> Q:
    """The one definition of the rows that count (in exports, training, statistics and label
    slots): their labeler is not deactivated, nor excluded from their dataset or its workspace
    (`Exclusion`), and is a human unless `labelers` asks for AI labelers' rows (`ai`) or both
    (`all`): an AI labeler's rankings are kept apart from the humans' (labeling.ai_models).
    `labeler` and `dataset` lead from the model queried to the two."""
    counts = Q(
        Q(**{f"{labeler}__is_active": True}), ~excluded_at(OuterRef(labeler), OuterRef(dataset))
    )
    if labelers == Labelers.ALL:
        return counts
    # EXISTS on the labeler's id, not a join through the user to `ai_labeler`: the join changed
    # the export's plan and cost it 8% (a NOT EXISTS 3%: bench/export_bench.py, issue 16).
    machine = Q(Exists(AILabeler.objects.filter(user=OuterRef(labeler))))  # imported at the end
    return counts & (~machine if labelers == Labelers.HUMAN else machine)


def columns(model: type[models.Model], alias: str = "") -> str:
    """The model's columns, named, for the few queries written out as SQL: a prepared
    statement reading `*` fails once a migration adds a column."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + field.column for field in model._meta.concrete_fields)


def may_be_offered_work(user: Any) -> bool:
    """Whether an account may be offered any dataset at all: signed in and active (the pool
    decides the rest, `DatasetQuerySet.pooled`)."""
    return bool(user.is_authenticated and user.is_active)


class DatasetQuerySet(models.QuerySet["Dataset"]):
    def active(self) -> DatasetQuerySet:
        return self.filter(status=Dataset.Status.ACTIVE)

    def where(self, user: Any, ability: str) -> DatasetQuerySet:
        """The datasets of the workspaces in which `user` may do `ability` (`ROLES_ABLE_TO`);
        for labeling, `offered_to` instead."""
        return self.filter(workspace__in=Workspace.objects.where(user, ability))

    def offered_to(self, user: Any) -> DatasetQuerySet:
        """The active datasets `user` may label (`pooled`)."""
        if not may_be_offered_work(user):
            return self.none()
        return self.active().pooled(user.pk)

    def pooled(self, labeler_id: int) -> DatasetQuerySet:
        """The datasets whose pool holds the labeler (by name or through a group), in whose
        workspace their role may label, and from which no exclusion keeps them."""
        return self.filter(
            Exists(
                Membership.objects.filter(
                    workspace=OuterRef("workspace"),
                    user=labeler_id,
                    role__in=ROLES_ABLE_TO[Ability.LABEL],
                )
            ),
            Exists(
                Dataset.pool_labelers.through.objects.filter(
                    dataset=OuterRef("pk"), user=labeler_id
                )
            )
            | Exists(
                LabelerGroup.members.through.objects.filter(
                    labelergroup__datasets=OuterRef("pk"), user=labeler_id
                )
            ),
            ~excluded_at(labeler_id, OuterRef("pk")),
        )

    def visible_to(self, user: Any) -> DatasetQuerySet:
        """What `user` may see at all: the datasets they may read, and those offered to them.
        Anything else is a 404 to them; what they may do with one is `labeling.access`."""
        return self.filter(
            Q(pk__in=self.model.objects.where(user, Ability.READ).values("pk"))
            | Q(pk__in=self.model.objects.offered_to(user).values("pk"))
        )

    def with_leases_of(self, labeler_id: int) -> DatasetQuerySet:
        """Annotate `holds_lease`: whether the labeler holds a live lease on each dataset.
        Finding their next task need not ask again when they hold none, if it is told whose
        leases those were (`labeling.services.leasing.lease_next_assignment`)."""
        leases = Assignment.objects.leased_to(labeler_id).filter(prompt__dataset=OuterRef("pk"))
        return self.annotate(holds_lease=Exists(leases))

    def with_criteria(self) -> DatasetQuerySet:
        """Read each dataset's criteria in its own query (`Dataset.rated_criteria` uses them):
        the labeling API's next task stays within its few queries."""
        return self.annotate(criteria_json=criteria_json())

    def with_progress(self) -> DatasetQuerySet:
        """Annotate `prompt_count` (gold and prompts left to an AI labeler left out) and
        `label_count` (their submitted rankings)."""
        prompts = (
            Prompt.objects.filter(dataset=OuterRef("pk"), is_gold=False, left_to_ai=False)
            .values("dataset")
            .annotate(n=Count("pk"))
            .values("n")
        )
        labels = (
            Assignment.objects.filter(
                # AI labelers take no assignments: no need to tell them apart.
                labeler_counts(dataset="prompt__dataset", labelers=Labelers.ALL),
                prompt__dataset=OuterRef("pk"),
                prompt__is_gold=False,
                status=Assignment.Status.SUBMITTED,
            )
            .values("prompt__dataset")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return self.annotate(
            prompt_count=Coalesce(Subquery(prompts), 0),
            label_count=Coalesce(Subquery(labels), 0),
        )


class Dataset(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ACTIVE = "active", "Active"
        ARCHIVED = "archived", "Archived"

    workspace = models.ForeignKey(
        Workspace, on_delete=models.PROTECT, related_name="datasets", default=default_workspace_id
    )
    name = models.CharField(max_length=200)
    # Unique across the installation, not per workspace, so a dataset's URLs need no workspace
    # and every URL from before workspaces keeps working.
    slug = models.SlugField(
        max_length=100, unique=True, help_text="Unique across all workspaces; in every URL."
    )
    description = models.TextField(blank=True)
    guidelines = models.TextField(blank=True, help_text="Markdown, shown to labelers.")
    guidelines_version = models.PositiveIntegerField(
        default=1, help_text="Raised each time the guidelines change; rankings record it."
    )
    ratings = models.CharField(
        max_length=10,
        choices=Asked.choices,
        default=Asked.REQUIRED,
        db_default=Asked.REQUIRED,  # rows written by SQL (benchmarks, COPY) get it too
        help_text="Whether labelers must rate every response on the criteria, may, or are not "
        "asked. Off, or optional, with two responses: one key decides a pair and submits.",
    )
    strength = models.CharField(
        max_length=10,
        choices=Asked.choices,
        default=Asked.REQUIRED,
        db_default=Asked.REQUIRED,
        help_text="Whether a pair's labeler says how much better the chosen response is.",
    )
    labels_per_prompt = models.PositiveSmallIntegerField(
        default=3, help_text="How many distinct labelers rank each prompt."
    )
    gold_rate = models.FloatField(
        default=0.0, help_text="Share of each labeler's tasks drawn from gold prompts (0 to 1)."
    )

    class Order(models.TextChoices):
        FIXED = "fixed", "Fixed (import order)"
        UNCERTAINTY = "uncertainty", "Uncertainty (active learning)"

    order = models.CharField(
        max_length=12,
        choices=Order.choices,
        default=Order.FIXED,
        db_default=Order.FIXED,
        help_text="Which new prompts are opened first: in import order, or those the active "
        "reward model is least sure about (smallest reward margin), for `uncertainty_share` of "
        "the tasks. Prompts already started are finished first either way.",
    )
    uncertainty_share = models.FloatField(
        default=0.5,
        db_default=0.5,
        help_text="With order uncertainty: the share of new prompts picked by uncertainty (0 to "
        "1); the rest come in import order, so the labeled data stays representative.",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    pool_labelers = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="pooled_datasets",
        verbose_name="labelers",
        help_text="Who may label it, by name. Only the pool is offered the dataset.",
    )
    pool_groups = models.ManyToManyField(
        LabelerGroup,
        blank=True,
        related_name="datasets",
        verbose_name="labeler groups",
        help_text="Who may label it, by group (of the same workspace).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DatasetQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(labels_per_prompt__gte=1), name="dataset_labels_per_prompt_positive"
            ),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1), name="dataset_gold_rate_share"
            ),
            models.CheckConstraint(
                condition=Q(uncertainty_share__gte=0) & Q(uncertainty_share__lte=1),
                name="dataset_uncertainty_share",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def percent_labeled(self) -> int:
        """Needs `with_progress()`: submitted labels over prompts x labels_per_prompt."""
        needed = self.prompt_count * self.labels_per_prompt  # type: ignore[attr-defined]
        if not needed:
            return 0
        return min(100, round(100 * self.label_count / needed))  # type: ignore[attr-defined]

    @cached_property
    def rated_criteria(self) -> list[RatingCriterion]:
        """The criteria the ranking page asks about, in order: none when ratings are off."""
        return [] if self.ratings == Asked.OFF else self.all_criteria

    @cached_property
    def all_criteria(self) -> list[RatingCriterion]:
        """Its criteria in order, whether ratings are asked or not: read by `with_criteria`
        (unsaved copies, for reading) or else by a query of their own."""
        if hasattr(self, "criteria_json"):
            rows = sorted(self.criteria_json or [], key=lambda fields: fields["position"])
            return [RatingCriterion(dataset=self, **fields) for fields in rows]
        return list(self.criteria.all())

    @property
    def criterion_keys(self) -> list[str]:
        """The keys of all its criteria, in order (whether ratings are asked or not)."""
        return [criterion.key for criterion in self.all_criteria]

    @property
    def votes(self) -> bool:
        """Whether one key can decide a pair and submit it: nothing else is required."""
        return (self.ratings != Asked.REQUIRED or not self.rated_criteria) and (
            self.strength != Asked.REQUIRED
        )


class PromptQuerySet(models.QuerySet["Prompt"]):
    def multi_turn(self) -> PromptQuerySet:
        return self.filter(messages__1__isnull=False)

    def not_seen_by(self, user: Any) -> PromptQuerySet:
        """Prompts the labeler was never given: no lease, submission, skip or expired lease."""
        return self.filter(~Exists(Assignment.objects.filter(prompt=OuterRef("pk"), labeler=user)))


class Prompt(models.Model):
    # No index of its own (migration 0006): the unique (dataset, external_id) serves lookups.
    dataset = models.ForeignKey(
        Dataset, on_delete=models.CASCADE, related_name="prompts", db_index=False
    )
    external_id = models.CharField(max_length=200)
    messages = models.JSONField(help_text='The conversation: [{"role": ..., "content": ...}].')
    metadata = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(
        max_length=64, help_text="sha256 of the messages and completions, to spot re-imports."
    )
    is_gold = models.BooleanField(default=False)
    gold_order = models.JSONField(
        null=True,
        blank=True,
        help_text="Expected order for a gold prompt: tie groups of completion external ids.",
    )
    gold_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a prompt was made gold after import: only later rankings are scored, so "
        "the rankings that gave its order do not score themselves.",
    )
    slots_taken = models.PositiveIntegerField(
        default=0,
        db_default=0,  # for rows written with COPY (imports)
        help_text="Label slots held: live leases and submissions of labelers who count. Kept by "
        "the leasing service under the prompt row's lock (see labeling.services.leasing).",
    )
    uncertainty = models.FloatField(
        null=True,
        blank=True,
        help_text="The smallest reward margin between two of its completions by the active "
        "reward model (0: it cannot tell them apart); empty until scored. Kept by the "
        "prediction worker (rewards.services.predictions), read by uncertainty leasing.",
    )
    left_to_ai = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Labeled by an AI labeler, not drawn for its human review sample, and not "
        "taken by a human before: no longer offered to human labelers (labeling.ai_models).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PromptQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "external_id"], name="prompt_external_id_unique"
            ),
            models.CheckConstraint(
                condition=Q(is_gold=False) | Q(gold_order__isnull=False),
                name="prompt_gold_has_order",
            ),
        ]
        indexes = [
            # The leasing candidate queries: open prompts closest to complete first, and gold.
            models.Index(
                fields=["dataset", "-slots_taken", "id"],
                condition=Q(is_gold=False, left_to_ai=False),
                name="prompt_open_slots",
            ),
            models.Index(fields=["dataset", "id"], condition=Q(is_gold=True), name="prompt_gold"),
            # Uncertainty leasing: untouched scored prompts, least certain first. A prompt leaves
            # the index when its first slot is taken, so the scan never walks past started ones.
            models.Index(
                fields=["dataset", "uncertainty", "id"],
                condition=Q(
                    is_gold=False, left_to_ai=False, slots_taken=0, uncertainty__isnull=False
                ),
                name="prompt_uncertain",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dataset.slug}/{self.external_id}"

    @property
    def last_user_message(self) -> str:
        for message in reversed(self.messages):
            if message["role"] == "user":
                return str(message["content"])
        return ""


class Completion(models.Model):
    # No index of its own: the unique (prompt, external_id) serves lookups by prompt.
    prompt = models.ForeignKey(
        Prompt, on_delete=models.CASCADE, related_name="completions", db_index=False
    )
    external_id = models.CharField(max_length=200)
    text = models.TextField()
    model_name = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    position = models.PositiveSmallIntegerField(help_text="Order in the imported file.")

    class Meta:
        ordering = ["prompt", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "external_id"], name="completion_external_id_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.prompt}/{self.external_id}"


# Assignments (a prompt leased to a labeler), rankings and their comparisons, rating criteria
# and ratings, background jobs, stored statistics, reviewers' verdicts and the audit trail have
# modules of their own; importing them here registers them with the app and keeps
# `labeling.models.Rating` and the like. Assignments and rankings come first: the others build
# on them.
from labeling.assignment_models import (  # noqa: E402, F401
    COMPLETIONS_OF,
    Assignment,
    AssignmentQuerySet,
    display_order,
)

# isort: split
from labeling.ranking_models import Comparison, ExportQuerySet, Ranking  # noqa: E402, F401

# isort: split
from labeling.audit_models import AuditEvent  # noqa: E402, F401
from labeling.criteria_models import Rating, RatingCriterion, criteria_json  # noqa: E402, F401
from labeling.job_models import BackgroundJob, ImportJob  # noqa: E402, F401

# isort: split
from labeling.ai_models import AIJudgment, AILabeler, AIRun  # noqa: E402, F401
from labeling.quality_models import (  # noqa: E402, F401
    Adjudication,
    ModelLeaderboard,
    PromptStats,
    QualityReport,
)
