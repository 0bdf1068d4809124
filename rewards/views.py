"""Staff pages: start a training run, watch it, see its metrics and plots, download the model."""

from __future__ import annotations

from typing import cast

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from labeling.access import manager_required
from labeling.models import Ability, Dataset
from rewards import plots
from rewards.downloads import artifact_response
from rewards.forms import TrainingRunForm
from rewards.models import RewardModel, TrainingRun
from rewards.services import model_versions, runs


def staff_user(request: HttpRequest) -> User:
    """The signed-in manager: `manager_required` lets nobody else this far."""
    return cast(User, request.user)


def managed_runs(request: HttpRequest) -> QuerySet[TrainingRun]:
    """The runs of the workspaces the caller manages; any other is a 404 to them."""
    return TrainingRun.objects.where(request.user, Ability.MANAGE)


@manager_required
def run_list(request: HttpRequest) -> HttpResponse:
    form = TrainingRunForm(
        request.POST or None, datasets=Dataset.objects.where(request.user, Ability.MANAGE)
    )
    if request.method == "POST" and form.is_valid():
        try:
            run = runs.start_training_run(
                datasets=list(form.cleaned_data["datasets"]),
                config=form.config(),
                user=staff_user(request),
            )
        except ValidationError as error:
            form.add_error(None, error)
        else:
            return redirect("rewards:run", run_id=run.pk)
    recent = managed_runs(request).prefetch_related("datasets").select_related("reward_model")
    recent = recent.select_related("workspace")[:50]
    status = 400 if form.errors else 200
    return render(request, "rewards/run_list.html", {"form": form, "runs": recent}, status=status)


@require_GET
@manager_required
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(managed_runs(request).prefetch_related("datasets"), pk=run_id)
    model = RewardModel.objects.filter(run=run).first()
    return render(request, "rewards/run_detail.html", {"run": run, "model": model})


@require_POST
@manager_required
def run_retry(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(managed_runs(request), pk=run_id)
    try:
        retry = runs.retry_training_run(run=run, user=staff_user(request))
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
        return redirect("rewards:run", run_id=run.pk)
    return redirect("rewards:run", run_id=retry.pk)


@require_GET
@manager_required
def run_plot(request: HttpRequest, run_id: int, name: str) -> HttpResponse:
    run = get_object_or_404(managed_runs(request), pk=run_id, status=TrainingRun.Status.SUCCEEDED)
    metrics = run.metrics
    if name == "reliability":
        svg = plots.reliability_svg(metrics["held_out"]["reliability"])
    elif name == "rewards":
        svg = plots.histogram_svg(metrics["reward_samples"])
    elif name == "learning-curve":
        svg = plots.learning_curve_svg(
            metrics["learning_curve"], metrics["labeler_agreement"]["rate"]
        )
    else:
        raise Http404("No such plot.")
    return HttpResponse(svg, content_type="image/svg+xml")


@require_POST
@manager_required
def model_activate(request: HttpRequest, version: int) -> HttpResponse:
    managed = RewardModel.objects.where(request.user, Ability.MANAGE)
    model = get_object_or_404(managed, version=version)
    model_versions.activate_reward_model(model=model, user=staff_user(request))
    messages.success(request, f"Reward model v{model.version} is now active for its datasets.")
    return redirect("rewards:run", run_id=model.run_id)


@require_GET
@manager_required
def model_download(request: HttpRequest, version: int, kind: str) -> FileResponse:
    model = get_object_or_404(
        RewardModel.objects.where(request.user, Ability.EXPORT), version=version
    )
    return artifact_response(model, kind)
