"""REST API for training pipelines, scripts and custom front ends (under /api/v1/)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from typing import Any, cast

from django.contrib.auth.models import User
from django.db.models import Exists, F, OuterRef, QuerySet
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.decorators import api_view, parser_classes, permission_classes
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from labeling import consensus_exports, exports, parquet, ranking_exports
from labeling.accounts import is_service, labeler_with_pseudonym
from labeling.export_serializers import (
    ComparisonExportParamsSerializer,
    ExportParamsSerializer,
    RankingExportParamsSerializer,
)
from labeling.models import (
    Adjudication,
    Asked,
    Assignment,
    Comparison,
    Dataset,
    ImportJob,
    Prompt,
    PromptStats,
    Ranking,
    Strength,
)
from labeling.permissions import IsLabeler, IsStaff, IsStaffOrService, IsStaffToChange
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
)
from labeling.services import datasets, imports, leaderboard, leasing, rankings
from labeling.services.quality_report import current_report


def caller(request: Request) -> User:
    """The signed-in user: the permission classes let no anonymous request this far."""
    return cast(User, request.user)


def visible_datasets(request: Request) -> QuerySet[Dataset]:
    visible = Dataset.objects.with_progress()
    if request.user.is_staff or is_service(caller(request)):
        return visible
    return visible.active()


# --- Datasets --------------------------------------------------------------------------------


@extend_schema(methods=["GET"], responses=DatasetSerializer(many=True), summary="List datasets")
@extend_schema(
    methods=["POST"],
    request=DatasetWriteSerializer,
    responses={201: DatasetSerializer},
    summary="Create a dataset (staff)",
)
@api_view(["GET", "POST"])
@permission_classes([IsStaffToChange])
def dataset_list(request: Request) -> Response:
    if request.method == "GET":
        return Response(
            DatasetSerializer(visible_datasets(request).order_by("name"), many=True).data
        )
    serializer = DatasetWriteSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    dataset = datasets.create_dataset(**serializer.validated_data)
    return Response(
        DatasetSerializer(Dataset.objects.with_progress().get(pk=dataset.pk)).data,
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
@permission_classes([IsStaffToChange])
def dataset_detail(request: Request, slug: str) -> Response:
    dataset = get_object_or_404(visible_datasets(request), slug=slug)
    if request.method == "PATCH":
        serializer = DatasetWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        datasets.update_dataset(dataset=dataset, **serializer.validated_data)
        dataset = Dataset.objects.with_progress().get(pk=dataset.pk)
    return Response(DatasetSerializer(dataset).data)


# --- Imports ---------------------------------------------------------------------------------


@extend_schema(
    request={"multipart/form-data": ImportCreateSerializer},
    responses={202: ImportJobSerializer},
    summary="Upload a file to import (staff); a worker imports it",
)
@api_view(["POST"])
@permission_classes([IsStaff])
@parser_classes([MultiPartParser, FormParser])
def import_create(request: Request, slug: str) -> Response:
    dataset = get_object_or_404(Dataset, slug=slug)
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
@permission_classes([IsStaff])
def import_detail(request: Request, import_id: int) -> Response:
    job = get_object_or_404(ImportJob.objects.select_related("dataset"), pk=import_id)
    return Response(ImportJobSerializer(job).data)


@extend_schema(
    request=None,
    responses={202: ImportJobSerializer},
    summary="Cancel an import (staff): a queued one at once, a running one after its batch",
)
@api_view(["POST"])
@permission_classes([IsStaff])
def import_cancel(request: Request, import_id: int) -> Response:
    job = get_object_or_404(ImportJob.objects.select_related("dataset"), pk=import_id)
    job = imports.cancel_import(job=job)
    return Response(ImportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


# --- Prompts ---------------------------------------------------------------------------------


@extend_schema(summary="Prompts with their completions, paginated")
class PromptList(generics.ListAPIView):
    serializer_class = PromptSerializer
    permission_classes = [IsStaffOrService]

    def get_queryset(self) -> QuerySet[Prompt]:
        dataset = get_object_or_404(Dataset, slug=self.kwargs["slug"])
        return dataset.prompts.order_by("pk").prefetch_related("completions")


# --- Labeling --------------------------------------------------------------------------------


@extend_schema(
    request=None,
    responses={200: TaskSerializer, 204: OpenApiResponse(description="No task is left.")},
    summary="Lease the next task for the calling labeler",
)
@api_view(["POST"])
@permission_classes([IsLabeler])
def next_task(request: Request, slug: str) -> Response:
    dataset = get_object_or_404(Dataset.objects.active(), slug=slug)
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=caller(request))
    if assignment is None:
        return Response(status=status.HTTP_204_NO_CONTENT)
    completions = assignment.display_completions()
    task = {
        "assignment": assignment,
        "completions": completions,
        "strength_levels": list(Strength.values)
        if len(completions) == 2 and dataset.strength != Asked.OFF
        else [],
    }
    return Response(TaskSerializer(task).data)


def own_assignment(request: Request, assignment_id: int) -> Assignment:
    return get_object_or_404(
        Assignment.objects.filter(labeler=caller(request)).select_related("prompt__dataset"),
        pk=assignment_id,
    )


@extend_schema(
    request=RankingInputSerializer,
    responses={201: RankingSerializer},
    summary="Submit the ranking of a leased task (a retry with the same request_id is harmless)",
)
@api_view(["POST"])
@permission_classes([IsLabeler])
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
    return Response(RankingSerializer(ranking).data, status=status.HTTP_201_CREATED)


@extend_schema(request=SkipSerializer, responses=AssignmentSerializer, summary="Skip a task")
@api_view(["POST"])
@permission_classes([IsLabeler])
def skip_task(request: Request, assignment_id: int) -> Response:
    assignment = own_assignment(request, assignment_id)
    serializer = SkipSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    assignment = leasing.skip_assignment(
        assignment=assignment, reason=serializer.validated_data["reason"]
    )
    return Response(AssignmentSerializer(assignment).data)


# --- Exports ---------------------------------------------------------------------------------

CURSOR_HEADER = "X-PrefLab-Cursor"
EXPORT_RESPONSES = {
    (200, "application/jsonl"): OpenApiResponse(
        OpenApiTypes.STR,
        description=f"JSON Lines, gzip when accepted; the next cursor is in {CURSOR_HEADER}.",
    ),
    400: OpenApiResponse(
        description="Unknown format, bad cursor or filter; lists what is accepted."
    ),
}


def export_params(
    request: Request, serializer_class: type[ExportParamsSerializer]
) -> dict[str, Any]:
    """The export's validated query parameters, with `labeler` resolved to a user id."""
    params = serializer_class(data=request.query_params)
    params.is_valid(raise_exception=True)
    data = dict(params.validated_data)
    if "labeler" in data:
        wanted = data["labeler"]
        data["labeler"] = labeler_with_pseudonym(wanted)
        if data["labeler"] is None:
            raise ApiValidationError(
                {"labeler": [f"No labeler has the pseudonymous id {wanted!r}."]}
            )
    return data


def export_head(dataset: Dataset, model: type[Ranking] | type[Comparison], since: int) -> int:
    """The export's cursor; a `since` beyond it was not a cursor of this dataset (a 400)."""
    head = rankings.export_cursor(dataset=dataset, model=model)
    if since > head:
        raise ApiValidationError(
            {
                "since": [
                    f"{since} is beyond the newest row of this export ({head}): use the "
                    f"{CURSOR_HEADER} header of a pull of this dataset, or leave since out."
                ]
            }
        )
    return head


def jsonl_response(
    request: Request, lines: Any, cursor: int, filename: str
) -> StreamingHttpResponse:
    gzip = exports.accepts_gzip(request.headers.get("Accept-Encoding", ""))
    response = StreamingHttpResponse(
        exports.gzipped(lines) if gzip else lines, content_type="application/jsonl"
    )
    if gzip:
        response["Content-Encoding"] = "gzip"
    response["Vary"] = "Accept-Encoding"
    response[CURSOR_HEADER] = str(cursor)
    response["Content-Disposition"] = f'inline; filename="{filename}"'
    return response


PAIR_EXPORT_RESPONSES = {
    **EXPORT_RESPONSES,
    (200, parquet.CONTENT_TYPE): OpenApiResponse(
        OpenApiTypes.BINARY,
        description=f"output=parquet: one Parquet file; the next cursor is in {CURSOR_HEADER}.",
    ),
}


@extend_schema(
    parameters=[ComparisonExportParamsSerializer],
    responses=PAIR_EXPORT_RESPONSES,
    summary="Stream preference pairs (chosen, rejected) as JSON Lines or Parquet",
)
@api_view(["GET"])
@permission_classes([IsStaffOrService])
def comparison_export(request: Request, slug: str) -> StreamingHttpResponse:
    dataset = get_object_or_404(Dataset, slug=slug)
    params = export_params(request, ComparisonExportParamsSerializer)
    render_text = params.get("render") == "text"
    row_format = params["format"]
    if row_format == "trl" and not render_text and dataset.prompts.multi_turn().exists():
        # `trl` holds a prompt as a string, which a conversation is not; TRL's trainers also
        # read its conversational form, and one file must be one form: every row gets it.
        row_format = "trl-conversational"
    cursor = export_head(dataset, Comparison, params["since"])
    parquet_output = params["output"] == "parquet"
    make_rows: Callable[..., Iterator[Any]]
    rows: Any  # JSON lines or Parquet rows, as asked
    options = {
        "format": row_format,
        "include_ids": params["include_ids"],
        "render_text": render_text,
        "min_agreement": params.get("min_agreement"),
        "min_labelers": params["min_labelers"],
        "include": params["include"],
        "split": params["split"],
    }
    if params["consensus"] or params["adjudicated"]:
        prompts = dataset.prompts.all()
        if params["exclude_gold"]:
            prompts = prompts.filter(is_gold=False)
        if params["adjudicated"]:
            prompts = prompts.filter(Exists(Adjudication.objects.filter(prompt=OuterRef("pk"))))
        make_rows = (
            consensus_exports.consensus_records
            if parquet_output
            else consensus_exports.consensus_lines
        )
        rows = make_rows(
            prompts,
            adjudicated_only=params["adjudicated"],
            ranking_cursor=rankings.export_cursor(dataset=dataset, model=Ranking),
            exclude_unacceptable=params["exclude_unacceptable"],
            **options,
        )
    else:
        comparisons = Comparison.objects.filter(dataset=dataset).exported(
            cursor=cursor,
            since=params["since"],
            exclude_gold=params["exclude_gold"],
            labeler=params.get("labeler"),
            min_margin=params.get("min_margin"),
            exclude_unacceptable=params["exclude_unacceptable"],
        )
        make_rows = exports.comparison_records if parquet_output else exports.comparison_lines
        rows = make_rows(comparisons, **options)
    filename = f"{dataset.slug}-{params['format']}"
    if parquet_output:
        schema = parquet.pair_schema(
            row_format,
            include=params["include"],
            include_ids=params["include_ids"],
            consensus=params["consensus"] or params["adjudicated"],
        )
        return parquet_response(parquet.parquet_stream(rows, schema), cursor, filename)
    return jsonl_response(request, rows, cursor, f"{filename}.jsonl")


def parquet_response(data: Any, cursor: int, filename: str) -> StreamingHttpResponse:
    """A streamed Parquet file, never gzipped (its pages are compressed already)."""
    response = StreamingHttpResponse(data, content_type=parquet.CONTENT_TYPE)
    response[CURSOR_HEADER] = str(cursor)
    response["Content-Disposition"] = f'attachment; filename="{filename}.parquet"'
    return response


@extend_schema(
    parameters=[RankingExportParamsSerializer],
    responses=EXPORT_RESPONSES,
    summary="Stream rankings, one row each with every completion, order, ratings and flags",
)
@api_view(["GET"])
@permission_classes([IsStaffOrService])
def ranking_export(request: Request, slug: str) -> StreamingHttpResponse:
    dataset = get_object_or_404(Dataset, slug=slug)
    params = export_params(request, RankingExportParamsSerializer)
    cursor = export_head(dataset, Ranking, params["since"])
    rows = Ranking.objects.filter(dataset=dataset).exported(
        cursor=cursor,
        since=params["since"],
        exclude_gold=params["exclude_gold"],
        labeler=params.get("labeler"),
        exclude_unacceptable=params["exclude_unacceptable"],
    )
    lines = ranking_exports.ranking_lines(
        rows, include_ids=params["include_ids"], shape=params["shape"], split=params["split"]
    )
    return jsonl_response(request, lines, cursor, f"{dataset.slug}-rankings.jsonl")


@extend_schema(
    responses=QualityReportSerializer,
    summary="The dataset's label-quality report: agreement, labelers, flags (staff)",
)
@api_view(["GET"])
@permission_classes([IsStaff])
def quality_report(request: Request, slug: str) -> Response:
    dataset = get_object_or_404(Dataset, slug=slug)
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
    permission_classes = [IsStaffOrService]

    def get_queryset(self) -> QuerySet[PromptStats]:
        dataset = get_object_or_404(Dataset, slug=self.kwargs["slug"])
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
@permission_classes([IsStaffOrService])
def model_leaderboard(request: Request, slug: str) -> Response | HttpResponse:
    get_object_or_404(Dataset, slug=slug)
    params = LeaderboardParamsSerializer(data=request.query_params)
    params.is_valid(raise_exception=True)
    chosen = leaderboard.parse_datasets(slug=slug, extra=params.validated_data.get("datasets", ""))
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
