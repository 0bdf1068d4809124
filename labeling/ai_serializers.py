"""What the AI labeler API reads and writes (labeling.ai_api)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from labeling.ai_models import PRINCIPLE_MAX_CHARS, PRINCIPLES_MAX, SETTINGS, AILabeler, AIRun


class AILabelerSerializer(serializers.ModelSerializer):
    dataset = serializers.CharField(source="dataset.slug", read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)
    principles = serializers.ListField(
        child=serializers.CharField(max_length=PRINCIPLE_MAX_CHARS),
        min_length=1,
        max_length=PRINCIPLES_MAX,
        required=False,
    )
    budget_left = serializers.SerializerMethodField()

    class Meta:
        model = AILabeler
        fields = ["id", "dataset", "username", *SETTINGS, "constitution_version", "budget_left"]
        read_only_fields = ["constitution_version"]
        # The service checks the whole row (ValidationError naming the field: a 400).
        validators: list[Any] = []

    def get_budget_left(self, labeler: AILabeler) -> int:
        from labeling.services.ai_labeling import budget_left

        return budget_left(labeler)


class AIRunSerializer(serializers.ModelSerializer):
    ai_labeler = serializers.IntegerField(source="ai_labeler_id", read_only=True)
    percent = serializers.IntegerField(read_only=True)

    class Meta:
        model = AIRun
        fields = [
            "id",
            "ai_labeler",
            "status",
            "percent",
            "progress",
            "limit",
            "planned",
            "judged",
            "failed",
            "prompt_tokens",
            "completion_tokens",
            "call_seconds",
            "error",
            "created_at",
            "started_at",
            "heartbeat_at",
            "finished_at",
        ]
        read_only_fields = fields


class AIRunStartSerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        min_value=1, max_value=10_000_000, required=False, allow_null=True
    )
