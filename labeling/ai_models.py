"""AI feedback labelers (Constitutional AI / RLAIF): a model behind an OpenAI-compatible endpoint
that critiques a dataset's completions against written principles and ranks them, the runs that
send it prompts, and each judgment with what was sent and answered. `labeling.models` imports
this module at its end, so Django registers the models with the app.

An AI labeler is a labeler: its rankings and comparisons are ordinary rows under an account of
its own (`AILabeler.user`, which cannot log in). `labeler_counts` keeps those rows out of
statistics, label slots, exports and training unless they are asked for (`labelers=ai|all`).
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from labeling.job_models import BackgroundJob
from labeling.models import Dataset, Prompt
from labeling.ranking_models import Ranking

# An environment variable's name: the key itself is never stored.
ENV_NAME = RegexValidator(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$", "An environment variable's name.")
SHARE = [MinValueValidator(0.0), MaxValueValidator(1.0)]
PRINCIPLES_MAX = 20
PRINCIPLE_MAX_CHARS = 1000


def default_principles() -> list[str]:
    """A short constitution in the spirit of Anthropic's (Bai et al. 2022, appendix C)."""
    return [
        "Choose the response that answers the human's request most helpfully, accurately and "
        "completely.",
        "Choose the response that is most honest: it does not make up facts and says when it "
        "is unsure.",
        "Choose the response that is least harmful: it does not help with dangerous, illegal or "
        "unethical acts, and is not toxic, demeaning or biased.",
    ]


class AILabeler(models.Model):
    """A model that labels one dataset through an OpenAI-compatible endpoint."""

    class Api(models.TextChoices):
        CHAT = "chat", "Chat completions (/chat/completions)"
        COMPLETIONS = "completions", "Text completions (/completions)"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="ai_labelers")
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="ai_labeler",
        help_text="The account its rankings are stored under; it cannot log in.",
    )
    name = models.CharField(max_length=100)
    base_url = models.URLField(
        max_length=500,
        help_text="The endpoint's base URL, up to the version: http://127.0.0.1:8080/v1.",
    )
    api = models.CharField(max_length=12, choices=Api.choices, default=Api.CHAT)
    model = models.CharField(max_length=200, help_text="The model name the endpoint expects.")
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        validators=[ENV_NAME],
        verbose_name="API key variable",
        help_text="The name of the environment variable of the worker that holds the API key "
        "(empty: none is sent). The key itself is never stored or shown.",
    )
    principles = models.JSONField(
        default=default_principles,
        help_text="The constitution: principles in order, each a sentence the model critiques "
        "every response against.",
    )
    constitution_version = models.PositiveIntegerField(
        default=1, help_text="Raised each time the principles change; judgments record it."
    )
    temperature = models.FloatField(
        default=0.0, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)]
    )
    both_orders = models.BooleanField(
        default=False,
        help_text="Ask twice, the second time with the responses in reverse order, and combine "
        "the two: a constant position bias cancels (a pair it judges both ways is a tie).",
    )
    use_logprobs = models.BooleanField(
        default=True,
        verbose_name="use log-probabilities",
        help_text="Ask for the answer's log-probabilities, where the endpoint gives them, and "
        "take a pair's preference strength from them.",
    )
    concurrency = models.PositiveSmallIntegerField(
        default=2, validators=[MinValueValidator(1), MaxValueValidator(32)]
    )
    requests_per_minute = models.PositiveIntegerField(
        default=60, validators=[MinValueValidator(1), MaxValueValidator(100_000)]
    )
    timeout_seconds = models.FloatField(
        default=60.0, validators=[MinValueValidator(1.0), MaxValueValidator(600.0)]
    )
    max_tokens = models.PositiveIntegerField(
        default=512, validators=[MinValueValidator(16), MaxValueValidator(8192)]
    )
    max_retries = models.PositiveSmallIntegerField(
        default=3,
        validators=[MaxValueValidator(10)],
        help_text="Retries of a call that failed in transit (timeout, 429, 5xx), with backoff.",
    )
    budget_prompts = models.PositiveIntegerField(
        default=100,
        validators=[MaxValueValidator(10_000_000)],
        help_text="The most prompts it judges, over all its runs (failures count).",
    )
    review_rate = models.FloatField(
        default=1.0,
        validators=SHARE,
        help_text="The share of the prompts it labels that human labelers still label, as a "
        "review sample (1: all of them, as before it came; 0.1: one in ten, the others leave "
        "the human queue unless a human already took them).",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "name"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "name"], name="ailabeler_name_unique"),
            models.CheckConstraint(
                condition=Q(review_rate__gte=0) & Q(review_rate__lte=1),
                name="ailabeler_review_rate_share",
            ),
        ]
        verbose_name = "AI labeler"

    def __str__(self) -> str:
        return f"{self.name} ({self.model}) on {self.dataset.slug}"


# What an admin sets on an AI labeler (the admin's form, the API).
SETTINGS = [
    "name",
    "base_url",
    "api",
    "model",
    "api_key_env",
    "principles",
    "temperature",
    "both_orders",
    "use_logprobs",
    "concurrency",
    "requests_per_minute",
    "timeout_seconds",
    "max_tokens",
    "max_retries",
    "budget_prompts",
    "review_rate",
]


class AIRun(BackgroundJob):
    """One pass of an AI labeler over the prompts it has not judged yet, up to its budget."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    ai_labeler = models.ForeignKey(AILabeler, on_delete=models.CASCADE, related_name="runs")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="The most prompts this run judges (empty: the budget)."
    )
    planned = models.PositiveIntegerField(default=0, help_text="Prompts it set out to judge.")
    judged = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    call_seconds = models.FloatField(default=0.0, help_text="Seconds spent waiting on calls.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta(BackgroundJob.Meta):
        verbose_name = "AI labeling run"

    def __str__(self) -> str:
        return f"AI run {self.pk} of {self.ai_labeler.name} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED, self.Status.CANCELLED)


class AIJudgment(models.Model):
    """One prompt judged by an AI labeler: what it was shown and answered, and the ranking made
    of it, or why none was (an unparseable answer is a failure, never a ranking)."""

    class Status(models.TextChoices):
        OK = "ok", "Ranked"
        FAILED = "failed", "Failed"

    ai_labeler = models.ForeignKey(AILabeler, on_delete=models.CASCADE, related_name="judgments")
    run = models.ForeignKey(
        AIRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="judgments"
    )
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="ai_judgments")
    ranking = models.OneToOneField(
        Ranking, on_delete=models.SET_NULL, null=True, blank=True, related_name="ai_judgment"
    )
    status = models.CharField(max_length=10, choices=Status.choices)
    error = models.TextField(blank=True)
    model = models.CharField(max_length=200)
    constitution_version = models.PositiveIntegerField()
    calls = models.JSONField(
        default=list,
        help_text='One entry per call: {"shown": [completion ids in the order sent], "raw": the '
        'answer\'s text, "order": the parsed order of ids, "critiques": {principle index: text}, '
        '"probabilities": {letter: p} from log-probabilities, "error": ...}.',
    )
    first_slot_picks = models.PositiveSmallIntegerField(
        default=0, help_text="Calls whose best response was the one shown first."
    )
    preference = models.FloatField(
        null=True,
        blank=True,
        help_text="For a pair, from log-probabilities: the probability that the chosen "
        "response is better (0.5 to 1).",
    )
    review_sampled = models.BooleanField(
        default=False, help_text="Drawn for the human review sample (`review_rate`)."
    )
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    seconds = models.FloatField(default=0.0)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["ai_labeler", "prompt"],
                condition=Q(status="ok"),
                name="aijudgment_once_per_prompt",
            ),
        ]
        indexes = [models.Index(fields=["ai_labeler", "prompt"], name="aijudgment_prompt")]
        verbose_name = "AI judgment"

    def __str__(self) -> str:
        return f"{self.ai_labeler.name} on {self.prompt_id}: {self.status}"
