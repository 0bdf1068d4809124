"""Per-criterion heads of a training run: the `heads` option checked against the datasets, the
labelers' ratings read from the database and a head fitted per criterion (`rewards.heads`)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from itertools import groupby
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.core.validators import slug_re

from labeling.models import Asked, Dataset, Labelers, Ranking, Rating, RatingCriterion

if TYPE_CHECKING:  # the ML stack is imported by what trains, not with this module
    import numpy as np

    from rewards import fitting
    from rewards.services.training_data import Report, TrainingData

RATING_CHUNK_SIZE = 20_000


def heads_option(value: object) -> list[str]:
    """The run option `heads`: a list of distinct criterion keys (which the datasets must rate:
    `check_heads`); empty (the default) trains the overall head only."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError({"heads": "Must be a list of criterion keys, such as helpful."})
    malformed = [key for key in value if not slug_re.fullmatch(key)]
    if malformed:
        raise ValidationError({"heads": f"Not criterion keys: {malformed}."})
    if len(set(value)) != len(value):
        raise ValidationError({"heads": "Name each criterion once."})
    return list(value)


def check_heads(heads: list[str], datasets: list[Dataset]) -> list[str]:
    """A head needs ratings on its criterion: each must be rated in at least one dataset.
    Returns the heads in the datasets' order of criteria (helpful, honest, harmless)."""
    positions: dict[str, int] = {}
    for key, position in (
        RatingCriterion.objects.filter(dataset__in=datasets)
        .exclude(dataset__ratings=Asked.OFF)
        .order_by("position", "key")
        .values_list("key", "position")
    ):
        positions.setdefault(key, position)
    missing = [criterion for criterion in heads if criterion not in positions]
    if missing:
        raise ValidationError(
            {
                "heads": (
                    f"No chosen dataset asks labelers to rate {', '.join(missing)}; "
                    f"rated here: {', '.join(sorted(positions)) or 'nothing'}."
                )
            }
        )
    return sorted(heads, key=lambda key: (positions[key], key))


def _rated_rankings(
    datasets: list[Dataset], include_gold: bool, heads: list[str], labelers: str = Labelers.HUMAN
) -> Iterator[tuple[int, dict[str, dict[str, float]]]]:
    """(prompt id, {"<completion id>": {criterion key: rating}}) of the counted rankings, read
    by one query a chunk of rows at a time: the same labelers (not excluded) and prompts (gold
    only when asked) as the comparisons, their ratings on the `heads` criteria read from the
    table as their place on their criterion's scale (0 its lowest, 1 its highest); humans',
    AI labelers' or both as the run's `labelers` says."""
    rankings = Ranking.objects.counted(labelers).filter(dataset__in=datasets)
    if not include_gold:
        rankings = rankings.filter(prompt__is_gold=False)
    rows = (
        Rating.objects.filter(ranking__in=rankings, criterion__key__in=heads)
        .order_by("ranking_id")
        .values_list(
            "ranking_id",
            "ranking__prompt_id",
            "completion_id",
            "criterion__key",
            "value",
            "criterion__scale_min",
            "criterion__scale_max",
        )
        .iterator(chunk_size=RATING_CHUNK_SIZE)
    )
    for (_, prompt_id), ratings in groupby(rows, key=lambda row: row[:2]):
        values: dict[str, dict[str, float]] = {}
        for *_, completion_id, key, value, low, high in ratings:
            values.setdefault(str(completion_id), {})[key] = (value - low) / (high - low)
        yield prompt_id, values


def train_heads(
    *,
    heads: list[str],
    datasets: list[Dataset],
    data: TrainingData,
    train_count: int,
    fit_config: fitting.FitConfig,
    include_gold: bool,
    report: Report,
    labelers: str = Labelers.HUMAN,
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Fit a head per criterion in `heads` on the pairs its ratings order, with the training
    data's features and held-out prompts (those of the comparisons after `train_count`, which
    `put_held_out_last` put there); returns the weights and metrics of each, in `heads` order.

    Raises ValidationError naming the criterion when a head has no training pair."""
    import numpy as np

    from rewards import heads as head_fitting

    rated = _rated_rankings(datasets, include_gold, heads, labelers)
    pairs = head_fitting.pairs_from_ratings(rated, heads)
    held_out_prompts = np.zeros(len(data.prompt_ids), dtype=bool)
    held_out_prompts[data.prompts[train_count:]] = True
    all_weights: list[np.ndarray] = []
    all_metrics: list[dict[str, Any]] = []
    for index, criterion in enumerate(heads):
        rows = head_fitting.to_rows(pairs[criterion], data.completion_ids, data.prompt_ids)
        try:
            weights, metrics = head_fitting.fit_head(
                criterion,
                rows,
                data.features,
                held_out_prompts,
                fit_config,
                on_progress=partial(_head_progress, report, index, len(heads)),
            )
        except ValueError as error:
            raise ValidationError(
                f"Cannot train the {criterion} head: {error}; rate more or drop the head."
            ) from None
        all_weights.append(weights)
        all_metrics.append(metrics | {"output": index + 1})
    return all_weights, all_metrics


def _head_progress(report: Report, index: int, count: int, done: float) -> None:
    report("heads", (index + done) / count)
