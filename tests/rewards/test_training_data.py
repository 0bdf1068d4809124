"""What a run trains on: compact arrays pointing at the loaded rows, counted labelers only, gold
prompts on request, feature rows appended block by block."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from rewards import features
from rewards.services import runs, training_data
from tests.rewards.conftest import ranked_dataset, start


def test_feature_rows_appended_in_blocks_make_the_stacked_matrix():
    rng = np.random.default_rng(0)
    blocks = [
        sparse.random(rows, 30, density=0.2, format="csr", dtype=np.float32, random_state=rng)
        for rows in (3, 0, 5, 1)
    ]
    rows = training_data._Rows(30)
    for block in blocks:
        rows.append(block)
    matrix = rows.csr()
    assert matrix.dtype == np.float32 and matrix.indices.dtype == np.intc
    assert np.shares_memory(matrix.data, np.frombuffer(rows.values, dtype=np.float32))
    expected = sparse.vstack(blocks, format="csr")
    assert matrix.shape == expected.shape
    assert (matrix != expected).nnz == 0


def test_training_data_is_compact_and_points_at_the_loaded_rows(trained_on, monkeypatch):
    import hashlib

    from labeling.models import Comparison

    monkeypatch.setattr(training_data, "CHUNK_SIZE", 7)  # several chunks
    monkeypatch.setattr(training_data, "POSITION_BLOCK", 5)  # several blocks
    data = training_data.load_training_data(
        datasets=[trained_on], feature_config=features.FeatureConfig(), report=lambda *a: None
    )
    ids, prompts, chosen, rejected, margins = map(
        np.array,
        zip(
            *Comparison.objects.filter(dataset=trained_on)
            .order_by("pk")
            .values_list("pk", "prompt_id", "chosen_id", "rejected_id", "margin"),
            strict=True,
        ),
    )
    assert [getattr(data, name).dtype for name in data.PER_COMPARISON] == [
        np.int64,
        np.int32,
        np.int32,
        np.int32,
        np.int16,
    ]
    assert np.array_equal(data.comparison_ids, ids)
    assert np.array_equal(data.prompt_ids[data.prompts], prompts)
    assert np.array_equal(data.completion_ids[data.chosen_rows], chosen)
    assert np.array_equal(data.completion_ids[data.rejected_rows], rejected)
    assert np.array_equal(data.margins, margins)
    assert np.array_equal(data.prompt_ids, np.unique(prompts))
    assert data.features.shape[0] == len(data.completion_ids)
    expected_sha = hashlib.sha256(np.sort(ids).astype("<i8").tobytes()).hexdigest()
    assert data.ids_sha256 == expected_sha

    held_out = data.prompts % 3 == 0
    before = {name: getattr(data, name).copy() for name in data.PER_COMPARISON}
    train_count = data.put_held_out_last(held_out)
    assert train_count == np.count_nonzero(~held_out)
    for name, values in before.items():
        expected = np.concatenate([values[~held_out], values[held_out]])
        assert np.array_equal(getattr(data, name), expected), name


def test_comparisons_of_deactivated_labelers_are_left_out(db):
    dataset = ranked_dataset(prompts=12, labelers=2, slug="mixed")
    total = runs.run_training(run_id=start(dataset).pk).metrics["comparisons"]["total"]
    labeler = dataset.rankings.first().labeler
    labeler.is_active = False
    labeler.save()
    fewer = runs.run_training(run_id=start(dataset).pk).metrics["comparisons"]["total"]
    assert fewer == total // 2


def test_gold_prompts_are_left_out_unless_asked_for(db):
    from labeling.models import Comparison

    dataset = ranked_dataset(prompts=12, labelers=2, slug="with-gold")
    gold = dataset.prompts.order_by("pk").first()
    gold.is_gold, gold.gold_order = True, [["0"], ["1"]]
    gold.save()
    on_gold = Comparison.objects.filter(prompt=gold).count()
    assert on_gold > 0
    everything = Comparison.objects.filter(dataset=dataset).count()
    without = runs.run_training(run_id=start(dataset).pk)
    assert without.metrics["comparisons"]["total"] == everything - on_gold
    assert without.reward_model.card["data"]["excluded"].startswith("gold prompts")
    with_gold = runs.run_training(run_id=start(dataset, include_gold=True).pk)
    assert with_gold.metrics["comparisons"]["total"] == everything
    assert with_gold.config["include_gold"] is True
