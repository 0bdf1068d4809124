"""Tenancy: workspaces own datasets, imports, training runs and reward models; members hold a
role per workspace; a dataset is offered only to its labeler pool; a labeler can be excluded
from one dataset or a whole workspace without locking their account.

What each role may do is one table (`ROLES_ABLE_TO`); every page, API view and admin page asks
it through the scoped QuerySets here (`Workspace.objects.where(user, ability)`,
`Dataset.objects.visible_to(user)`, `offered_to(user)`) or through `labeling.access`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q, Subquery, Value

DEFAULT_WORKSPACE_SLUG = "default"


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    MANAGER = "manager", "Manager"
    REVIEWER = "reviewer", "Reviewer"
    LABELER = "labeler", "Labeler"
    SERVICE = "service", "Service (API token)"


class Ability(models.TextChoices):
    ADMINISTER = "administer", "manage members and read the audit trail"
    MANAGE = "manage", "manage datasets, pools, exclusions, gold, training and models"
    EXPORT = "export", "export labels, score and download reward models"
    REVIEW = "review", "read quality reports and adjudicate disputed prompts"
    READ = "read", "read datasets, prompts, statistics and predictions"
    LABEL = "label", "label the datasets whose pool holds them"


ROLES_ABLE_TO: dict[str, frozenset[str]] = {
    Ability.ADMINISTER: frozenset({Role.ADMIN}),
    Ability.MANAGE: frozenset({Role.ADMIN, Role.MANAGER}),
    Ability.EXPORT: frozenset({Role.ADMIN, Role.MANAGER, Role.SERVICE}),
    Ability.REVIEW: frozenset({Role.ADMIN, Role.MANAGER, Role.REVIEWER}),
    Ability.READ: frozenset({Role.ADMIN, Role.MANAGER, Role.REVIEWER, Role.SERVICE}),
    # Labeling also needs a place in the dataset's pool (`DatasetQuerySet.offered_to`).
    Ability.LABEL: frozenset({Role.ADMIN, Role.MANAGER, Role.REVIEWER, Role.LABELER}),
}


def role_can(role: str | None, ability: str) -> bool:
    return role is not None and role in ROLES_ABLE_TO[ability]


class WorkspaceQuerySet(models.QuerySet["Workspace"]):
    def where(self, user: Any, ability: str) -> WorkspaceQuerySet:
        """The workspaces in which `user` may do `ability`: all of them for a superuser."""
        if not (user.is_authenticated and user.is_active):
            return self.none()
        if user.is_superuser:
            return self
        return self.filter(
            Exists(
                Membership.objects.filter(
                    workspace=OuterRef("pk"), user=user, role__in=ROLES_ABLE_TO[ability]
                )
            )
        )

    def visible_to(self, user: Any) -> WorkspaceQuerySet:
        """The workspaces `user` is a member of, in any role: all of them for a superuser."""
        if not (user.is_authenticated and user.is_active):
            return self.none()
        if user.is_superuser:
            return self
        return self.filter(Exists(Membership.objects.filter(workspace=OuterRef("pk"), user=user)))

    def with_role_of(self, user: Any) -> WorkspaceQuerySet:
        """Each workspace with `caller_role`: `user`'s role there (a superuser's is admin, as
        `labeling.access.role_in` says), None where they are no member."""
        if user.is_superuser:
            return self.annotate(caller_role=Value(Role.ADMIN.value))
        role = Membership.objects.filter(workspace=OuterRef("pk"), user=user.pk).values("role")
        return self.annotate(caller_role=Subquery(role[:1]))


class Workspace(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = WorkspaceQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


def default_workspace_id() -> int:
    """The installation's default workspace, made on first use: what a dataset, run or model
    made without naming one belongs to (`make run`, the CLI, data from before workspaces;
    migration 0013 makes it)."""
    # Reads the id alone, so the migrations that call it work whatever columns come later.
    found = Workspace.objects.filter(slug=DEFAULT_WORKSPACE_SLUG).values_list("pk", flat=True)
    if (pk := found.first()) is not None:
        return pk
    workspace, _ = Workspace.objects.get_or_create(
        slug=DEFAULT_WORKSPACE_SLUG, defaults={"name": "Default workspace"}
    )
    return workspace.pk


class Membership(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.LABELER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "user"], name="membership_once"),
        ]
        indexes = [models.Index(fields=["user", "role"], name="membership_user_role")]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} ({self.role})"


class LabelerGroup(models.Model):
    """Labelers of one workspace put in a dataset's pool together (a vendor, a team of experts)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="groups")
    name = models.CharField(max_length=100)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="labeler_groups"
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="labeler_group_name_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.workspace.slug})"


class ExclusionQuerySet(models.QuerySet["Exclusion"]):
    def covering(self, dataset: Any) -> ExclusionQuerySet:
        """The exclusions that apply on `dataset` (a Dataset, an id or an OuterRef): its own,
        and those of its whole workspace."""
        return self.filter(
            Q(dataset=dataset) | Q(dataset__isnull=True, workspace__datasets=dataset)
        )


class Exclusion(models.Model):
    """A labeler left out of one dataset (`dataset` set) or of every dataset of a workspace:
    their rankings there stop counting (`labeling.models.labeler_counts`) and they are offered
    no more tasks there. Deleting the row undoes it."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="exclusions")
    dataset = models.ForeignKey(
        "labeling.Dataset",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="exclusions",
        help_text="Empty: every dataset of the workspace.",
    )
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="exclusions"
    )
    reason = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ExclusionQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["labeler", "dataset"],
                condition=Q(dataset__isnull=False),
                name="exclusion_once_per_dataset",
            ),
            models.UniqueConstraint(
                fields=["labeler", "workspace"],
                condition=Q(dataset__isnull=True),
                name="exclusion_once_per_workspace",
            ),
        ]

    def __str__(self) -> str:
        where = self.dataset.slug if self.dataset else f"workspace {self.workspace.slug}"
        return f"{self.labeler} excluded from {where}"


def excluded_at(labeler: Any, dataset: Any) -> Exists:
    """Whether an exclusion covers `labeler` on `dataset` (each a value or an OuterRef): one of
    the dataset itself or one of its whole workspace. Matched on the labeler first, so
    PostgreSQL anti-joins it by hash however many rows are filtered."""
    return Exists(Exclusion.objects.filter(labeler=labeler).covering(dataset))
