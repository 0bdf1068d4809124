"""The streamed export endpoints: pairs (JSON Lines or Parquet) and rankings, each pull consistent
up to the cursor it returns in X-PrefLab-Cursor."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from django.db.models import Exists, OuterRef
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.decorators import api_view, permission_classes
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.request import Request

from labeling import consensus_exports, exports, parquet, ranking_exports
from labeling.accounts import labeler_with_pseudonym
from labeling.export_serializers import (
    ComparisonExportParamsSerializer,
    ExportParamsSerializer,
    RankingExportParamsSerializer,
)
from labeling.models import (
    Adjudication,
    Comparison,
    Dataset,
    Ranking,
)
from labeling.permissions import IsStaffOrService
from labeling.services import rankings

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
    dataset = get_object_or_404(Dataset.objects.with_criteria(), slug=slug)
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
        "criteria": dataset.criterion_keys,
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
            criteria=dataset.criterion_keys,
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
    dataset = get_object_or_404(Dataset.objects.with_criteria(), slug=slug)
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
        rows,
        include_ids=params["include_ids"],
        shape=params["shape"],
        split=params["split"],
        criteria=dataset.criterion_keys,
    )
    return jsonl_response(request, lines, cursor, f"{dataset.slug}-rankings.jsonl")
