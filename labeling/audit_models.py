"""The audit trail: who changed what a workspace's labels mean, and who took its data."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from labeling.workspace_models import Workspace


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def matching(
        self, *, action: str = "", dataset: str = "", actor: str = ""
    ) -> AuditEventQuerySet:
        """The events of one action, dataset (slug) or actor (their username then), each
        filter left out when empty."""
        events = self
        if action:
            events = events.filter(action=action)
        if dataset:
            events = events.filter(dataset__slug=dataset)
        if actor:
            events = events.filter(actor_name=actor)
        return events

    def page(self, *, before: int | None, limit: int) -> tuple[list[AuditEvent], bool]:
        """Up to `limit` events older than the id `before` (None: the newest), newest first,
        and whether older ones remain: a cursor that holds however many events are added
        meanwhile, in one query."""
        events = self.order_by("-pk")
        if before is not None:
            events = events.filter(pk__lt=before)
        found = list(events.select_related("dataset")[: limit + 1])
        return found[:limit], len(found) > limit


class AuditEvent(models.Model):
    class Action(models.TextChoices):
        DATASET_CREATED = "dataset_created", "Dataset created"
        GUIDELINES_CHANGED = "guidelines_changed", "Guidelines changed"
        POOL_CHANGED = "pool_changed", "Labeler pool changed"
        LABELERS_INVITED = "labelers_invited", "Labelers added in bulk"
        MEMBER_CHANGED = "member_changed", "Membership changed"
        LABELER_EXCLUDED = "labeler_excluded", "Labeler excluded"
        LABELER_REINSTATED = "labeler_reinstated", "Labeler reinstated"
        GOLD_CHANGED = "gold_changed", "Gold prompt changed"
        EXPORT_PULLED = "export_pulled", "Export pulled"
        TRAINING_STARTED = "training_started", "Training run started"
        MODEL_ACTIVATED = "model_activated", "Reward model activated"
        AI_LABELER_CHANGED = "ai_labeler_changed", "AI labeler added or changed"
        AI_RUN_STARTED = "ai_run_started", "AI labeling run started"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="audit_events")
    dataset = models.ForeignKey(
        "labeling.Dataset",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="audit_events",
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="audit_events",
        help_text="Empty: the system (a worker, a migration) or a deleted account.",
    )
    actor_name = models.CharField(
        max_length=150, blank=True, help_text="The username then, kept if the account goes."
    )
    via = models.CharField(
        max_length=12,
        blank=True,
        help_text='"token" (with its fingerprint), "session" (a page) or "system".',
    )
    token = models.CharField(
        max_length=16, blank=True, help_text="The API token's fingerprint, never the token."
    )
    action = models.CharField(max_length=24, choices=Action.choices)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-pk"]
        indexes = [models.Index(fields=["workspace", "-id"], name="audit_workspace_recent")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_name or 'system'}: {self.action}"
