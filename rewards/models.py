"""Training runs and the reward models they produce."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models

from labeling.models import BackgroundJob, Completion, Dataset, Workspace, default_workspace_id

# A reward model's files, by kind, as `rewards.artifacts` writes them.
ARTIFACT_FILES = {
    "skops": "model.skops",
    "onnx": "model.onnx",
    "weights": "weights.npy",
    "featurizer": "featurizer.py",
    "card": "model_card.json",
}


def default_config() -> dict[str, Any]:
    return {}


class TrainingRunQuerySet(models.QuerySet["TrainingRun"]):
    def where(self, user: Any, ability: str) -> TrainingRunQuerySet:
        """The runs of the workspaces in which `user` may do `ability`."""
        return self.filter(workspace__in=Workspace.objects.where(user, ability))

    def stale(self, now: datetime) -> TrainingRunQuerySet:
        """Runs whose worker stopped reporting: no heartbeat for PREFLAB_RUN_STALE_SECONDS."""
        limit = now - timedelta(seconds=settings.PREFLAB_RUN_STALE_SECONDS)
        return self.filter(status=TrainingRun.Status.RUNNING, heartbeat_at__lt=limit)


class TrainingRun(BackgroundJob):
    # The workspace of its datasets (a run never mixes workspaces: `start_training_run`).
    workspace = models.ForeignKey(
        Workspace,
        on_delete=models.PROTECT,
        related_name="training_runs",
        default=default_workspace_id,
    )
    datasets = models.ManyToManyField(Dataset, related_name="training_runs")
    config = models.JSONField(default=default_config, blank=True)
    stage = models.CharField(max_length=40, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    retry_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="retries"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    objects = TrainingRunQuerySet.as_manager()

    def __str__(self) -> str:
        return f"training run {self.pk} ({self.status})"


class RewardModelQuerySet(models.QuerySet["RewardModel"]):
    def where(self, user: Any, ability: str) -> RewardModelQuerySet:
        """The models of the workspaces in which `user` may do `ability`."""
        return self.filter(workspace__in=Workspace.objects.where(user, ability))


class RewardModel(models.Model):
    run = models.OneToOneField(TrainingRun, on_delete=models.PROTECT, related_name="reward_model")
    workspace = models.ForeignKey(
        Workspace,
        on_delete=models.PROTECT,
        related_name="reward_models",
        default=default_workspace_id,
    )
    datasets = models.ManyToManyField(Dataset, related_name="reward_models")
    # Numbered across the installation, like dataset slugs, so /reward-models/<version>/ names
    # one model whatever workspaces its caller is in.
    version = models.PositiveIntegerField(unique=True)
    directory = models.CharField(max_length=255, help_text="Under MEDIA_ROOT.")
    files = models.JSONField(help_text='{"onnx": {"name", "sha256", "bytes"}, ...}')
    card = models.JSONField(help_text="The model card, as in model_card.json.")
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = RewardModelQuerySet.as_manager()

    class Meta:
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"reward model v{self.version}"


class Prediction(models.Model):
    """A reward model's reward of one completion, as data: written by the prediction worker
    (`rewards.services.predictions`) for the datasets of an activated model, read by the admin,
    the quality pages, the API and `include=predictions` exports."""

    # No index of its own: the unique (reward_model, completion) serves lookups by model.
    reward_model = models.ForeignKey(
        RewardModel, on_delete=models.CASCADE, related_name="predictions", db_index=False
    )
    completion = models.ForeignKey(Completion, on_delete=models.CASCADE, related_name="predictions")
    reward = models.FloatField()
    criteria = models.JSONField(
        default=dict,
        blank=True,
        help_text='{"<criterion>": reward} by its per-criterion heads; {} without.',
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["reward_model", "completion"], name="prediction_model_completion_unique"
            )
        ]
        # The API's pages: one model's predictions in id order.
        indexes = [models.Index(fields=["reward_model", "id"], name="prediction_model_id")]

    def __str__(self) -> str:
        return f"v{self.reward_model_id} on completion {self.completion_id}: {self.reward:.4f}"


class PredictionJob(BackgroundJob):
    """Scoring one dataset's completions with one reward model, on a worker: queued when the
    model is activated and after each import into a dataset with an active model."""

    reward_model = models.ForeignKey(
        RewardModel, on_delete=models.CASCADE, related_name="prediction_jobs"
    )
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="prediction_jobs")
    scored = models.PositiveIntegerField(default=0, help_text="Completions newly scored.")
    retry_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="retries"
    )

    def __str__(self) -> str:
        return (
            f"predictions of v{self.reward_model_id} on dataset {self.dataset_id} ({self.status})"
        )
