from __future__ import annotations

from typing import Any

from django import forms

from labeling.models import Dataset
from rewards.services import DEFAULT_HELD_OUT_SHARE


class TrainingRunForm(forms.Form):
    datasets = forms.ModelMultipleChoiceField(
        queryset=Dataset.objects.exclude(status=Dataset.Status.DRAFT),
        widget=forms.CheckboxSelectMultiple,
    )
    held_out_share = forms.FloatField(
        min_value=0.05,
        max_value=0.5,
        initial=DEFAULT_HELD_OUT_SHARE,
        help_text="Share of prompts held out for evaluation (whole prompts).",
    )
    regularization = forms.FloatField(
        required=False, min_value=0, help_text="Leave empty for the default."
    )
    seed = forms.IntegerField(min_value=0, initial=0)

    def config(self) -> dict[str, Any]:
        data = self.cleaned_data
        config: dict[str, Any] = {"held_out_share": data["held_out_share"], "seed": data["seed"]}
        if data["regularization"] is not None:
            config["fit"] = {"regularization": data["regularization"]}
        return config
