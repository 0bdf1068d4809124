"""Bodies of the pool, exclusion and invitation endpoints (`labeling.pool_api`)."""

from __future__ import annotations

import csv
import io
from typing import Any

from rest_framework import serializers

from labeling.models import Exclusion, Role
from labeling.services.invites import MAX_BYTES, MAX_LINES

NAMES_MAX = 1000


class PoolChangeSerializer(serializers.Serializer):
    labelers = serializers.ListField(
        child=serializers.CharField(max_length=150),
        required=False,
        default=list,
        max_length=NAMES_MAX,
        help_text="Usernames.",
    )
    groups = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        default=list,
        max_length=NAMES_MAX,
        help_text="Names of the workspace's labeler groups.",
    )


class PoolLabelerSerializer(serializers.Serializer):
    username = serializers.CharField()
    by_name = serializers.BooleanField(help_text="In the pool by name (else through groups).")
    groups = serializers.ListField(child=serializers.CharField())
    excluded = serializers.BooleanField(help_text="An exclusion keeps them out all the same.")


class PoolGroupSerializer(serializers.Serializer):
    name = serializers.CharField()
    members = serializers.ListField(child=serializers.CharField())


class PoolSerializer(serializers.Serializer):
    labelers = PoolLabelerSerializer(many=True)
    groups = PoolGroupSerializer(many=True)


class ExclusionInputSerializer(serializers.Serializer):
    labeler = serializers.CharField(max_length=150, help_text="A username.")
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class ExclusionSerializer(serializers.ModelSerializer):
    labeler = serializers.CharField(source="labeler.username")
    dataset = serializers.CharField(
        source="dataset.slug", allow_null=True, help_text="Empty: every dataset of the workspace."
    )
    created_by = serializers.CharField(source="created_by.username", allow_null=True)

    class Meta:
        model = Exclusion
        fields = ["labeler", "dataset", "reason", "created_by", "created_at"]
        read_only_fields = fields


class InviteeSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    email = serializers.CharField(max_length=254, required=False, allow_blank=True, default="")


class InviteSerializer(serializers.Serializer):
    lines = serializers.CharField(
        required=False,
        trim_whitespace=False,
        max_length=MAX_BYTES,
        help_text="`username,email` lines, as on the page (the e-mail optional).",
    )
    labelers = serializers.ListField(
        child=InviteeSerializer(),
        required=False,
        max_length=MAX_LINES,
        help_text="Or a list instead of lines.",
    )
    role = serializers.ChoiceField(
        choices=[Role.LABELER, Role.REVIEWER, Role.MANAGER, Role.ADMIN], default=Role.LABELER
    )
    datasets = serializers.ListField(
        child=serializers.SlugField(), required=False, default=list, max_length=NAMES_MAX
    )
    groups = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        default=list,
        max_length=NAMES_MAX,
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if ("lines" in data) == ("labelers" in data):
            raise serializers.ValidationError("Send either `lines` or `labelers`.")
        if "labelers" in data:
            # The list becomes lines, so that both are checked by one parser, line by line.
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            for invitee in data.pop("labelers"):
                writer.writerow([invitee["username"], invitee["email"]])
            data["lines"] = text.getvalue()
        return data


class InvitedSerializer(serializers.Serializer):
    username = serializers.CharField()
    email = serializers.CharField()
    created = serializers.BooleanField(help_text="A new account (else an existing one added).")
    link = serializers.CharField(
        help_text="A new account's password-set link, shown this once; empty for existing ones."
    )


class InvitedListSerializer(serializers.Serializer):
    labelers = InvitedSerializer(many=True)
