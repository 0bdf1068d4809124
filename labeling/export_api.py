"""The streamed export endpoints: pairs (JSON Lines or Parquet) and rankings, each pull consistent
up to the cursor it returns in X-PrefLab-Cursor."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

from django.db.models import Exists, OuterRef
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.decorators import api_view
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.request import Request

from labeling import access, consensus_exports, exports, parquet, ranking_exports
from labeling.accounts import labeler_with_pseudonym
from labeling.export_options import Split
from labeling.export_serializers import (
    ComparisonExportParamsSerializer,
    ExportParamsSerializer,
    RankingExportParamsSerializer,
)
from labeling.models import (
    Ability,
    Adjudication,
    Comparison,
    Dataset,
    Ranking,
)
from labeling.services import audit, rankings

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
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The export's validated query parameters, with `labeler` resolved to a user id, and the
    same as plain JSON for the audit trail (`labeler` as asked)."""
    params = serializer_class(data=request.query_params)
    params.is_valid(raise_exception=True)
    data = dict(params.validated_data)
    filters = audit_filters(data)
    if "labeler" in data:
        wanted = data["labeler"]
        data["labeler"] = labeler_with_pseudonym(wanted)
        if data["labeler"] is None:
            raise ApiValidationError(
                {"labeler": [f"No labeler has the pseudonymous id {wanted!r}."]}
            )
    return data, filters


def audit_filters(params: dict[str, Any]) -> dict[str, Any]:
    """Validated export parameters as JSON values: a split as its part, share and seed."""
    filters: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, Split):
            value = {"part": value.part, "test_share": value.test_share, "seed": value.seed}
        elif isinstance(value, tuple):
            value = list(value)
        filters[name] = value
    return filters


def pull_recorder(
    request: Request, dataset: Dataset, tally: audit.ExportTally, **details: Any
) -> Callable[[Iterable[bytes]], Iterator[bytes]]:
    """What wraps an export's encoded body so that the pull is recorded when it ends."""
    return partial(audit.recorded_export, tally=tally, dataset=dataset, request=request, **details)


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
    request: Request,
    lines: Any,
    cursor: int,
    filename: str,
    recorded: Callable[[Iterable[bytes]], Iterator[bytes]],
) -> StreamingHttpResponse:
    gzip = exports.accepts_gzip(request.headers.get("Accept-Encoding", ""))
    response = StreamingHttpResponse(
        recorded(exports.gzipped(lines) if gzip else lines), content_type="application/jsonl"
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
def comparison_export(request: Request, slug: str) -> StreamingHttpResponse:
    dataset = access.dataset_for(
        request.user, Ability.EXPORT, Dataset.objects.with_criteria(), slug=slug
    )
    params, filters = export_params(request, ComparisonExportParamsSerializer)
    render_text = params.get("render") == "text"
    row_format = params["format"]
    if row_format == "trl" and not render_text and dataset.prompts.multi_turn().exists():
        # `trl` holds a prompt as a string, which a conversation is not; TRL's trainers also
        # read its conversational form, and one file must be one form: every row gets it.
        row_format = "trl-conversational"
    cursor = export_head(dataset, Comparison, params["since"])
    parquet_output = params["output"] == "parquet"
    tally = audit.ExportTally()
    recorded = pull_recorder(
        request,
        dataset,
        tally,
        export="comparisons",
        output=params["output"],
        filters=filters,
        cursor=cursor,
    )
    rows = pair_rows(dataset, params, row_format=row_format, cursor=cursor)
    filename = f"{dataset.slug}-{params['format']}"
    if parquet_output:
        schema = parquet.pair_schema(
            row_format,
            criteria=dataset.criterion_keys,
            include=params["include"],
            include_ids=params["include_ids"],
            consensus=params["consensus"] or params["adjudicated"],
        )
        body = parquet.parquet_stream(tally.records(rows), schema)
        return parquet_response(recorded(body), cursor, filename)
    return jsonl_response(request, tally.lines(rows), cursor, f"{filename}.jsonl", recorded)


def pair_rows(
    dataset: Dataset, params: dict[str, Any], *, row_format: str, cursor: int
) -> Iterator[Any]:
    """The chunks of a pair export's rows: JSON Lines, or lists of dicts for Parquet."""
    parquet_output = params["output"] == "parquet"
    make_rows: Callable[..., Iterator[Any]]
    options = {
        "format": row_format,
        "include_ids": params["include_ids"],
        "render_text": params.get("render") == "text",
        "min_agreement": params.get("min_agreement"),
        "min_labelers": params["min_labelers"],
        "include": params["include"],
        "split": params["split"],
        "criteria": dataset.criterion_keys,
        "labelers": params["labelers"],
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
        return make_rows(
            prompts,
            adjudicated_only=params["adjudicated"],
            ranking_cursor=rankings.export_cursor(dataset=dataset, model=Ranking),
            exclude_unacceptable=params["exclude_unacceptable"],
            **options,
        )
    comparisons = Comparison.objects.filter(dataset=dataset).exported(
        cursor=cursor,
        since=params["since"],
        exclude_gold=False,  # left out as the rows are read (`exports.comparison_chunks`)
        labeler=params.get("labeler"),
        min_margin=params.get("min_margin"),
        exclude_unacceptable=params["exclude_unacceptable"],
        labelers=params["labelers"],
    )
    make_rows = exports.comparison_records if parquet_output else exports.comparison_lines
    return make_rows(comparisons, exclude_gold=params["exclude_gold"], **options)


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
def ranking_export(request: Request, slug: str) -> StreamingHttpResponse:
    dataset = access.dataset_for(
        request.user, Ability.EXPORT, Dataset.objects.with_criteria(), slug=slug
    )
    params, filters = export_params(request, RankingExportParamsSerializer)
    cursor = export_head(dataset, Ranking, params["since"])
    rows = Ranking.objects.filter(dataset=dataset).exported(
        cursor=cursor,
        since=params["since"],
        exclude_gold=params["exclude_gold"],
        labeler=params.get("labeler"),
        exclude_unacceptable=params["exclude_unacceptable"],
        labelers=params["labelers"],
    )
    lines = ranking_exports.ranking_lines(
        rows,
        include_ids=params["include_ids"],
        shape=params["shape"],
        split=params["split"],
        criteria=dataset.criterion_keys,
    )
    tally = audit.ExportTally()
    recorded = pull_recorder(
        request,
        dataset,
        tally,
        export="rankings",
        output="jsonl",
        filters=filters,
        cursor=cursor,
    )
    filename = f"{dataset.slug}-rankings.jsonl"
    return jsonl_response(request, tally.lines(lines), cursor, filename, recorded)
