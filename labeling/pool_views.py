"""Managers' pages: a dataset's labeler pool, the pools of a workspace at a glance, and adding
labelers in bulk."""

from __future__ import annotations

from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from labeling import access
from labeling.access import manager_required
from labeling.errors import errors_text
from labeling.models import Ability
from labeling.pool_forms import InviteForm, PoolChangeForm
from labeling.pools import pool_matrix, pool_of
from labeling.services import invites
from labeling.services.workspaces import change_pool


@require_http_methods(["GET", "POST"])
@manager_required
def dataset_pool(request: HttpRequest, slug: str) -> HttpResponse:
    """The dataset's pool; POST adds (`action` add) or takes out (remove) labelers and groups."""
    dataset = access.dataset_for(request.user, Ability.MANAGE, slug=slug)
    form = PoolChangeForm(
        request.POST if request.method == "POST" else None, workspace=dataset.workspace
    )
    if form.is_valid():
        labelers, groups = form.cleaned_data["labelers"], list(form.cleaned_data["groups"])
        by = cast(User, request.user)
        if request.POST.get("action") == "remove":
            change_pool(
                dataset=dataset,
                remove_labelers=labelers,
                remove_groups=groups,
                by=by,
                request=request,
            )
        else:
            change_pool(
                dataset=dataset, add_labelers=labelers, add_groups=groups, by=by, request=request
            )
        messages.success(request, "The pool is changed.")
        return redirect("labeling:pool", slug=dataset.slug)
    return render(
        request,
        "labeling/pool.html",
        {"dataset": dataset, "pool": pool_of(dataset), "form": form},
        status=400 if form.is_bound else 200,
    )


@require_GET
@manager_required
def workspace_pools(request: HttpRequest, slug: str) -> HttpResponse:
    workspace = access.workspace_for(request.user, Ability.MANAGE, slug=slug)
    return render(
        request,
        "labeling/workspace_pools.html",
        {"workspace": workspace, "matrix": pool_matrix(workspace)},
    )


@never_cache
@require_http_methods(["GET", "POST"])
@manager_required
def invite(request: HttpRequest, slug: str) -> HttpResponse:
    """Paste or upload `username,email` lines; the result, with the new accounts' links, is
    this response only (never stored, not cached)."""
    workspace = access.workspace_for(request.user, Ability.MANAGE, slug=slug)
    bound = request.method == "POST"
    form = InviteForm(
        request.POST if bound else None, request.FILES if bound else None, workspace=workspace
    )
    context: dict[str, Any] = {"workspace": workspace, "form": form}
    if not form.is_valid():
        return render(request, "labeling/invite.html", context, status=400 if bound else 200)
    try:
        context["rows"] = invites.invite_labelers(
            workspace=workspace,
            lines=form.cleaned_data["lines"],
            role=form.cleaned_data["role"],
            datasets=form.cleaned_data["datasets"],
            groups=form.cleaned_data["groups"],
            by=cast(User, request.user),
            request=request,
        )
    except ValidationError as error:
        for message in errors_text(error):
            form.add_error(None, message)
        return render(request, "labeling/invite.html", context, status=400)
    return render(request, "labeling/invite_done.html", context)
