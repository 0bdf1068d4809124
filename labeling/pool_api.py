"""REST API for a workspace's managers: datasets' labeler pools, exclusions per dataset or per
workspace, and adding labelers in bulk (under /api/v1/). Every endpoint takes the ability to
manage the workspace: a caller who may not see it gets a 404, one whose role may not a 403."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from labeling import access
from labeling.api import caller
from labeling.models import Ability, Dataset, Exclusion, Workspace
from labeling.pool_serializers import (
    ExclusionInputSerializer,
    ExclusionSerializer,
    InvitedListSerializer,
    InviteSerializer,
    PoolChangeSerializer,
    PoolSerializer,
)
from labeling.pools import datasets_named, groups_named, pool_of, users_named
from labeling.services import exclusion, invites
from labeling.services.workspaces import change_pool

# --- Pools -----------------------------------------------------------------------------------


@extend_schema(methods=["GET"], responses=PoolSerializer, summary="A dataset's labeler pool")
@extend_schema(
    methods=["POST"],
    request=PoolChangeSerializer,
    responses=PoolSerializer,
    summary="Add labelers (usernames) and groups to a dataset's pool",
)
@extend_schema(
    methods=["DELETE"],
    request=PoolChangeSerializer,
    responses=PoolSerializer,
    summary="Take labelers and groups out of a dataset's pool; their open leases go back",
)
@api_view(["GET", "POST", "DELETE"])
def dataset_pool(request: Request, slug: str) -> Response:
    dataset = access.dataset_for(caller(request), Ability.MANAGE, slug=slug)
    if request.method == "POST":
        _change_pool(request, dataset, remove=False)
    elif request.method == "DELETE":
        _change_pool(request, dataset, remove=True)
    return Response(PoolSerializer(pool_of(dataset)).data)


@extend_schema(
    request=PoolChangeSerializer,
    responses=PoolSerializer,
    summary="Take labelers and groups out of a dataset's pool (for clients that cannot DELETE "
    "with a body)",
)
@api_view(["POST"])
def dataset_pool_remove(request: Request, slug: str) -> Response:
    dataset = access.dataset_for(caller(request), Ability.MANAGE, slug=slug)
    _change_pool(request, dataset, remove=True)
    return Response(PoolSerializer(pool_of(dataset)).data)


def _change_pool(request: Request, dataset: Dataset, *, remove: bool) -> None:
    serializer = PoolChangeSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    labelers = users_named(serializer.validated_data["labelers"])
    groups = groups_named(dataset.workspace, serializer.validated_data["groups"])
    if remove:
        change_pool(
            dataset=dataset,
            remove_labelers=labelers,
            remove_groups=groups,
            by=caller(request),
            request=request,
        )
    else:
        change_pool(
            dataset=dataset,
            add_labelers=labelers,
            add_groups=groups,
            by=caller(request),
            request=request,
        )


# --- Exclusions ------------------------------------------------------------------------------


@extend_schema(
    methods=["GET"],
    responses=ExclusionSerializer(many=True),
    summary="Who is excluded from a dataset (by name or from its whole workspace)",
)
@extend_schema(
    methods=["POST"],
    request=ExclusionInputSerializer,
    responses={201: ExclusionSerializer},
    summary="Exclude a labeler from a dataset: their rankings there stop counting",
)
@api_view(["GET", "POST"])
def dataset_exclusions(request: Request, slug: str) -> Response:
    dataset = access.dataset_for(caller(request), Ability.MANAGE, slug=slug)
    if request.method == "POST":
        return _exclude(request, dataset.workspace, dataset)
    return Response(
        ExclusionSerializer(_listed(Exclusion.objects.covering(dataset)), many=True).data
    )


@extend_schema(
    responses={204: OpenApiResponse(description="Reinstated.")},
    summary="Reinstate a labeler excluded from a dataset",
)
@api_view(["DELETE"])
def dataset_exclusion(request: Request, slug: str, username: str) -> Response:
    dataset = access.dataset_for(caller(request), Ability.MANAGE, slug=slug)
    labeler = get_object_or_404(User, username=username)
    exclusion.reinstate_in(labeler=labeler, dataset=dataset, by=caller(request), request=request)
    return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(
    methods=["GET"],
    responses=ExclusionSerializer(many=True),
    summary="The workspace's exclusions, of whole workspace (dataset empty) or of one dataset",
)
@extend_schema(
    methods=["POST"],
    request=ExclusionInputSerializer,
    responses={201: ExclusionSerializer},
    summary="Exclude a labeler from every dataset of the workspace, including later ones",
)
@api_view(["GET", "POST"])
def workspace_exclusions(request: Request, slug: str) -> Response:
    workspace = access.workspace_for(caller(request), Ability.MANAGE, slug=slug)
    if request.method == "POST":
        return _exclude(request, workspace, None)
    listed = _listed(Exclusion.objects.filter(workspace=workspace))
    return Response(ExclusionSerializer(listed, many=True).data)


@extend_schema(
    responses={204: OpenApiResponse(description="Reinstated.")},
    summary="Reinstate a labeler excluded from the whole workspace",
)
@api_view(["DELETE"])
def workspace_exclusion(request: Request, slug: str, username: str) -> Response:
    workspace = access.workspace_for(caller(request), Ability.MANAGE, slug=slug)
    labeler = get_object_or_404(User, username=username)
    exclusion.reinstate_in(
        labeler=labeler, workspace=workspace, by=caller(request), request=request
    )
    return Response(status=status.HTTP_204_NO_CONTENT)


def _exclude(request: Request, workspace: Workspace, dataset: Dataset | None) -> Response:
    serializer = ExclusionInputSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    (labeler,) = users_named([serializer.validated_data["labeler"]], field_name="labeler")
    made = exclusion.exclude_from(
        labeler=labeler,
        dataset=dataset,
        workspace=workspace,
        by=caller(request),
        reason=serializer.validated_data["reason"],
        request=request,
    )
    found = _listed(Exclusion.objects.filter(pk=made.pk)).get()
    return Response(ExclusionSerializer(found).data, status=status.HTTP_201_CREATED)


def _listed(exclusions: QuerySet[Exclusion]) -> QuerySet[Exclusion]:
    rows = exclusions.select_related("labeler", "dataset", "created_by")
    return rows.order_by("labeler__username", "dataset__slug")


# --- Adding labelers in bulk -----------------------------------------------------------------


@extend_schema(
    request=InviteSerializer,
    responses={201: InvitedListSerializer},
    summary="Add labelers in bulk: new accounts get a password-set link (in the response, once; "
    "e-mailed when an address is given); all or nothing",
)
@api_view(["POST"])
def workspace_labelers(request: Request, slug: str) -> Response:
    workspace = access.workspace_for(caller(request), Ability.MANAGE, slug=slug)
    serializer = InviteSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    data = serializer.validated_data
    rows = invites.invite_labelers(
        workspace=workspace,
        lines=data["lines"],
        role=data["role"],
        datasets=datasets_named(workspace, data["datasets"]),
        groups=groups_named(workspace, data["groups"]),
        by=caller(request),
        request=request,
    )
    return Response(InvitedListSerializer({"labelers": rows}).data, status=status.HTTP_201_CREATED)
