"""The admin of imports: an import's progress page, which reloads itself until the import
ends, and cancelling it. `labeling.admin` imports this module so the admin site registers it."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect
from django.urls import URLPattern, path, reverse

from labeling.admin import DATASET_FILTER, ReadOnlyAdmin, apply_to_each, manages_a_workspace
from labeling.errors import errors_text
from labeling.models import ImportJob
from labeling.services import imports


@admin.register(ImportJob)
class ImportJobAdmin(ReadOnlyAdmin):
    """An import's progress page: status, share of the file read, counts, the line-numbered
    error; it reloads itself (a meta refresh: no script needed) until the import ends, can
    cancel it, and then leads to the dataset."""

    actions = ["cancel"]
    list_display = ["pk", "filename", "dataset", "status", "percent", "created_count", "created_at"]
    list_filter = ["status", DATASET_FILTER]
    list_select_related = ["dataset"]
    change_form_template = "admin/labeling/importjob/change_form.html"
    readonly_fields = (
        "dataset",
        "filename",
        "size",
        "format",
        "strict",
        "status",
        "percent",
        "created_count",
        "unchanged_count",
        "skipped_lines",
        "error",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
    )
    fields = readonly_fields

    @admin.display(description="Progress")
    def percent(self, job: ImportJob) -> str:
        return f"{job.percent}%"

    @admin.display(description="Skipped lines")
    def skipped_lines(self, job: ImportJob) -> str:
        return "; ".join(f"line {s['line']}: {s['reason']}" for s in job.skipped[:50]) or "none"

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return manages_a_workspace(request) or request.user.has_perm("labeling.change_importjob")

    def get_urls(self) -> list[URLPattern]:
        urls = [
            path(
                "<int:job_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="labeling_importjob_cancel",
            )
        ]
        return urls + super().get_urls()

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {
            **(extra_context or {}),
            "can_cancel": self.has_cancel_permission(request),
            # An import on SQLite holds the only write lock until it ends: no progress till then.
            "live_progress": connection.vendor == "postgresql",
        }
        return super().change_view(request, object_id, form_url, context)

    def cancel_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        """The progress page's Cancel button: stop the import, and come back to the page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_cancel_permission(request):
            raise PermissionDenied
        job = get_object_or_404(self.get_queryset(request), pk=job_id)
        try:
            job = imports.cancel_import(job=job)
        except ValidationError as error:
            messages.error(request, " ".join(errors_text(error)))
        else:
            messages.success(
                request,
                "Cancelled; nothing was imported."
                if job.status == ImportJob.Status.CANCELLED
                else "Cancelling: the import stops after the batch it is writing and keeps "
                "nothing of the file.",
            )
        return redirect(reverse("admin:labeling_importjob_change", args=[job.pk]))

    @admin.action(
        description="Cancel: stop the import; nothing of it is kept", permissions=["cancel"]
    )
    def cancel(self, request: HttpRequest, queryset: QuerySet[ImportJob]) -> None:
        apply_to_each(
            request,
            queryset,
            lambda job: imports.cancel_import(job=job),
            done="Cancelling (a running import stops after the batch it is writing):",
        )
