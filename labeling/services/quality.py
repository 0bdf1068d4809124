"""Label quality: the dataset's quality report, excluding labelers, and gold prompts.

The statistics themselves are plain functions in `labeling.quality`; this module reads the
rankings they need, stores the result in the dataset's `QualityReport` row and performs the
admin actions that change what counts (excluding a labeler, marking a prompt gold).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, F, Max
from django.db.models.functions import TruncDate
from django.utils import timezone

from labeling import quality
from labeling.models import (
    Assignment,
    Completion,
    Dataset,
    Flag,
    Prompt,
    QualityReport,
    Ranking,
)
from labeling.permissions import is_service, pseudonym

logger = logging.getLogger(__name__)

Order = list[list[int]]

# A labeler whose median time per task is under this share of the labelers' median rushes.
RUSH_SHARE = 1 / 3
# A labeler who agrees with the others this much less than the dataset's rate disagrees.
DISAGREE_GAP = 0.15
# Below this many compared pairs (or gold pairs, or rankings), nobody is called out.
MIN_EVIDENCE = 20
# Pseudo-counts that pull a labeler with little evidence toward the dataset's rate.
PRIOR_PAIRS = 20
DISPUTED_SHOWN = 20
BOOTSTRAP = 1000
# Past this many prompts, the bootstrap resamples fixed random groups of prompts instead of
# single prompts: groups of independent prompts are independent too, and memory stays bounded.
BOOTSTRAP_GROUPS = 10_000


# --- The report ------------------------------------------------------------------------------


def report_is_stale(report: QualityReport | None, *, newest_ranking: int, now: datetime) -> bool:
    """Stale: never computed, invalidated, or newer rankings and older than the refresh period."""
    if report is None or report.computed_at is None or report.invalidated:
        return True
    age = now - report.computed_at
    return newest_ranking > report.ranking_cursor and age >= timedelta(
        seconds=settings.PREFLAB_QUALITY_REFRESH_SECONDS
    )


def request_refresh(*, dataset: Dataset, now: datetime | None = None) -> bool:
    """Queue one recomputation of the dataset's report; False if one was queued recently.

    The conditional update is the claim: of many dashboard views at once, one enqueues.
    """
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
    """Something that counts changed (an exclusion, a gold prompt): refresh at the next view."""
    QualityReport.objects.filter(dataset_id__in=dataset_ids).update(
        refresh_queued_at=None, generation=F("generation") + 1
    )


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
    started = time.monotonic()
    report, _ = QualityReport.objects.get_or_create(dataset=dataset)
    generation = report.generation
    cursor = (
        Ranking.objects.filter(dataset=dataset).aggregate(top=Max("pk"))["top"] or 0
    )  # read first: rankings committed while computing make the next view refresh again
    try:
        data = compute_report(dataset=dataset, cursor=cursor)
    except Exception as error:
        QualityReport.objects.filter(pk=report.pk).update(
            error=f"{type(error).__name__}: {error}", refresh_queued_at=timezone.now()
        )
        raise
    QualityReport.objects.filter(pk=report.pk).update(
        data=data,
        ranking_cursor=cursor,
        computed_at=timezone.now(),
        computed_generation=generation,
        seconds=time.monotonic() - started,
        error="",
        refresh_queued_at=None,
    )
    report.refresh_from_db()
    return report


def current_report(
    *, dataset: Dataset, now: datetime | None = None
) -> tuple[QualityReport | None, bool]:
    """The report to show and whether a fresher one is being computed.

    A stale report of a small dataset (up to `PREFLAB_QUALITY_INLINE_RANKINGS` rankings) is
    recomputed at once; a big one is shown as it is while a worker refreshes it.
    """
    now = now or timezone.now()
    report = QualityReport.objects.filter(dataset=dataset).first()
    newest = Ranking.objects.filter(dataset=dataset).aggregate(top=Max("pk"))["top"] or 0
    if not report_is_stale(report, newest_ranking=newest, now=now):
        return report, False
    small = Ranking.objects.filter(dataset=dataset).count() <= (
        settings.PREFLAB_QUALITY_INLINE_RANKINGS
    )
    if small:
        try:
            return refresh_report(dataset_id=dataset.pk), False
        except Exception:
            logger.exception("quality report of %s failed", dataset.slug)
            return QualityReport.objects.filter(dataset=dataset).first(), False
    request_refresh(dataset=dataset, now=now)
    return report, True


def compute_report(*, dataset: Dataset, cursor: int) -> dict[str, Any]:
    """Every statistic on the dashboard, as JSON, from the rankings with ids up to `cursor`."""
    prompts = {
        pk: (is_gold, gold_since)
        for pk, is_gold, gold_since in Prompt.objects.filter(dataset=dataset).values_list(
            "pk", "is_gold", "gold_since"
        )
    }
    gold_ids = _gold_orders_as_ids(dataset)
    labelers = {
        pk: (username, active)
        for pk, username, active in User.objects.filter(rankings__dataset=dataset)
        .distinct()
        .values_list("pk", "username", "is_active")
    }
    active = {pk for pk, (_, is_active) in labelers.items() if is_active}
    criteria = list(dataset.criteria)

    per_labeler: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"seconds": [], "flagged": 0, "completions": 0, "rankings": 0, "gold": [0.0, 0]}
    )
    flag_counts: Counter[str] = Counter()
    flagged_rankings = unacceptable = 0
    prompt_rows: list[tuple[int, list[int], list[tuple[int, Order]]]] = []
    excluded_rows: list[tuple[int, Order, list[tuple[int, Order]]]] = []
    rating_units: dict[str, list[list[float]]] = {c: [] for c in criteria}
    rating_clusters: dict[str, list[int]] = {c: [] for c in criteria}
    labeled_per_prompt: Counter[int] = Counter()

    for prompt_id, group in groupby(_rankings(dataset, cursor), key=lambda row: row[0]):
        rows = list(group)
        is_gold, gold_since = prompts[prompt_id]
        completion_ids = sorted(cid for tie in rows[0][2] for cid in tie)
        for _, labeler, order, _ratings, flags, all_unacceptable, seconds, created in rows:
            stats = per_labeler[labeler]
            stats["rankings"] += 1
            stats["seconds"].append(seconds)
            stats["completions"] += len(completion_ids)
            stats["flagged"] += sum(1 for names in flags.values() if names)
            flag_counts.update(name for names in flags.values() for name in names)
            flagged_rankings += bool(flags)
            unacceptable += all_unacceptable
            if is_gold and prompt_id in gold_ids and (gold_since is None or created >= gold_since):
                score, count = quality.gold_agreement(order, gold_ids[prompt_id])
                stats["gold"][0] += score
                stats["gold"][1] += count
        if is_gold:
            continue
        kept = [(labeler, order) for _, labeler, order, *_ in rows if labeler in active]
        labeled_per_prompt[prompt_id] = len(kept)
        prompt_rows.append((prompt_id, completion_ids, kept))
        for _, labeler, order, *_ in rows:
            if labeler not in active:
                excluded_rows.append((labeler, order, kept))
        index = len(prompt_rows) - 1
        for criterion in criteria:
            for cid in completion_ids:
                values = [
                    float(r[3][str(cid)][criterion])
                    for r in rows
                    if r[1] in active and criterion in r[3].get(str(cid), {})
                ]
                if values:
                    rating_units[criterion].append(values)
                    rating_clusters[criterion].append(index)

    agreement_rows = np.array(
        [quality.prompt_agreement(kept) for _, _, kept in prompt_rows] or np.zeros((0, 2)),
        dtype=float,
    ).reshape(-1, 2)
    compared = agreement_rows[agreement_rows[:, 1] > 0]  # prompts with two or more labelers
    pairwise = quality.bootstrap_ratio(compared[:, 0], compared[:, 1], bootstrap=BOOTSTRAP, seed=0)
    units, clusters = quality.ranking_units(
        (completion_ids, kept) for _, completion_ids, kept in prompt_rows
    )
    agreement = {
        "pairwise": pairwise,
        "alpha_rankings": quality.alpha(
            units, "ordinal", _grouped(clusters), bootstrap=BOOTSTRAP, seed=0
        ),
        "alpha_ratings": {
            criterion: quality.alpha(
                rating_units[criterion],
                "interval",
                _grouped(rating_clusters[criterion]),
                bootstrap=BOOTSTRAP,
                seed=0,
            )
            for criterion in criteria
        },
    }

    agreement_by_labeler = quality.labeler_agreement(kept for _, _, kept in prompt_rows)
    for labeler, order, kept in excluded_rows:
        # An excluded labeler is still measured, against the labelers who count.
        score, count = agreement_by_labeler.get(labeler, (0.0, 0))
        for other, other_order in kept:
            s, c = quality.prompt_agreement([(labeler, order), (other, other_order)])
            score, count = score + s, count + c
        agreement_by_labeler[labeler] = (score, count)

    regular = [pk for pk, (is_gold, _) in prompts.items() if not is_gold]
    done = sum(1 for pk in regular if labeled_per_prompt[pk] >= dataset.labels_per_prompt)
    started = sum(1 for pk in regular if 0 < labeled_per_prompt[pk] < dataset.labels_per_prompt)
    return {
        "cursor": cursor,
        "rankings": sum(stats["rankings"] for stats in per_labeler.values()),
        "progress": {
            "prompts": len(regular),
            "done": done,
            "partly": started,
            "not_started": len(regular) - done - started,
            "gold": len(prompts) - len(regular),
            "labels_per_prompt": dataset.labels_per_prompt,
        },
        "rate": _daily_rate(dataset, cursor),
        "agreement": agreement,
        "labelers": _labeler_table(per_labeler, agreement_by_labeler, labelers, pairwise["rate"]),
        "flags": {
            "by_flag": [
                {"flag": flag.value, "label": flag.label, "count": flag_counts[flag.value]}
                for flag in Flag
            ],
            "rankings_flagged": flagged_rankings,
            "all_unacceptable": unacceptable,
        },
        "disputed": _disputed(prompt_rows, agreement_rows),
        "unanimous": int(
            sum(
                1
                for (_, _, kept), (score, count) in zip(prompt_rows, agreement_rows, strict=True)
                if len(kept) >= 2 and count and score == count
            )
        ),
        "criteria": criteria,
    }


def _grouped(clusters: list[int]) -> list[int]:
    """Cluster ids mapped onto at most BOOTSTRAP_GROUPS random, fixed (seeded) groups."""
    if not clusters or max(clusters) < BOOTSTRAP_GROUPS:
        return clusters
    shuffled = np.random.default_rng(0).permutation(max(clusters) + 1)
    return (shuffled[np.asarray(clusters)] % BOOTSTRAP_GROUPS).tolist()


def _rankings(dataset: Dataset, cursor: int) -> Iterator[tuple[Any, ...]]:
    return (
        Ranking.objects.filter(dataset=dataset, pk__lte=cursor)
        .order_by("prompt_id", "pk")
        .values_list(
            "prompt_id",
            "labeler_id",
            "order",
            "ratings",
            "flags",
            "all_unacceptable",
            "seconds_spent",
            "created_at",
        )
        .iterator(chunk_size=5000)
    )


def _gold_orders_as_ids(dataset: Dataset) -> dict[int, Order]:
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


def _daily_rate(dataset: Dataset, cursor: int) -> list[dict[str, Any]]:
    """Rankings per day, oldest first, over the last 60 days up to the latest day with any;
    days without rankings are there with 0."""
    counts = {
        row["day"]: row["count"]
        for row in Ranking.objects.filter(dataset=dataset, pk__lte=cursor)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(count=Count("pk"))
        .order_by("-day")[:60]
    }
    if not counts:
        return []
    last = max(counts)
    first = max(min(counts), last - timedelta(days=59))
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return [{"day": day.isoformat(), "count": counts.get(day, 0)} for day in days]


def _labeler_table(
    per_labeler: dict[int, dict[str, Any]],
    agreement: dict[int, tuple[float, int]],
    labelers: dict[int, tuple[str, bool]],
    dataset_rate: float | None,
) -> list[dict[str, Any]]:
    """One row per labeler who ranked in the dataset, excluded labelers included.

    reliability: the labeler's agreement with the others, pulled toward the dataset's agreement
    rate by PRIOR_PAIRS pseudo-pairs, and their accuracy on gold, pulled toward the labelers'
    median gold accuracy, averaged (gold only when there is some). A labeler rushes when their
    median seconds per task is under a third of the labelers' median, disagrees when their
    agreement is DISAGREE_GAP below the dataset's rate, and fails gold when their gold accuracy
    is DISAGREE_GAP below the labelers' median, each once there is enough evidence.
    """
    medians = {
        pk: statistics.median(stats["seconds"])
        for pk, stats in per_labeler.items()
        if stats["seconds"]
    }
    typical = statistics.median(medians.values()) if medians else None
    prior = dataset_rate if dataset_rate is not None else 0.5
    gold_rates = [s["gold"][0] / s["gold"][1] for s in per_labeler.values() if s["gold"][1]]
    gold_prior = statistics.median(gold_rates) if len(gold_rates) >= 2 else prior
    rows = []
    for pk, stats in per_labeler.items():
        username, is_active = labelers.get(pk, (str(pk), False))
        agree_sum, agree_count = agreement.get(pk, (0.0, 0))
        gold_sum, gold_count = stats["gold"]
        parts = [(agree_sum + PRIOR_PAIRS * prior) / (agree_count + PRIOR_PAIRS)]
        if gold_count:
            parts.append((gold_sum + PRIOR_PAIRS * gold_prior) / (gold_count + PRIOR_PAIRS))
        rate = agree_sum / agree_count if agree_count else None
        warnings = []
        if typical and stats["rankings"] >= 5 and medians[pk] < RUSH_SHARE * typical:
            warnings.append("rushing")
        if (
            rate is not None
            and dataset_rate is not None
            and agree_count >= MIN_EVIDENCE
            and rate < dataset_rate - DISAGREE_GAP
        ):
            warnings.append("disagrees")
        if gold_count >= MIN_EVIDENCE and gold_sum / gold_count < gold_prior - DISAGREE_GAP:
            warnings.append("fails gold")
        rows.append(
            {
                "id": pk,
                "username": username,
                "pseudonym": pseudonym(pk),
                "active": is_active,
                "rankings": stats["rankings"],
                "median_seconds": medians.get(pk),
                "agreement": rate,
                "agreement_pairs": agree_count,
                "gold": gold_sum / gold_count if gold_count else None,
                "gold_pairs": gold_count,
                "flag_rate": stats["flagged"] / stats["completions"]
                if stats["completions"]
                else 0.0,
                "reliability": float(np.mean(parts)),
                "warnings": warnings,
            }
        )
    return rows


def _disputed(
    prompt_rows: list[tuple[int, list[int], list[tuple[int, Order]]]], agreement_rows: np.ndarray
) -> list[dict[str, Any]]:
    """The prompts whose labelers agreed least (any disagreement), with each pair's votes."""
    scored = [
        (score / count, index)
        for index, (score, count) in enumerate(agreement_rows)
        if count and score < count and len(prompt_rows[index][2]) >= 2
    ]
    scored.sort()
    chosen = scored[:DISPUTED_SHOWN]
    shown = {
        pk: (external_id, messages)
        for pk, external_id, messages in Prompt.objects.filter(
            pk__in=[prompt_rows[i][0] for _, i in chosen]
        ).values_list("pk", "external_id", "messages")
    }
    names = dict(Completion.objects.filter(prompt_id__in=shown).values_list("pk", "external_id"))
    rows = []
    for rate, index in chosen:
        prompt_id, completion_ids, kept = prompt_rows[index]
        external_id, messages = shown[prompt_id]
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        result = quality.consensus(completion_ids, [order for _, order in kept])
        rows.append(
            {
                "prompt": prompt_id,
                "external_id": external_id,
                "text": str(last_user)[:160],
                "agreement": rate,
                "labelers": len(kept),
                "pairs": [
                    pair | {"a_name": names[pair["a"]], "b_name": names[pair["b"]]}
                    for pair in result["pairs"]
                ],
            }
        )
    return rows


# --- Excluding a labeler ---------------------------------------------------------------------


def exclude_labeler(*, labeler: User, by: User, now: datetime | None = None) -> User:
    """Deactivate a labeler and leave their rankings out of exports, training and statistics.

    Nothing is deleted: the account can no longer sign in or use its tokens, its open leases go
    back to the pool, and its submitted labels stop holding label slots, so their prompts are
    served to other labelers again. `reinstate_labeler` undoes it.
    """
    if labeler.pk == by.pk:
        raise ValidationError({"labeler": "You cannot exclude your own account."})
    _check_may_change(labeler, by)
    now = now or timezone.now()
    with transaction.atomic():
        User.objects.filter(pk=labeler.pk).update(is_active=False)
        Assignment.objects.filter(labeler=labeler, status=Assignment.Status.LEASED).update(
            status=Assignment.Status.EXPIRED, expires_at=now
        )
        _log_change(by, labeler, "Excluded from labeling: rankings left out of exports.")
        invalidate_reports(_datasets_of(labeler))
    labeler.is_active = False
    return labeler


def reinstate_labeler(*, labeler: User, by: User) -> User:
    """Undo `exclude_labeler`: the account and its rankings count again."""
    _check_may_change(labeler, by)
    with transaction.atomic():
        User.objects.filter(pk=labeler.pk).update(is_active=True)
        _log_change(by, labeler, "Reinstated: rankings count again.")
        invalidate_reports(_datasets_of(labeler))
    labeler.is_active = True
    return labeler


def _check_may_change(labeler: User, by: User) -> None:
    """Excluding and reinstating take the permission to change users; staff, superuser and
    service accounts only a superuser may change this way."""
    if not by.has_perm("auth.change_user"):
        raise ValidationError({"labeler": "You need the permission to change users."})
    if (labeler.is_staff or labeler.is_superuser or is_service(labeler)) and not by.is_superuser:
        raise ValidationError(
            {"labeler": "Only a superuser may exclude or reinstate staff and service accounts."}
        )


def _datasets_of(labeler: User) -> list[int]:
    return list(
        Ranking.objects.filter(labeler=labeler).values_list("dataset_id", flat=True).distinct()
    )


def _log_change(by: User, labeler: User, message: str) -> None:
    from django.contrib.admin.models import CHANGE, LogEntry

    LogEntry.objects.log_actions(
        user_id=by.pk,
        queryset=User.objects.filter(pk=labeler.pk),
        action_flag=CHANGE,
        change_message=message,
        single_object=True,
    )


# --- Gold prompts ----------------------------------------------------------------------------


def check_gold_order(prompt: Prompt, order: Any) -> None:
    """Refuse, naming the problem, an order that is not tie groups naming every completion of
    the prompt exactly once by external id."""
    external_ids = list(prompt.completions.values_list("external_id", flat=True))
    if (
        not isinstance(order, list)
        or not order
        or any(not isinstance(group, list) or not group for group in order)
        or any(not isinstance(name, str) for group in order for name in group)
    ):
        raise ValidationError(
            {"gold_order": 'Give the order as non-empty tie groups: [["c2"], ["c1", "c3"]].'}
        )
    named = [name for group in order for name in group]
    unknown = sorted(set(named) - set(external_ids))
    if unknown:
        raise ValidationError(
            {
                "gold_order": f"{', '.join(unknown)} not completions of this prompt; "
                f"use {', '.join(external_ids)}."
            }
        )
    if len(named) != len(set(named)) or set(named) != set(external_ids):
        raise ValidationError(
            {"gold_order": f"Name every completion exactly once: {', '.join(external_ids)}."}
        )


def set_gold(*, prompt: Prompt, order: list[list[str]] | None) -> Prompt:
    """Make a prompt gold with its expected order (tie groups of completion external ids), or
    with `order=None` a regular prompt again.

    Gold prompts are served to every labeler at the dataset's gold rate, scored against the
    order and left out of exports and training; rankings it already has become gold rankings,
    and only rankings made from now on are scored.
    """
    if order is not None:
        check_gold_order(prompt, order)
    with transaction.atomic():
        changed = order != prompt.gold_order or prompt.is_gold != (order is not None)
        prompt.is_gold = order is not None
        prompt.gold_order = order
        if changed:
            # Rankings made before it was gold, e.g. those that gave a promoted prompt its
            # order, are not scored against it.
            prompt.gold_since = timezone.now() if order is not None else None
        prompt.save(update_fields=["is_gold", "gold_order", "gold_since"])
        invalidate_reports([prompt.dataset_id])
    return prompt


def unanimous_order(prompt: Prompt) -> list[list[str]] | None:
    """The order every counted labeler gave the prompt, in external ids, if there were two or
    more of them and they all agreed exactly; otherwise None."""
    orders = list(Ranking.objects.counted().filter(prompt=prompt).values_list("order", flat=True))
    if len(orders) < 2 or any(order != orders[0] for order in orders):
        return None
    names = dict(prompt.completions.values_list("pk", "external_id"))
    return [sorted(names[cid] for cid in group) for group in orders[0]]


def promote_to_gold(*, prompt: Prompt) -> Prompt:
    """Make a prompt whose labelers agreed unanimously gold, with their order."""
    order = unanimous_order(prompt)
    if order is None:
        raise ValidationError(
            {
                "gold_order": "Only a prompt that two or more labelers ranked identically can be "
                "promoted; give its order by hand instead."
            }
        )
    return set_gold(prompt=prompt, order=order)
