from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import URLPattern, path, reverse

from labeling.access import has_any_role
from labeling.criteria_models import CRITERION_FIELDS
from labeling.errors import errors_text
from labeling.forms import ImportForm
from labeling.models import (
    Ability,
    Assignment,
    Comparison,
    Completion,
    Dataset,
    Prompt,
    Ranking,
    RatingCriterion,
    Workspace,
)
from labeling.services import datasets, gold, imports, slots
from labeling.services.quality_report import invalidate_reports


def manages_a_workspace(request: HttpRequest) -> bool:
    """Whether the signed-in user manages some workspace (asked once per request: see
    `abilities_of`)."""
    return has_any_role(request.user, Ability.MANAGE)


class WorkspaceScoped(admin.ModelAdmin):
    """The admin is the workspace managers' tool (admins and managers, who get staff status):
    each sees the rows of the workspaces they manage and nothing of the others, lists, filters,
    forms and pages alike; a superuser sees every row. `workspace_path` leads from the model to
    its workspace. What the admin lets anyone do to a row (read-only models stay read-only)
    is decided by the subclasses as before."""

    workspace_path = "dataset__workspace"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        rows = super().get_queryset(request)
        if request.user.is_superuser:
            return rows
        managed = Workspace.objects.where(request.user, Ability.MANAGE)
        return rows.filter(**{f"{self.workspace_path}__in": managed})

    def has_module_permission(self, request: HttpRequest) -> bool:
        return manages_a_workspace(request) or super().has_module_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.manages(request, obj) or super().has_view_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.manages(request, obj) or super().has_change_permission(request, obj)

    def manages(self, request: HttpRequest, obj: Any) -> bool:
        if not manages_a_workspace(request):
            return False
        return obj is None or self.get_queryset(request).filter(pk=obj.pk).exists()


def scoped_filter(path: str, title: str, model: Any) -> type[admin.SimpleListFilter]:
    """A list filter offering the datasets (or reward models) of the workspaces the user
    manages: Django's own filter would list every workspace's."""

    class ScopedFilter(admin.SimpleListFilter):
        parameter_name = path

        def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[Any, str]]:
            return [(row.pk, str(row)) for row in model.objects.where(request.user, Ability.MANAGE)]

        def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
            value = self.value()
            if value is None:
                return queryset
            if not str(value).isdigit():
                return queryset.none()
            return queryset.filter(**{path: int(value)})

    ScopedFilter.title = title
    return ScopedFilter


DATASET_FILTER = scoped_filter("dataset", "dataset", Dataset)


def apply_to_each(
    request: HttpRequest,
    objects: QuerySet[Any],
    service: Callable[[Any], object],
    *,
    done: str,
) -> None:
    """An admin action: `service` on each selected object. A refusal (ValidationError) becomes an
    error message naming the object; the others are listed in one message after `done`."""
    names = []
    for obj in objects:
        try:
            service(obj)
        except ValidationError as error:
            messages.error(request, f"{obj}: {' '.join(errors_text(error))}")
        else:
            names.append(str(obj))
    if names:
        messages.success(request, f"{done} {', '.join(names)}.")
    elif not objects:
        messages.info(request, "None of the selected rows applied; nothing changed.")


class KeepsRankings(admin.ModelAdmin):
    """A dataset or labeler that rankings hang on is archived or excluded, never deleted: the
    rankings would go with it. "Delete selected" is left out: it asks no row's permission."""

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.rankings.exists():
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


class ReadOnlyAdmin(WorkspaceScoped):
    """Made by imports, workers and labelers, never added, edited or deleted by hand: an edit
    would change what was ranked, and a deletion would leave label slots or rankings behind."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RatingCriterionInline(admin.TabularInline):
    """A dataset's criteria, in page order. One with ratings cannot be deleted (the database
    refuses); a new dataset left without any gets the HHH defaults."""

    model = RatingCriterion
    extra = 0
    fields = ["position", *CRITERION_FIELDS]
    formfield_overrides = {
        models.TextField: {"widget": forms.Textarea(attrs={"rows": 2, "cols": 40})}
    }


@admin.register(Dataset)
class DatasetAdmin(KeepsRankings, WorkspaceScoped):
    workspace_path = "workspace"
    list_display = [
        "name",
        "slug",
        "status",
        "labels_per_prompt",
        "prompt_count",
        "percent",
        "guidelines_version",
    ]
    list_filter = ["status", scoped_filter("workspace", "workspace", Workspace)]
    search_fields = ["name", "slug", "description"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["guidelines_version", "created_at"]
    # The pool changes on its own page (`labeling:pool`), which gives back the leases of who
    # leaves it and records the change in the audit trail.
    exclude = ["pool_labelers", "pool_groups"]
    change_form_template = "admin/labeling/dataset/change_form.html"
    inlines = [RatingCriterionInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # A dataset stays in the workspace it was made in: its rankings, runs and models are.
        return [*self.readonly_fields, *(["workspace"] if obj is not None else [])]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "workspace":
            kwargs["queryset"] = Workspace.objects.where(request.user, Ability.MANAGE)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return manages_a_workspace(request) or super().has_add_permission(request)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Dataset]:
        return super().get_queryset(request).with_progress()  # type: ignore[attr-defined]

    @admin.display(description="Prompts", ordering="prompt_count")
    def prompt_count(self, dataset: Dataset) -> int:
        return dataset.prompt_count  # type: ignore[attr-defined,no-any-return]

    @admin.display(description="Labeled")
    def percent(self, dataset: Dataset) -> str:
        return f"{dataset.percent_labeled}%"

    def save_model(self, request: HttpRequest, obj: Dataset, form: Any, change: bool) -> None:
        if change:
            fields = {name: form.cleaned_data[name] for name in form.changed_data}
            datasets.update_dataset(dataset=obj, user=request.user, request=request, **fields)
        else:
            datasets.add_dataset(dataset=obj, user=request.user, request=request)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if not change:
            datasets.make_default_criteria(dataset=form.instance)
        if any(formset.has_changed() for formset in formsets):
            invalidate_reports([form.instance.pk])  # what is rated changed

    def get_urls(self) -> list[URLPattern]:
        urls = [
            path(
                "<int:dataset_id>/import/",
                self.admin_site.admin_view(self.import_view),
                name="labeling_dataset_import",
            )
        ]
        return urls + super().get_urls()

    def import_view(self, request: HttpRequest, dataset_id: int) -> HttpResponse:
        if not self.has_change_permission(request):
            raise PermissionDenied
        dataset = get_object_or_404(self.get_queryset(request), pk=dataset_id)
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                job = imports.queue_import(
                    dataset=dataset,
                    upload=upload,
                    filename=upload.name,
                    size=upload.size,
                    format=form.cleaned_data["format"],
                    strict=form.cleaned_data["strict"],
                    user=request.user,  # type: ignore[arg-type]
                )
            except ValidationError as error:
                for message in errors_text(error):
                    form.add_error("file", message)
            else:
                messages.success(request, f"{upload.name} is queued; a worker imports it.")
                return redirect(reverse("admin:labeling_importjob_change", args=[job.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "dataset": dataset,
            "form": form,
            "title": f"Import into {dataset.name}",
        }
        return render(request, "admin/labeling/dataset/import.html", context)


class CompletionInline(admin.TabularInline):
    model = Completion
    extra = 0
    fields = ("position", "external_id", "model_name", "text")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PromptForm(forms.ModelForm):
    """Checks a gold prompt's expected order against the prompt's completions."""

    class Meta:
        model = Prompt
        fields = ["metadata", "is_gold", "gold_order"]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("is_gold"):
            try:
                gold.check_gold_order(self.instance, data.get("gold_order"))
            except ValidationError as error:
                self.add_error("gold_order", error.message_dict["gold_order"])
        return data


@admin.register(Prompt)
class PromptAdmin(WorkspaceScoped):
    form = PromptForm
    actions = ["promote_unanimous"]
    list_display = [
        "external_id",
        "dataset",
        "short_text",
        "completion_count",
        "is_gold",
        "created_at",
    ]
    list_filter = [DATASET_FILTER, "is_gold"]
    search_fields = ["external_id", "messages"]
    list_select_related = ["dataset"]
    # What labelers ranked stays as they saw it, and the re-import check (content_hash) true:
    # prompts come from imports, and only their metadata and gold marking change here.
    readonly_fields = [
        "dataset",
        "external_id",
        "messages",
        "content_hash",
        "gold_since",
        "created_at",
    ]
    inlines = [CompletionInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Prompt]:
        return super().get_queryset(request).annotate(completion_count=Count("completions"))

    @admin.display(description="Prompt")
    def short_text(self, prompt: Prompt) -> str:
        text = prompt.last_user_message
        return text[:80] + ("…" if len(text) > 80 else "")

    @admin.display(description="Completions", ordering="completion_count")
    def completion_count(self, prompt: Prompt) -> int:
        return prompt.completion_count  # type: ignore[attr-defined,no-any-return]

    def save_model(self, request: HttpRequest, obj: Prompt, form: Any, change: bool) -> None:
        if not (change and {"is_gold", "gold_order"} & set(form.changed_data)):
            super().save_model(request, obj, form, change)
            return
        # The other fields are saved as they are; gold goes through its service.
        order = obj.gold_order if obj.is_gold else None
        stored = Prompt.objects.get(pk=obj.pk)
        obj.is_gold, obj.gold_order = stored.is_gold, stored.gold_order
        super().save_model(request, obj, form, change)
        gold.set_gold(prompt=obj, order=order, user=request.user, request=request)

    @admin.action(
        description="Promote to gold where the labelers agreed unanimously",
        permissions=["change"],
    )
    def promote_unanimous(self, request: HttpRequest, queryset: QuerySet[Prompt]) -> None:
        promoted = refused = 0
        for prompt in queryset.filter(is_gold=False).select_related("dataset"):
            try:
                gold.promote_to_gold(prompt=prompt, user=request.user, request=request)
            except ValidationError:
                refused += 1
            else:
                promoted += 1
        messages.info(
            request,
            f"{promoted} promoted to gold; {refused} left as they are "
            "(fewer than two labelers, or they did not all agree).",
        )


@admin.register(Completion)
class CompletionAdmin(ReadOnlyAdmin):
    workspace_path = "prompt__dataset__workspace"
    list_display = ["external_id", "prompt", "model_name", "position"]
    list_filter = [scoped_filter("prompt__dataset", "dataset", Dataset)]
    search_fields = ["external_id", "text", "prompt__external_id"]
    list_select_related = ["prompt__dataset"]


@admin.register(Assignment)
class AssignmentAdmin(ReadOnlyAdmin):
    workspace_path = "prompt__dataset__workspace"
    actions = ["release"]
    list_display = ["prompt", "labeler", "status", "leased_at", "expires_at", "finished_at"]
    list_filter = ["status", scoped_filter("prompt__dataset", "dataset", Dataset)]
    search_fields = ["labeler__username", "prompt__external_id"]
    list_select_related = ["prompt__dataset", "labeler"]
    date_hierarchy = "leased_at"

    def has_release_permission(self, request: HttpRequest) -> bool:
        return manages_a_workspace(request) or request.user.has_perm("labeling.change_assignment")

    @admin.action(description="Return leased tasks to the pool", permissions=["release"])
    def release(self, request: HttpRequest, queryset: QuerySet[Assignment]) -> None:
        released = slots.release_assignments(assignments=queryset)
        messages.success(request, f"{released} leased tasks went back to the pool.")


@admin.register(Ranking)
class RankingAdmin(ReadOnlyAdmin):
    list_display = [
        "pk",
        "prompt",
        "labeler",
        "seconds_spent",
        "all_unacceptable",
        "guidelines_version",
        "created_at",
    ]
    list_filter = [DATASET_FILTER, "all_unacceptable", "guidelines_version"]
    search_fields = ["labeler__username", "prompt__external_id", "rationale"]
    list_select_related = ["prompt__dataset", "labeler"]
    date_hierarchy = "created_at"


@admin.register(Comparison)
class ComparisonAdmin(ReadOnlyAdmin):
    list_display = [
        "pk",
        "prompt",
        "chosen",
        "rejected",
        "margin",
        "strength",
        "labeler",
        "created_at",
    ]
    list_filter = [DATASET_FILTER, "margin", "strength"]
    search_fields = ["labeler__username", "prompt__external_id"]
    list_select_related = ["prompt__dataset", "labeler", "chosen", "rejected"]


# The admins of imports, users, workspaces, stored statistics and verdicts have modules of
# their own; importing them registers them (Django's autodiscovery imports only this module).
from labeling import (  # noqa: E402, F401
    accounts_admin,
    ai_admin,
    import_admin,
    review_admin,
    workspace_admin,
)
