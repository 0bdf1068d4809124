"""The workspace API's bodies: workspaces with the caller's role, members, and the audit trail
with its filters and cursor."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from labeling.models import AuditEvent, Membership, Role, Workspace

AUDIT_PAGE_MAX = 200


class WorkspaceSerializer(serializers.ModelSerializer):
    """A workspace annotated with the caller's role (`WorkspaceQuerySet.with_role_of`)."""

    role = serializers.ChoiceField(
        choices=Role.choices,
        source="caller_role",
        read_only=True,
        help_text="The caller's role here (a superuser's is admin everywhere).",
    )

    class Meta:
        model = Workspace
        fields = ["slug", "name", "description", "created_at", "role"]
        read_only_fields = fields


class WorkspaceCreateSerializer(serializers.Serializer):
    slug = serializers.SlugField(
        max_length=100, help_text="Letters, digits, hyphens and underscores; unique."
    )
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)


class WorkspaceUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)


class MemberSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    email = serializers.EmailField(source="user.email", read_only=True)
    joined = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = Membership
        fields = ["username", "email", "role", "joined"]
        read_only_fields = fields


class MemberInputSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(
        choices=Role.choices,
        error_messages={
            "invalid_choice": f'Unknown role "{{input}}"; use one of {", ".join(Role.values)}.'
        },
    )


class AuditEventSerializer(serializers.ModelSerializer):
    when = serializers.DateTimeField(source="created_at", read_only=True)
    actor = serializers.CharField(
        source="actor_name",
        read_only=True,
        help_text="The username at the time; empty for the system.",
    )
    dataset = serializers.SlugRelatedField(  # type: ignore[var-annotated]
        slug_field="slug", read_only=True, allow_null=True
    )
    token = serializers.CharField(
        read_only=True, help_text="The API token's fingerprint (never the token); empty if none."
    )
    details = serializers.JSONField(read_only=True)

    class Meta:
        model = AuditEvent
        fields = ["id", "when", "actor", "via", "token", "action", "dataset", "details"]
        read_only_fields = fields


class AuditPageSerializer(serializers.Serializer):
    results = AuditEventSerializer(many=True)
    next = serializers.URLField(
        allow_null=True, help_text="The next (older) page, or null on the last one."
    )


class AuditParamsSerializer(serializers.Serializer):
    before = serializers.IntegerField(
        min_value=1,
        required=False,
        help_text="Only events older than this id: the last id of the previous page.",
    )
    limit = serializers.IntegerField(
        min_value=1, max_value=AUDIT_PAGE_MAX, default=50, help_text="Events per page."
    )
    action = serializers.ChoiceField(
        choices=AuditEvent.Action.choices,
        required=False,
        error_messages={
            "invalid_choice": 'Unknown action "{input}"; use one of '
            + ", ".join(AuditEvent.Action.values)
            + "."
        },
    )
    dataset = serializers.SlugField(required=False, help_text="Only this dataset's events.")
    actor = serializers.CharField(
        required=False, max_length=150, help_text="Only this username's events."
    )

    def to_filters(self) -> dict[str, Any]:
        data = self.validated_data
        return {name: data[name] for name in ("action", "dataset", "actor") if name in data}
