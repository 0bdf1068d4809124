"""Training on adjudicated orders (`adjudicated: "prefer"`), and the active reward model's
scores and contradictions in the per-prompt statistics."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.exceptions import ValidationError

from labeling import review
from labeling.models import Comparison, PromptStats
from labeling.services import adjudication, quality_report
from rewards import features
from rewards.services import runs, training_data
from tests.factories import UserFactory, make_prompt
from tests.labeling.quality_data import rank
from tests.rewards.conftest import BAD, GOOD, ranked_dataset, start


def settle_reversed(prompt):
    """Adjudicate the prompt with its completions in reverse import order (rude first)."""
    ids = list(prompt.completions.order_by("-position").values_list("pk", flat=True))
    return adjudication.adjudicate_prompt(
        prompt=prompt, order=[[pk] for pk in ids], note="", reviewer=UserFactory(is_superuser=True)
    )


def load(dataset, **options):
    return training_data.load_training_data(
        datasets=[dataset],
        feature_config=features.FeatureConfig(),
        report=lambda *a: None,
        **options,
    )


def test_preferring_adjudicated_orders_replaces_their_prompts_comparisons(db):
    dataset = ranked_dataset(prompts=12, labelers=2)
    three, two = dataset.prompts.order_by("pk")[0], dataset.prompts.order_by("pk")[1]
    settle_reversed(three)  # 3 completions: 3 pairs
    settle_reversed(two)  # 2 completions: 1 pair
    everything = Comparison.objects.filter(dataset=dataset).count()
    replaced = Comparison.objects.filter(prompt__in=[three, two]).count()
    assert len(load(dataset).comparison_ids) == everything
    data = load(dataset, adjudicated="prefer")
    assert len(data.comparison_ids) == everything - replaced + 4
    assert np.all(np.diff(data.comparison_ids) > 0)  # sorted, stand-ins first
    stand_ins = data.comparison_ids < 0
    assert np.count_nonzero(stand_ins) == 4
    chosen = data.completion_ids[data.chosen_rows[stand_ins]]
    rejected = data.completion_ids[data.rejected_rows[stand_ins]]
    positions = dict(three.completions.values_list("pk", "position")) | dict(
        two.completions.values_list("pk", "position")
    )
    # Reversed: the later completion is chosen in every adjudicated pair.
    assert all(positions[c] > positions[r] for c, r in zip(chosen, rejected, strict=True))


def test_a_run_records_the_option_and_its_adjudicated_pairs(db):
    dataset = ranked_dataset(prompts=12, labelers=2)
    settle_reversed(dataset.prompts.order_by("pk")[1])
    run = runs.run_training(run_id=start(dataset, adjudicated="prefer").pk)
    assert run.config["adjudicated"] == "prefer"
    assert run.reward_model.card["config"]["adjudicated"] == "prefer"
    assert run.reward_model.card["data"]["adjudicated_pairs"] == 1
    plain = runs.run_training(run_id=start(dataset).pk)
    assert plain.reward_model.card["data"]["adjudicated_pairs"] == 0


def test_an_unknown_adjudicated_mode_is_refused():
    with pytest.raises(ValidationError) as error:
        runs.run_config({"adjudicated": "always"})
    assert "adjudicated" in error.value.message_dict


def test_stats_hold_the_active_models_scores_and_contradiction(db):
    dataset = ranked_dataset(prompts=30, labelers=2)
    model = runs.run_training(run_id=start(dataset).pk).reward_model
    # Two labelers put the rude answer first, against everything the model learned.
    odd = make_prompt(dataset, 2)
    odd.completions.filter(external_id="c0").update(text=f"{GOOD} (odd)")
    odd.completions.filter(external_id="c1").update(text=f"{BAD} (odd)")
    for labeler in UserFactory.create_batch(2):
        rank(odd, labeler, "c1 > c0")
    quality_report.refresh_report(dataset_id=dataset.pk)
    rows = PromptStats.objects.filter(dataset=dataset)
    assert {row.model_version for row in rows} == {model.version}
    stats = rows.get(prompt=odd)
    scores = {int(pk): value for pk, value in stats.model_scores.items()}
    polite, rude = (odd.completions.get(external_id=name).pk for name in ("c0", "c1"))
    assert scores[polite] > scores[rude]
    assert stats.model_contradiction == pytest.approx(review.sigmoid(scores[polite] - scores[rude]))
    assert stats.model_contradiction > 0.5 and stats.need > 0
    assert review.reasons(
        agreement=stats.agreement,
        min_margin=stats.min_margin,
        flags=stats.flags,
        model_contradiction=stats.model_contradiction,
        model_version=stats.model_version,
    ) == [f"reward model v{model.version} contradicts it (p = {stats.model_contradiction:.2f})"]
