"""REST API of reward models: list, card, scoring and artifact download."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.decorators import api_view, parser_classes
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import ScoreJSONParser
from labeling import access
from labeling.models import Ability, Dataset
from labeling.services.prompt_stats import active_reward_model
from rewards.downloads import artifact_response
from rewards.models import ARTIFACT_FILES, Prediction, RewardModel, TrainingRun
from rewards.serializers import (
    PredictionPageSerializer,
    PredictionParamsSerializer,
    RewardModelSerializer,
    ScoreRequestSerializer,
    ScoreResponseSerializer,
    TrainingRunRequestSerializer,
    TrainingRunSerializer,
)
from rewards.services import runs


@extend_schema(
    parameters=[
        OpenApiParameter("dataset", str, description="Only models trained on this dataset."),
        OpenApiParameter("active", bool, description="Only active models."),
    ],
    summary="Reward models, newest first",
)
class RewardModelList(generics.ListAPIView):
    serializer_class = RewardModelSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        models = RewardModel.objects.where(self.request.user, Ability.EXPORT)
        models = models.select_related("workspace").prefetch_related("datasets")
        if dataset := self.request.query_params.get("dataset"):
            models = models.filter(datasets__slug=dataset)
        if self.request.query_params.get("active") in ("true", "1"):
            models = models.filter(is_active=True)
        return models


def exportable_models(request: Request) -> QuerySet[RewardModel]:
    """The models of the workspaces where the caller may export; any other is a 404."""
    return RewardModel.objects.where(request.user, Ability.EXPORT).select_related("workspace")


@extend_schema(responses=RewardModelSerializer, summary="A reward model and its model card")
@api_view(["GET"])
def reward_model_detail(request: Request, version: int) -> Response:
    models = exportable_models(request).prefetch_related("datasets")
    model = get_object_or_404(models, version=version)
    return Response(RewardModelSerializer(model).data)


@extend_schema(
    request=ScoreRequestSerializer,
    responses=ScoreResponseSerializer,
    summary=f"Score up to {settings.PREFLAB_SCORE_BATCH_MAX} (prompt, completion) pairs",
    description=(
        f"Limits: 1 to {settings.PREFLAB_SCORE_BATCH_MAX} items (maxItems); a JSON body of at "
        f"most {settings.PREFLAB_SCORE_MAX_JSON_BYTES} bytes (413 past it); prompts and "
        f"completions of at most {settings.PREFLAB_MAX_TEXT_CHARS} characters each, a prompt "
        "ending with a user message, as imports take them. A model trained with per-criterion "
        "heads also answers `criteria`: each head's rewards, in the items' order."
    ),
)
@api_view(["POST"])
@parser_classes([ScoreJSONParser])
def score(request: Request, version: int) -> Response:
    model = get_object_or_404(exportable_models(request), version=version)
    serializer = ScoreRequestSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    items = [(item["prompt"], item["completion"]) for item in serializer.validated_data["items"]]
    from rewards import artifacts, features  # the ML stack, for this endpoint only

    estimator = artifacts.load_model(Path(settings.MEDIA_ROOT) / model.directory)
    config = features.FeatureConfig.from_dict(model.card["config"]["features"])
    heads = model.card.get("heads", [])
    columns = artifacts.score_heads(estimator, items, config)
    body = {"model": model.version, "rewards": columns[:, 0].tolist()}
    if heads:
        body["criteria"] = {name: columns[:, 1 + i].tolist() for i, name in enumerate(heads)}
    return Response(body)


@extend_schema(
    parameters=[
        OpenApiParameter(
            "format", str, enum=list(ARTIFACT_FILES), description="Which file (default onnx)."
        )
    ],
    responses={(200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY)},
    summary="Download a reward model file (admin, manager, service)",
)
@api_view(["GET"])
def artifact(request: Request, version: int) -> FileResponse:
    model = get_object_or_404(exportable_models(request), version=version)
    kind = request.query_params.get("format", "onnx")
    if kind not in ARTIFACT_FILES:
        raise ValidationError(
            {"format": [f"Unknown format {kind!r}; use one of {', '.join(ARTIFACT_FILES)}."]}
        )
    return artifact_response(model, kind)


@extend_schema(
    request=TrainingRunRequestSerializer,
    responses={201: TrainingRunSerializer},
    summary="Start a training run (admin, manager)",
    description="A queued run on the datasets, handed to a worker. Options are checked at once: "
    "an unknown or out-of-range option is a 400 naming it.",
)
@api_view(["POST"])
def start_training_run(request: Request) -> Response:
    serializer = TrainingRunRequestSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    slugs = serializer.validated_data["datasets"]
    if not access.has_any_role(request.user, Ability.MANAGE):
        raise PermissionDenied(access.refusal(None, Ability.MANAGE))
    managed = Dataset.objects.where(request.user, Ability.MANAGE)
    datasets = list(managed.filter(slug__in=slugs))
    missing = sorted(set(slugs) - {dataset.slug for dataset in datasets})
    if missing:
        raise ValidationError({"datasets": [f"No dataset {', '.join(missing)}."]})
    run = runs.start_training_run(
        datasets=datasets,
        config=serializer.validated_data["config"],
        user=cast(User, request.user),
    )
    return Response(TrainingRunSerializer(run).data, status=status.HTTP_201_CREATED)


@extend_schema(responses=TrainingRunSerializer, summary="A training run: status and metrics")
@api_view(["GET"])
def training_run_detail(request: Request, run_id: int) -> Response:
    runs_managed = TrainingRun.objects.where(request.user, Ability.MANAGE)
    run = get_object_or_404(runs_managed.prefetch_related("datasets"), pk=run_id)
    return Response(TrainingRunSerializer(run).data)


@extend_schema(
    parameters=[PredictionParamsSerializer],
    responses={
        200: PredictionPageSerializer,
        400: OpenApiResponse(description="Bad parameter, or a version not trained on it."),
        404: OpenApiResponse(description="No such dataset, or no active model and no version."),
    },
    summary="A dataset's predicted rewards by a reward model version, a page at a time",
)
@api_view(["GET"])
def predictions(request: Request, slug: str) -> Response:
    dataset = access.dataset_for(request.user, Ability.READ, slug=slug)
    params = PredictionParamsSerializer(data=request.query_params)
    params.is_valid(raise_exception=True)
    query = params.validated_data
    models = RewardModel.objects.filter(datasets=dataset)
    if "version" in query:
        model = models.filter(version=query["version"]).first()
        if model is None:
            raise ValidationError(
                {"version": [f"No reward model v{query['version']} was trained on {slug!r}."]}
            )
    else:
        model = active_reward_model(dataset)
        if model is None:
            raise NotFound(f"Dataset {slug!r} has no active reward model; pass a version.")
    rows = list(
        Prediction.objects.filter(
            reward_model=model, completion__prompt__dataset=dataset, pk__gt=query["after"]
        )
        .order_by("pk")
        .values(
            "id",
            "completion_id",
            "completion__external_id",
            "completion__prompt_id",
            "completion__prompt__external_id",
            "reward",
            "criteria",
        )[: query["limit"]]
    )
    cursor = rows[-1]["id"] if len(rows) == query["limit"] else None
    page = {"model": model.version, "results": rows, "cursor": cursor}
    return Response(PredictionPageSerializer(page).data)
