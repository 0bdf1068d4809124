"""Forms of the managers' pool and invitation pages (`labeling.pool_views`)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from labeling.models import Dataset, LabelerGroup, Role, Workspace
from labeling.pools import split_names, users_named
from labeling.services.invites import MAX_BYTES, MAX_LINES


class PoolChangeForm(forms.Form):
    """Labelers (usernames) and groups to add to a dataset's pool, or to take out of it."""

    labelers = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Usernames, one a line or separated by commas or spaces.",
    )
    groups = forms.ModelMultipleChoiceField(
        queryset=LabelerGroup.objects.none(), required=False, to_field_name="name"
    )

    def __init__(self, *args: Any, workspace: Workspace, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        groups = self.fields["groups"]
        groups.queryset = LabelerGroup.objects.filter(workspace=workspace)  # type: ignore[attr-defined]

    def clean_labelers(self) -> list[Any]:
        try:
            return users_named(split_names(self.cleaned_data["labelers"]))
        except ValidationError as error:
            raise ValidationError(error.message_dict["labelers"]) from None


class InviteForm(forms.Form):
    lines = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 10, "placeholder": "ann,ann@example.org\nbob,"}),
        help_text=f"One `username,email` line per labeler (the e-mail optional); at most "
        f"{MAX_LINES} lines.",
    )
    file = forms.FileField(
        required=False, help_text=f"Or a CSV file of such lines, at most {MAX_BYTES // 1000} KB."
    )
    role = forms.ChoiceField(
        choices=[
            (Role.LABELER, "Labeler"),
            (Role.REVIEWER, "Reviewer"),
            (Role.MANAGER, "Manager"),
            (Role.ADMIN, "Admin"),
        ],
        initial=Role.LABELER,
        help_text="For new members; a member keeps the role they have.",
    )
    datasets = forms.ModelMultipleChoiceField(
        queryset=Dataset.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Add them to these datasets' pools.",
    )
    groups = forms.ModelMultipleChoiceField(
        queryset=LabelerGroup.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="And to these groups.",
    )

    def __init__(self, *args: Any, workspace: Workspace, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        datasets, groups = self.fields["datasets"], self.fields["groups"]
        datasets.queryset = Dataset.objects.filter(workspace=workspace)  # type: ignore[attr-defined]
        groups.queryset = LabelerGroup.objects.filter(workspace=workspace)  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        upload = data.get("file")
        if upload is not None:
            if upload.size > MAX_BYTES:
                raise ValidationError(f"The file is larger than {MAX_BYTES // 1000} KB.")
            try:
                data["lines"] = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                raise ValidationError("The file is not UTF-8 text.") from None
        if not data.get("lines", "").strip():
            raise ValidationError("Paste `username,email` lines or choose a file.")
        return data
