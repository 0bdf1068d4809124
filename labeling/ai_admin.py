"""The admin of AI labelers: adding one to a dataset (endpoint, model, the name of the variable
holding its API key, constitution, limits, review rate), saying plainly which data leaves the
server, starting its runs, and each run's progress page with Pause, Resume and Cancel; its
judgments are read-only. `labeling.admin` imports this module so the admin site registers it."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from labeling.admin import DATASET_FILTER, ReadOnlyAdmin, WorkspaceScoped
from labeling.ai_models import PRINCIPLES_MAX, SETTINGS, AIJudgment, AILabeler, AIRun
from labeling.errors import errors_text
from labeling.models import Ability, Dataset
from labeling.services import ai_labeling

WHAT_LEAVES = (
    "What leaves this server: for each prompt it judges, the prompt's conversation and the "
    "texts of its responses (no labeler names, ratings, metadata or model names), with the "
    "constitution's principles, are sent to the base URL below; the API key is read from the "
    "worker's environment variable named below and sent with each call. Nothing is sent until "
    "you start a run."
)


class PrinciplesField(forms.CharField):
    """The constitution as a textarea, one principle per line."""

    widget = forms.Textarea(attrs={"rows": 6, "cols": 100})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(value)
        if isinstance(value, str) and value.startswith("["):
            try:
                return "\n".join(json.loads(value))
            except ValueError:
                return value
        return value

    def to_python(self, value: Any) -> Any:
        text = super().to_python(value) or ""
        return [line.strip() for line in text.splitlines() if line.strip()]


class AILabelerForm(forms.ModelForm):
    principles = PrinciplesField(
        help_text=f"One principle per line, in order (at most {PRINCIPLES_MAX}); the model "
        "writes a critique of the responses against each before it ranks them. Changing them "
        "raises the constitution version that every judgment records."
    )

    base_url = forms.URLField(
        max_length=500,
        assume_scheme="https",
        help_text=AILabeler._meta.get_field("base_url").help_text,
    )

    class Meta:
        model = AILabeler
        fields = ["dataset", *SETTINGS]

    def clean_principles(self) -> list[str]:
        try:
            return ai_labeling.checked_principles(self.cleaned_data["principles"])
        except ValidationError as error:
            raise ValidationError(errors_text(error)) from None


class AIRunInline(admin.TabularInline):
    model = AIRun
    extra = 0
    fields = ["status", "progress_shown", "judged", "failed", "created_at"]
    readonly_fields = ["status", "progress_shown", "judged", "failed", "created_at"]
    show_change_link = True
    can_delete = False
    ordering = ["-created_at"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Progress")
    def progress_shown(self, run: AIRun) -> str:
        return f"{run.percent}%"


@admin.register(AILabeler)
class AILabelerAdmin(WorkspaceScoped):
    form = AILabelerForm
    list_display = [
        "name",
        "dataset",
        "model",
        "base_url",
        "constitution_version",
        "both_orders",
        "review_rate",
        "budget_prompts",
    ]
    list_filter = [DATASET_FILTER]
    search_fields = ["name", "model", "dataset__name"]
    list_select_related = ["dataset"]
    readonly_fields = ["constitution_version", "account", "created_by", "created_at"]
    change_form_template = "admin/labeling/ailabeler/change_form.html"
    inlines = [AIRunInline]
    fieldsets = [
        (None, {"fields": ["dataset", "name"]}),
        (
            "Endpoint",
            {
                "description": WHAT_LEAVES,
                "fields": ["base_url", "api", "model", "api_key_env"],
            },
        ),
        (
            "Constitution",
            {"fields": ["principles", "constitution_version", "both_orders", "use_logprobs"]},
        ),
        (
            "Limits",
            {
                "fields": [
                    "temperature",
                    "max_tokens",
                    "concurrency",
                    "requests_per_minute",
                    "timeout_seconds",
                    "max_retries",
                    "budget_prompts",
                ]
            },
        ),
        ("Humans in charge", {"fields": ["review_rate"]}),
        (None, {"fields": ["account", "created_by", "created_at"]}),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.manages(request, None) or super().has_add_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # its rankings stay; set its budget to what it used to stop it

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*self.readonly_fields, *(["dataset"] if obj is not None else [])]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "dataset":
            kwargs["queryset"] = Dataset.objects.where(request.user, Ability.MANAGE)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="Account")
    def account(self, labeler: AILabeler) -> str:
        return labeler.user.get_username() if labeler.user_id else "made when it is saved"

    def save_model(self, request: HttpRequest, obj: AILabeler, form: Any, change: bool) -> None:
        fields = {name: form.cleaned_data[name] for name in form.changed_data}
        if change:
            by = request.user
            ai_labeling.update_ai_labeler(ai_labeler=obj, by=by, request=request, **fields)
            return
        fields.pop("dataset", None)
        created = ai_labeling.add_ai_labeler(
            dataset=form.cleaned_data["dataset"], by=request.user, request=request, **fields
        )
        obj.pk, obj.user_id = created.pk, created.user_id

    def get_urls(self) -> list[URLPattern]:
        urls = [
            path(
                "<int:labeler_id>/start/",
                self.admin_site.admin_view(self.start_view),
                name="labeling_ailabeler_start",
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
        labeler = self.get_object(request, object_id)
        context = {**(extra_context or {}), "what_leaves": WHAT_LEAVES}
        if labeler is not None:
            context["budget_left"] = ai_labeling.budget_left(labeler)
        return super().change_view(request, object_id, form_url, context)

    def start_view(self, request: HttpRequest, labeler_id: int) -> HttpResponse:
        """The page's Start a run button: queue a run, and show its progress page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        labeler = get_object_or_404(self.get_queryset(request), pk=labeler_id)
        if not self.has_change_permission(request, labeler):
            raise PermissionDenied
        limit_text = request.POST.get("limit", "").strip()
        try:
            limit = int(limit_text) if limit_text else None
            run = ai_labeling.start_run(
                ai_labeler=labeler, by=request.user, request=request, limit=limit
            )
        except ValueError:
            messages.error(request, f"'{limit_text[:20]}' is not a number of prompts.")
        except ValidationError as error:
            messages.error(request, " ".join(errors_text(error)))
        else:
            messages.success(request, "The run is queued; a worker sends the prompts.")
            return redirect(reverse("admin:labeling_airun_change", args=[run.pk]))
        return redirect(reverse("admin:labeling_ailabeler_change", args=[labeler.pk]))


@admin.register(AIRun)
class AIRunAdmin(ReadOnlyAdmin):
    """A run's progress page: reloads itself until the run ends, with Pause, Resume, Cancel."""

    workspace_path = "ai_labeler__dataset__workspace"
    list_display = ["pk", "ai_labeler", "status", "percent_done", "judged", "failed", "created_at"]
    list_filter = ["status"]
    list_select_related = ["ai_labeler__dataset"]
    change_form_template = "admin/labeling/airun/change_form.html"
    readonly_fields = (
        "ai_labeler",
        "status",
        "percent_done",
        "planned",
        "judged",
        "failed",
        "limit",
        "prompt_tokens",
        "completion_tokens",
        "call_seconds",
        "error",
        "created_by",
        "created_at",
        "started_at",
        "heartbeat_at",
        "finished_at",
    )
    fields = readonly_fields
    ACTIONS = {
        "pause": (ai_labeling.pause_run, "Paused: it stops after the prompts in flight."),
        "resume": (ai_labeling.resume_run, "Queued again: it goes on with the prompts left."),
        "cancel": (ai_labeling.cancel_run, "Cancelled. What it stored stays."),
    }

    @admin.display(description="Progress")
    def percent_done(self, run: AIRun) -> str:
        return f"{run.percent}%"

    def get_urls(self) -> list[URLPattern]:
        urls = [
            path(
                "<int:run_id>/act/<str:action>/",
                self.admin_site.admin_view(self.action_view),
                name="labeling_airun_act",
            )
        ]
        return urls + super().get_urls()

    def action_view(self, request: HttpRequest, run_id: int, action: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if action not in self.ACTIONS:
            raise PermissionDenied
        run = get_object_or_404(self.get_queryset(request), pk=run_id)
        if not self.manages(request, run) and not request.user.is_superuser:
            raise PermissionDenied
        act, done = self.ACTIONS[action]
        try:
            act(run=run)
        except ValidationError as error:
            messages.error(request, " ".join(errors_text(error)))
        else:
            messages.success(request, done)
        return redirect(reverse("admin:labeling_airun_change", args=[run.pk]))


@admin.register(AIJudgment)
class AIJudgmentAdmin(ReadOnlyAdmin):
    workspace_path = "ai_labeler__dataset__workspace"
    list_display = ["pk", "ai_labeler", "prompt", "status", "short_error", "seconds", "created_at"]
    list_filter = ["status", "review_sampled"]
    list_select_related = ["ai_labeler", "prompt__dataset"]
    search_fields = ["prompt__external_id", "error"]
    readonly_fields = (
        "ai_labeler",
        "run",
        "prompt",
        "ranking",
        "status",
        "error",
        "model",
        "constitution_version",
        "calls_shown",
        "first_slot_picks",
        "preference",
        "review_sampled",
        "prompt_tokens",
        "completion_tokens",
        "seconds",
        "created_at",
    )
    fields = readonly_fields

    @admin.display(description="Error")
    def short_error(self, judgment: AIJudgment) -> str:
        return judgment.error[:80]

    @admin.display(description="Calls (what was shown, answered and parsed)")
    def calls_shown(self, judgment: AIJudgment) -> str:
        # The model's answer is untrusted text: escaped by format_html, shown as it came.
        return format_html(
            "<pre style='white-space: pre-wrap'>{}</pre>",
            json.dumps(judgment.calls, indent=2, ensure_ascii=False),
        )
