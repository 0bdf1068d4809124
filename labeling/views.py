"""Labeler pages (the list of datasets, the ranking page, submit and skip) and the staff's
label-quality pages (dashboard, a prompt's votes, excluding labelers, gold prompts).

A task's page shows its form only while the task is leased; once it is submitted, skipped or
its lease ended, the same address says so and offers the next task. The task pages are never
cached, so a reload, Back or a second tab asks again and gets that page instead of a form whose
submission would be refused."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from labeling import access, charts, consensus, orders
from labeling.access import manager_required, reviewer_required
from labeling.errors import errors_text
from labeling.forms import GoldOrderForm, LeaderboardForm, RankingForm, SkipForm
from labeling.models import (
    Ability,
    Adjudication,
    Assignment,
    Dataset,
    Exclusion,
    Prompt,
    Ranking,
    Workspace,
    role_can,
)
from labeling.services import exclusion, gold, leaderboard, leasing, quality_report, rankings


class AuthenticatedRequest(HttpRequest):
    user: User


def done_today(user: User) -> int:
    midnight = timezone.make_aware(datetime.combine(timezone.localdate(), time.min))
    return Ranking.objects.filter(labeler=user, created_at__gte=midnight).count()


@require_GET
@login_required
def home(request: AuthenticatedRequest) -> HttpResponse:
    datasets = Dataset.objects.offered_to(request.user).with_progress()
    return render(
        request,
        "labeling/home.html",
        {"datasets": datasets, "done_today": done_today(request.user)},
    )


@login_required
def next_task(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    """GET shows the dataset with a button (a link must not lease: a page elsewhere could make a
    labeler's browser follow it); POST leases the next task and opens it."""
    dataset = access.dataset_for(
        request.user, Ability.LABEL, Dataset.objects.with_progress(), slug=slug
    )
    if request.method == "POST":
        return lease_and_open(request, dataset)
    current = Assignment.objects.leased_to(request.user).filter(prompt__dataset=dataset).first()
    if current is not None:
        return redirect("labeling:rank", assignment_id=current.pk)
    return render(request, "labeling/start.html", {"dataset": dataset})


@require_GET
@login_required
def no_tasks(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    dataset = access.dataset_for(request.user, Ability.LABEL, slug=slug)
    return render(request, "labeling/no_tasks.html", {"dataset": dataset})


def lease_and_open(request: AuthenticatedRequest, dataset: Dataset) -> HttpResponse:
    """After a POST: the labeler's next task in the dataset, or the page saying none is left."""
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=request.user)
    if assignment is None:
        return redirect("labeling:done", slug=dataset.slug)
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
            "lease_seconds": max(0, int((assignment.expires_at - timezone.now()).total_seconds())),
        },
        status=status,
    )


def own_assignment(request: AuthenticatedRequest, assignment_id: int) -> Assignment:
    """The labeler's assignment in any state; another labeler's is a 404 like a missing one, as
    is one of a dataset whose pool no longer holds them."""
    return get_object_or_404(
        Assignment.objects.mine(request.user).select_related("prompt__dataset"),
        pk=assignment_id,
    )


@never_cache
@require_GET
@login_required
def rank(request: AuthenticatedRequest, assignment_id: int) -> HttpResponse:
    """The ranking form of a leased task (even past its expiry: until the lease is taken back a
    submission is still accepted); otherwise what became of the task."""
    assignment = own_assignment(request, assignment_id)
    if assignment.status != Assignment.Status.LEASED:
        return render(
            request,
            "labeling/task_gone.html",
            {"assignment": assignment, "dataset": assignment.prompt.dataset},
        )
    return render_rank(request, assignment, RankingForm(assignment=assignment))


def closed_task(request: AuthenticatedRequest, assignment: Assignment) -> HttpResponse:
    """After a submit or skip refused because the task is closed (by another tab, or its lease
    ended): its own page, which says what became of it. A redirect rather than a 409 page, so
    that a reload does not post the form again and the address is the task's."""
    messages.warning(request, "Nothing from that page was stored.")
    return redirect("labeling:rank", assignment_id=assignment.pk)


@never_cache
@require_POST
@login_required
def submit(request: AuthenticatedRequest, assignment_id: int) -> HttpResponse:
    assignment = own_assignment(request, assignment_id)
    form = RankingForm(request.POST, assignment=assignment)
    if form.is_valid():
        data = form.cleaned_data
        if data["seconds_spent"] is None:
            data["seconds_spent"] = (timezone.now() - assignment.leased_at).total_seconds()
        try:
            rankings.submit_ranking(assignment=assignment, **data)
        except ValidationError as error:
            # A refusal of a task that is no longer leased is about the task, not the form.
            assignment.refresh_from_db(fields=["status", "finished_at", "expires_at"])
            for message in errors_text(error):
                form.add_error(None, message)
        else:
            return next_after(request, assignment.prompt.dataset)
    if assignment.status != Assignment.Status.LEASED:
        return closed_task(request, assignment)
    return render_rank(request, assignment, form, status=400)


@never_cache
@require_POST
@login_required
def skip(request: AuthenticatedRequest, assignment_id: int) -> HttpResponse:
    """Skip the task and move on. A second click of Skip moves on like the first; a skip of a
    task submitted meanwhile (in another tab) shows that it was submitted."""
    assignment = own_assignment(request, assignment_id)
    form = SkipForm(request.POST)
    if assignment.status == Assignment.Status.SUBMITTED:
        return closed_task(request, assignment)
    if not form.is_valid():
        messages.error(request, "Choose a reason to skip.")
        return redirect("labeling:rank", assignment_id=assignment.pk)
    try:
        leasing.skip_assignment(assignment=assignment, reason=form.cleaned_data["reason"])
    except ValidationError as error:
        assignment.refresh_from_db(fields=["status", "finished_at"])
        if assignment.status == Assignment.Status.SUBMITTED:
            return closed_task(request, assignment)
        if assignment.status != Assignment.Status.SKIPPED:
            messages.error(request, " ".join(errors_text(error)))
    return next_after(request, assignment.prompt.dataset)


def next_after(request: AuthenticatedRequest, dataset: Dataset) -> HttpResponse:
    """After a submit or skip: the next task at once, if the dataset is still open."""
    if dataset.status != Dataset.Status.ACTIVE:
        return redirect("labeling:home")
    return lease_and_open(request, dataset)


# --- Staff: label quality ----------------------------------------------------------------------

LABELER_COLUMNS = {
    "username": "Labeler",
    "rankings": "Rankings",
    "median_seconds": "Median s/task",
    "agreement": "Agreement",
    "gold": "Gold accuracy",
    "flag_rate": "Flag rate",
    "reliability": "Reliability",
}


def sorted_labelers(rows: list[dict[str, Any]], key: str, descending: bool) -> list[dict[str, Any]]:
    """The labeler table sorted by one column; rows without a value go last either way."""
    present = [row for row in rows if row.get(key) is not None]
    missing = [row for row in rows if row.get(key) is None]
    present.sort(key=lambda row: (row[key], row["username"]), reverse=descending)
    return present + sorted(missing, key=lambda row: row["username"])


@require_GET
@reviewer_required
def quality_index(request: HttpRequest) -> HttpResponse:
    datasets = Dataset.objects.where(request.user, Ability.REVIEW).with_progress()
    datasets = datasets.select_related("quality", "workspace").order_by("workspace__name", "name")
    managed = set(
        Workspace.objects.where(request.user, Ability.MANAGE).values_list("pk", flat=True)
    )
    return render(
        request, "labeling/quality_index.html", {"datasets": datasets, "managed": managed}
    )


@require_GET
@reviewer_required
def quality_dashboard(request: HttpRequest, slug: str) -> HttpResponse:
    dataset = access.dataset_for(request.user, Ability.REVIEW, slug=slug)
    stored, refreshing = quality_report.current_report(dataset=dataset)
    sort = request.GET.get("sort", "reliability")
    sort = sort if sort in LABELER_COLUMNS else "reliability"
    descending = request.GET.get("dir") == "desc"
    data = stored.data if stored and stored.computed_at else {}
    context: dict[str, Any] = {
        "dataset": dataset,
        "report": stored,
        "data": data,
        "refreshing": refreshing,
        "sort": sort,
        "descending": descending,
        "columns": LABELER_COLUMNS.items(),
        "warnings": warnings(),
        # Read live (one query): an adjudication changes no ranking, so no report refresh.
        "review": Adjudication.objects.filter(dataset=dataset).overturn_figures(),
        # Read live: an exclusion shows at once, before the report is computed again.
        "excluded_here": set(
            Exclusion.objects.filter(dataset=dataset).values_list("labeler_id", flat=True)
        ),
        "manages": role_can(
            access.role_in(request.user, cast(int, dataset.workspace_id)), Ability.MANAGE
        ),
    }
    if data:
        agreement = data["agreement"]
        pairwise, ranks = agreement["pairwise"], agreement["alpha_rankings"]
        rows = [
            ("Pairwise agreement", pairwise["rate"], pairwise["low"], pairwise["high"]),
            ("Alpha, rankings (ordinal)", ranks["alpha"], ranks["low"], ranks["high"]),
            *(
                (f"Alpha, {criterion} (interval)", value["alpha"], value["low"], value["high"])
                for criterion, value in agreement["alpha_ratings"].items()
            ),
        ]
        # Both charts are built from numbers and escaped labels by labeling.charts.
        context["agreement_chart"] = mark_safe(charts.intervals_svg(rows))
        context["rate_chart"] = mark_safe(charts.daily_rate_svg(data["rate"]))
        context["labelers"] = sorted_labelers(data["labelers"], sort, descending)
        context["progress"] = progress_shares(data["progress"])
    return render(request, "labeling/quality.html", context)


def warnings() -> Any:
    from labeling.report import WARNINGS  # with the statistics' numpy: staff pages only

    return WARNINGS.items()


@require_GET
@reviewer_required
def model_leaderboard(request: HttpRequest, slug: str) -> HttpResponse:
    """The Bradley-Terry leaderboard of the source models of the dataset (and others chosen),
    as last computed; a stale one of many rankings is being recomputed by a worker meanwhile."""
    dataset = access.dataset_for(request.user, Ability.REVIEW, slug=slug)
    readable = Dataset.objects.where(request.user, Ability.REVIEW)
    form = LeaderboardForm(request.GET, slug=slug, among=readable)
    context: dict[str, Any] = {
        "dataset": dataset,
        "form": form,
        "others": readable.exclude(pk=dataset.pk).order_by("name"),
    }
    if not form.is_valid():
        return render(request, "labeling/leaderboard.html", context, status=400)
    stored, refreshing = leaderboard.current_leaderboard(
        datasets=form.cleaned_data["datasets"], rounds=form.cleaned_data["rounds"]
    )
    data = stored.data if stored is not None and stored.computed_at is not None else {}
    context.update(
        stored=stored,
        refreshing=refreshing,
        data=data,
        rounds=form.cleaned_data["rounds"],
        chosen={d.slug for d in form.cleaned_data["datasets"]},
        query=request.GET.urlencode(),
    )
    if data:
        models = data["standings"]["models"]
        # Built from numbers and escaped model names by labeling.charts.
        context["chart"] = mark_safe(charts.leaderboard_svg(models))
        context["matrix"] = zip(models, data["standings"]["win_rates"], strict=True)
    return render(request, "labeling/leaderboard.html", context)


def progress_shares(progress: dict[str, int]) -> dict[str, float]:
    total = progress["prompts"] or 1
    return {key: 100 * progress[key] / total for key in ("done", "partly", "not_started")}


@require_POST
@reviewer_required
def quality_refresh(request: HttpRequest, slug: str) -> HttpResponse:
    dataset = access.dataset_for(request.user, Ability.REVIEW, slug=slug)
    quality_report.invalidate_reports([dataset.pk])
    quality_report.request_refresh(dataset=dataset)
    messages.success(request, "The statistics are being recomputed.")
    return redirect("labeling:quality", slug=dataset.slug)


@require_GET
@reviewer_required
def quality_prompt(request: HttpRequest, slug: str, prompt_id: int) -> HttpResponse:
    prompt = access.prompt_for(request.user, Ability.REVIEW, slug, prompt_id)
    return render_quality_prompt(request, prompt, GoldOrderForm())


def render_quality_prompt(
    request: HttpRequest, prompt: Prompt, form: GoldOrderForm, status: int = 200
) -> HttpResponse:
    completions = list(prompt.completions.all())
    names = {completion.pk: completion.external_id for completion in completions}
    model_version, rewards = predicted_rewards(prompt)
    for completion in completions:
        completion.predicted_reward = rewards.get(completion.pk)  # type: ignore[attr-defined]
    shown = list(
        Ranking.objects.filter(prompt=prompt)
        .select_related("labeler", "labeler__ai_labeler")
        .order_by("created_at")
    )
    counted = Ranking.objects.counted().filter(prompt=prompt).orders_by_prompt().get(prompt.pk, [])
    votes = consensus.named_votes(names, counted)
    consensus_order = orders.renamed(votes["order"], names)
    if not form.is_bound:
        form = GoldOrderForm(
            initial={"order": orders.as_text(prompt.gold_order or consensus_order)}
        )
    unanimous = gold.unanimous_order(prompt, counted)
    context = {
        "prompt": prompt,
        "dataset": prompt.dataset,
        "completions": completions,
        "rankings": [
            (ranking, orders.as_text(orders.renamed(ranking.order, names))) for ranking in shown
        ],
        "consensus": votes["consensus"],
        "pairs": votes["pairs"],
        "unanimous": unanimous,
        "gold_text": orders.as_text(prompt.gold_order) if prompt.gold_order else "",
        "form": form,
        "model_version": model_version,
    }
    return render(request, "labeling/quality_prompt.html", context, status=status)


def predicted_rewards(prompt: Prompt) -> tuple[int | None, dict[int, float]]:
    """The version of the dataset's active reward model and its predicted reward of each of the
    prompt's completions that it scored (`rewards.services.predictions`): two queries."""
    from labeling.services.prompt_stats import active_reward_model
    from rewards.models import Prediction  # rewards builds on labeling

    model = active_reward_model(prompt.dataset)
    if model is None:
        return None, {}
    rewards = Prediction.objects.filter(reward_model=model, completion__prompt=prompt)
    return model.version, dict(rewards.values_list("completion_id", "reward"))


@require_POST
@manager_required
def quality_gold(request: HttpRequest, slug: str, prompt_id: int) -> HttpResponse:
    prompt = access.prompt_for(request.user, Ability.MANAGE, slug, prompt_id)
    action = request.POST.get("action")
    form = GoldOrderForm(request.POST if action == "set" else None)
    try:
        if action == "promote":
            gold.promote_to_gold(prompt=prompt, user=request.user, request=request)
        elif action == "unmark":
            gold.set_gold(prompt=prompt, order=None, user=request.user, request=request)
        elif action == "set" and form.is_valid():
            order = form.cleaned_data["order"]
            gold.set_gold(prompt=prompt, order=order, user=request.user, request=request)
        else:
            return render_quality_prompt(request, prompt, form, status=400)
    except ValidationError as error:
        form = GoldOrderForm(request.POST) if action == "set" else GoldOrderForm()
        form.is_valid()
        for message in errors_text(error):
            form.add_error(None, message)
        return render_quality_prompt(request, prompt, form, status=400)
    messages.success(
        request, f"{prompt.external_id} is {'gold' if prompt.is_gold else 'a regular prompt'} now."
    )
    return redirect("labeling:quality-prompt", slug=slug, prompt_id=prompt.pk)


@require_POST
@manager_required
def labeler_exclusion(request: HttpRequest, slug: str, user_id: int, action: str) -> HttpResponse:
    """Exclude a labeler from this dataset, or reinstate them there (`exclude_from`); their
    account stays open. Deactivating an account is the user admin's."""
    dataset = access.dataset_for(request.user, Ability.MANAGE, slug=slug)
    labeler = get_object_or_404(User, pk=user_id)
    by = cast(User, request.user)
    try:
        if action == "exclude":
            exclusion.exclude_from(labeler=labeler, dataset=dataset, by=by, request=request)
            messages.success(
                request,
                f"{labeler.username} is excluded from {dataset.name}: their rankings here are "
                "left out of exports, training and statistics. Reinstate them to undo.",
            )
        else:
            exclusion.reinstate_in(labeler=labeler, dataset=dataset, by=by, request=request)
            messages.success(request, f"{labeler.username} is reinstated in {dataset.name}.")
    except ValidationError as error:
        messages.error(request, " ".join(errors_text(error)))
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = reverse("labeling:quality", args=[dataset.slug])
    return redirect(target)
