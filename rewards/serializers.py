from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from labeling.formats import messages_problem
from labeling.serializers import MessageSerializer
from rewards.models import RewardModel, TrainingRun


class RewardModelSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(source="version", help_text="The model's version number.")
    datasets = serializers.SlugRelatedField(  # type: ignore[var-annotated]
        slug_field="slug", many=True, read_only=True
    )
    card = serializers.JSONField()
    files = serializers.JSONField()

    class Meta:
        model = RewardModel
        fields = ["id", "run", "datasets", "is_active", "created_at", "files", "card"]
        read_only_fields = fields


MAX_RUN_DATASETS = 50


class TrainingRunRequestSerializer(serializers.Serializer):
    datasets = serializers.ListField(
        child=serializers.SlugField(max_length=100),
        allow_empty=False,
        max_length=MAX_RUN_DATASETS,
        help_text="Slugs of the datasets to train on.",
    )
    config = serializers.DictField(
        required=False,
        default=dict,
        help_text="Run options: held_out_share, seed, include_gold, adjudicated, fit, features, "
        "weighting (none, reliability, chance_corrected), min_reliability (0 to 1).",
    )


class TrainingRunSerializer(serializers.ModelSerializer):
    datasets = serializers.SlugRelatedField(  # type: ignore[var-annotated]
        slug_field="slug", many=True, read_only=True
    )
    config = serializers.JSONField()
    metrics = serializers.JSONField()
    reward_model = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "status",
            "stage",
            "progress",
            "datasets",
            "config",
            "metrics",
            "error",
            "created_at",
            "finished_at",
            "reward_model",
        ]
        read_only_fields = fields

    def get_reward_model(self, run: TrainingRun) -> int | None:
        """The version the run made, if any."""
        return RewardModel.objects.filter(run=run).values_list("version", flat=True).first()


class ScoreItemSerializer(serializers.Serializer):
    prompt = serializers.JSONField(
        help_text='A user message as a string, or the conversation: [{"role", "content"}, ...].'
    )
    completion = serializers.CharField(allow_blank=True, trim_whitespace=False)

    def validate_prompt(self, value: object) -> list[dict[str, str]]:
        """The same prompts imports take: a conversation that ends with a user message."""
        if isinstance(value, str):
            value = [{"role": "user", "content": value}]
        messages = MessageSerializer(data=value, many=True)
        if not isinstance(value, list) or not value or not messages.is_valid():
            raise serializers.ValidationError(
                'Must be a string or a non-empty list of {"role", "content"} messages.'
            )
        prompt = [dict(message) for message in messages.validated_data]
        problem = messages_problem(prompt, max_text_chars=settings.PREFLAB_MAX_TEXT_CHARS)
        if problem is not None:
            raise serializers.ValidationError(problem)
        return prompt

    def validate_completion(self, value: str) -> str:
        limit = settings.PREFLAB_MAX_TEXT_CHARS
        if len(value) > limit:
            raise serializers.ValidationError(f"is longer than {limit} characters")
        return value


class ScoreRequestSerializer(serializers.Serializer):
    items = ScoreItemSerializer(  # type: ignore[call-arg]
        many=True, allow_empty=False, max_length=settings.PREFLAB_SCORE_BATCH_MAX
    )


class ScoreResponseSerializer(serializers.Serializer):
    model = serializers.IntegerField(help_text="The version that scored.")
    rewards = serializers.ListField(
        child=serializers.FloatField(), help_text="The overall head's reward of each item."
    )
    criteria = serializers.DictField(
        child=serializers.ListField(child=serializers.FloatField()),
        required=False,
        help_text='Only for a model with per-criterion heads: {"helpful": [reward per item], ...}.',
    )
