"""A dataset's quality report: when it is stale, reading the rankings it needs, storing it.

The figures are computed by `labeling.report` from plain rows; the dashboard and the API read
the stored `QualityReport` row. A refresh is claimed by a conditional update so that of many
dashboard views at once one enqueues, and a failure is stored on the row (`jobs.record_failure`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import groupby, islice
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Count, F, Max, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from labeling import orders
from labeling.errors import failure_text
from labeling.models import (
    Adjudication,
    AILabeler,
    Completion,
    Dataset,
    Prompt,
    QualityReport,
    Ranking,
    Rating,
)
from labeling.services import jobs, prompt_stats, quality_report_ai
from labeling.services.leaderboard import invalidate_leaderboards

if TYPE_CHECKING:  # the figures need numpy: imported by what computes them, not with this module
    from labeling import report

logger = logging.getLogger(__name__)

RATE_DAYS = 60
RATINGS_CHUNK = 5000


def report_is_stale(report: QualityReport | None, *, newest_ranking: int, now: datetime) -> bool:
    """Stale: never computed, invalidated, or newer rankings and older than the refresh period."""
    if report is None or report.computed_at is None or report.invalidated:
        return True
    age = now - report.computed_at
    return newest_ranking > report.ranking_cursor and age >= timedelta(
        seconds=settings.PREFLAB_QUALITY_REFRESH_SECONDS
    )


def request_refresh(*, dataset: Dataset, now: datetime | None = None) -> bool:
    """Queue one recomputation of the dataset's report; False if one was queued recently."""
    from labeling import tasks

    now = now or timezone.now()
    QualityReport.objects.get_or_create(dataset=dataset)
    recently = now - timedelta(seconds=settings.PREFLAB_QUALITY_REFRESH_SECONDS)
    claimed = (
        QualityReport.objects.filter(dataset=dataset)
        .exclude(refresh_queued_at__gt=recently)
        .update(refresh_queued_at=now)
    )
    if claimed:
        transaction.on_commit(lambda: tasks.refresh_quality_report.delay(dataset.pk))
    return bool(claimed)


def invalidate_reports(dataset_ids: list[int]) -> None:
    """Something that counts changed (an exclusion, a gold prompt): the report, and the model
    leaderboards of these datasets, are stale now, and a refresh may be queued at once."""
    QualityReport.objects.filter(dataset_id__in=dataset_ids).update(
        refresh_queued_at=None, generation=F("generation") + 1
    )
    invalidate_leaderboards(dataset_ids)


def refresh_report(*, dataset_id: int) -> QualityReport | None:
    """Compute and store a dataset's report; a deleted dataset returns None quietly.

    A failure is stored on the report (the dashboard shows it, with the last good statistics)
    and raised; the next try waits for the refresh period, so a persistent error is not retried
    back to back. An invalidation that arrives while computing keeps the report invalidated.
    """
    dataset = Dataset.objects.filter(pk=dataset_id).first()
    if dataset is None:
        logger.info("quality report: dataset %s is gone", dataset_id)
        return None
    stored, _ = QualityReport.objects.get_or_create(dataset=dataset)
    generation = stored.generation
    # Stats rows are recomputed in full after an invalidation, else only where rankings came.
    stats_since = 0 if stored.invalidated else stored.ranking_cursor
    # Read first: rankings committed while computing make the next view refresh again.
    cursor = Ranking.objects.filter(dataset=dataset).aggregate(top=Max("pk"))["top"] or 0

    def compute() -> report.ReportData:
        data = compute_report(dataset=dataset, cursor=cursor)
        prompt_stats.refresh_prompt_stats(dataset=dataset, cursor=cursor, since=stats_since)
        return data

    rows = QualityReport.objects.filter(pk=stored.pk)
    jobs.store_computed(rows, compute, cursor=cursor, generation=generation)
    stored.refresh_from_db()
    return stored


def current_report(
    *, dataset: Dataset, now: datetime | None = None
) -> tuple[QualityReport | None, bool]:
    """The report to show and whether a fresher one is on its way. Writes nothing.

    The worker's periodic `refresh_stale_reports` (or *Recompute now*) stores fresh reports.
    Until it has, a stale report of a small dataset (up to `PREFLAB_QUALITY_INLINE_RANKINGS`
    rankings) is computed at once and shown, not stored; a big one is shown as it is.
    """
    now = now or timezone.now()
    stored = QualityReport.objects.filter(dataset=dataset).first()
    newest = Ranking.objects.filter(dataset=dataset).aggregate(top=Max("pk"))["top"] or 0
    if not report_is_stale(stored, newest_ranking=newest, now=now):
        return stored, False
    small = Ranking.objects.filter(dataset=dataset).count() <= (
        settings.PREFLAB_QUALITY_INLINE_RANKINGS
    )
    if not small:
        return stored, True
    shown = stored or QualityReport(dataset=dataset)
    try:
        shown.data = compute_report(dataset=dataset, cursor=newest)
    except Exception as error:
        logger.exception("quality report of %s failed", dataset.slug)
        shown.error = failure_text(error)
        return shown, False
    shown.ranking_cursor, shown.computed_at, shown.error = newest, now, ""
    shown.computed_generation = shown.generation
    return shown, False


def refresh_stale_reports(*, now: datetime | None = None) -> int:
    """Queue a refresh of every stale report of a dataset with rankings (the periodic job), so
    pages read stored reports; returns how many were queued."""
    now = now or timezone.now()
    ranked = Ranking.objects.order_by().values("dataset").annotate(newest=Max("pk"))
    reports = {stored.dataset_id: stored for stored in QualityReport.objects.defer("data")}
    queued = 0
    for row in ranked:
        stored = reports.get(row["dataset"])
        if report_is_stale(stored, newest_ranking=row["newest"], now=now):
            queued += request_refresh(dataset=Dataset(pk=row["dataset"]), now=now)
    return queued


def compute_report(*, dataset: Dataset, cursor: int) -> report.ReportData:
    """Every statistic on the dashboard, as JSON, from the rankings with ids up to `cursor`."""
    builder, prompts, counted = _build_report(dataset, cursor)
    ranked_by = User.objects.filter(rankings__dataset=dataset).distinct()
    labelers = {
        pk: (username, pk in counted) for pk, username in ranked_by.values_list("pk", "username")
    }
    gold = sum(1 for facts in prompts.values() if facts.is_gold)
    data = builder.figures(
        cursor=cursor,
        rate=_daily_rate(dataset, cursor),
        labelers=labelers,
        regular_prompts=len(prompts) - gold,
        gold_prompts=gold,
        labels_per_prompt=dataset.labels_per_prompt,
    )
    _describe_disputed(data["disputed"])
    data["review"] = Adjudication.objects.filter(dataset=dataset).overturn_figures()  # type: ignore[typeddict-item]
    data["ai_labelers"] = quality_report_ai.ai_labeler_figures(dataset=dataset, cursor=cursor)
    return data


def compute_reliabilities(
    *, dataset: Dataset, cursor: int
) -> tuple[dict[int, report.Reliability], float | None]:
    """Each labeler's reliability as the report computes it (its labeler table), from the
    rankings with ids up to `cursor`, and the dataset's agreement rate; without the report's
    other figures. For training, which must not rely on a stored report that may be stale."""
    builder, _, _ = _build_report(dataset, cursor)
    return builder.reliabilities()


def _build_report(
    dataset: Dataset, cursor: int
) -> tuple[report.ReportBuilder, dict[int, report.PromptFacts], set[int]]:
    """The report's builder fed the rankings up to `cursor`, the prompts' facts, and the
    labelers who count."""
    from labeling import report

    gold_orders = _gold_orders_as_ids(dataset)
    prompts = {
        pk: report.PromptFacts(is_gold, gold_since, gold_orders.get(pk) if is_gold else None)
        for pk, is_gold, gold_since in Prompt.objects.filter(dataset=dataset).values_list(
            "pk", "is_gold", "gold_since"
        )
    }
    counted_rankings = Ranking.objects.filter(dataset=dataset).counted()
    counted = set(counted_rankings.values_list("labeler_id", flat=True).distinct())
    builder = report.ReportBuilder(criteria=dataset.criterion_keys, counted_labelers=counted)
    for prompt_id, group in groupby(_rankings(dataset, cursor), key=lambda row: row.prompt_id):
        builder.add_prompt(prompts[prompt_id], list(group))
    return builder, prompts, counted


def human_rankings(dataset: Dataset, cursor: int) -> QuerySet[Ranking]:
    """The dataset's rankings up to `cursor` by humans, excluded ones too: the report's figures
    other than its AI labelers' section (`quality_report_ai`) leave AI labelers out."""
    return Ranking.objects.filter(dataset=dataset, pk__lte=cursor).exclude(
        labeler__in=AILabeler.objects.values("user")
    )


def _rankings(dataset: Dataset, cursor: int) -> Iterator[report.RankingRow]:
    """The dataset's human rankings up to `cursor` by prompt, with their ratings (one query per
    RATINGS_CHUNK rankings)."""
    from labeling import report

    rows = (
        human_rankings(dataset, cursor)
        .order_by("prompt_id", "pk")
        .values_list(
            "pk",
            "prompt_id",
            "labeler_id",
            "order",
            "flags",
            "all_unacceptable",
            "seconds_spent",
            "created_at",
        )
        .iterator(chunk_size=RATINGS_CHUNK)
    )
    while chunk := list(islice(rows, RATINGS_CHUNK)):
        ratings = Rating.objects.of_rankings(row[0] for row in chunk)
        for pk, prompt_id, labeler, order, *rest in chunk:
            yield report.RankingRow(prompt_id, labeler, order, ratings.get(pk, {}), *rest)


def _gold_orders_as_ids(dataset: Dataset) -> dict[int, orders.Order]:
    """Gold orders name completions by external id; the statistics compare database ids."""
    gold = dict(
        Prompt.objects.filter(dataset=dataset, is_gold=True).values_list("pk", "gold_order")
    )
    ids: dict[int, dict[str, int]] = defaultdict(dict)
    for prompt_id, pk, external_id in Completion.objects.filter(prompt_id__in=gold).values_list(
        "prompt_id", "pk", "external_id"
    ):
        ids[prompt_id][external_id] = pk
    return {
        prompt_id: [[ids[prompt_id][e] for e in group if e in ids[prompt_id]] for group in order]
        for prompt_id, order in gold.items()
        if order
    }


def _daily_rate(dataset: Dataset, cursor: int) -> list[report.DailyCount]:
    """Human rankings per day, oldest first, over the last RATE_DAYS days up to the latest day
    with any; days without rankings are there with 0."""
    counts = {
        row["day"]: row["count"]
        for row in human_rankings(dataset, cursor)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(count=Count("pk"))
        .order_by("-day")[:RATE_DAYS]
    }
    if not counts:
        return []
    last = max(counts)
    first = max(min(counts), last - timedelta(days=RATE_DAYS - 1))
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return [{"day": day.isoformat(), "count": counts.get(day, 0)} for day in days]


def _describe_disputed(disputed: list[report.DisputedPrompt]) -> None:
    """Add each disputed prompt's external id and text, and its completions' external ids."""
    shown = {
        pk: (external_id, messages)
        for pk, external_id, messages in Prompt.objects.filter(
            pk__in=[row["prompt"] for row in disputed]
        ).values_list("pk", "external_id", "messages")
    }
    names = dict(Completion.objects.filter(prompt_id__in=shown).values_list("pk", "external_id"))
    for row in disputed:
        external_id, messages = shown[row["prompt"]]
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        row["external_id"] = external_id
        row["text"] = str(last_user)[:160]
        row["pairs"] = [
            pair | {"a_name": names[pair["a"]], "b_name": names[pair["b"]]} for pair in row["pairs"]
        ]
