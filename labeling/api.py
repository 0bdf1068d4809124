"""REST API for training pipelines, scripts and custom front ends (under /api/v1/)."""

from __future__ import annotations

import csv
from typing import Any, cast

from django.contrib.auth.models import User
from django.db.models import F, QuerySet
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.decorators import api_view, parser_classes
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from labeling import access
from labeling.models import (
    Ability,
    Asked,
    Assignment,
    Dataset,
    ImportJob,
    Prompt,
    PromptStats,
    Strength,
)
from labeling.quality_serializers import (
    LeaderboardParamsSerializer,
    LeaderboardSerializer,
    PromptStatsParamsSerializer,
    PromptStatsSerializer,
    QualityReportSerializer,
)
from labeling.serializers import (
    AssignmentSerializer,
    DatasetSerializer,
    DatasetWriteSerializer,
    ImportCreateSerializer,
    ImportJobSerializer,
    PromptSerializer,
    RankingInputSerializer,
    RankingSerializer,
    SkipSerializer,
    TaskSerializer,
    ranking_data,
    task_data,
)
from labeling.services import datasets, imports, leaderboard, leasing, rankings
from labeling.services.quality_report import current_report


def caller(request: Request) -> User:
    """The signed-in user: the permission classes let no anonymous request this far."""
    return cast(User, request.user)


def scoped_imports(request: Request) -> QuerySet[ImportJob]:
    """The imports of the datasets the caller manages; any other is a 404 to them."""
    managed = Dataset.objects.where(caller(request), Ability.MANAGE)
    return ImportJob.objects.filter(dataset__in=managed).select_related("dataset")


# --- Datasets --------------------------------------------------------------------------------


@extend_schema(methods=["GET"], responses=DatasetSerializer(many=True), summary="List datasets")
@extend_schema(
    methods=["POST"],
    request=DatasetWriteSerializer,
    responses={201: DatasetSerializer},
    summary="Create a dataset (staff)",
)
@api_view(["GET", "POST"])
def dataset_list(request: Request) -> Response:
    if request.method == "GET":
        visible = Dataset.objects.visible_to(caller(request)).with_progress()
        visible = visible.select_related("workspace").prefetch_related("criteria")
        return Response(DatasetSerializer(visible.order_by("name"), many=True).data)
    serializer = DatasetWriteSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    fields = dict(serializer.validated_data)
    workspace = access.workspace_to_create_in(caller(request), fields.pop("workspace", ""))
    dataset = datasets.create_dataset(
        workspace=workspace, user=caller(request), request=request, **fields
    )
    return Response(
        DatasetSerializer(
            Dataset.objects.with_progress()
            .select_related("workspace")
            .prefetch_related("criteria")
            .get(pk=dataset.pk)
        ).data,
        status=status.HTTP_201_CREATED,
    )


@extend_schema(methods=["GET"], responses=DatasetSerializer, summary="Read a dataset")
@extend_schema(
    methods=["PATCH"],
    request=DatasetWriteSerializer(partial=True),
    responses=DatasetSerializer,
    summary="Update a dataset (staff); new guidelines raise guidelines_version",
)
@api_view(["GET", "PATCH"])
def dataset_detail(request: Request, slug: str) -> Response:
    ability = Ability.MANAGE if request.method == "PATCH" else None
    with_progress = (
        Dataset.objects.with_progress().select_related("workspace").prefetch_related("criteria")
    )
    dataset = access.dataset_for(caller(request), ability, with_progress, slug=slug)
    if request.method == "PATCH":
        serializer = DatasetWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        if "workspace" in serializer.validated_data:
            raise ApiValidationError({"workspace": "A dataset cannot move to another workspace."})
        datasets.update_dataset(
            dataset=dataset, user=caller(request), request=request, **serializer.validated_data
        )
        dataset = with_progress.get(pk=dataset.pk)
    return Response(DatasetSerializer(dataset).data)


# --- Imports ---------------------------------------------------------------------------------


@extend_schema(
    request={"multipart/form-data": ImportCreateSerializer},
    responses={202: ImportJobSerializer},
    summary="Upload a file to import (staff); a worker imports it",
)
@api_view(["POST"])
@parser_classes([MultiPartParser, FormParser])
def import_create(request: Request, slug: str) -> Response:
    dataset = access.dataset_for(caller(request), Ability.MANAGE, slug=slug)
    serializer = ImportCreateSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    upload = serializer.validated_data["file"]
    job = imports.queue_import(
        dataset=dataset,
        upload=upload,
        filename=upload.name,
        size=upload.size,
        format=serializer.validated_data.get("format"),
        strict=serializer.validated_data["strict"],
        user=caller(request),
    )
    return Response(ImportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


@extend_schema(responses=ImportJobSerializer, summary="Status, progress and result of an import")
@api_view(["GET"])
def import_detail(request: Request, import_id: int) -> Response:
    job = get_object_or_404(scoped_imports(request), pk=import_id)
    return Response(ImportJobSerializer(job).data)


@extend_schema(
    request=None,
    responses={202: ImportJobSerializer},
    summary="Cancel an import (staff): a queued one at once, a running one after its batch",
)
@api_view(["POST"])
def import_cancel(request: Request, import_id: int) -> Response:
    job = get_object_or_404(scoped_imports(request), pk=import_id)
    job = imports.cancel_import(job=job)
    return Response(ImportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


# --- Prompts ---------------------------------------------------------------------------------


@extend_schema(summary="Prompts with their completions, paginated")
class PromptList(generics.ListAPIView):
    serializer_class = PromptSerializer

    def get_queryset(self) -> QuerySet[Prompt]:
        dataset = access.dataset_for(self.request.user, Ability.READ, slug=self.kwargs["slug"])
        return dataset.prompts.order_by("pk").prefetch_related("completions")


# --- Labeling --------------------------------------------------------------------------------


@extend_schema(
    request=None,
    responses={200: TaskSerializer, 204: OpenApiResponse(description="No task is left.")},
    summary="Lease the next task for the calling labeler",
)
@api_view(["POST"])
def next_task(request: Request, slug: str) -> Response:
    dataset = access.dataset_to_label(caller(request), slug)
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=caller(request))
    if assignment is None:
        return Response(status=status.HTTP_204_NO_CONTENT)
    completions = assignment.display_completions()
    two = len(completions) == 2 and dataset.strength != Asked.OFF
    strength_levels = list(Strength.values) if two else []
    return Response(task_data(assignment, completions, strength_levels))


def own_assignment(request: Request, assignment_id: int) -> Assignment:
    return get_object_or_404(
        Assignment.objects.mine(caller(request)).select_related("prompt__dataset"),
        pk=assignment_id,
    )


@extend_schema(
    request=RankingInputSerializer,
    responses={201: RankingSerializer},
    summary="Submit the ranking of a leased task (a retry with the same request_id is harmless)",
)
@api_view(["POST"])
def submit_ranking(request: Request, assignment_id: int) -> Response:
    serializer = RankingInputSerializer(data=request.data)
    if not serializer.is_valid():
        own_assignment(request, assignment_id)  # someone else's task is a 404 first
        raise ApiValidationError(serializer.errors)
    try:
        ranking = rankings.submit_own_ranking(
            labeler_id=caller(request).pk, assignment_id=assignment_id, **serializer.validated_data
        )
    except Assignment.DoesNotExist:
        raise Http404("No such task of yours.") from None
    return Response(ranking_data(ranking), status=status.HTTP_201_CREATED)


@extend_schema(request=SkipSerializer, responses=AssignmentSerializer, summary="Skip a task")
@api_view(["POST"])
def skip_task(request: Request, assignment_id: int) -> Response:
    assignment = own_assignment(request, assignment_id)
    serializer = SkipSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    assignment = leasing.skip_assignment(
        assignment=assignment, reason=serializer.validated_data["reason"]
    )
    return Response(AssignmentSerializer(assignment).data)


@extend_schema(
    responses=QualityReportSerializer,
    summary="The dataset's label-quality report: agreement, labelers, flags (staff)",
)
@api_view(["GET"])
def quality_report(request: Request, slug: str) -> Response:
    dataset = access.dataset_for(caller(request), Ability.READ, slug=slug)
    report, refreshing = current_report(dataset=dataset)
    ready = report is not None and report.computed_at is not None
    return Response(
        QualityReportSerializer(
            {
                "status": ("refreshing" if refreshing else "ready") if ready else "computing",
                "computed_at": report.computed_at if report else None,
                "ranking_cursor": report.ranking_cursor if ready and report else 0,
                "report": report.data if ready and report else None,
            }
        ).data
    )


# --- Per-prompt statistics ------------------------------------------------------------------


def filtered_stats(stats: QuerySet[PromptStats], params: dict[str, Any]) -> QuerySet[PromptStats]:
    """The stats rows that pass the validated filters, in the asked ordering."""
    bounds = {
        "min_labels": "labels__gte",
        "max_agreement": "agreement__lte",
        "max_margin": "min_margin__lte",
        "min_need": "need__gte",
        "min_contradiction": "model_contradiction__gte",
    }
    for name, lookup in bounds.items():
        if name in params:
            stats = stats.filter(**{lookup: params[name]})
    if params["flagged"] is not None:
        stats = (
            stats.filter(safety_flags__gt=0) if params["flagged"] else stats.filter(safety_flags=0)
        )
    for name in ("adjudicated", "is_gold"):
        if params[name] is not None:
            stats = stats.filter(**{name: params[name]})
    if params["in_queue"] is not None:
        queued = PromptStats.objects.in_review_queue().values("pk")
        stats = stats.filter(pk__in=queued) if params["in_queue"] else stats.exclude(pk__in=queued)
    name = params["ordering"].lstrip("-")
    field = F("prompt_id" if name == "prompt" else name)
    first = (
        field.desc(nulls_last=True)
        if params["ordering"].startswith("-")
        else field.asc(nulls_last=True)
    )
    return stats.order_by(first, "prompt_id")


@extend_schema(
    parameters=[PromptStatsParamsSerializer],
    summary="Per-prompt statistics (agreement, consensus, margins, flags, need), paginated",
)
class PromptStatsList(generics.ListAPIView):
    serializer_class = PromptStatsSerializer

    def get_queryset(self) -> QuerySet[PromptStats]:
        dataset = access.dataset_for(self.request.user, Ability.READ, slug=self.kwargs["slug"])
        params = PromptStatsParamsSerializer(data=self.request.query_params)
        params.is_valid(raise_exception=True)
        stats = PromptStats.objects.filter(dataset=dataset).select_related("prompt")
        stats = stats.defer("prompt__messages", "prompt__metadata", "prompt__gold_order")
        return filtered_stats(stats, params.validated_data)


@extend_schema(
    parameters=[LeaderboardParamsSerializer],
    responses={
        200: LeaderboardSerializer,
        (200, "text/csv"): OpenApiResponse(
            OpenApiTypes.STR,
            description="With format=csv: rank, model, score, low, high, comparisons, wins, "
            "losses, ties; a row per model, best first.",
        ),
        400: OpenApiResponse(description="Unknown dataset, too many datasets, bad rounds."),
        503: OpenApiResponse(
            description="format=csv while the first computation runs; see Retry-After."
        ),
    },
    summary="A Bradley-Terry leaderboard of the completions' source models, with bootstrap "
    "95% intervals and the win-rate matrix (staff, service)",
)
@api_view(["GET"])
def model_leaderboard(request: Request, slug: str) -> Response | HttpResponse:
    access.dataset_for(caller(request), Ability.READ, slug=slug)
    params = LeaderboardParamsSerializer(data=request.query_params)
    params.is_valid(raise_exception=True)
    chosen = leaderboard.parse_datasets(
        slug=slug,
        extra=params.validated_data.get("datasets", ""),
        among=Dataset.objects.where(caller(request), Ability.READ),
    )
    stored, refreshing = leaderboard.current_leaderboard(
        datasets=chosen, rounds=params.validated_data["rounds"]
    )
    shown = stored if stored is not None and stored.computed_at is not None else None
    if params.validated_data["format"] == "csv":
        if shown is None:
            return computing_csv()
        rows = leaderboard.as_csv_rows(shown.data)  # type: ignore[arg-type]
        return csv_download(rows, f"{slug}-leaderboard.csv")
    return Response(
        {
            "status": ("refreshing" if refreshing else "ready") if shown else "computing",
            "computed_at": shown.computed_at if shown else None,
            "ranking_cursor": shown.ranking_cursor if shown else 0,
            "error": stored.error if stored else "",
            "leaderboard": shown.data if shown else None,
        }
    )


def csv_download(rows: list[list[str | int | float]], filename: str) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    csv.writer(response).writerows(rows)
    return response


def computing_csv() -> HttpResponse:
    response = HttpResponse(
        "The leaderboard is being computed; ask again in a few seconds.\n",
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = "5"
    return response
