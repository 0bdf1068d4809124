"""Per-criterion heads of a training run: the `heads` option checked against the datasets, the
labelers' ratings read from the database and a head fitted per criterion (`rewards.heads`)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError

from labeling.models import Criterion, Dataset, Ranking

if TYPE_CHECKING:  # the ML stack is imported by what trains, not with this module
    import numpy as np

    from rewards import fitting
    from rewards.services.training_data import Report, TrainingData

RANKING_CHUNK_SIZE = 5_000


def heads_option(value: object) -> list[str]:
    """The run option `heads`: a list of distinct criteria (helpful, honest, harmless), in the
    canonical order; empty (the default) trains the overall head only."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(
            {"heads": f"Must be a list of criteria, some of {', '.join(Criterion.values)}."}
        )
    unknown = sorted(set(value) - set(Criterion.values))
    if unknown:
        raise ValidationError(
            {"heads": f"Unknown criteria {unknown}; use some of {', '.join(Criterion.values)}."}
        )
    if len(set(value)) != len(value):
        raise ValidationError({"heads": "Name each criterion once."})
    return [c for c in Criterion.values if c in value]


def check_heads(heads: list[str], datasets: list[Dataset]) -> None:
    """A head needs ratings on its criterion: each must be rated in at least one dataset."""
    rated = {criterion for dataset in datasets for criterion in dataset.rated_criteria}
    missing = [criterion for criterion in heads if criterion not in rated]
    if missing:
        raise ValidationError(
            {
                "heads": (
                    f"No chosen dataset asks labelers to rate {', '.join(missing)}; "
                    f"rated here: {', '.join(sorted(rated)) or 'nothing'}."
                )
            }
        )


def _rated_rankings(
    datasets: list[Dataset], include_gold: bool
) -> Iterator[tuple[int, dict[str, dict[str, int]]]]:
    """(prompt id, ratings) of the counted rankings that have ratings, in primary key chunks:
    the same labelers (not excluded) and prompts (gold only when asked) as the comparisons."""
    rankings = Ranking.objects.counted().filter(dataset__in=datasets).exclude(ratings={})
    if not include_gold:
        rankings = rankings.filter(prompt__is_gold=False)
    last = 0
    while chunk := list(
        rankings.filter(pk__gt=last)
        .order_by("pk")
        .values_list("pk", "prompt_id", "ratings")[:RANKING_CHUNK_SIZE]
    ):
        for _, prompt_id, ratings in chunk:
            yield prompt_id, ratings
        last = chunk[-1][0]


def train_heads(
    *,
    heads: list[str],
    datasets: list[Dataset],
    data: TrainingData,
    train_count: int,
    fit_config: fitting.FitConfig,
    include_gold: bool,
    report: Report,
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Fit a head per criterion in `heads` on the pairs its ratings order, with the training
    data's features and held-out prompts (those of the comparisons after `train_count`, which
    `put_held_out_last` put there); returns the weights and metrics of each, in `heads` order.

    Raises ValidationError naming the criterion when a head has no training pair."""
    import numpy as np

    from rewards import heads as head_fitting

    pairs = head_fitting.pairs_from_ratings(_rated_rankings(datasets, include_gold), heads)
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
