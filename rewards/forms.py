from __future__ import annotations

from typing import Any, cast

from django import forms
from django.db.models import QuerySet

from labeling.models import Dataset, Labelers, RatingCriterion
from rewards.services.runs import DEFAULT_HELD_OUT_SHARE


class TrainingRunForm(forms.Form):
    datasets = forms.ModelMultipleChoiceField(
        queryset=Dataset.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Tick at least one dataset to train on."},
        help_text="The active ones of one workspace are ticked; archived ones can be added. A run "
        "trains on the datasets of one workspace.",
    )
    held_out_share = forms.FloatField(
        min_value=0.05,
        max_value=0.5,
        initial=DEFAULT_HELD_OUT_SHARE,
        help_text="Share of prompts held out for evaluation (whole prompts).",
    )
    l2_penalty = forms.FloatField(
        label="L2 penalty",
        required=False,
    )
    seed = forms.IntegerField(min_value=0, initial=0)
    include_gold = forms.BooleanField(
        required=False,
        label="Include gold prompts",
        help_text="Gold prompts are quality checks and are left out unless this is ticked.",
    )

    prefer_adjudicated = forms.BooleanField(
        required=False,
        label="Prefer adjudicated orders",
        help_text="For a prompt a reviewer adjudicated, train on the pairs of the reviewer's "
        "order instead of its labelers' comparisons.",
    )

    labelers = forms.ChoiceField(
        choices=Labelers.choices,
        initial=Labelers.HUMAN,
        required=False,  # left out: human labelers, as before AI labelers came
        widget=forms.RadioSelect,
        label="Train on the comparisons of",
        help_text="AI labelers rank with a model behind an endpoint; their comparisons are kept "
        "apart from the humans' unless chosen here.",
    )

    weighting = forms.ChoiceField(
        choices=[
            ("none", "None: every comparison weighs 1"),
            ("chance_corrected", "Chance-corrected reliability: max(0, 2 x reliability - 1)"),
            ("reliability", "Reliability"),
        ],
        initial="none",
        required=False,  # left out: none, as before the option existed
        widget=forms.RadioSelect,
        label="Weight comparisons by",
        help_text="Each labeler's reliability as the quality report computes it (agreement "
        "with the other labelers and gold accuracy), computed when the run starts.",
    )
    min_reliability = forms.FloatField(
        min_value=0,
        max_value=1,
        required=False,
        label="Drop labelers under reliability",
        help_text="0 to 1; empty keeps everyone. Labelers with too little data to estimate "
        "are kept.",
    )
    heads = forms.MultipleChoiceField(
        choices=[],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Per-criterion heads",
        help_text="Beside the overall head, train one per ticked criterion on the pairs the "
        "labelers' ratings order (equal ratings left out); the datasets must rate it.",
    )

    def clean_l2_penalty(self) -> float | None:
        value: float | None = self.cleaned_data["l2_penalty"]
        if value is not None and value <= 0:
            raise forms.ValidationError("Must be above 0.")
        return value

    def __init__(self, *args: Any, datasets: QuerySet[Dataset], **kwargs: Any) -> None:
        """`datasets`: those the user may train on (the workspaces they manage)."""
        super().__init__(*args, **kwargs)
        offered = datasets.exclude(status=Dataset.Status.DRAFT).select_related("workspace")
        field = cast(forms.ModelMultipleChoiceField, self.fields["datasets"])
        field.queryset = offered.order_by("workspace__name", "name")
        field.label_from_instance = lambda dataset: (  # type: ignore[method-assign,assignment]
            f"{dataset.name} ({dataset.workspace.name})"
        )
        # Every criterion key some dataset has, labelled by its first dataset's label.
        labels: dict[str, str] = {}
        for key, label in RatingCriterion.objects.order_by("position", "pk").values_list(
            "key", "label"
        ):
            labels.setdefault(key, label)
        self.fields["heads"].choices = list(labels.items())  # type: ignore[attr-defined]
        # Shown ticked so that the form as loaded starts a run: the page promises that the
        # defaults just work, and a required field shown empty is no default. A run trains on
        # one workspace's datasets: those of the first.
        if not self.is_bound:
            active = offered.filter(status=Dataset.Status.ACTIVE).order_by("workspace__name")
            first = active.values_list("workspace", flat=True).first()
            self.fields["datasets"].initial = list(
                active.filter(workspace=first).values_list("pk", flat=True)
            )
        from rewards import fitting  # the fitting stack, only when the form is shown

        self.fields["l2_penalty"].help_text = (
            "Lambda in: summed loss of the pairs + lambda/2 |w|^2 (1/C of scikit-learn). Bigger "
            "is smoother; its pull fades as pairs accumulate. Empty for the default, "
            f"{fitting.FitConfig().l2_penalty:g}."
        )

    def config(self) -> dict[str, Any]:
        data = self.cleaned_data
        config: dict[str, Any] = {
            "held_out_share": data["held_out_share"],
            "seed": data["seed"],
            "include_gold": data["include_gold"],
        }
        if data["prefer_adjudicated"]:
            config["adjudicated"] = "prefer"
        if data["l2_penalty"] is not None:
            config["fit"] = {"l2_penalty": data["l2_penalty"]}
        if data["heads"]:
            config["heads"] = data["heads"]
        if data["labelers"] not in ("", Labelers.HUMAN):
            config["labelers"] = data["labelers"]
        return config | self.weighting_config()

    def weighting_config(self) -> dict[str, Any]:
        """The reliability options, only when they differ from unweighted training."""
        config: dict[str, Any] = {}
        if self.cleaned_data["weighting"] not in ("", "none"):
            config["weighting"] = self.cleaned_data["weighting"]
        if self.cleaned_data["min_reliability"]:
            config["min_reliability"] = self.cleaned_data["min_reliability"]
        return config
