"""The model leaderboard: counting battles between source models in SQL, fitting them.

A battle is one counted comparison (chosen beat rejected) or one tied pair of a counted ranking
(tie groups of `Ranking.order`; ties store no comparison). Each is between the source models
(`Completion.model_name`) of its two completions. Left out, and counted as such:
- battles with a completion of no model name (`unnamed`),
- battles between two completions of the same model (`same_model`): they say nothing about
  which model is better.
Also left out: excluded labelers (`labeler_counts`, like every statistic) and gold prompts. A
gold prompt is shown to every labeler at the dataset's gold rate, so its few pairs would weigh
like hundreds of regular prompts, and gold items are picked for being clear-cut.

Two GROUP BY queries give the counts (at most models^2 rows each, however many comparisons);
`labeling.leaderboard` fits them. The numpy and scipy imports stay inside `compute_leaderboard`
so that importing this module (the URLconf does, through the views) loads none of them.

At a million comparisons counting takes about 1 s and the bootstrap 1 s (bench/
leaderboard_bench.py), too slow for a request: a worker computes each leaderboard (datasets and
rounds) into a `ModelLeaderboard` row that the page and the API read, like the quality report.
Small datasets (up to PREFLAB_LEADERBOARD_INLINE_RANKINGS rankings) are computed on the spot.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypedDict

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Count, F, Max, QuerySet
from django.utils import timezone

from labeling.errors import failure_text
from labeling.models import Comparison, Completion, Dataset, ModelLeaderboard, Ranking
from labeling.services import jobs

if TYPE_CHECKING:
    from labeling.leaderboard import Standings

logger = logging.getLogger(__name__)

SEED = 0


class LeftOut(TypedDict):
    unnamed: int
    same_model: int


class LeaderboardData(TypedDict):
    datasets: list[str]
    standings: Standings
    left_out: LeftOut


class Battles(TypedDict):
    names: list[str]
    wins: list[list[int]]
    ties: list[list[int]]
    left_out: LeftOut


def parse_datasets(
    *, slug: str, extra: str = "", among: QuerySet[Dataset] | None = None
) -> list[Dataset]:
    """The dataset of the address and those of a `datasets=a,b` parameter, in that order, from
    `among` (the datasets the caller may read; all by default).

    Raises ValidationError (field `datasets`) naming unknown slugs (and those outside `among`:
    another workspace's dataset is unknown to the caller), or when there are more than
    PREFLAB_LEADERBOARD_MAX_DATASETS. The address's own dataset must exist (the caller's 404).
    """
    limit = settings.PREFLAB_LEADERBOARD_MAX_DATASETS
    if len(extra) > 110 * limit:  # a slug is at most 100 characters
        raise ValidationError({"datasets": f"At most {limit} datasets, comma-separated."})
    wanted = list(dict.fromkeys([slug, *(s.strip() for s in extra.split(",") if s.strip())]))
    if len(wanted) > limit:
        raise ValidationError({"datasets": f"At most {limit} datasets at once ({len(wanted)})."})
    datasets = among if among is not None else Dataset.objects.all()
    found = {dataset.slug: dataset for dataset in datasets.filter(slug__in=wanted)}
    unknown = [s for s in wanted if s not in found]
    if unknown:
        raise ValidationError({"datasets": f"No dataset {', '.join(map(repr, unknown))}."})
    return [found[s] for s in wanted]


def counted_rankings(dataset_ids: Sequence[int]) -> QuerySet[Ranking]:
    """The rankings a leaderboard counts: of counted labelers, on regular prompts."""
    return Ranking.objects.counted().filter(dataset_id__in=dataset_ids, prompt__is_gold=False)


def comparison_counts(dataset_ids: Sequence[int]) -> list[tuple[str, str, int]]:
    """(model of chosen, model of rejected, comparisons), one row per pair of model names."""
    rows = (
        Comparison.objects.counted()
        .filter(dataset_id__in=dataset_ids, prompt__is_gold=False)
        .values_list("chosen__model_name", "rejected__model_name")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return list(rows)  # type: ignore[arg-type]


# The tied pairs of counted rankings, per pair of model names: each tie group of a ranking's
# order is unnested twice, and a pair is one (smaller id, larger id) of the same group. The
# rankings are chosen by the ORM's own query (`counted_rankings`), so who counts is defined once.
TIES_SQL = {
    "postgresql": """
        SELECT one.model_name, other.model_name, COUNT(*)
        FROM {ranking} r
        CROSS JOIN LATERAL jsonb_array_elements(r."order") AS tie_group(members)
        CROSS JOIN LATERAL jsonb_array_elements_text(tie_group.members) AS one_side(id)
        CROSS JOIN LATERAL jsonb_array_elements_text(tie_group.members) AS other_side(id)
        JOIN {completion} one ON one.id = one_side.id::bigint
        JOIN {completion} other ON other.id = other_side.id::bigint
        WHERE r.id IN ({rankings}) AND jsonb_array_length(tie_group.members) > 1
          AND one_side.id::bigint < other_side.id::bigint
        GROUP BY one.model_name, other.model_name
    """,
    "sqlite": """
        SELECT one.model_name, other.model_name, COUNT(*)
        FROM {ranking} r
        JOIN json_each(r."order") AS tie_group
        JOIN json_each(tie_group.value) AS one_side
        JOIN json_each(tie_group.value) AS other_side
        JOIN {completion} one ON one.id = one_side.value
        JOIN {completion} other ON other.id = other_side.value
        WHERE r.id IN ({rankings}) AND json_array_length(tie_group.value) > 1
          AND one_side.value < other_side.value
        GROUP BY one.model_name, other.model_name
    """,
}


def tie_counts(dataset_ids: Sequence[int]) -> list[tuple[str, str, int]]:
    """(model, model, tied pairs), one row per pair of model names, in either order."""
    rankings, params = (
        counted_rankings(dataset_ids).values("pk").query.sql_with_params()  # type: ignore[attr-defined]
    )
    sql = TIES_SQL[connection.vendor].format(
        ranking=Ranking._meta.db_table, completion=Completion._meta.db_table, rankings=rankings
    )
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The planner guesses 100 elements per unnested array, so it expects billions of
            # rows and JIT-compiles for half a second a query that runs in milliseconds.
            cursor.execute("SET LOCAL jit = off")
        cursor.execute(sql, params)
        return [(one, other, n) for one, other, n in cursor.fetchall()]


def count_battles(*, dataset_ids: Sequence[int]) -> Battles:
    """The win and tie matrices over the named models of the datasets, and what was left out.
    Two queries, whatever the number of comparisons."""
    wins: dict[tuple[str, str], int] = defaultdict(int)
    ties: dict[tuple[str, str], int] = defaultdict(int)
    left_out: LeftOut = {"unnamed": 0, "same_model": 0}
    for counts, outcome in (
        (comparison_counts(dataset_ids), wins),
        (tie_counts(dataset_ids), ties),
    ):
        for first, second, n in counts:
            if not first or not second:
                left_out["unnamed"] += n
            elif first == second:
                left_out["same_model"] += n
            else:
                outcome[first, second] += n
    names = sorted({name for pair in [*wins, *ties] for name in pair})
    index = {name: i for i, name in enumerate(names)}
    win_matrix = [[0] * len(names) for _ in names]
    tie_matrix = [[0] * len(names) for _ in names]
    for (winner, loser), n in wins.items():
        win_matrix[index[winner]][index[loser]] += n
    for (first, second), n in ties.items():
        tie_matrix[index[first]][index[second]] += n
        tie_matrix[index[second]][index[first]] += n
    return {"names": names, "wins": win_matrix, "ties": tie_matrix, "left_out": left_out}


def compute_leaderboard(*, datasets: Sequence[Dataset], rounds: int) -> LeaderboardData:
    """The leaderboard of the datasets' source models with `rounds` bootstrap rounds (seeded:
    the same battles give the same intervals)."""
    from labeling import leaderboard  # numpy and scipy: loaded by the pages that fit

    battles = count_battles(dataset_ids=[dataset.pk for dataset in datasets])
    standings = leaderboard.standings(
        battles["names"], battles["wins"], battles["ties"], rounds=rounds, seed=SEED
    )
    return {
        "datasets": [dataset.slug for dataset in datasets],
        "standings": standings,
        "left_out": battles["left_out"],
    }


def spreadsheet_safe(text: str) -> str:
    """A model name (from an imported file) that a spreadsheet will not run as a formula."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def as_csv_rows(data: LeaderboardData) -> list[list[str | int | float]]:
    """The table as CSV rows, a header first: one row per model, best first."""
    header: list[str | int | float] = [
        "rank",
        "model",
        "score",
        "low",
        "high",
        "comparisons",
        "wins",
        "losses",
        "ties",
    ]
    rows: list[list[str | int | float]] = [header]
    for row in data["standings"]["models"]:
        rows.append(
            [
                row["rank"],
                spreadsheet_safe(row["model"]),
                round(row["score"], 1),
                round(row["low"], 1),
                round(row["high"], 1),
                row["comparisons"],
                row["wins"],
                row["losses"],
                row["ties"],
            ]
        )
    return rows


# --- Stored leaderboards -----------------------------------------------------------------------


def leaderboard_key(datasets: Sequence[Dataset], rounds: int) -> str:
    """The stored row's key: the same datasets in any order and rounds share one row."""
    return f"{','.join(str(pk) for pk in sorted(d.pk for d in datasets))}:{rounds}"


def newest_ranking(dataset_ids: Sequence[int]) -> int:
    top = Ranking.objects.filter(dataset_id__in=dataset_ids).aggregate(top=Max("pk"))["top"]
    return top or 0


def leaderboard_is_stale(
    stored: ModelLeaderboard | None, *, newest_ranking: int, now: datetime
) -> bool:
    """Stale: never computed, invalidated, or newer rankings and older than the refresh period."""
    if stored is None or stored.computed_at is None or stored.invalidated:
        return True
    age = now - stored.computed_at
    return newest_ranking > stored.ranking_cursor and age >= timedelta(
        seconds=settings.PREFLAB_QUALITY_REFRESH_SECONDS
    )


def current_leaderboard(
    *, datasets: Sequence[Dataset], rounds: int, now: datetime | None = None
) -> tuple[ModelLeaderboard | None, bool]:
    """The leaderboard to show and whether a fresher one is on its way.

    A fresh stored one is shown. A stale one of few rankings (PREFLAB_LEADERBOARD_INLINE_RANKINGS
    at most) is computed at once and shown, not stored; otherwise the stored one (or None, never
    computed) is shown and a worker is asked for a new one (`request_refresh`).
    """
    now = now or timezone.now()
    ids = [dataset.pk for dataset in datasets]
    stored = ModelLeaderboard.objects.filter(key=leaderboard_key(datasets, rounds)).first()
    newest = newest_ranking(ids)
    if not leaderboard_is_stale(stored, newest_ranking=newest, now=now):
        return stored, False
    small = Ranking.objects.filter(dataset_id__in=ids).count() <= (
        settings.PREFLAB_LEADERBOARD_INLINE_RANKINGS
    )
    if not small:
        request_refresh(datasets=datasets, rounds=rounds, now=now)
        return stored, True
    shown = stored or ModelLeaderboard(key=leaderboard_key(datasets, rounds), rounds=rounds)
    try:
        shown.data = dict(compute_leaderboard(datasets=datasets, rounds=rounds))
    except Exception as error:
        logger.exception("leaderboard %s failed", shown.key)
        shown.error = failure_text(error)
        return shown, False
    shown.ranking_cursor, shown.computed_at, shown.error = newest, now, ""
    shown.computed_generation = shown.generation
    return shown, False


def request_refresh(
    *, datasets: Sequence[Dataset], rounds: int, now: datetime | None = None
) -> bool:
    """Queue one computation of the leaderboard; False if one was queued recently (claimed by a
    conditional update, so of many views at once one enqueues)."""
    from labeling import tasks

    now = now or timezone.now()
    stored, created = ModelLeaderboard.objects.get_or_create(
        key=leaderboard_key(datasets, rounds), defaults={"rounds": rounds}
    )
    if created:
        stored.datasets.set(datasets)
    recently = now - timedelta(seconds=settings.PREFLAB_QUALITY_REFRESH_SECONDS)
    claimed = (
        ModelLeaderboard.objects.filter(pk=stored.pk)
        .exclude(refresh_queued_at__gt=recently)
        .update(refresh_queued_at=now)
    )
    if claimed:
        transaction.on_commit(lambda: tasks.refresh_leaderboard.delay(stored.pk))
    return bool(claimed)


def invalidate_leaderboards(dataset_ids: Sequence[int]) -> None:
    """Something that counts changed in these datasets: their leaderboards are stale now."""
    ModelLeaderboard.objects.filter(datasets__in=dataset_ids).update(
        refresh_queued_at=None, generation=F("generation") + 1
    )


def refresh_leaderboard(*, leaderboard_id: int) -> ModelLeaderboard | None:
    """Compute and store a leaderboard; a deleted one, or one of a deleted dataset (its row is
    deleted then), returns None quietly. A failure is stored on the row and raised; the next
    try waits for the refresh period. An invalidation during the computation keeps the row
    invalidated."""
    stored = ModelLeaderboard.objects.filter(pk=leaderboard_id).first()
    if stored is None:
        logger.info("leaderboard %s is gone", leaderboard_id)
        return None
    ids = [int(pk) for pk in stored.key.split(":")[0].split(",")]
    datasets = list(Dataset.objects.filter(pk__in=ids).order_by("pk"))
    if len(datasets) != len(ids):
        logger.info("leaderboard %s: a dataset is gone", stored.key)
        stored.delete()
        return None
    generation = stored.generation
    cursor = newest_ranking(ids)  # read first: newer rankings make the next view refresh again
    rows = ModelLeaderboard.objects.filter(pk=stored.pk)
    jobs.store_computed(
        rows,
        lambda: compute_leaderboard(datasets=datasets, rounds=stored.rounds),
        cursor=cursor,
        generation=generation,
    )
    stored.refresh_from_db()
    return stored
