"""Gold prompts: marking a prompt gold with its expected order, unmarking it, promoting a prompt
whose labelers agreed unanimously.

Gold prompts are served to every labeler at the dataset's gold rate, scored against their order
and left out of exports and training.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from labeling import orders
from labeling.models import AuditEvent, Prompt, PromptStats, Ranking
from labeling.services import audit
from labeling.services.quality_report import invalidate_reports


def check_gold_order(prompt: Prompt, order: Any) -> None:
    """Refuse, naming the problem, an order that is not tie groups naming every completion of
    the prompt exactly once by external id."""
    external_ids = list(prompt.completions.values_list("external_id", flat=True))
    orders.check_named_order(order, external_ids, field="gold_order")


def set_gold(
    *,
    prompt: Prompt,
    order: orders.NamedOrder | None,
    user: Any = None,
    request: Any = None,
    source: str = "set",
) -> Prompt:
    """Make a prompt gold with its expected order (tie groups of completion external ids), or
    with `order=None` a regular prompt again; a change is recorded in the audit trail as done
    by `user` (through `request`: a page or a token) by way of `source` ("set", "promote",
    "adjudication").

    Rankings it already has become gold rankings, and only rankings made from now on are scored.
    """
    if order is not None:
        check_gold_order(prompt, order)
    with transaction.atomic():
        before = prompt.gold_order if prompt.is_gold else None
        changed = order != before
        prompt.is_gold = order is not None
        prompt.gold_order = order
        if changed:
            # Rankings made before it was gold, e.g. those that gave a promoted prompt its
            # order, are not scored against it.
            prompt.gold_since = timezone.now() if order is not None else None
        prompt.save(update_fields=["is_gold", "gold_order", "gold_since"])
        if changed:
            audit.record(
                action=AuditEvent.Action.GOLD_CHANGED,
                workspace_id=prompt.dataset.workspace_id,
                dataset=prompt.dataset,
                actor=user,
                request=request,
                prompt=prompt.external_id,
                source="unmark" if order is None else source,
                order=order,
                before=before,
            )
        # The review queue reads the stats row's copy: it leaves or rejoins the queue at once.
        PromptStats.objects.filter(prompt=prompt).update(is_gold=prompt.is_gold)
        invalidate_reports([prompt.dataset_id])
    return prompt


def unanimous_order(prompt: Prompt, counted: list[orders.Order]) -> orders.NamedOrder | None:
    """The order all of `counted` (the prompt's counted rankings' orders) give, in external
    ids, if there are two or more and they agree exactly; otherwise None."""
    order = orders.unanimous(counted)
    if order is None:
        return None
    names = dict(prompt.completions.values_list("pk", "external_id"))
    return orders.normalized(orders.renamed(order, names))


def promote_to_gold(*, prompt: Prompt, user: Any = None, request: Any = None) -> Prompt:
    """Make a prompt whose counted labelers agreed unanimously gold, with their order (recorded
    in the audit trail as `set_gold` does)."""
    counted = Ranking.objects.counted().filter(prompt=prompt).orders_by_prompt()
    order = unanimous_order(prompt, counted.get(prompt.pk, []))
    if order is None:
        raise ValidationError(
            {
                "gold_order": "Only a prompt that two or more labelers ranked identically can be "
                "promoted; give its order by hand instead."
            }
        )
    return set_gold(prompt=prompt, order=order, user=user, request=request, source="promote")
