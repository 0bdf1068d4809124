"""The figures of a dataset's quality report, from plain rows, in a few pure steps.

`ReportBuilder.add_prompt` takes one prompt's rankings at a time and keeps only what the
figures need (so 100k rankings are never all in memory); `ReportBuilder.figures` then computes
agreement, the labeler table, flags, progress and the disputed prompts. The statistics are
`labeling.quality`'s; reading rankings and storing the report is
`labeling.services.quality_report`'s business.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, NotRequired, TypedDict

import numpy as np

from labeling import consensus, orders, quality, report_ai
from labeling.accounts import pseudonym
from labeling.models import Flag
from labeling.orders import Order

# A labeler whose median time per task is under this share of the labelers' median rushes.
RUSH_SHARE = 1 / 3
# A labeler who agrees with the others this much less than the dataset's rate disagrees.
DISAGREE_GAP = 0.15
# Below this many compared pairs (or gold pairs), nobody is called out.
MIN_EVIDENCE = 20
# Below this many rankings, nobody is called rushing.
MIN_RANKINGS_TIMED = 5
# Pseudo-counts that pull a labeler with little evidence toward the dataset's rate.
PRIOR_PAIRS = 20
DISPUTED_SHOWN = 20
BOOTSTRAP = 1000
# Past this many prompts, the bootstrap resamples fixed random groups of prompts instead of
# single prompts: groups of independent prompts are independent too, and memory stays bounded.
BOOTSTRAP_GROUPS = 10_000

# What each warning of the labeler table means, as the dashboard explains it.
WARNINGS = {
    "rushing": f"median time per task under {RUSH_SHARE:.0%} of the labelers' median "
    f"(after {MIN_RANKINGS_TIMED} rankings)",
    "disagrees": f"agreement with the others {DISAGREE_GAP} or more below the dataset's "
    f"(after {MIN_EVIDENCE} compared pairs)",
    "fails gold": f"accuracy on gold prompts {DISAGREE_GAP} or more below the labelers' median "
    f"(after {MIN_EVIDENCE} gold pairs)",
}


class RankingRow(NamedTuple):
    prompt_id: int
    labeler: int
    order: Order
    ratings: dict[str, dict[str, int]]
    flags: dict[str, list[str]]
    all_unacceptable: bool
    seconds: float
    created_at: datetime


class PromptFacts(NamedTuple):
    is_gold: bool
    gold_since: datetime | None
    gold_order: Order | None  # in completion ids; None for a regular prompt


class LabelerRow(TypedDict):
    id: int
    username: str
    pseudonym: str
    active: bool
    rankings: int
    median_seconds: float | None
    agreement: float | None
    agreement_pairs: int
    gold: float | None
    gold_pairs: int
    flag_rate: float
    reliability: float
    warnings: list[str]


class Progress(TypedDict):
    prompts: int
    done: int
    partly: int
    not_started: int
    gold: int
    labels_per_prompt: int


class Agreement(TypedDict):
    pairwise: quality.RatioResult
    alpha_rankings: quality.AlphaResult
    alpha_ratings: dict[str, quality.AlphaResult]


class FlagCount(TypedDict):
    flag: str
    label: str
    count: int


class Flags(TypedDict):
    by_flag: list[FlagCount]
    rankings_flagged: int
    all_unacceptable: int


class DisputedPrompt(TypedDict, total=False):
    prompt: int
    agreement: float
    labelers: int
    # consensus.PairVotes; the service adds the completions' external ids as a_name and b_name.
    pairs: list[dict[str, Any]]
    # Added by the service, which reads them: the prompt's external id and text.
    external_id: str
    text: str


class DailyCount(TypedDict):
    day: str
    count: int


class ReviewFigures(TypedDict):
    """Adjudications by reviewers (`AdjudicationQuerySet.overturn_figures`)."""

    adjudicated: int
    overturned: int
    overturn_rate: float | None


class ReportData(TypedDict):
    """The JSON of `QualityReport.data`, which the dashboard and the API show."""

    cursor: int
    rankings: int
    progress: Progress
    rate: list[DailyCount]
    agreement: Agreement
    labelers: list[LabelerRow]
    flags: Flags
    disputed: list[DisputedPrompt]
    unanimous: int
    criteria: list[str]
    # Added by the service, which reads the adjudications.
    review: NotRequired[ReviewFigures]
    # Added by the service (labeling.services.quality_report_ai): a row per AI labeler, whose
    # rankings the other figures leave out.
    ai_labelers: NotRequired[list[report_ai.AILabelerRow]]


@dataclass
class LabelerActivity:
    seconds: list[float] = field(default_factory=list)
    flagged: int = 0
    completions: int = 0
    rankings: int = 0
    gold_sum: float = 0.0
    gold_count: int = 0


class CountedPrompt(NamedTuple):
    prompt_id: int
    completion_ids: list[int]
    rankings: quality.Rankings  # of the labelers who count


class ReportBuilder:
    def __init__(self, *, criteria: list[str], counted_labelers: set[int]) -> None:
        self.criteria = criteria
        self.counted_labelers = counted_labelers
        self.activity: dict[int, LabelerActivity] = {}
        self.flag_counts: Counter[str] = Counter()
        self.flagged_rankings = 0
        self.unacceptable = 0
        self.prompts: list[CountedPrompt] = []
        # An excluded labeler's orders, with the index of their prompt in `prompts`.
        self.excluded: list[tuple[int, Order, int]] = []
        self.rating_units: dict[str, list[list[float]]] = {c: [] for c in criteria}
        self.rating_clusters: dict[str, list[int]] = {c: [] for c in criteria}

    def add_prompt(self, facts: PromptFacts, rows: list[RankingRow]) -> None:
        """One prompt's rankings (all of them: excluded labelers' too)."""
        completion_ids = orders.members(rows[0].order)
        for row in rows:
            self._tally(row, facts, len(completion_ids))
        if facts.is_gold:
            return
        counted = [row for row in rows if row.labeler in self.counted_labelers]
        index = len(self.prompts)
        self.prompts.append(
            CountedPrompt(
                rows[0].prompt_id, completion_ids, [(r.labeler, r.order) for r in counted]
            )
        )
        self.excluded.extend(
            (row.labeler, row.order, index)
            for row in rows
            if row.labeler not in self.counted_labelers
        )
        self._add_ratings(counted, completion_ids, index)

    def _tally(self, row: RankingRow, facts: PromptFacts, completions: int) -> None:
        activity = self.activity.setdefault(row.labeler, LabelerActivity())
        activity.rankings += 1
        activity.seconds.append(row.seconds)
        activity.completions += completions
        activity.flagged += sum(1 for names in row.flags.values() if names)
        self.flag_counts.update(name for names in row.flags.values() for name in names)
        self.flagged_rankings += bool(row.flags)
        self.unacceptable += row.all_unacceptable
        # Rankings made before a prompt became gold (those that gave it its order) don't score.
        if facts.gold_order is not None and (
            facts.gold_since is None or row.created_at >= facts.gold_since
        ):
            score, count = quality.gold_agreement(row.order, facts.gold_order)
            activity.gold_sum += score
            activity.gold_count += count

    def _add_ratings(
        self, counted: list[RankingRow], completion_ids: list[int], index: int
    ) -> None:
        for criterion in self.criteria:
            for cid in completion_ids:
                values = [
                    float(row.ratings[str(cid)][criterion])
                    for row in counted
                    if criterion in row.ratings.get(str(cid), {})
                ]
                if values:
                    self.rating_units[criterion].append(values)
                    self.rating_clusters[criterion].append(index)

    def figures(
        self,
        *,
        cursor: int,
        rate: list[DailyCount],
        labelers: dict[int, tuple[str, bool]],
        regular_prompts: int,
        gold_prompts: int,
        labels_per_prompt: int,
    ) -> ReportData:
        """The report. The caller reads what is not in the rankings: the newest ranking covered
        (`cursor`), rankings per day, the labelers' names, how many prompts the dataset has."""
        sums = np.array(
            [quality.prompt_agreement(p.rankings) for p in self.prompts] or np.zeros((0, 2)),
            dtype=float,
        ).reshape(-1, 2)
        agreement = self.agreement(sums)
        return {
            "cursor": cursor,
            "rankings": sum(activity.rankings for activity in self.activity.values()),
            "progress": self.progress(regular_prompts, gold_prompts, labels_per_prompt),
            "rate": rate,
            "agreement": agreement,
            "labelers": labeler_table(
                self.activity, self.agreement_by_labeler(), labelers, agreement["pairwise"]["rate"]
            ),
            "flags": {
                "by_flag": [
                    {"flag": flag.value, "label": flag.label, "count": self.flag_counts[flag.value]}
                    for flag in Flag
                ],
                "rankings_flagged": self.flagged_rankings,
                "all_unacceptable": self.unacceptable,
            },
            "disputed": self.disputed(sums),
            "unanimous": sum(
                1
                for prompt, (score, count) in zip(self.prompts, sums, strict=True)
                if len(prompt.rankings) >= 2 and count and score == count
            ),
            "criteria": self.criteria,
        }

    def agreement(self, sums: np.ndarray) -> Agreement:
        """Pairwise agreement over prompts two or more labelers ranked, and alpha over ranks
        and ratings, each with a bootstrap over prompts."""
        compared = sums[sums[:, 1] > 0]
        units, clusters = quality.ranking_units(
            (p.completion_ids, p.rankings) for p in self.prompts
        )
        return {
            "pairwise": quality.bootstrap_ratio(
                compared[:, 0], compared[:, 1], bootstrap=BOOTSTRAP, seed=0
            ),
            "alpha_rankings": quality.alpha(
                units, "ordinal", grouped(clusters), bootstrap=BOOTSTRAP, seed=0
            ),
            "alpha_ratings": {
                criterion: quality.alpha(
                    self.rating_units[criterion],
                    "interval",
                    grouped(self.rating_clusters[criterion]),
                    bootstrap=BOOTSTRAP,
                    seed=0,
                )
                for criterion in self.criteria
            },
        }

    def agreement_by_labeler(self) -> dict[int, tuple[float, int]]:
        """Each labeler's (sum, count) of agreement; an excluded labeler is still measured,
        against the labelers who count."""
        totals = quality.agreement_by_labeler(p.rankings for p in self.prompts)
        for labeler, order, index in self.excluded:
            score, count = totals.get(labeler, (0.0, 0))
            for other, other_order in self.prompts[index].rankings:
                s, c = quality.prompt_agreement([(labeler, order), (other, other_order)])
                score, count = score + s, count + c
            totals[labeler] = (score, count)
        return totals

    def reliabilities(self) -> tuple[dict[int, Reliability], float | None]:
        """Each labeler's reliability, as the labeler table has it, and the dataset's pairwise
        agreement rate it is pulled toward; without the report's bootstraps, so training can
        compute it cheaply."""
        total, count = 0.0, 0
        for prompt in self.prompts:
            prompt_sum, prompt_count = quality.prompt_agreement(prompt.rankings)
            total, count = total + prompt_sum, count + prompt_count
        rate = total / count if count else None
        return labeler_reliabilities(self.activity, self.agreement_by_labeler(), rate), rate

    def progress(self, regular: int, gold: int, labels_per_prompt: int) -> Progress:
        labeled = [len(p.rankings) for p in self.prompts]
        done = sum(1 for n in labeled if n >= labels_per_prompt)
        partly = sum(1 for n in labeled if 0 < n < labels_per_prompt)
        return {
            "prompts": regular,
            "done": done,
            "partly": partly,
            "not_started": regular - done - partly,
            "gold": gold,
            "labels_per_prompt": labels_per_prompt,
        }

    def disputed(self, sums: np.ndarray) -> list[DisputedPrompt]:
        """The prompts whose labelers agreed least (any disagreement), with each pair's votes."""
        scored = sorted(
            (score / count, index)
            for index, (score, count) in enumerate(sums)
            if count and score < count and len(self.prompts[index].rankings) >= 2
        )
        rows: list[DisputedPrompt] = []
        for rate, index in scored[:DISPUTED_SHOWN]:
            prompt = self.prompts[index]
            result = consensus.ranked_pairs(
                prompt.completion_ids, [order for _, order in prompt.rankings]
            )
            rows.append(
                {
                    "prompt": prompt.prompt_id,
                    "agreement": float(rate),
                    "labelers": len(prompt.rankings),
                    "pairs": [dict(pair) for pair in result["pairs"]],
                }
            )
        return rows


def grouped(clusters: list[int]) -> list[int]:
    """Cluster ids mapped onto at most BOOTSTRAP_GROUPS random, fixed (seeded) groups."""
    if not clusters or max(clusters) < BOOTSTRAP_GROUPS:
        return clusters
    shuffled = np.random.default_rng(0).permutation(max(clusters) + 1)
    return (shuffled[np.asarray(clusters)] % BOOTSTRAP_GROUPS).tolist()  # type: ignore[no-any-return]


def labeler_table(
    activity: dict[int, LabelerActivity],
    agreement: dict[int, tuple[float, int]],
    labelers: dict[int, tuple[str, bool]],
    dataset_rate: float | None,
) -> list[LabelerRow]:
    """One row per labeler who ranked in the dataset, excluded labelers included.

    reliability: the labeler's agreement with the others, pulled toward the dataset's agreement
    rate by PRIOR_PAIRS pseudo-pairs, and their accuracy on gold, pulled toward the labelers'
    median gold accuracy, averaged (gold only when there is some). Warnings: see WARNINGS.
    """
    medians = {pk: statistics.median(a.seconds) for pk, a in activity.items() if a.seconds}
    typical = statistics.median(medians.values()) if medians else None
    _, gold_prior = reliability_priors(activity, dataset_rate)
    reliabilities = labeler_reliabilities(activity, agreement, dataset_rate)
    rows: list[LabelerRow] = []
    for pk, done in activity.items():
        username, is_active = labelers.get(pk, (str(pk), False))
        agree_sum, agree_count = agreement.get(pk, (0.0, 0))
        rate = agree_sum / agree_count if agree_count else None
        gold = done.gold_sum / done.gold_count if done.gold_count else None
        rows.append(
            {
                "id": pk,
                "username": username,
                "pseudonym": pseudonym(pk),
                "active": is_active,
                "rankings": done.rankings,
                "median_seconds": medians.get(pk),
                "agreement": rate,
                "agreement_pairs": agree_count,
                "gold": gold,
                "gold_pairs": done.gold_count,
                "flag_rate": done.flagged / done.completions if done.completions else 0.0,
                "reliability": reliabilities[pk].reliability,
                "warnings": warnings(
                    done,
                    medians.get(pk),
                    typical,
                    (rate, agree_count, dataset_rate),
                    (gold, gold_prior),
                ),
            }
        )
    return rows


class Reliability(NamedTuple):
    reliability: float
    # Compared pairs plus gold pairs: how much the estimate rests on.
    evidence: int


def reliability_priors(
    activity: dict[int, LabelerActivity], dataset_rate: float | None
) -> tuple[float, float]:
    """What a labeler without evidence is pulled toward: the dataset's agreement rate (0.5
    without one), and for gold the labelers' median gold accuracy (that rate below two)."""
    prior = dataset_rate if dataset_rate is not None else 0.5
    gold_rates = [a.gold_sum / a.gold_count for a in activity.values() if a.gold_count]
    gold_prior = statistics.median(gold_rates) if len(gold_rates) >= 2 else prior
    return prior, gold_prior


def labeler_reliabilities(
    activity: dict[int, LabelerActivity],
    agreement: dict[int, tuple[float, int]],
    dataset_rate: float | None,
) -> dict[int, Reliability]:
    """Each labeler's reliability (see `labeler_table`), the one formula the report shows and
    reliability-weighted training uses."""
    prior, gold_prior = reliability_priors(activity, dataset_rate)
    found = {}
    for pk, done in activity.items():
        agree_sum, agree_count = agreement.get(pk, (0.0, 0))
        parts = [(agree_sum + PRIOR_PAIRS * prior) / (agree_count + PRIOR_PAIRS)]
        if done.gold_count:
            parts.append(
                (done.gold_sum + PRIOR_PAIRS * gold_prior) / (done.gold_count + PRIOR_PAIRS)
            )
        found[pk] = Reliability(float(np.mean(parts)), agree_count + done.gold_count)
    return found


def warnings(
    done: LabelerActivity,
    median: float | None,
    typical: float | None,
    agreement: tuple[float | None, int, float | None],
    gold: tuple[float | None, float],
) -> list[str]:
    """The WARNINGS that apply to one labeler, once there is enough evidence."""
    found = []
    rate, pairs, dataset_rate = agreement
    gold_rate, gold_prior = gold
    timed = typical and median is not None and done.rankings >= MIN_RANKINGS_TIMED
    if timed and median < RUSH_SHARE * typical:  # type: ignore[operator]
        found.append("rushing")
    compared = rate is not None and dataset_rate is not None and pairs >= MIN_EVIDENCE
    if compared and rate < dataset_rate - DISAGREE_GAP:  # type: ignore[operator]
        found.append("disagrees")
    scored = gold_rate is not None and done.gold_count >= MIN_EVIDENCE
    if scored and gold_rate < gold_prior - DISAGREE_GAP:  # type: ignore[operator]
        found.append("fails gold")
    return found
