"""The query parameters of the streamed exports (pairs, consensus, adjudicated, rankings), each
checked with a 400 naming what is wrong."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from labeling.choices import Labelers
from labeling.export_options import CONSENSUS_INCLUDES, INCLUDES, Split
from labeling.exports import COMPARISON_FORMATS
from labeling.ranking_exports import RANKING_SHAPES

# What the quality report and the model leaderboard say of the stored result they answer with.


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
    labelers = serializers.ChoiceField(
        choices=Labelers.choices,
        default=Labelers.HUMAN,
        help_text="Whose rows: human labelers' (the default), AI labelers' (ai) or both (all). "
        "Agreement figures and filters (consensus, min_agreement) count the same labelers.",
        error_messages={
            "invalid_choice": f'Unknown labelers "{{input}}"; use one of '
            f"{', '.join(Labelers.values)}."
        },
    )
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
        if data["labelers"] != Labelers.HUMAN:
            raise serializers.ValidationError(
                {"labelers": "Adjudicated orders are reviewers', not labelers': leave it out."}
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
