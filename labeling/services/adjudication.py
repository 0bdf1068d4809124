"""Adjudication: a reviewer settles a prompt's order (their own, or the labelers' consensus) with
a note, and may promote it to gold. The newest adjudication of a prompt is the one that counts
(exports and training read it); the older ones stay as its history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from labeling import consensus, orders
from labeling.models import Adjudication, Prompt, PromptStats, Ranking
from labeling.services import gold

NOTE_MAX_CHARS = 5000


def consensus_order(prompt: Prompt) -> orders.Order:
    """The ranked pairs order of the prompt's counted rankings; [] when it has none."""
    counted = Ranking.objects.counted().filter(prompt=prompt).orders_by_prompt().get(prompt.pk)
    if not counted:
        return []
    completion_ids = list(prompt.completions.values_list("pk", flat=True))
    return consensus.ranked_pairs(sorted(completion_ids), counted)["order"]


def check_adjudication(*, prompt: Prompt, order: orders.Order, note: str) -> None:
    """Refuse, naming the field, an order that does not place each of the prompt's completions
    exactly once, or a note past NOTE_MAX_CHARS."""
    orders.check_order(order, list(prompt.completions.values_list("pk", flat=True)))
    if len(note) > NOTE_MAX_CHARS:
        raise ValidationError({"note": f"Keep the note under {NOTE_MAX_CHARS} characters."})


def adjudicate_prompt(
    *,
    prompt: Prompt,
    order: orders.Order,
    note: str,
    reviewer: User,
    promote_to_gold: bool = False,
    now: datetime | None = None,
    request: Any = None,
) -> Adjudication:
    """Record the reviewer's final order of the prompt (completion ids in tie groups), whether
        it overturns the labelers' consensus, and with `promote_to_gold` make it the prompt's gold
        order (through `gold.set_gold`, so gold's rules hold: later rankings are scored against it,
    and the change is in the audit trail as the reviewer's, through `request`).
        The prompt's stats row is marked adjudicated at once, so it leaves the review queue."""
    check_adjudication(prompt=prompt, order=order, note=note)
    order = orders.normalized(order)
    agreed = consensus_order(prompt)
    with transaction.atomic():
        if promote_to_gold:
            names = dict(prompt.completions.values_list("pk", "external_id"))
            gold.set_gold(
                prompt=prompt,
                order=orders.normalized(orders.renamed(order, names)),
                user=reviewer,
                request=request,
                source="adjudication",
            )
        adjudication = Adjudication.objects.create(
            prompt=prompt,
            dataset_id=prompt.dataset_id,
            order=order,
            consensus=agreed,
            overturned=bool(agreed) and order != agreed,
            note=note,
            promoted_to_gold=promote_to_gold,
            reviewer=reviewer,
            created_at=now or timezone.now(),
        )
        PromptStats.objects.filter(prompt=prompt).update(adjudicated=True)
    return adjudication


def accept_consensus(
    *,
    prompt: Prompt,
    note: str,
    reviewer: User,
    promote_to_gold: bool = False,
    request: Any = None,
) -> Adjudication:
    """Adjudicate the prompt with its labelers' consensus order, as it stands now."""
    agreed = consensus_order(prompt)
    if not agreed:
        raise ValidationError({"order": "Nobody counted has ranked this prompt: give an order."})
    return adjudicate_prompt(
        prompt=prompt,
        order=agreed,
        note=note,
        reviewer=reviewer,
        promote_to_gold=promote_to_gold,
        request=request,
    )
