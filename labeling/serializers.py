from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from labeling import review
from labeling.export_options import CONSENSUS_INCLUDES, INCLUDES, Split
from labeling.exports import COMPARISON_FORMATS
from labeling.formats import FORMATS as IMPORT_FORMATS
from labeling.models import (
    Asked,
    Assignment,
    Completion,
    Criterion,
    Dataset,
    Flag,
    ImportJob,
    Prompt,
    PromptStats,
    Strength,
)
from labeling.ranking_exports import RANKING_SHAPES

# What the quality report and the model leaderboard say of the stored result they answer with.
REPORT_STATUSES = ["ready", "refreshing", "computing"]


class ProgressSerializer(serializers.Serializer):
    prompts = serializers.IntegerField(help_text="Prompts to label (gold left out).")
    labels_needed = serializers.IntegerField(help_text="prompts x labels_per_prompt")
    labels_done = serializers.IntegerField()
    percent = serializers.IntegerField()


class DatasetSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()

    class Meta:
        model = Dataset
        fields = [
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
    slug = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)
    guidelines = serializers.CharField(required=False, allow_blank=True)
    criteria = serializers.ListField(
        child=serializers.ChoiceField(choices=Criterion.choices), required=False
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
    criteria = serializers.ListField(
        child=serializers.CharField(),
        source="assignment.prompt.dataset.rated_criteria",
        help_text="The criteria to rate (none when the dataset's ratings are off).",
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
        help_text='{"<completion id>": {"helpful": 1-7, "honest": 1-7, "harmless": 1-7}}',
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
    ratings = serializers.JSONField(read_only=True)
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


class ExportParamsSerializer(serializers.Serializer):
    """Query parameters of the exports; the errors list what is accepted."""

    since = serializers.IntegerField(
        min_value=0,
        required=False,
        default=0,
        help_text="The X-PrefLab-Cursor header of the previous pull: only newer rows.",
        error_messages={
            "invalid": "Must be a cursor from the X-PrefLab-Cursor header (a whole number).",
            "min_value": "Must be a cursor from the X-PrefLab-Cursor header (a whole number).",
        },
    )
    include_ids = serializers.BooleanField(
        default=False,
        help_text="Add the ids that trace each row back to its ranking.",
        error_messages={"invalid": "Use true or false."},
    )
    exclude_gold = serializers.BooleanField(
        default=True,
        help_text="Leave out gold prompts.",
        error_messages={"invalid": "Use true or false."},
    )
    labeler = serializers.CharField(required=False, help_text="Only this pseudonymous labeler.")
    exclude_unacceptable = serializers.BooleanField(
        default=False,
        help_text='Leave out rankings (and their pairs) marked "all unacceptable".',
        error_messages={"invalid": "Use true or false."},
    )
    split = serializers.ChoiceField(
        choices=["train", "test"],
        required=False,
        help_text=(
            "Only one part of a deterministic split by prompt: a prompt is in test when the "
            'first 8 bytes of sha256("<seed>:<prompt external id>"), as a big-endian number '
            "over 2**64, are under test_share; all rows of a prompt land in the same part."
        ),
        error_messages={"invalid_choice": 'Unknown split "{input}"; use train or test.'},
    )
    test_share = serializers.FloatField(
        default=0.1,
        help_text="With split: the share of prompts in test, between 0 and 1 (exclusive).",
        error_messages={"invalid": "Must be a share between 0 and 1 (exclusive)."},
    )
    seed = serializers.IntegerField(
        min_value=0,
        max_value=2**32 - 1,
        default=0,
        help_text="With split: another seed gives another split (0 to 4294967295).",
        error_messages={
            "invalid": "Must be a whole number from 0 to 4294967295.",
            "min_value": "Must be a whole number from 0 to 4294967295.",
            "max_value": "Must be a whole number from 0 to 4294967295.",
        },
    )

    def validate_test_share(self, value: float) -> float:
        if not 0 < value < 1:
            raise serializers.ValidationError("Must be a share between 0 and 1 (exclusive).")
        return value

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        """Folds split, test_share and seed into one `Split` (or None) under "split"."""
        if "split" in data:
            data["split"] = Split(data["split"], data["test_share"], data["seed"])
        else:
            for name in ("test_share", "seed"):
                if name in self.initial_data:
                    raise serializers.ValidationError(
                        {name: "Applies only with split=train or split=test."}
                    )
            data["split"] = None
        del data["test_share"], data["seed"]
        return data


def format_field(formats: tuple[str, ...], default: str) -> serializers.ChoiceField:
    return serializers.ChoiceField(
        choices=formats,
        default=default,
        error_messages={
            "invalid_choice": f'Unknown format "{{input}}"; use one of {", ".join(formats)}.'
        },
    )


class ComparisonExportParamsSerializer(ExportParamsSerializer):
    format = format_field(COMPARISON_FORMATS, "trl")
    min_margin = serializers.IntegerField(
        min_value=1,
        required=False,
        help_text="Only pairs at least this many ranks apart.",
        error_messages={"invalid": "Must be a whole number of ranks."},
    )
    render = serializers.ChoiceField(
        choices=["text"],
        required=False,
        help_text=(
            "trl: write multi-turn prompts as HH-style text (by default a dataset with "
            "multi-turn prompts is exported in the conversational form on every row)."
        ),
    )
    consensus = serializers.BooleanField(
        default=False,
        help_text=(
            "One row per completion pair with the labelers' majority direction instead of one "
            "row per labeler's comparison; with include_ids, each row has its vote_share."
        ),
        error_messages={"invalid": "Use true or false."},
    )
    min_agreement = serializers.FloatField(
        min_value=0,
        max_value=1,
        required=False,
        help_text=(
            "Only pairs whose direction at least this share of the prompt's labelers gave, a "
            "tie counting half (0 to 1; shares change as labels arrive, so no since)."
        ),
        error_messages={
            "invalid": "Must be a share between 0 and 1.",
            "min_value": "Must be a share between 0 and 1.",
            "max_value": "Must be a share between 0 and 1.",
        },
    )

    min_labelers = serializers.IntegerField(
        min_value=1,
        default=1,
        help_text="Only pairs of prompts that at least this many labelers ordered (with "
        "consensus=true or min_agreement; a single labeler agrees with themself).",
        error_messages={"invalid": "Must be a whole number of labelers."},
    )

    adjudicated = serializers.BooleanField(
        default=False,
        help_text=(
            "Only the pairs of reviewers' adjudicated orders (the newest per prompt), one row per "
            'pair as a ranking of that order would give, each with "source": "adjudicated".'
        ),
        error_messages={"invalid": "Use true or false."},
    )

    include = serializers.CharField(
        required=False,
        max_length=200,
        help_text=(
            "Extra fields on each row, a comma list of " + ", ".join(INCLUDES) + " (with "
            "consensus=true: " + ", ".join(CONSENSUS_INCLUDES) + ")."
        ),
    )
    output = serializers.ChoiceField(
        choices=["jsonl", "parquet"],
        default="jsonl",
        help_text="jsonl (JSON Lines, gzip when accepted) or parquet (one Parquet file).",
        error_messages={"invalid_choice": 'Unknown output "{input}"; use jsonl or parquet.'},
    )

    def validate_include(self, value: str) -> tuple[str, ...]:
        """The names asked for, in INCLUDES order."""
        names = {name.strip() for name in value.split(",") if name.strip()}
        if unknown := names - set(INCLUDES):
            raise serializers.ValidationError(
                f"Unknown include {', '.join(sorted(unknown))}; use any of {', '.join(INCLUDES)}."
            )
        return tuple(name for name in INCLUDES if name in names)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        data = super().validate(data)
        data = self.check_adjudicated_options(data)
        data.setdefault("include", ())
        whole = data["consensus"] or data["adjudicated"]
        if whole and (other := set(data["include"]) - set(CONSENSUS_INCLUDES)):
            raise serializers.ValidationError(
                {
                    "include": f"{', '.join(sorted(other))} belong to one labeler's comparison; "
                    f"with consensus=true or adjudicated=true use any of "
                    f"{', '.join(CONSENSUS_INCLUDES)}."
                }
            )
        if data["since"] and ("min_agreement" in data or data["min_labelers"] > 1):
            raise serializers.ValidationError(
                {
                    "since": "Vote shares change as labels arrive, so a pull with min_agreement "
                    "or min_labelers is always whole: no since."
                }
            )
        if data["consensus"]:
            if data["since"]:
                raise serializers.ValidationError(
                    {"since": "Consensus rows change as labels arrive: pull them whole, no since."}
                )
            for name in ("labeler", "min_margin"):
                if name in data:
                    raise serializers.ValidationError(
                        {name: "Applies to single labelers' comparisons, not to consensus=true."}
                    )
        return data

    def check_adjudicated_options(self, data: dict[str, Any]) -> dict[str, Any]:
        """adjudicated=true is a whole pull of reviewers' orders: no labeler filters."""
        if not data["adjudicated"]:
            return data
        if data["since"]:
            raise serializers.ValidationError(
                {"since": "Adjudications change as reviewers work: pull them whole, no since."}
            )
        for name in ("labeler", "min_margin", "min_agreement"):
            if name in data:
                raise serializers.ValidationError(
                    {name: "Applies to labelers' comparisons, not to adjudicated=true."}
                )
        if data["consensus"] or data["min_labelers"] > 1:
            raise serializers.ValidationError(
                {
                    "adjudicated": "Choose adjudicated=true or consensus (which prefers "
                    "adjudicated orders anyway), not both; min_labelers does not apply."
                }
            )
        return data


class RankingExportParamsSerializer(ExportParamsSerializer):
    format = format_field(("rankings",), "rankings")
    shape = serializers.ChoiceField(
        choices=RANKING_SHAPES,
        default="v2",
        help_text=(
            "v2: a list of completion records (id, text, model, rank, ratings, flags) and the "
            "order by the import's ids; v1: the earlier shape, keyed by internal ids."
        ),
        error_messages={"invalid_choice": 'Unknown shape "{input}"; use v2 or v1.'},
    )


class QualityReportSerializer(serializers.Serializer):
    """A dataset's label-quality report, as on the staff dashboard."""

    status = serializers.ChoiceField(
        choices=REPORT_STATUSES,
        help_text="computing: no report yet; refreshing: this one, while a newer one is made.",
    )
    computed_at = serializers.DateTimeField(allow_null=True)
    ranking_cursor = serializers.IntegerField(help_text="The newest ranking id it covers.")
    report = serializers.JSONField(
        allow_null=True,
        help_text=(
            "progress, rate (rankings per day), agreement (pairwise rate and Krippendorff's "
            "alpha with 95% bootstrap intervals), labelers, flags, disputed prompts."
        ),
    )


STATS_ORDERINGS = ("need", "agreement", "min_margin", "labels", "model_contradiction", "prompt")


class PromptStatsParamsSerializer(serializers.Serializer):
    """Filters of the per-prompt statistics; each is optional, errors say what is accepted."""

    ordering = serializers.ChoiceField(
        choices=[*STATS_ORDERINGS, *(f"-{name}" for name in STATS_ORDERINGS)],
        default="-need",
        help_text="A field, or -field for descending; empty values go last.",
    )
    min_labels = serializers.IntegerField(min_value=0, max_value=10_000, required=False)
    max_agreement = serializers.FloatField(min_value=0, max_value=1, required=False)
    max_margin = serializers.FloatField(
        min_value=0,
        max_value=1,
        required=False,
        help_text="Only prompts whose thinnest pair margin is at most this.",
    )
    min_need = serializers.FloatField(min_value=0, max_value=100, required=False)
    min_contradiction = serializers.FloatField(min_value=0, max_value=1, required=False)
    flagged = serializers.BooleanField(
        required=False, allow_null=True, default=None, help_text="Given a safety flag (or not)."
    )
    adjudicated = serializers.BooleanField(required=False, allow_null=True, default=None)
    is_gold = serializers.BooleanField(required=False, allow_null=True, default=None)
    in_queue = serializers.BooleanField(
        required=False, allow_null=True, default=None, help_text="In the review queue (or not)."
    )


class PromptStatsSerializer(serializers.ModelSerializer):
    external_id = serializers.CharField(source="prompt.external_id")
    reasons = serializers.SerializerMethodField()

    class Meta:
        model = PromptStats
        fields = [
            "prompt",
            "external_id",
            "labels",
            "agreement",
            "consensus",
            "min_margin",
            "flags",
            "safety_flags",
            "is_gold",
            "adjudicated",
            "model_version",
            "model_scores",
            "model_contradiction",
            "need",
            "reasons",
            "computed_at",
        ]
        read_only_fields = fields

    def get_reasons(self, stats: PromptStats) -> list[str]:
        return review.reasons(
            agreement=stats.agreement,
            min_margin=stats.min_margin,
            flags=stats.flags,
            model_contradiction=stats.model_contradiction,
            model_version=stats.model_version,
        )


def rounds_field() -> serializers.IntegerField:
    low, high = settings.PREFLAB_LEADERBOARD_MIN_ROUNDS, settings.PREFLAB_LEADERBOARD_MAX_ROUNDS
    message = f"Bootstrap rounds: a whole number from {low} to {high}."
    return serializers.IntegerField(
        min_value=low,
        max_value=high,
        default=settings.PREFLAB_LEADERBOARD_ROUNDS,
        help_text=f"Bootstrap rounds of the 95% intervals ({low} to {high}).",
        error_messages={"invalid": message, "min_value": message, "max_value": message},
    )


class LeaderboardParamsSerializer(serializers.Serializer):
    """Query parameters of the leaderboard; unknown datasets are refused by the service."""

    datasets = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=2000,
        help_text="More datasets to pool with this one: slugs, comma-separated.",
        error_messages={"max_length": "At most 2000 characters of comma-separated slugs."},
    )
    rounds = rounds_field()
    format = serializers.ChoiceField(
        choices=["json", "csv"],
        default="json",
        help_text="csv: the table only, as a download.",
        error_messages={"invalid_choice": 'Unknown format "{input}"; use json or csv.'},
    )


class LeaderboardModelSerializer(serializers.Serializer):
    model = serializers.CharField()
    score = serializers.FloatField(help_text="1000 + 400/ln(10) x Bradley-Terry strength.")
    low = serializers.FloatField(help_text="2.5th percentile of the bootstrap.")
    high = serializers.FloatField(help_text="97.5th percentile of the bootstrap.")
    rank = serializers.IntegerField(
        help_text="1 + models whose interval lies wholly above this one's."
    )
    comparisons = serializers.IntegerField(help_text="Battles: wins + losses + ties.")
    wins = serializers.IntegerField()
    losses = serializers.IntegerField()
    ties = serializers.IntegerField()


class WinRateSerializer(serializers.Serializer):
    share = serializers.FloatField(
        allow_null=True, help_text="(wins + ties / 2) / battles of row over column."
    )
    battles = serializers.IntegerField()


class LeftOutSerializer(serializers.Serializer):
    unnamed = serializers.IntegerField(help_text="Battles with a completion of no model name.")
    same_model = serializers.IntegerField(help_text="Battles between two completions of a model.")


class StandingsSerializer(serializers.Serializer):
    models = LeaderboardModelSerializer(many=True, help_text="Best first.")
    win_rates = serializers.ListField(
        child=WinRateSerializer(many=True), help_text="Rows and columns in the order of models."
    )
    battles = serializers.IntegerField(help_text="Comparisons and tied pairs counted.")
    rounds = serializers.IntegerField()
    seed = serializers.IntegerField()
    components = serializers.IntegerField(
        help_text="Groups of models compared with each other; above 1, scores of different "
        "groups are not on one scale."
    )


class LeaderboardDataSerializer(serializers.Serializer):
    datasets = serializers.ListField(child=serializers.CharField())
    standings = StandingsSerializer()
    left_out = LeftOutSerializer()


class LeaderboardSerializer(serializers.Serializer):
    """A Bradley-Terry leaderboard of the completions' source models, as a worker last stored
    it (a small one is computed at once)."""

    status = serializers.ChoiceField(
        choices=REPORT_STATUSES,
        help_text="computing: none yet, ask again in a few seconds; refreshing: this one, while "
        "a newer one is made.",
    )
    computed_at = serializers.DateTimeField(allow_null=True)
    ranking_cursor = serializers.IntegerField(help_text="The newest ranking id it covers.")
    error = serializers.CharField(
        allow_blank=True, help_text="Why the last computation failed; empty when it did not."
    )
    leaderboard = LeaderboardDataSerializer(allow_null=True)
