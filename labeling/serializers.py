from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from labeling.criteria import SCALE_CEILING, SCALE_FLOOR
from labeling.formats import FORMATS as IMPORT_FORMATS
from labeling.models import (
    Asked,
    Assignment,
    Completion,
    Dataset,
    Flag,
    ImportJob,
    Prompt,
    Ranking,
    RatingCriterion,
    Strength,
)


class CriterionSerializer(serializers.ModelSerializer):
    """A rating criterion as the API shows it; its position is its place in the list."""

    class Meta:
        model = RatingCriterion
        fields = ["key", "label", "description", "scale_min", "scale_max", "min_label", "max_label"]
        read_only_fields = fields


class CriterionInputSerializer(serializers.Serializer):
    """A rating criterion as a dataset's create or update takes it (`set_criteria` checks the
    rest: keys once each, the scale's ends in order, ratings already given)."""

    key = serializers.SlugField(max_length=50)
    # (A declared field, which DRF takes out of the class: not the serializer's own label.)
    label = serializers.CharField(  # type: ignore[assignment]
        max_length=100, required=False, help_text="Default: made from the key."
    )
    description = serializers.CharField(required=False, allow_blank=True)
    scale_min = serializers.IntegerField(min_value=SCALE_FLOOR, max_value=SCALE_CEILING, default=1)
    scale_max = serializers.IntegerField(min_value=SCALE_FLOOR, max_value=SCALE_CEILING, default=7)
    min_label = serializers.CharField(
        max_length=100, required=False, allow_blank=True, help_text="What the lowest means."
    )
    max_label = serializers.CharField(
        max_length=100, required=False, allow_blank=True, help_text="What the highest means."
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        # A PATCH leaves defaults to the model (DRF skips them in partial updates).
        if data.get("scale_min", 1) >= data.get("scale_max", 7):
            raise serializers.ValidationError({"scale_max": "Must be above scale_min."})
        return data


class ProgressSerializer(serializers.Serializer):
    prompts = serializers.IntegerField(help_text="Prompts to label (gold left out).")
    labels_needed = serializers.IntegerField(help_text="prompts x labels_per_prompt")
    labels_done = serializers.IntegerField()
    percent = serializers.IntegerField()


class DatasetSerializer(serializers.ModelSerializer):
    workspace = serializers.SlugRelatedField(  # type: ignore[var-annotated]
        slug_field="slug", read_only=True
    )
    progress = serializers.SerializerMethodField()
    criteria = CriterionSerializer(many=True, read_only=True)

    class Meta:
        model = Dataset
        fields = [
            "workspace",
            "slug",
            "name",
            "description",
            "guidelines",
            "guidelines_version",
            "criteria",
            "ratings",
            "strength",
            "labels_per_prompt",
            "gold_rate",
            "order",
            "uncertainty_share",
            "status",
            "created_at",
            "progress",
        ]
        read_only_fields = fields

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, dataset: Dataset) -> dict[str, int]:
        prompts: int = dataset.prompt_count  # type: ignore[attr-defined]
        return {
            "prompts": prompts,
            "labels_needed": prompts * dataset.labels_per_prompt,
            "labels_done": dataset.label_count,  # type: ignore[attr-defined]
            "percent": dataset.percent_labeled,
        }


class DatasetWriteSerializer(serializers.Serializer):
    workspace = serializers.SlugField(
        max_length=100,
        required=False,
        help_text="The workspace's slug; may be left out by who manages only one. Creation only.",
    )
    slug = serializers.SlugField(
        max_length=100, help_text="Unique across all workspaces: dataset URLs name no workspace."
    )
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)
    guidelines = serializers.CharField(required=False, allow_blank=True)
    criteria = CriterionInputSerializer(
        many=True,
        required=False,
        help_text="What labelers rate, in order; default: helpful, honest, harmless on 1-7.",
    )
    ratings = serializers.ChoiceField(
        choices=Asked.choices, required=False, help_text="Are ratings required, optional or off?"
    )
    strength = serializers.ChoiceField(
        choices=Asked.choices, required=False, help_text="Is a pair's strength asked?"
    )
    labels_per_prompt = serializers.IntegerField(min_value=1, max_value=100, required=False)
    gold_rate = serializers.FloatField(min_value=0, max_value=1, required=False)
    order = serializers.ChoiceField(
        choices=Dataset.Order.choices,
        required=False,
        help_text="Which new prompts open first: fixed (import order) or uncertainty.",
    )
    uncertainty_share = serializers.FloatField(
        min_value=0,
        max_value=1,
        required=False,
        help_text="With order uncertainty: the share of new prompts picked by uncertainty.",
    )
    status = serializers.ChoiceField(choices=Dataset.Status.choices, required=False)


class ImportCreateSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="PrefLab JSONL, Anthropic HH JSONL or CSV; .gz too.")
    format = serializers.ChoiceField(
        choices=IMPORT_FORMATS, required=False, help_text="Default: told from the file."
    )
    strict = serializers.BooleanField(
        default=False, help_text="Refuse the file if an HH pair cannot be split."
    )


class SkippedLineSerializer(serializers.Serializer):
    line = serializers.IntegerField()
    reason = serializers.CharField()


class ImportJobSerializer(serializers.ModelSerializer):
    dataset = serializers.CharField(source="dataset.slug", read_only=True)
    skipped = SkippedLineSerializer(many=True, read_only=True)

    class Meta:
        model = ImportJob
        fields = [
            "id",
            "dataset",
            "filename",
            "size",
            "format",
            "strict",
            "status",
            "progress",
            "created_count",
            "unchanged_count",
            "skipped",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "user", "assistant"])
    content = serializers.CharField(allow_blank=True)


class CompletionSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model_name")

    class Meta:
        model = Completion
        fields = ["id", "external_id", "text", "model", "metadata", "position"]
        read_only_fields = fields


class PromptSerializer(serializers.ModelSerializer):
    messages = MessageSerializer(many=True)
    completions = CompletionSerializer(many=True)

    class Meta:
        model = Prompt
        fields = [
            "id",
            "external_id",
            "messages",
            "metadata",
            "is_gold",
            "gold_order",
            "completions",
            "created_at",
        ]
        read_only_fields = fields


class TaskCompletionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField(allow_blank=True)


class TaskSerializer(serializers.Serializer):
    """A leased task as the labeler sees it: completions shuffled, no model names."""

    assignment = serializers.IntegerField(source="assignment.pk")
    expires_at = serializers.DateTimeField(source="assignment.expires_at")
    dataset = serializers.CharField(source="assignment.prompt.dataset.slug")
    guidelines = serializers.CharField(source="assignment.prompt.dataset.guidelines")
    guidelines_version = serializers.IntegerField(
        source="assignment.prompt.dataset.guidelines_version"
    )
    criteria = CriterionSerializer(
        many=True,
        source="assignment.prompt.dataset.rated_criteria",
        help_text="The criteria to rate, each on its scale (none when ratings are off).",
    )
    ratings = serializers.ChoiceField(
        choices=Asked.choices,
        source="assignment.prompt.dataset.ratings",
        help_text="Whether every completion must be rated on every criterion, may be, or not.",
    )
    strength = serializers.ChoiceField(
        choices=Asked.choices,
        source="assignment.prompt.dataset.strength",
        help_text="Whether a strength is required, optional or refused for two untied ones.",
    )
    messages = MessageSerializer(many=True, source="assignment.prompt.messages")
    completions = TaskCompletionSerializer(many=True)
    flags = serializers.ListField(child=serializers.CharField(), default=list(Flag.values))
    strength_levels = serializers.ListField(
        child=serializers.CharField(), help_text="Asked when there are exactly two completions."
    )


# The labeling loop's two answers, built as their serializers build them but without a
# serializer per request: DRF copies and binds every declared field of one each time it is
# made, which cost a next-task more CPU than leasing it. Tests keep them equal to the
# serializers, which stay the API schema's description.
_DATETIME = serializers.DateTimeField()
_UUID = serializers.UUIDField()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def task_data(
    assignment: Assignment, completions: list[Completion], strength_levels: list[str]
) -> dict[str, Any]:
    """`TaskSerializer`'s output for a task."""
    dataset = assignment.prompt.dataset
    return {
        "assignment": assignment.pk,
        "expires_at": _DATETIME.to_representation(assignment.expires_at),
        "dataset": dataset.slug,
        "guidelines": dataset.guidelines,
        "guidelines_version": dataset.guidelines_version,
        "criteria": [
            {
                "key": criterion.key,
                "label": criterion.label,
                "description": criterion.description,
                "scale_min": criterion.scale_min,
                "scale_max": criterion.scale_max,
                "min_label": criterion.min_label,
                "max_label": criterion.max_label,
            }
            for criterion in dataset.rated_criteria
        ],
        "ratings": dataset.ratings,
        "strength": dataset.strength,
        "messages": [
            {"role": message["role"], "content": _text(message["content"])}
            for message in assignment.prompt.messages
        ],
        "completions": [{"id": c.pk, "text": c.text} for c in completions],
        "flags": list(Flag.values),
        "strength_levels": list(strength_levels),
    }


def ranking_data(ranking: Ranking) -> dict[str, Any]:
    """`RankingSerializer`'s output for a ranking."""
    return {
        "id": ranking.pk,
        "assignment": ranking.assignment_id,
        "order": ranking.order,
        "ratings": ranking.rating_values,
        "flags": ranking.flags,
        "all_unacceptable": ranking.all_unacceptable,
        "rationale": ranking.rationale,
        "seconds_spent": ranking.seconds_spent,
        "guidelines_version": ranking.guidelines_version,
        "request_id": _UUID.to_representation(ranking.request_id),
        "created_at": _DATETIME.to_representation(ranking.created_at),
        "comparisons": ranking.comparison_count,
    }


class RankingInputSerializer(serializers.Serializer):
    order = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField(), allow_empty=False),
        allow_empty=False,
        help_text="Completion ids best to worst, in tie groups: [[12], [10, 11]].",
    )
    ratings = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField()),
        required=False,
        default=dict,
        help_text='{"<completion id>": {"<criterion key>": value on its scale, ...}}',
    )
    flags = serializers.DictField(
        child=serializers.ListField(child=serializers.ChoiceField(choices=Flag.choices)),
        required=False,
        default=dict,
        help_text='{"<completion id>": ["hallucination", ...]}',
    )
    request_id = serializers.UUIDField(help_text="Retrying with the same id stores one ranking.")
    seconds_spent = serializers.FloatField(min_value=0)
    all_unacceptable = serializers.BooleanField(default=False)
    rationale = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=10_000
    )
    strength = serializers.ChoiceField(
        choices=Strength.choices, required=False, allow_blank=True, default=""
    )

    def _int_keys(self, value: dict[str, Any], field: str) -> dict[int, Any]:
        try:
            return {int(key): item for key, item in value.items()}
        except ValueError:
            raise serializers.ValidationError(f"{field} must be keyed by completion id.") from None

    def validate_ratings(self, value: dict[str, Any]) -> dict[int, Any]:
        return self._int_keys(value, "ratings")

    def validate_flags(self, value: dict[str, Any]) -> dict[int, Any]:
        return self._int_keys(value, "flags")


class RankingSerializer(serializers.Serializer):
    """A stored ranking. Fields are declared, not introspected from the model: every submit
    answers with one, and a ModelSerializer builds its fields anew each time."""

    id = serializers.IntegerField(read_only=True)
    assignment = serializers.IntegerField(source="assignment_id", read_only=True)
    order = serializers.JSONField(read_only=True)
    ratings = serializers.JSONField(source="rating_values", read_only=True)
    flags = serializers.JSONField(read_only=True)
    all_unacceptable = serializers.BooleanField(read_only=True)
    rationale = serializers.CharField(read_only=True)
    seconds_spent = serializers.FloatField(read_only=True)
    guidelines_version = serializers.IntegerField(read_only=True)
    request_id = serializers.UUIDField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    comparisons = serializers.IntegerField(source="comparison_count", read_only=True)


class SkipSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=200)


class AssignmentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Assignment
        fields = ["id", "status", "skip_reason", "leased_at", "expires_at", "finished_at"]
        read_only_fields = fields
