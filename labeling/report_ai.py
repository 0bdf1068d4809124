"""The quality report's section on AI labelers, from plain rows: how often each agrees with the
human majority and how often it picks the response shown first, each with a Wilson interval,
beside what humans reach on the same prompts. Reading the rows is
`labeling.services.quality_report_ai`'s business; the report stores the result with its other
figures (`labeling.report.ReportData`, under "ai_labelers").

Agreement with the human majority: over the prompts that the AI labeler and counted human
labelers both ranked (gold prompts left out, as in the humans' agreement), every completion pair
that the humans' majority prefers one of (more votes one way, a tie counting half a vote each
way), each of the AI's comparisons of the pair (a pair it tied makes none) agrees or not. The
human reference is the same figure for each human labeler against the majority of the other
humans (so on prompts with two humans or more): like for like, where agreement with a majority
that includes oneself would flatter. The dashboard's pairwise agreement of the humans on these
prompts (a tie against an order counting half) is given too.

Position bias: of the calls of its ranked judgments that gave an order, the share whose best
response was the one shown first (`AIJudgment.first_slot_picks`), beside the chance rate, the
mean of 1/K over those calls (K the prompt's completions). Wilson intervals treat the pairs (the
calls) as independent trials, which pairs of one prompt are not quite: read them as a lower
bound on the uncertainty.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, TypedDict

from labeling import consensus, quality
from labeling.accounts import pseudonym
from labeling.orders import Order, members, pair_relations


class AIJudgmentRow(NamedTuple):
    """One ranked judgment's calls: those that gave an order, and how many of them picked the
    response shown first, of the prompt's `completions`."""

    calls: int
    first_slot_picks: int
    completions: int


class AILabelerRow(TypedDict):
    id: int
    name: str
    model: str
    pseudonym: str
    judged: int
    failed: int
    prompt_tokens_per_judgment: float | None
    completion_tokens_per_judgment: float | None
    seconds_per_judgment: float | None
    # Prompts that it and humans both ranked, over which the agreement figures run.
    shared_prompts: int
    # count: the AI's comparisons of pairs the human majority prefers one of.
    human_majority: quality.RatioResult
    # count: the humans' comparisons of pairs the other humans' majority prefers one of.
    human_reference: quality.RatioResult
    # The dashboard's pairwise agreement among the humans on the shared prompts (no interval).
    human_pairwise: float | None
    # count: calls that gave an order.
    position_bias: quality.RatioResult
    chance: float | None


class AILabelerFacts(NamedTuple):
    """What the service reads of one AI labeler besides its rankings."""

    id: int
    name: str
    model: str
    user_id: int
    judged: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float


def majority_agreement(own: Iterable[Order], others: list[Order]) -> tuple[int, int]:
    """(agreeing, compared): each comparison the `own` orders make (a pair in two different tie
    groups) of a pair that a majority of the `others` orders prefers one of."""
    if not others:
        return 0, 0
    completion_ids = sorted({cid for order in others for cid in members(order)})
    majority = {
        (pair["a"], pair["b"]): 1 if pair["a_votes"] > pair["b_votes"] else -1
        for pair in consensus.pair_votes(completion_ids, others)
        if pair["a_votes"] != pair["b_votes"]
    }
    agreeing = compared = 0
    for order in own:
        for pair, relation in pair_relations(order).items():
            if relation and pair in majority:
                compared += 1
                agreeing += relation == majority[pair]
    return agreeing, compared


def leave_one_out_agreement(orders: list[Order]) -> tuple[int, int]:
    """`majority_agreement` of each order against the majority of the others, summed."""
    agreeing = compared = 0
    for index, order in enumerate(orders):
        found, made = majority_agreement([order], orders[:index] + orders[index + 1 :])
        agreeing, compared = agreeing + found, compared + made
    return agreeing, compared


def summed(counts: list[tuple[int, int]]) -> tuple[int, int]:
    """(agreeing, compared) pairs added up."""
    return sum(agreeing for agreeing, _ in counts), sum(compared for _, compared in counts)


def ai_labeler_row(
    facts: AILabelerFacts,
    ai_orders: dict[int, list[Order]],
    human_orders: dict[int, list[Order]],
    judgments: list[AIJudgmentRow],
) -> AILabelerRow:
    """One AI labeler's figures (see the module's docstring): `ai_orders` are its orders by
    prompt, `human_orders` the counted human labelers' (gold prompts left out of both),
    `judgments` its ranked judgments' calls."""
    shared = [prompt for prompt in ai_orders if human_orders.get(prompt)]
    majority = [majority_agreement(ai_orders[prompt], human_orders[prompt]) for prompt in shared]
    reference = [leave_one_out_agreement(human_orders[prompt]) for prompt in shared]
    pairwise = [
        quality.prompt_agreement([(0, order) for order in human_orders[prompt]])
        for prompt in shared
    ]
    pairwise_count = sum(count for _, count in pairwise)
    calls = sum(row.calls for row in judgments)
    chance = sum(row.calls / row.completions for row in judgments if row.completions)
    spent = facts.judged + facts.failed
    return {
        "id": facts.id,
        "name": facts.name,
        "model": facts.model,
        "pseudonym": pseudonym(facts.user_id),
        "judged": facts.judged,
        "failed": facts.failed,
        "prompt_tokens_per_judgment": facts.prompt_tokens / spent if spent else None,
        "completion_tokens_per_judgment": facts.completion_tokens / spent if spent else None,
        "seconds_per_judgment": facts.seconds / spent if spent else None,
        "shared_prompts": len(shared),
        "human_majority": quality.wilson(*summed(majority)),
        "human_reference": quality.wilson(*summed(reference)),
        "human_pairwise": (
            sum(score for score, _ in pairwise) / pairwise_count if pairwise_count else None
        ),
        "position_bias": quality.wilson(sum(row.first_slot_picks for row in judgments), calls),
        "chance": chance / calls if calls else None,
    }
