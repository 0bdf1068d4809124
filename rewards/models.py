"""Training runs and the reward models they produce."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

from labeling.models import Dataset


def default_config() -> dict[str, Any]:
    return {}


class TrainingRunQuerySet(models.QuerySet["TrainingRun"]):
    def stale(self, now: datetime) -> TrainingRunQuerySet:
        """Runs whose worker stopped reporting: no heartbeat for PREFLAB_RUN_STALE_SECONDS."""
        limit = now - timedelta(seconds=settings.PREFLAB_RUN_STALE_SECONDS)
        return self.filter(status=TrainingRun.Status.RUNNING, heartbeat_at__lt=limit)


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    datasets = models.ManyToManyField(Dataset, related_name="training_runs")
    config = models.JSONField(default=default_config, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    stage = models.CharField(max_length=40, blank=True)
    progress = models.FloatField(default=0.0)
    metrics = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=50, blank=True)
    retry_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="retries"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TrainingRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=1), name="trainingrun_progress_share"
            ),
        ]

    def __str__(self) -> str:
        return f"training run {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)

    @property
    def percent(self) -> int:
        return round(100 * self.progress)


class RewardModel(models.Model):
    run = models.OneToOneField(TrainingRun, on_delete=models.PROTECT, related_name="reward_model")
    datasets = models.ManyToManyField(Dataset, related_name="reward_models")
    version = models.PositiveIntegerField(unique=True)
    directory = models.CharField(max_length=255, help_text="Under MEDIA_ROOT.")
    files = models.JSONField(help_text='{"onnx": {"name", "sha256", "bytes"}, ...}')
    card = models.JSONField(help_text="The model card, as in model_card.json.")
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"reward model v{self.version}"
