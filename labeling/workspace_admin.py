"""The admin of workspaces (with their members) and of labeler groups. A superuser sees every
row; a workspace's admins and managers (staff through `set_role`) see their workspaces' groups.
Group members changed here give back the leases of those who leave a pool
(`set_group_members`). `labeling.admin` imports this module so the admin site registers it."""

from __future__ import annotations

from typing import Any, cast

from django.contrib import admin
from django.contrib.auth.models import User
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from labeling.models import Ability, LabelerGroup, Membership, Workspace
from labeling.services.workspaces import remove_member, set_group_members, set_role


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


class LabelerGroupInline(admin.TabularInline):
    model = LabelerGroup
    extra = 0
    fields = ["name"]
    show_change_link = True


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline, LabelerGroupInline]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        """Members are added, changed and removed by the services, which keep an admin, staff
        status and the audit trail, and give a leaving member's leases back."""
        if formset.model is not Membership:
            super().save_formset(request, form, formset, change)
            return
        by = cast(User, request.user)
        # What the admin's history message reads, which formset.save() would have set.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for row in formset.forms:
            data = row.cleaned_data
            if not data or not data.get("user"):
                continue
            if data.get("DELETE"):
                remove_member(workspace=form.instance, user=data["user"], by=by, request=request)
            elif row.has_changed() or row.instance.pk is None:
                set_role(
                    workspace=form.instance,
                    user=data["user"],
                    role=data["role"],
                    by=by,
                    request=request,
                )


@admin.register(LabelerGroup)
class LabelerGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "member_count"]
    list_filter = ["workspace"]
    search_fields = ["name"]
    filter_horizontal = ["members"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[LabelerGroup]:
        managed = Workspace.objects.where(request.user, Ability.MANAGE)
        groups = super().get_queryset(request).filter(workspace__in=managed)
        return groups.annotate(member_count=Count("members"))

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "workspace":
            kwargs["queryset"] = Workspace.objects.where(request.user, Ability.MANAGE)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return Workspace.objects.where(request.user, Ability.MANAGE).exists()

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    has_add_permission = has_module_permission  # type: ignore[assignment]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    @admin.display(description="Members", ordering="member_count")
    def member_count(self, group: LabelerGroup) -> int:
        return group.member_count  # type: ignore[attr-defined,no-any-return]

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        members = form.cleaned_data.pop("members", [])
        super().save_related(request, form, formsets, change)
        by = cast(User, request.user)
        set_group_members(group=form.instance, members=members, by=by, request=request)
