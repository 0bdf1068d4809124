"""Assignments: a prompt leased to a labeler, until they submit or skip it or the lease
expires; and the order in which they see its completions. `labeling.models` imports this module
at its end, so `labeling.models.Assignment` is the same class."""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models

from labeling.choices import Labelers
from labeling.compiled import CompiledQuery
from labeling.models import Completion, Dataset, Prompt, labeler_counts


def display_order(
    completions: list[Completion], *, labeler_id: int, prompt_id: int
) -> list[Completion]:
    """The completions shuffled the same way every time for one labeler and prompt.

    Position bias is real, so each labeler sees their own order; a string seed is hashed
    deterministically by `random`, so every process agrees on it.
    """
    shuffled = sorted(completions, key=lambda completion: completion.pk)
    random.Random(f"{labeler_id}:{prompt_id}").shuffle(shuffled)
    return shuffled


class AssignmentQuerySet(models.QuerySet["Assignment"]):
    def mine(self, user: Any) -> AssignmentQuerySet:
        """The user's assignments on datasets whose pool still holds them: taken out of a pool,
        or excluded, a labeler loses their tasks there (a 404 to them)."""
        return self.filter(labeler=user, prompt__dataset__in=Dataset.objects.pooled(user.pk))

    def leased_to(self, user: Any) -> AssignmentQuerySet:
        """The user's leases that have not been submitted, skipped or reclaimed."""
        return self.filter(labeler=user, status=Assignment.Status.LEASED)

    def holding_slots(self) -> AssignmentQuerySet:
        """Live leases and submissions of labelers who are not excluded: what
        `Prompt.slots_taken` counts. An excluded labeler's labels hold no slot, so their prompts
        need labels again."""
        return self.filter(
            labeler_counts(dataset="prompt__dataset", labelers=Labelers.ALL),
            status__in=Assignment.SLOT_HOLDING_STATUSES,
        )

    def stale(self, now: datetime) -> AssignmentQuerySet:
        return self.filter(status=Assignment.Status.LEASED, expires_at__lte=now)


class Assignment(models.Model):
    class Status(models.TextChoices):
        LEASED = "leased", "Leased"
        SUBMITTED = "submitted", "Submitted"
        SKIPPED = "skipped", "Skipped"
        EXPIRED = "expired", "Expired"

    SLOT_HOLDING_STATUSES = (Status.LEASED, Status.SUBMITTED)

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="assignments")
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.LEASED)
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    skip_reason = models.CharField(max_length=200, blank=True)

    objects = AssignmentQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "labeler"], name="assignment_once_per_labeler"
            ),
        ]
        indexes = [
            models.Index(fields=["labeler", "status"], name="assignment_labeler_status"),
            models.Index(fields=["status", "expires_at"], name="assignment_status_expiry"),
        ]

    def __str__(self) -> str:
        return f"{self.prompt} -> {self.labeler} ({self.status})"

    def display_completions(self) -> list[Completion]:
        """The prompt's completions in the order this labeler sees them (`display_order`), read
        by a compiled query (every next task shows them) unless they were prefetched."""
        prompt = self.prompt
        prefetched = getattr(prompt, "_prefetched_objects_cache", {}).get("completions")
        if prefetched is not None:
            completions = list(prefetched)
        else:
            completions = COMPLETIONS_OF.rows(prompt=self.prompt_id)
            for completion in completions:
                completion.prompt = prompt
        return display_order(completions, labeler_id=self.labeler_id, prompt_id=self.prompt_id)


COMPLETIONS_OF = CompiledQuery(lambda prompt: Completion.objects.filter(prompt=prompt), prompt=int)
