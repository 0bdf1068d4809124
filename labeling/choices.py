"""The fixed vocabularies of a ranking: flags, a pair's strength, and whether the ranking page
asks for ratings or a strength. (What is rated, and on which scale, is each dataset's own:
`labeling.criteria_models.RatingCriterion`.)"""

from __future__ import annotations

from django.db import models


class Flag(models.TextChoices):
    # The InstructGPT labeling interface's per-output metadata (Ouyang et al. 2022, appendix B).
    FAILS_INSTRUCTION = "fails_instruction", "Fails to follow the instruction"
    HALLUCINATION = "hallucination", "Makes up facts (hallucination)"
    HARMFUL_ADVICE = "harmful_advice", "Harmful or dangerous advice"
    SEXUAL_CONTENT = "sexual_content", "Sexual content"
    VIOLENT_CONTENT = "violent_content", "Violent content"
    DENIGRATES_GROUP = "denigrates_group", "Denigrates a protected group"
    INAPPROPRIATE_FOR_CUSTOMER = "inappropriate", "Inappropriate for a customer assistant"


class Strength(models.TextChoices):
    # Llama 2's four levels for how much better the chosen response is.
    SIGNIFICANTLY = "significantly", "Significantly better"
    BETTER = "better", "Better"
    SLIGHTLY = "slightly", "Slightly better"
    NEGLIGIBLY = "negligibly", "Negligibly better / unsure"


class Asked(models.TextChoices):
    """Whether the ranking page asks for something: ratings, or a pair's strength."""

    REQUIRED = "required", "Required"
    OPTIONAL = "optional", "Optional"
    OFF = "off", "Not asked"


class Labelers(models.TextChoices):
    """Whose rankings a statistic, an export or a training run reads: humans' only (the
    default everywhere), AI labelers' only, or both."""

    HUMAN = "human", "Human labelers"
    AI = "ai", "AI labelers"
    ALL = "all", "Humans and AI labelers"


def all_criteria() -> list[str]:
    """The default of the `Dataset.criteria` JSON field that migrations 0001 to 0013 know (it
    became rows in 0013 and went in 0014); kept for them, used by nothing else."""
    return ["helpful", "honest", "harmless"]
