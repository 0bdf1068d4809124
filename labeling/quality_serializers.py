"""The API's shapes of what is computed from the labels: the quality report, per-prompt statistics
(with their filters) and model leaderboards."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from labeling.models import (
    PromptStats,
)

# What the quality report and the model leaderboard say of the stored result they answer with.

# What the quality report and the model leaderboard say of the stored result they answer with.
REPORT_STATUSES = ["ready", "refreshing", "computing"]


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
            "alpha with 95% bootstrap intervals), labelers, flags, disputed prompts (all of "
            "human labelers only), and ai_labelers: per AI labeler, judgments, failures, tokens "
            "and seconds per judgment, agreement with the human majority (human_majority) beside "
            "the humans' own against the others' majority (human_reference), and position bias "
            "(the share of calls that picked the response shown first, beside chance), each "
            "{rate, low, high, count} with a 95% Wilson interval."
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
        return stats.reasons()


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
