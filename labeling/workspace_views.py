"""The workspace pages: the caller's workspaces with their role in each (for admins, the members
table with forms to add, change and remove), and a workspace's audit trail for its admins.

Another workspace is a 404 to whoever is not its member, a page their role may not see a 403
(`labeling.access.workspace_for`)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from labeling import access
from labeling.errors import errors_text
from labeling.forms import AuditFilterForm, MemberForm
from labeling.models import Ability, AuditEvent, Membership, Role, Workspace
from labeling.services import workspaces
from labeling.views import AuthenticatedRequest

AUDIT_PAGE_SIZE = 50


@require_GET
@login_required
def workspace_index(request: HttpRequest) -> HttpResponse:
    return render_index(request, MemberForm())


def render_index(
    request: HttpRequest, form: MemberForm, *, failed: str = "", status: int = 200
) -> HttpResponse:
    """The workspaces page; `form` (bound after a refused change in the workspace `failed`)
    shows its errors under that workspace's members."""
    user = request.user
    found = list(Workspace.objects.visible_to(user).with_role_of(user).order_by("name", "pk"))
    administered = [w.pk for w in found if w.caller_role == Role.ADMIN]  # type: ignore[attr-defined]
    members: dict[int, list[Membership]] = {pk: [] for pk in administered}
    rows = Membership.objects.filter(workspace__in=administered).select_related("user")
    for membership in rows.order_by("user__username"):
        members[membership.workspace_id].append(membership)
    context: dict[str, Any] = {
        "workspaces": [(workspace, members.get(workspace.pk)) for workspace in found],
        "form": form,
        "failed": failed,
        "roles": Role.choices,
    }
    return render(request, "labeling/workspaces.html", context, status=status)


@require_POST
@login_required
def member_set(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    """Add a member with a role, or change a member's role."""
    workspace = access.workspace_for(request.user, Ability.ADMINISTER, slug=slug)
    form = MemberForm(request.POST)
    if form.is_valid():
        member, role = form.cleaned_data["username"], form.cleaned_data["role"]
        try:
            workspaces.set_role(
                workspace=workspace, user=member, role=role, by=request.user, request=request
            )
        except ValidationError as error:
            for message in errors_text(error):
                form.add_error(None, message)
        else:
            messages.success(request, f"{member.username} is a {role} of {workspace.name} now.")
            return redirect("labeling:workspaces")
    return render_index(request, form, failed=workspace.slug, status=400)


@require_POST
@login_required
def member_remove(request: AuthenticatedRequest, slug: str, user_id: int) -> HttpResponse:
    workspace = access.workspace_for(request.user, Ability.ADMINISTER, slug=slug)
    membership = get_object_or_404(workspace.memberships.select_related("user"), user=user_id)
    try:
        workspaces.remove_member(
            workspace=workspace, user=membership.user, by=request.user, request=request
        )
    except ValidationError as error:
        messages.error(request, " ".join(errors_text(error)))
    else:
        messages.success(request, f"{membership.user.username} left {workspace.name}.")
    return redirect("labeling:workspaces")


@require_GET
@login_required
def workspace_audit(request: HttpRequest, slug: str) -> HttpResponse:
    """The audit trail, newest first, AUDIT_PAGE_SIZE events a page, older pages by cursor."""
    workspace = access.workspace_for(request.user, Ability.ADMINISTER, slug=slug)
    datasets = list(workspace.datasets.order_by("slug").values_list("slug", flat=True))
    form = AuditFilterForm(request.GET, datasets=datasets)
    if not form.is_valid():
        context = {"workspace": workspace, "form": form, "events": []}
        return render(request, "labeling/workspace_audit.html", context, status=400)
    filters = {name: form.cleaned_data[name] for name in ("action", "dataset")}
    events, more = (
        AuditEvent.objects.filter(workspace=workspace)
        .matching(**filters)
        .page(before=form.cleaned_data["before"], limit=AUDIT_PAGE_SIZE)
    )
    older = request.GET.copy()
    if more:
        older["before"] = str(events[-1].pk)
    newest = request.GET.copy()
    newest.pop("before", None)
    context = {
        "workspace": workspace,
        "form": form,
        "events": events,
        "filtered": any(filters.values()),
        "older": older.urlencode() if more else None,
        "newest": newest.urlencode() if form.cleaned_data["before"] else None,
    }
    return render(request, "labeling/workspace_audit.html", context)
