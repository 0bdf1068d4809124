"""The workspace API (under /api/v1/workspaces/): workspaces with the caller's role in each,
their members and roles, and their audit trail.

Another workspace is a 404 to whoever is not its member; a member whose role may not do
something gets a 403 naming the roles that may (`labeling.access`)."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.decorators import api_view
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from labeling import access
from labeling.api import caller
from labeling.models import Ability, AuditEvent, Workspace
from labeling.services import workspaces
from labeling.workspace_serializers import (
    AuditPageSerializer,
    AuditParamsSerializer,
    MemberInputSerializer,
    MemberSerializer,
    WorkspaceCreateSerializer,
    WorkspaceSerializer,
    WorkspaceUpdateSerializer,
)


def with_role(user: User, workspace: Workspace) -> Workspace:
    return Workspace.objects.with_role_of(user).get(pk=workspace.pk)


@extend_schema(
    methods=["GET"],
    responses=WorkspaceSerializer(many=True),
    summary="The caller's workspaces (a superuser's: all), with their role in each",
)
@extend_schema(
    methods=["POST"],
    request=WorkspaceCreateSerializer,
    responses={201: WorkspaceSerializer},
    summary="Create a workspace (superusers, holders of labeling.add_workspace): the caller "
    "becomes its admin",
)
@api_view(["GET", "POST"])
def workspace_list(request: Request) -> Response:
    user = caller(request)
    if request.method == "GET":
        found = Workspace.objects.visible_to(user).with_role_of(user).order_by("name", "pk")
        return Response(WorkspaceSerializer(found, many=True).data)
    access.check_can_create_workspace(user)
    serializer = WorkspaceCreateSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    workspace = workspaces.create_workspace(by=user, request=request, **serializer.validated_data)
    return Response(
        WorkspaceSerializer(with_role(user, workspace)).data, status=status.HTTP_201_CREATED
    )


@extend_schema(methods=["GET"], responses=WorkspaceSerializer, summary="Read a workspace (members)")
@extend_schema(
    methods=["PATCH"],
    request=WorkspaceUpdateSerializer,
    responses=WorkspaceSerializer,
    summary="Rename a workspace or change its description (its admins)",
)
@api_view(["GET", "PATCH"])
def workspace_detail(request: Request, slug: str) -> Response:
    user = caller(request)
    ability = Ability.ADMINISTER if request.method == "PATCH" else None
    workspace = access.workspace_for(user, ability, slug=slug)
    if request.method == "PATCH":
        serializer = WorkspaceUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        workspaces.update_workspace(workspace=workspace, **serializer.validated_data)
    return Response(WorkspaceSerializer(with_role(user, workspace)).data)


@extend_schema(
    methods=["GET"],
    responses=MemberSerializer(many=True),
    summary="A workspace's members and their roles (its admins and managers)",
)
@extend_schema(
    methods=["POST"],
    request=MemberInputSerializer,
    responses=MemberSerializer,
    summary="Add a member with a role, or change a member's role (its admins); recorded in "
    "the audit trail",
)
@api_view(["GET", "POST"])
def member_list(request: Request, slug: str) -> Response:
    user = caller(request)
    ability = Ability.ADMINISTER if request.method == "POST" else Ability.MANAGE
    workspace = access.workspace_for(user, ability, slug=slug)
    if request.method == "GET":
        members = workspace.memberships.select_related("user").order_by("user__username")
        return Response(MemberSerializer(members, many=True).data)
    serializer = MemberInputSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    username = serializer.validated_data["username"]
    member = User.objects.filter(username=username).first()
    if member is None:
        raise ApiValidationError({"username": [f"No user is named {username!r}."]})
    membership = workspaces.set_role(
        workspace=workspace,
        user=member,
        role=serializer.validated_data["role"],
        by=user,
        request=request,
    )
    return Response(MemberSerializer(membership).data)


@extend_schema(
    request=None,
    responses={204: OpenApiResponse(description="Removed.")},
    summary="Remove a member (its admins): out of the workspace's pools too, their leases "
    "given back; the last admin stays (400)",
)
@api_view(["DELETE"])
def member_detail(request: Request, slug: str, username: str) -> Response:
    user = caller(request)
    workspace = access.workspace_for(user, Ability.ADMINISTER, slug=slug)
    membership = get_object_or_404(
        workspace.memberships.select_related("user"), user__username=username
    )
    workspaces.remove_member(workspace=workspace, user=membership.user, by=user, request=request)
    return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(
    parameters=[AuditParamsSerializer],
    responses=AuditPageSerializer,
    summary="A workspace's audit trail, newest first (its admins): who changed what its labels "
    "mean and who took its data; follow `next` for older events",
)
@api_view(["GET"])
def audit_list(request: Request, slug: str) -> Response:
    workspace = access.workspace_for(caller(request), Ability.ADMINISTER, slug=slug)
    params = AuditParamsSerializer(data=request.query_params)
    params.is_valid(raise_exception=True)
    events, more = (
        AuditEvent.objects.filter(workspace=workspace)
        .matching(**params.to_filters())
        .page(before=params.validated_data.get("before"), limit=params.validated_data["limit"])
    )
    following = (
        replace_query_param(request.build_absolute_uri(), "before", events[-1].pk) if more else None
    )
    return Response(AuditPageSerializer({"results": events, "next": following}).data)
