"""The admin of what is computed from the labels and of reviewers' verdicts (read-only): per-prompt
statistics, filterable by safety flags, and adjudications. `labeling.admin` imports this module
so the admin site registers them."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from labeling.admin import DATASET_FILTER, ReadOnlyAdmin
from labeling.models import (
    Adjudication,
    PromptStats,
)


class SafetyFlagged(admin.SimpleListFilter):
    title = "safety flags"
    parameter_name = "flagged"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Flagged for safety"), ("no", "Not flagged")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(safety_flags__gt=0)
        if self.value() == "no":
            return queryset.filter(safety_flags=0)
        return queryset


@admin.register(PromptStats)
class PromptStatsAdmin(ReadOnlyAdmin):
    """Computed by the quality report's worker (`labeling.services.prompt_stats`)."""

    list_display = [
        "prompt",
        "labels",
        "agreement",
        "min_margin",
        "safety_flags",
        "model_contradiction",
        "need",
        "is_gold",
        "adjudicated",
        "computed_at",
    ]
    list_filter = [DATASET_FILTER, "adjudicated", "is_gold", SafetyFlagged, "labels"]
    search_fields = ["prompt__external_id"]
    ordering = ["-need", "prompt"]
    list_select_related = ["prompt__dataset"]
    show_full_result_count = False


@admin.register(Adjudication)
class AdjudicationAdmin(ReadOnlyAdmin):
    """Made on the review pages; history, never edited."""

    list_display = ["pk", "prompt", "reviewer", "overturned", "promoted_to_gold", "created_at"]
    list_filter = [DATASET_FILTER, "overturned", "promoted_to_gold"]
    search_fields = ["prompt__external_id", "reviewer__username", "note"]
    list_select_related = ["prompt__dataset", "reviewer"]
