"""REST API of AI labelers, for a workspace's managers (under /api/v1/): add one to a dataset,
change it, start its runs and pause, resume or cancel them, and read their progress. A caller
who may not see the dataset gets a 404; one whose role may not manage it a 403."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from labeling import access
from labeling.ai_models import SETTINGS, AILabeler, AIRun
from labeling.ai_serializers import (
    AILabelerSerializer,
    AIRunSerializer,
    AIRunStartSerializer,
)
from labeling.api import caller
from labeling.models import Ability, Dataset
from labeling.services import ai_labeling


def managed_labelers(request: Request) -> QuerySet[AILabeler]:
    managed = Dataset.objects.where(caller(request), Ability.MANAGE)
    return AILabeler.objects.filter(dataset__in=managed).select_related("dataset", "user")


def _settings(request: Request, *, partial: bool) -> dict[str, Any]:
    serializer = AILabelerSerializer(data=request.data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return {
        name: serializer.validated_data[name]
        for name in SETTINGS
        if name in serializer.validated_data
    }


@extend_schema(
    methods=["GET"], responses=AILabelerSerializer(many=True), summary="A dataset's AI labelers"
)
@extend_schema(
    methods=["POST"],
    request=AILabelerSerializer,
    responses={201: AILabelerSerializer},
    summary="Add an AI labeler to a dataset (nothing is sent until a run starts)",
)
@api_view(["GET", "POST"])
def dataset_ai_labelers(request: Request, slug: str) -> Response:
    dataset = access.dataset_for(caller(request), Ability.MANAGE, slug=slug)
    if request.method == "POST":
        labeler = ai_labeling.add_ai_labeler(
            dataset=dataset,
            by=caller(request),
            request=request,
            **_settings(request, partial=False),
        )
        return Response(AILabelerSerializer(labeler).data, status=status.HTTP_201_CREATED)
    labelers = AILabeler.objects.filter(dataset=dataset).select_related("dataset", "user")
    return Response(AILabelerSerializer(labelers, many=True).data)


@extend_schema(methods=["GET"], responses=AILabelerSerializer, summary="An AI labeler")
@extend_schema(
    methods=["PATCH"],
    request=AILabelerSerializer,
    responses=AILabelerSerializer,
    summary="Change an AI labeler (new principles raise its constitution version)",
)
@api_view(["GET", "PATCH"])
def ai_labeler_detail(request: Request, labeler_id: int) -> Response:
    labeler = get_object_or_404(managed_labelers(request), pk=labeler_id)
    if request.method == "PATCH":
        labeler = ai_labeling.update_ai_labeler(
            ai_labeler=labeler,
            by=caller(request),
            request=request,
            **_settings(request, partial=True),
        )
    return Response(AILabelerSerializer(labeler).data)


@extend_schema(
    methods=["GET"], responses=AIRunSerializer(many=True), summary="An AI labeler's runs"
)
@extend_schema(
    methods=["POST"],
    request=AIRunStartSerializer,
    responses={202: AIRunSerializer},
    summary="Start a run: a worker sends the prompts it has not ranked yet, up to `limit`",
)
@api_view(["GET", "POST"])
def ai_labeler_runs(request: Request, labeler_id: int) -> Response:
    labeler = get_object_or_404(managed_labelers(request), pk=labeler_id)
    if request.method == "POST":
        serializer = AIRunStartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = ai_labeling.start_run(
            ai_labeler=labeler,
            by=caller(request),
            request=request,
            limit=serializer.validated_data.get("limit"),
        )
        return Response(AIRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)
    runs = labeler.runs.order_by("-created_at")[:100]
    return Response(AIRunSerializer(runs, many=True).data)


def managed_run(request: Request, run_id: int) -> AIRun:
    return get_object_or_404(
        AIRun.objects.filter(ai_labeler__in=managed_labelers(request)), pk=run_id
    )


@extend_schema(responses=AIRunSerializer, summary="A run's status and progress")
@api_view(["GET"])
def ai_run_detail(request: Request, run_id: int) -> Response:
    return Response(AIRunSerializer(managed_run(request, run_id)).data)


ACTIONS = {
    "pause": ai_labeling.pause_run,
    "resume": ai_labeling.resume_run,
    "cancel": ai_labeling.cancel_run,
}


@extend_schema(
    request=None,
    responses={202: AIRunSerializer},
    summary="Pause a run (after the prompts in flight), resume it, or cancel it",
)
@api_view(["POST"])
def ai_run_action(request: Request, run_id: int, action: str) -> Response:
    run = managed_run(request, run_id)
    run = ACTIONS[action](run=run)
    return Response(AIRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)
