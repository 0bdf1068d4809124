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
    workspace = serializers.SlugRelatedField(  # type: ignore[var-annotated]
        slug_field="slug", read_only=True
    )
    card = serializers.JSONField()
    files = serializers.JSONField()

    class Meta:
        model = RewardModel
        fields = ["id", "run", "workspace", "datasets", "is_active", "created_at", "files", "card"]
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
        "weighting (none, reliability, chance_corrected), min_reliability (0 to 1), heads, "
        "labelers (whose comparisons: human, the default; ai; all).",
    )


class TrainingRunSerializer(serializers.ModelSerializer):
    datasets = serializers.SlugRelatedField(  # type: ignore[var-annotated]
        slug_field="slug", many=True, read_only=True
    )
    workspace = serializers.SlugRelatedField(  # type: ignore[var-annotated]
        slug_field="slug", read_only=True
    )
    config = serializers.JSONField()
    metrics = serializers.JSONField()
    reward_model = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "workspace",
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


PREDICTIONS_PAGE_MAX = 5000


class PredictionParamsSerializer(serializers.Serializer):
    """The query of a dataset's predictions: which model, and a page after a cursor."""

    version = serializers.IntegerField(
        min_value=1,
        max_value=2**31 - 1,
        required=False,
        help_text="A reward model version trained on the dataset (default: its active one).",
    )
    after = serializers.IntegerField(
        min_value=0,
        max_value=2**63 - 1,
        default=0,
        help_text="The `cursor` of the previous page: predictions after it.",
    )
    limit = serializers.IntegerField(
        min_value=1, max_value=PREDICTIONS_PAGE_MAX, default=1000, help_text="Rows per page."
    )


class PredictionSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The prediction's id (pages are in this order).")
    prompt = serializers.IntegerField(source="completion__prompt_id")
    prompt_external_id = serializers.CharField(source="completion__prompt__external_id")
    completion = serializers.IntegerField(source="completion_id")
    completion_external_id = serializers.CharField(source="completion__external_id")
    reward = serializers.FloatField()
    criteria = serializers.JSONField(help_text="Per-criterion rewards; {} without heads.")


class PredictionPageSerializer(serializers.Serializer):
    model = serializers.IntegerField(help_text="The reward model version that predicted.")
    results = PredictionSerializer(many=True)
    cursor = serializers.IntegerField(
        allow_null=True, help_text="Pass as `after` for the next page; null on the last one."
    )
