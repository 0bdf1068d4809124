"""The quality report's section on AI labelers: reading what `labeling.report_ai` computes its
figures from, in four queries whatever the number of prompts, judgments or AI labelers (one for
a dataset without any)."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from django.db import connection
from django.db.models import Count, FloatField, IntegerField, Q, Sum
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce

from labeling import orders
from labeling.models import AIJudgment, AILabeler, Dataset, Labelers, Ranking

if TYPE_CHECKING:  # the figures need numpy: imported by what computes them, not with this module
    from labeling import report_ai

# The calls of a judgment that gave an order (an entry of `AIJudgment.calls` with a non-empty
# "order"): those that can have picked the response shown first. Counted in the database, so the
# calls' raw answers and critiques are never read.
ORDERED_CALLS = {
    "postgresql": """(SELECT COUNT(*) FROM jsonb_array_elements(
        CASE WHEN jsonb_typeof(labeling_aijudgment.calls) = 'array'
        THEN labeling_aijudgment.calls ELSE '[]'::jsonb END) AS call(value)
        WHERE jsonb_typeof(call.value -> 'order') = 'array'
        AND jsonb_array_length(call.value -> 'order') > 0)""",
    "sqlite": """(SELECT COUNT(*) FROM json_each(labeling_aijudgment.calls) AS call
        WHERE json_type(call.value, '$.order') = 'array'
        AND json_array_length(call.value, '$.order') > 0)""",
}


def ai_labeler_figures(*, dataset: Dataset, cursor: int) -> list[report_ai.AILabelerRow]:
    """A row per AI labeler of the dataset (`labeling.report_ai.ai_labeler_row`), by name: its
    judgments, tokens and seconds as they stand, its agreement and position bias from the
    rankings up to `cursor` (as the rest of the report)."""
    from labeling import report_ai

    ok = Q(judgments__status=AIJudgment.Status.OK)
    failed = Q(judgments__status=AIJudgment.Status.FAILED)
    facts = [
        report_ai.AILabelerFacts(*row)
        for row in AILabeler.objects.filter(dataset=dataset)
        .order_by("name")
        .annotate(
            judged=Count("judgments", filter=ok),
            failed=Count("judgments", filter=failed),
            prompt_tokens=Coalesce(Sum("judgments__prompt_tokens"), 0),
            completion_tokens=Coalesce(Sum("judgments__completion_tokens"), 0),
            seconds=Coalesce(Sum("judgments__seconds"), 0.0, output_field=FloatField()),
        )
        .values_list(
            "pk",
            "name",
            "model",
            "user_id",
            "judged",
            "failed",
            "prompt_tokens",
            "completion_tokens",
            "seconds",
        )
    ]
    if not facts:
        return []
    users = {labeler.user_id: labeler.id for labeler in facts}
    # (labeler, prompt) -> orders, gold prompts left out as from the humans' agreement; and
    # each ranking's completions, for the chance rate of its judgment's calls.
    ai_orders: dict[int, dict[int, list[orders.Order]]] = defaultdict(lambda: defaultdict(list))
    completions: dict[int, int] = {}
    for pk, prompt_id, labeler_id, order, is_gold in (
        Ranking.objects.filter(dataset=dataset, pk__lte=cursor, labeler_id__in=list(users))
        .counted(Labelers.AI)
        .values_list("pk", "prompt_id", "labeler_id", "order", "prompt__is_gold")
    ):
        completions[pk] = len(orders.members(order))
        if not is_gold:
            ai_orders[users[labeler_id]][prompt_id].append(order)
    human_orders = (
        Ranking.objects.filter(dataset=dataset, pk__lte=cursor, prompt__is_gold=False)
        .counted()
        .filter(
            prompt__in=Ranking.objects.filter(
                dataset=dataset, pk__lte=cursor, labeler_id__in=list(users)
            ).values("prompt")
        )
        .orders_by_prompt()
    )
    judgments: dict[int, list[report_ai.AIJudgmentRow]] = defaultdict(list)
    for labeler_id, ranking_id, picks, calls in (
        AIJudgment.objects.filter(
            ai_labeler__in=users.values(), status=AIJudgment.Status.OK, ranking__lte=cursor
        )
        .annotate(ordered_calls=RawSQL(ORDERED_CALLS[connection.vendor], [], IntegerField()))
        .values_list("ai_labeler_id", "ranking_id", "first_slot_picks", "ordered_calls")
    ):
        if ranking_id in completions:
            judgments[labeler_id].append(
                report_ai.AIJudgmentRow(calls, min(picks, calls), completions[ranking_id])
            )
    return [
        report_ai.ai_labeler_row(
            labeler, ai_orders.get(labeler.id, {}), human_orders, judgments.get(labeler.id, [])
        )
        for labeler in facts
    ]
