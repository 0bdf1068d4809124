"""The admin of reward model predictions: read-only, written by the prediction worker."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest

from labeling.admin import DATASET_FILTER, ReadOnlyAdmin, apply_to_each, scoped_filter
from labeling.models import Dataset
from rewards.models import Prediction, PredictionJob, RewardModel
from rewards.services import predictions


@admin.register(Prediction)
class PredictionAdmin(ReadOnlyAdmin):
    """Each completion's reward by a model version (`rewards.services.predictions`)."""

    workspace_path = "reward_model__workspace"
    list_display = ["completion", "reward_model", "reward", "criteria", "created_at"]
    list_filter = [
        scoped_filter("reward_model", "reward model", RewardModel),
        scoped_filter("completion__prompt__dataset", "dataset", Dataset),
    ]
    search_fields = ["completion__prompt__external_id"]
    list_select_related = ["reward_model", "completion__prompt__dataset"]
    show_full_result_count = False


@admin.register(PredictionJob)
class PredictionJobAdmin(ReadOnlyAdmin):
    """A dataset's scoring by a model version: progress, completions scored, the error; a failed
    one can be retried (what it wrote stays)."""

    actions = ["retry"]
    list_display = ["pk", "reward_model", "dataset", "status", "percent", "scored", "created_at"]
    list_filter = [
        "status",
        DATASET_FILTER,
        scoped_filter("reward_model", "reward model", RewardModel),
    ]
    list_select_related = ["reward_model", "dataset"]
    readonly_fields = (
        "reward_model",
        "dataset",
        "status",
        "percent",
        "scored",
        "error",
        "retry_of",
        "created_at",
        "started_at",
        "finished_at",
    )
    fields = readonly_fields

    @admin.display(description="Progress")
    def percent(self, job: PredictionJob) -> str:
        return f"{job.percent}%"

    @admin.action(description="Retry the selected failed jobs")
    def retry(self, request: HttpRequest, queryset: QuerySet[PredictionJob]) -> None:
        user = request.user if isinstance(request.user, User) else None
        apply_to_each(
            request,
            queryset,
            lambda job: predictions.retry_prediction_job(job=job, user=user),
            done="Queued again:",
        )
