"""The reviewers' pages: the review queue of each dataset, a prompt's review page (every counted
ranking, the votes, the reward model's scores) and its adjudication form, for the admins,
managers and reviewers of the dataset's workspace (`Ability.REVIEW`)."""

from __future__ import annotations

from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from labeling import access, consensus, orders, review
from labeling.access import reviewer_required
from labeling.errors import errors_text
from labeling.forms import AdjudicationForm
from labeling.models import Ability, Adjudication, Dataset, Prompt, PromptStats, Ranking, Rating
from labeling.services import adjudication

QUEUE_PAGE_SIZE = 50


@require_GET
@reviewer_required
def review_index(request: HttpRequest) -> HttpResponse:
    queued = (
        PromptStats.objects.in_review_queue()
        .filter(dataset=OuterRef("pk"))
        .order_by()
        .values("dataset")
        .annotate(n=Count("pk"))
        .values("n")
    )
    datasets = (
        Dataset.objects.where(request.user, Ability.REVIEW)
        .exclude(status=Dataset.Status.DRAFT)
        .annotate(queued=Coalesce(Subquery(queued), 0))
        .order_by("name")
    )
    return render(request, "labeling/review_index.html", {"datasets": datasets})


@require_GET
@reviewer_required
def review_queue(request: HttpRequest, slug: str) -> HttpResponse:
    dataset = access.dataset_for(request.user, Ability.REVIEW, slug=slug)
    queue = (
        PromptStats.objects.in_review_queue()
        .filter(dataset=dataset)
        .select_related("prompt")
        .only(*QUEUE_COLUMNS)
    )
    page = Paginator(queue, QUEUE_PAGE_SIZE).get_page(request.GET.get("page"))
    rows = [(stats, stats.reasons()) for stats in page]
    context = {"dataset": dataset, "page": page, "rows": rows, "weights": review.NEED_WEIGHTS}
    return render(request, "labeling/review_queue.html", context)


QUEUE_COLUMNS = (
    "prompt__external_id",
    "prompt__messages",
    "labels",
    "agreement",
    "min_margin",
    "flags",
    "model_version",
    "model_contradiction",
    "need",
)


@never_cache
@require_GET
@reviewer_required
def review_prompt(request: HttpRequest, slug: str, prompt_id: int) -> HttpResponse:
    prompt = access.prompt_for(request.user, Ability.REVIEW, slug, prompt_id)
    completions = list(prompt.completions.all())
    return render_review(request, prompt, AdjudicationForm(completions=completions))


def render_review(
    request: HttpRequest, prompt: Prompt, form: AdjudicationForm, status: int = 200
) -> HttpResponse:
    """The review page: the prompt, its completions (numbered in import order, model names
    shown), every counted ranking, the pair votes, the model's scores and the form."""
    completions = form.completions
    names = {completion.pk: completion.external_id for completion in completions}
    numbers = {completion.pk: index for index, completion in enumerate(completions, 1)}
    counted = list(
        Ranking.objects.counted()
        .filter(prompt=prompt)
        .select_related("labeler")
        .order_by("created_at", "pk")
    )
    ratings = Rating.objects.of_rankings(ranking.pk for ranking in counted)
    for ranking in counted:
        ranking.rating_values = ratings.get(ranking.pk, {})
    votes = consensus.named_votes(names, [ranking.order for ranking in counted])
    stats = PromptStats.objects.filter(prompt=prompt).first()
    scores = {int(pk): value for pk, value in (stats.model_scores if stats else {}).items()}
    history = list(
        Adjudication.objects.filter(prompt=prompt).select_related("reviewer").order_by("-pk")
    )
    context: dict[str, Any] = {
        "prompt": prompt,
        "dataset": prompt.dataset,
        "cards": [(numbers[c.pk], c, field, scores.get(c.pk)) for c, field in form.rank_fields()],
        "form": form,
        "rankings": [ranking_row(ranking, names) for ranking in counted],
        "pairs": votes["pairs"],
        "consensus": votes["consensus"],
        "consensus_numbers": orders.renamed(votes["order"], numbers) if counted else [],
        "stats": stats,
        "reasons": stats.reasons() if stats else [],
        "model_version": stats.model_version if stats and scores else None,
        "history": [(item, orders.as_text(orders.renamed(item.order, names))) for item in history],
    }
    return render(request, "labeling/review_prompt.html", context, status=status)


def ranking_row(ranking: Ranking, names: dict[int, str]) -> dict[str, Any]:
    """A counted ranking as the review page lists it: who, the order, ratings and flags by
    completion external id, the rationale."""

    def name(key: str) -> str:
        return names.get(int(key), key)

    return {
        "labeler": ranking.labeler.username,
        "order": orders.as_text(orders.renamed(ranking.order, names)),
        "ratings": [
            f"{name(cid)}: "
            + ", ".join(f"{criterion} {value}" for criterion, value in values.items())
            for cid, values in ranking.rating_values.items()
            if values
        ],
        "flags": [
            f"{name(cid)}: {', '.join(flags)}" for cid, flags in ranking.flags.items() if flags
        ],
        "all_unacceptable": ranking.all_unacceptable,
        "rationale": ranking.rationale,
        "seconds": ranking.seconds_spent,
    }


@never_cache
@require_POST
@reviewer_required
def review_adjudicate(request: HttpRequest, slug: str, prompt_id: int) -> HttpResponse:
    """Save the final order (or accept the consensus), then open the next prompt of the queue."""
    prompt = access.prompt_for(request.user, Ability.REVIEW, slug, prompt_id)
    form = AdjudicationForm(request.POST, completions=list(prompt.completions.all()))
    if not form.is_valid():
        return render_review(request, prompt, form, status=400)
    data, reviewer = form.cleaned_data, cast(User, request.user)
    try:
        if data["action"] == "accept":
            adjudication.accept_consensus(
                prompt=prompt,
                note=data["note"],
                reviewer=reviewer,
                promote_to_gold=data["gold"],
                request=request,
            )
        else:
            adjudication.adjudicate_prompt(
                prompt=prompt,
                order=data["order"],
                note=data["note"],
                reviewer=reviewer,
                promote_to_gold=data["gold"],
                request=request,
            )
    except ValidationError as error:
        for message in errors_text(error):
            form.add_error(None, message)
        return render_review(request, prompt, form, status=400)
    messages.success(
        request, f"{prompt.external_id} is adjudicated{' and gold' if data['gold'] else ''}."
    )
    following = (
        PromptStats.objects.in_review_queue()
        .filter(dataset_id=prompt.dataset_id)
        .exclude(Q(prompt=prompt))
        .values_list("prompt_id", flat=True)
        .first()
    )
    if following is None:
        return redirect("labeling:review-queue", slug=slug)
    return redirect("labeling:review-prompt", slug=slug, prompt_id=following)
