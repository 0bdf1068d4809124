from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import URLPattern, path, reverse

from labeling import services
from labeling.forms import ImportForm
from labeling.models import Assignment, Comparison, Completion, Dataset, Prompt, Ranking
from labeling.services import quality


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "slug",
        "status",
        "labels_per_prompt",
        "prompt_count",
        "percent",
        "guidelines_version",
    ]
    list_filter = ["status"]
    search_fields = ["name", "slug", "description"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["guidelines_version", "created_at"]
    change_form_template = "admin/labeling/dataset/change_form.html"

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
            services.update_dataset(dataset=obj, **fields)
        else:
            obj.save()

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
        dataset = get_object_or_404(Dataset, pk=dataset_id)
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                result = services.import_dataset(
                    dataset=dataset,
                    stream=upload,
                    filename=upload.name,
                    format=form.cleaned_data["format"],
                    size=upload.size,
                    strict=form.cleaned_data["strict"],
                )
            except ValidationError as error:
                for message in services.errors_text(error):
                    form.add_error("file", message)
            else:
                messages.success(request, f"{upload.name}: {result.summary()}.")
                return redirect(reverse("admin:labeling_dataset_change", args=[dataset.pk]))
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


class PromptForm(forms.ModelForm):
    """Checks a gold prompt's expected order against the prompt's completions."""

    class Meta:
        model = Prompt
        fields = ["dataset", "external_id", "messages", "metadata", "is_gold", "gold_order"]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("is_gold") and self.instance.pk:
            try:
                quality.check_gold_order(self.instance, data.get("gold_order"))
            except ValidationError as error:
                self.add_error("gold_order", error.message_dict["gold_order"])
        elif data.get("is_gold"):
            self.add_error("is_gold", "Import the prompt first, then mark it gold.")
        return data


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
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
    list_filter = ["dataset", "is_gold"]
    search_fields = ["external_id", "messages"]
    list_select_related = ["dataset"]
    readonly_fields = ["content_hash", "created_at"]
    inlines = [CompletionInline]

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
        quality.set_gold(prompt=obj, order=order)

    @admin.action(description="Promote to gold where the labelers agreed unanimously")
    def promote_unanimous(self, request: HttpRequest, queryset: QuerySet[Prompt]) -> None:
        promoted = refused = 0
        for prompt in queryset.filter(is_gold=False):
            try:
                quality.promote_to_gold(prompt=prompt)
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
class CompletionAdmin(admin.ModelAdmin):
    list_display = ["external_id", "prompt", "model_name", "position"]
    list_filter = ["prompt__dataset", "model_name"]
    search_fields = ["external_id", "text", "prompt__external_id"]
    list_select_related = ["prompt__dataset"]
    raw_id_fields = ["prompt"]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["prompt", "labeler", "status", "leased_at", "expires_at", "finished_at"]
    list_filter = ["status", "prompt__dataset"]
    search_fields = ["labeler__username", "prompt__external_id"]
    list_select_related = ["prompt__dataset", "labeler"]
    raw_id_fields = ["prompt", "labeler"]
    date_hierarchy = "leased_at"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rankings and comparisons are made by labelers, never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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
    list_filter = ["dataset", "all_unacceptable", "guidelines_version"]
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
    list_filter = ["dataset", "margin", "strength"]
    search_fields = ["labeler__username", "prompt__external_id"]
    list_select_related = ["prompt__dataset", "labeler", "chosen", "rejected"]


admin.site.unregister(User)


@admin.register(User)
class LabelerAdmin(UserAdmin):
    """Django's user admin with the label-quality actions: exclude and reinstate labelers."""

    actions = ["exclude_labelers", "reinstate_labelers"]

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        """Unticking *Active* excludes the labeler, ticking it reinstates them: the same rules
        and effects as the actions."""
        if not (change and "is_active" in form.changed_data):
            super().save_model(request, obj, form, change)
            return
        active = obj.is_active
        obj.is_active = not active
        super().save_model(request, obj, form, change)
        by = request.user
        try:
            if active:
                quality.reinstate_labeler(labeler=obj, by=by)  # type: ignore[arg-type]
            else:
                quality.exclude_labeler(labeler=obj, by=by)  # type: ignore[arg-type]
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))

    @admin.action(description="Exclude: deactivate and leave their rankings out")
    def exclude_labelers(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        done = []
        for user in queryset.filter(is_active=True):
            try:
                quality.exclude_labeler(labeler=user, by=request.user)  # type: ignore[arg-type]
            except ValidationError as error:
                messages.error(request, f"{user.username}: {' '.join(error.messages)}")
            else:
                done.append(user.username)
        if done:
            messages.success(request, f"Excluded {', '.join(done)}; nothing was deleted.")

    @admin.action(description="Reinstate: their account and rankings count again")
    def reinstate_labelers(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        names = []
        for user in queryset.filter(is_active=False):
            quality.reinstate_labeler(labeler=user, by=request.user)  # type: ignore[arg-type]
            names.append(user.username)
        messages.success(request, f"Reinstated {', '.join(names) or 'nobody'}.")
