"""Labeler pages: the list of datasets, the ranking page, submit and skip."""

from __future__ import annotations

from datetime import datetime, time

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from labeling import services
from labeling.forms import RankingForm, SkipForm
from labeling.models import Assignment, Dataset, Ranking


class AuthenticatedRequest(HttpRequest):
    user: User


def done_today(user: User) -> int:
    midnight = timezone.make_aware(datetime.combine(timezone.localdate(), time.min))
    return Ranking.objects.filter(labeler=user, created_at__gte=midnight).count()


@require_GET
@login_required
def home(request: AuthenticatedRequest) -> HttpResponse:
    datasets = Dataset.objects.active().with_progress()
    return render(
        request,
        "labeling/home.html",
        {"datasets": datasets, "done_today": done_today(request.user)},
    )


@login_required
def next_task(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    dataset = get_object_or_404(Dataset.objects.active(), slug=slug)
    assignment = services.lease_next_assignment(dataset=dataset, labeler=request.user)
    if assignment is None:
        return render(request, "labeling/no_tasks.html", {"dataset": dataset})
    return redirect("labeling:rank", assignment_id=assignment.pk)


def render_rank(
    request: AuthenticatedRequest, assignment: Assignment, form: RankingForm, status: int = 200
) -> HttpResponse:
    dataset = Dataset.objects.with_progress().get(pk=assignment.prompt.dataset_id)
    return render(
        request,
        "labeling/rank.html",
        {
            "assignment": assignment,
            "dataset": dataset,
            "prompt": assignment.prompt,
            "form": form,
            "skip_form": SkipForm(),
            "done_today": done_today(request.user),
        },
        status=status,
    )


@require_GET
@login_required
def rank(request: AuthenticatedRequest, assignment_id: int) -> HttpResponse:
    assignment = get_object_or_404(
        Assignment.objects.leased_to(request.user).select_related("prompt__dataset"),
        pk=assignment_id,
    )
    return render_rank(request, assignment, RankingForm(assignment=assignment))


@require_POST
@login_required
def submit(request: AuthenticatedRequest, assignment_id: int) -> HttpResponse:
    assignment = get_object_or_404(
        Assignment.objects.filter(labeler=request.user).select_related("prompt__dataset"),
        pk=assignment_id,
    )
    form = RankingForm(request.POST, assignment=assignment)
    if form.is_valid():
        data = form.cleaned_data
        if data["seconds_spent"] is None:
            data["seconds_spent"] = (timezone.now() - assignment.leased_at).total_seconds()
        try:
            services.submit_ranking(assignment=assignment, **data)
        except ValidationError as error:
            for message in services.errors_text(error):
                form.add_error(None, message)
        else:
            return redirect("labeling:next", slug=assignment.prompt.dataset.slug)
    return render_rank(request, assignment, form, status=400)


@require_POST
@login_required
def skip(request: AuthenticatedRequest, assignment_id: int) -> HttpResponse:
    assignment = get_object_or_404(
        Assignment.objects.filter(labeler=request.user).select_related("prompt__dataset"),
        pk=assignment_id,
    )
    form = SkipForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a reason to skip.")
        return redirect("labeling:rank", assignment_id=assignment.pk)
    try:
        services.skip_assignment(assignment=assignment, reason=form.cleaned_data["reason"])
    except ValidationError as error:
        messages.error(request, " ".join(services.errors_text(error)))
    return redirect("labeling:next", slug=assignment.prompt.dataset.slug)
