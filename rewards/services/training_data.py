"""The training data of a run: comparisons streamed from the database, each distinct
completion featurized once, pairs as row numbers into that feature matrix."""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, QuerySet
from scipy import sparse

from labeling import orders
from labeling.models import (
    Adjudication,
    AILabeler,
    Comparison,
    Completion,
    Dataset,
    Labelers,
    Prompt,
)
from rewards import features

CHUNK_SIZE = 20_000
# Comparisons converted at once from loaded ids to int32 positions (`_positions`).
POSITION_BLOCK = 1 << 16
# Completions are featurized in smaller chunks: featurizing needs ~8x its result's memory for a
# moment (token strings, hashed names, intermediate blocks), ~100 MB for 5,000 completions.
COMPLETION_CHUNK_SIZE = 5_000
PAIRS_PER_ADJUDICATION = 64

Report = Callable[..., None]


@dataclass
class TrainingData:
    """The comparisons to train on and the features of the distinct completions they compare.

    The per-comparison arrays (PER_COMPARISON) hold comparison i at index i, in primary key order
    as loaded (`put_held_out_last` reorders them): 22 bytes a comparison, its id (int64), its
    prompt as an index into `prompt_ids` (int32), the rows of its chosen and rejected completions
    in `features` and `completion_ids` (int32; int64 from 2**31 completions on) and its margin
    (int16, the database's smallint). Both id lists are sorted, so the indexes order, group and
    split the comparisons as the ids would. `ids_sha256` is the SHA-256 of the sorted comparison
    ids as little-endian int64, taken while they are in primary key order. `ai_comparisons`
    counts those of AI labelers (`labelers` ai or all), for the model card.
    """

    PER_COMPARISON = ("comparison_ids", "prompts", "chosen_rows", "rejected_rows", "margins")

    comparison_ids: np.ndarray
    prompts: np.ndarray
    chosen_rows: np.ndarray
    rejected_rows: np.ndarray
    margins: np.ndarray
    features: sparse.csr_matrix
    completion_ids: np.ndarray
    prompt_ids: np.ndarray
    ids_sha256: str
    ai_comparisons: int = 0

    def put_held_out_last(self, held_out: np.ndarray) -> int:
        """Reorder the comparisons, those where `held_out` is False first and the held out ones
        last, each group in its present order; return the size of the first group. Each group is
        then a slice of the arrays, a view where a boolean mask would copy. The arrays are
        replaced one at a time: the move costs 8 bytes a comparison (the order) plus one array."""
        order = np.argsort(held_out, kind="stable")
        for name in self.PER_COMPARISON:
            setattr(self, name, getattr(self, name)[order])
        return len(held_out) - int(np.count_nonzero(held_out))


def load_training_data(
    *,
    datasets: list[Dataset],
    feature_config: features.FeatureConfig,
    report: Report,
    include_gold: bool = False,
    adjudicated: str = "ignore",
    labelers: str = Labelers.HUMAN,
) -> TrainingData:
    """Stream the comparisons (excluded labelers left out, gold prompts unless asked for, and
    AI labelers' or humans' as `labelers` says: human, ai or all) in primary key chunks, then
    featurize each distinct completion once: pairs are rows indices into that matrix.

    Loading holds 34 bytes a comparison (four int64 columns and the int16 margins); they become
    the 22 of `TrainingData` one column at a time, before featurizing, so the featurizer's own
    memory comes on top of those 22 only."""
    comparisons = Comparison.objects.counted(labelers).filter(dataset__in=datasets)
    if not include_gold:
        comparisons = comparisons.filter(prompt__is_gold=False)
    columns = _empty_columns()
    if adjudicated == "prefer":
        settled = Adjudication.objects.filter(dataset__in=datasets).latest_per_prompt()
        if not include_gold:
            settled = settled.filter(prompt__is_gold=False)
        _add_adjudicated_pairs(columns, settled)
        comparisons = comparisons.exclude(
            Exists(Adjudication.objects.filter(prompt=OuterRef("prompt")))
        )
    ai_comparisons = _load_columns(columns, comparisons, report)
    if not columns["pk"]:
        whose = {Labelers.HUMAN: " by human labelers", Labelers.AI: " by AI labelers"}
        raise ValidationError(
            "There are no comparisons to train on in these datasets yet"
            f"{whose.get(Labelers(labelers), '')}."
        )
    # Each column becomes an array on its own buffer (np.frombuffer copies nothing); a column is
    # freed as soon as its int32 positions exist.
    comparison_ids = np.frombuffer(columns.pop("pk"), dtype=np.int64)
    ids_sha256 = hashlib.sha256(comparison_ids.astype("<i8", copy=False).data).hexdigest()
    margins = np.frombuffer(columns.pop("margin"), dtype=np.int16)
    prompt_column = np.frombuffer(columns.pop("prompt"), dtype=np.int64)
    prompt_ids = np.unique(prompt_column)
    if len(prompt_ids) < 2:
        raise ValidationError("Training needs comparisons from at least two prompts.")
    prompts = _positions(prompt_ids, prompt_column)
    del prompt_column
    chosen = np.frombuffer(columns.pop("chosen"), dtype=np.int64)
    rejected = np.frombuffer(columns.pop("rejected"), dtype=np.int64)
    completion_ids = np.union1d(np.unique(chosen), np.unique(rejected))
    chosen_rows = _positions(completion_ids, chosen)
    del chosen
    rejected_rows = _positions(completion_ids, rejected)
    del rejected
    return TrainingData(
        comparison_ids=comparison_ids,
        prompts=prompts,
        chosen_rows=chosen_rows,
        rejected_rows=rejected_rows,
        margins=margins,
        features=_featurize(completion_ids, feature_config, report),
        completion_ids=completion_ids,
        prompt_ids=prompt_ids,
        ids_sha256=ids_sha256,
        ai_comparisons=ai_comparisons,
    )


def _empty_columns() -> dict[str, array[int]]:
    return {
        "pk": array("q"),
        "prompt": array("q"),
        "chosen": array("q"),
        "rejected": array("q"),
        "margin": array("h"),  # a PositiveSmallIntegerField: 1 to 32767
    }


def adjudicated_pair_id(adjudication_id: int, index: int) -> int:
    """The stand-in comparison id of the `index`th pair of an adjudicated order: negative, so
    that these pairs, loaded first, keep the ids sorted and never meet a real comparison's id
    (an order of at most 9 completions has at most 36 pairs)."""
    return -(adjudication_id * PAIRS_PER_ADJUDICATION + index) - 1


def _add_adjudicated_pairs(
    columns: dict[str, array[int]], adjudications: QuerySet[Adjudication]
) -> None:
    """The pairs of the adjudicated orders, as a labeler's ranking of each would give them,
    sorted by their stand-in ids (`adjudicated_pair_id`). Adjudications are few (a reviewer
    makes each), so they are read at once."""
    rows = sorted(
        (adjudicated_pair_id(pk, index), prompt_id, chosen, rejected, margin)
        for pk, prompt_id, order in adjudications.values_list("pk", "prompt_id", "order")
        for index, (chosen, rejected, margin) in enumerate(orders.comparison_pairs(order))
    )
    if rows:
        for column, values in zip(columns.values(), zip(*rows, strict=True), strict=True):
            column.extend(values)


def _load_columns(
    columns: dict[str, array[int]], comparisons: QuerySet[Comparison], report: Report
) -> int:
    """Append the comparisons' ids, prompts, chosen and rejected completions and margins to
    `columns`, each a compact array, read in primary key chunks; return how many of them are AI
    labelers' (their accounts are few: read once, not joined to every comparison)."""
    machines = set(AILabeler.objects.order_by().values_list("user_id", flat=True))
    total = comparisons.count()
    last, ai_comparisons = 0, 0
    while chunk := list(
        comparisons.filter(pk__gt=last)
        .order_by("pk")
        .values_list("pk", "prompt_id", "chosen_id", "rejected_id", "margin", "labeler_id")[
            :CHUNK_SIZE
        ]
    ):
        *values, labeler_ids = zip(*chunk, strict=True)
        ai_comparisons += sum(1 for labeler_id in labeler_ids if labeler_id in machines)
        for column, column_values in zip(columns.values(), values, strict=True):
            column.extend(column_values)
        last = chunk[-1][0]
        report("loading", len(columns["pk"]) / max(total, 1))
    return ai_comparisons


def _featurize(
    completion_ids: np.ndarray, feature_config: features.FeatureConfig, report: Report
) -> sparse.csr_matrix:
    """The feature rows of the completions, in the order of `completion_ids`."""
    matrix = _Rows(feature_config.n_features)
    for start in range(0, len(completion_ids), COMPLETION_CHUNK_SIZE):
        ids = completion_ids[start : start + COMPLETION_CHUNK_SIZE].tolist()
        rows = dict(
            (pk, (prompt_id, text))
            for pk, prompt_id, text in Completion.objects.filter(pk__in=ids).values_list(
                "pk", "prompt_id", "text"
            )
        )
        messages = dict(
            Prompt.objects.filter(pk__in={p for p, _ in rows.values()}).values_list(
                "pk", "messages"
            )
        )
        items = [(messages[rows[pk][0]], rows[pk][1]) for pk in ids]
        matrix.append(features.featurize(items, feature_config))
        report("featurizing", (start + len(ids)) / len(completion_ids))
    return matrix.csr()


def _positions(sorted_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The index in `sorted_ids` of each of `values` (all of which it holds): int32 below 2**31
    ids, int64 from there on. Converted a block at a time, so there is no int64 array as long
    as `values` beside the result, as `np.searchsorted` of them all at once would make."""
    dtype = np.int32 if len(sorted_ids) <= np.iinfo(np.int32).max else np.int64
    positions = np.empty(len(values), dtype=dtype)
    for start in range(0, len(values), POSITION_BLOCK):
        block = slice(start, start + POSITION_BLOCK)
        positions[block] = np.searchsorted(sorted_ids, values[block])
    return positions


class _Rows:
    """A float32 CSR matrix appended to block by block. Its arrays grow in place (`array`
    resizes large buffers without copying them), so there is never a second copy of the whole
    matrix, as `sparse.vstack` of the blocks would make."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.values, self.columns, self.lengths = array("f"), array("i"), array("q")

    def append(self, block: sparse.csr_matrix) -> None:
        self.values.frombytes(block.data.astype(np.float32, copy=False).tobytes())
        self.columns.frombytes(block.indices.astype(np.intc, copy=False).tobytes())
        self.lengths.frombytes(np.diff(block.indptr).astype(np.int64).tobytes())

    def csr(self) -> sparse.csr_matrix:
        """The matrix, on these very buffers (append no more)."""
        index = np.intc if len(self.values) < 2**31 else np.int64
        lengths = np.frombuffer(self.lengths, dtype=np.int64)
        return sparse.csr_matrix(
            (
                np.frombuffer(self.values, dtype=np.float32),
                np.frombuffer(self.columns, dtype=np.intc).astype(index, copy=False),
                np.concatenate([[0], np.cumsum(lengths)]).astype(index),
            ),
            shape=(len(lengths), self.width),
        )
