"""Keeping `PromptStats` current: the quality report's worker recomputes a dataset's rows after
computing its report (`quality_report.refresh_report`), in batches of BATCH prompts, each batch
a few queries and one upsert, so a refresh is linear in the prompts it touches.

Incremental: when the report was not invalidated (no exclusion, gold change...) and the active
reward model is the one the rows were scored by, only the prompts with rankings newer than the
report's previous cursor are recomputed. An adjudication marks its own row (`adjudication`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils import timezone

from labeling import orders, review
from labeling.models import Adjudication, Completion, Dataset, Prompt, PromptStats, Ranking

if TYPE_CHECKING:
    from rewards.models import RewardModel

BATCH = 1000
UPDATED_FIELDS = [
    "dataset",
    "labels",
    "agreement",
    "consensus",
    "min_margin",
    "flags",
    "safety_flags",
    "is_gold",
    "adjudicated",
    "model_version",
    "model_scores",
    "model_contradiction",
    "need",
    "computed_at",
]


def active_reward_model(dataset: Dataset) -> RewardModel | None:
    from rewards.models import RewardModel

    return RewardModel.objects.filter(datasets=dataset, is_active=True).order_by("-version").first()


def refresh_prompt_stats(
    *, dataset: Dataset, cursor: int, since: int = 0, now: datetime | None = None
) -> int:
    """Recompute the stats rows of the dataset's prompts from the counted rankings with ids up
    to `cursor`: every prompt when `since` is 0, else those with a ranking after `since` (all
    of them anyway when the active reward model changed). Returns how many rows were written."""
    now = now or timezone.now()
    model = active_reward_model(dataset)
    version = model.version if model else None
    rows = PromptStats.objects.filter(dataset=dataset)
    scored_by_other = (
        rows.exclude(model_version=version) if version else rows.filter(model_version__isnull=False)
    )
    if since and scored_by_other.exists():
        since = 0
    scorer = Scorer(model) if model else None
    written = 0
    for chunk in _prompt_chunks(dataset, cursor, since):
        written += _refresh_chunk(chunk, dataset, cursor, scorer, now)
    return written


def _prompt_chunks(dataset: Dataset, cursor: int, since: int) -> Iterator[list[int]]:
    if not since:
        last = 0
        while chunk := list(
            Prompt.objects.filter(dataset=dataset, pk__gt=last)
            .order_by("pk")
            .values_list("pk", flat=True)[:BATCH]
        ):
            last = chunk[-1]
            yield chunk
        return
    touched = (
        Ranking.objects.filter(dataset=dataset, pk__gt=since, pk__lte=cursor)
        .order_by("prompt_id")
        .values_list("prompt_id", flat=True)
        .distinct()
        .iterator(chunk_size=BATCH)
    )
    while chunk := list(islice(touched, BATCH)):
        yield chunk
    # Prompts imported since the last full refresh have no row yet.
    missing = (
        Prompt.objects.filter(dataset=dataset, stats__isnull=True)
        .order_by("pk")
        .values_list("pk", flat=True)
        .iterator(chunk_size=BATCH)
    )
    while chunk := list(islice(missing, BATCH)):
        yield chunk


def _refresh_chunk(
    prompt_ids: list[int], dataset: Dataset, cursor: int, scorer: Scorer | None, now: datetime
) -> int:
    ranked: dict[int, list[tuple[orders.Order, dict[str, list[str]]]]] = defaultdict(list)
    for prompt_id, order, flags in (
        Ranking.objects.counted()
        .filter(prompt_id__in=prompt_ids, pk__lte=cursor)
        .order_by("prompt_id", "pk")
        .values_list("prompt_id", "order", "flags")
    ):
        ranked[prompt_id].append((order, flags))
    gold = dict(Prompt.objects.filter(pk__in=prompt_ids).values_list("pk", "is_gold"))
    adjudicated = set(
        Adjudication.objects.filter(prompt_id__in=prompt_ids).values_list("prompt_id", flat=True)
    )
    scores = scorer.scores(list(ranked)) if scorer else {}
    stats = []
    for prompt_id in prompt_ids:
        rankings = ranked.get(prompt_id, [])
        completion_ids = orders.members(rankings[0][0]) if rankings else []
        figures = review.prompt_figures(
            completion_ids, [order for order, _ in rankings], [flags for _, flags in rankings]
        )
        prompt_scores = scores.get(prompt_id, {})
        contradiction = review.model_contradiction(figures["consensus"], prompt_scores)
        stats.append(
            PromptStats(
                prompt_id=prompt_id,
                dataset=dataset,
                labels=figures["labels"],
                agreement=figures["agreement"],
                consensus=figures["consensus"],
                min_margin=figures["min_margin"],
                flags=figures["flags"],
                safety_flags=figures["safety_flags"],
                is_gold=gold.get(prompt_id, False),
                adjudicated=prompt_id in adjudicated,
                model_version=scorer.version if scorer else None,
                model_scores={str(pk): score for pk, score in prompt_scores.items()},
                model_contradiction=contradiction,
                need=review.need_score(
                    agreement=figures["agreement"],
                    min_margin=figures["min_margin"],
                    safety_flags=figures["safety_flags"],
                    model_contradiction=contradiction,
                ),
                computed_at=now,
            )
        )
    PromptStats.objects.bulk_create(
        stats, update_conflicts=True, unique_fields=["prompt"], update_fields=UPDATED_FIELDS
    )
    return len(stats)


class Scorer:
    """The active reward model's rewards of completions, loaded once per refresh; the ML stack
    is imported only when a dataset has a model."""

    def __init__(self, model: RewardModel) -> None:
        from rewards import artifacts, features

        self.version = model.version
        self.estimator = artifacts.load_model(Path(settings.MEDIA_ROOT) / model.directory)
        self.config = features.FeatureConfig.from_dict(model.card["config"]["features"])
        self.heads: list[str] = list(model.card.get("heads", []))

    def scores(self, prompt_ids: list[int]) -> dict[int, dict[int, float]]:
        """prompt id -> {completion id: reward} for these prompts' completions."""
        return {
            prompt_id: {pk: rewards[0] for pk, rewards in by_completion.items()}
            for prompt_id, by_completion in self.head_scores(prompt_ids).items()
        }

    def head_scores(self, prompt_ids: list[int]) -> dict[int, dict[int, list[float]]]:
        """prompt id -> {completion id: [overall reward, then one per head in `self.heads`]}."""
        from rewards import artifacts

        if not prompt_ids:
            return {}
        messages = dict(Prompt.objects.filter(pk__in=prompt_ids).values_list("pk", "messages"))
        completions = list(
            Completion.objects.filter(prompt_id__in=prompt_ids).values_list(
                "pk", "prompt_id", "text"
            )
        )
        items: list[tuple[Any, str]] = [(messages[p], text) for _, p, text in completions]
        rewards = artifacts.score_heads(self.estimator, items, self.config)
        result: dict[int, dict[int, list[float]]] = defaultdict(dict)
        for (pk, prompt_id, _), row in zip(completions, rewards, strict=True):
            result[prompt_id][pk] = [round(float(value), 6) for value in row]
        return dict(result)
