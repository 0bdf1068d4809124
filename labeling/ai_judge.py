"""One prompt judged by an AI labeler: the calls (shuffled order, and optionally the reverse
too), their retries with backoff, paced to the labeler's requests per minute, and the outcome:
a ranking with critiques, log-probability preference and position-bias count, or the reason
there is none. Pure of the database, so the calls can run on a worker's threads."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from labeling.ai_client import Answer, EndpointError
from labeling.ai_prompts import (
    LETTERS,
    Unparseable,
    combined,
    critiques_of,
    letter_probabilities,
    parse_answer,
    request_messages,
    strength_of,
)
from labeling.orders import Order

__all__ = ["Outcome", "Pace", "Question", "judge", "strength_of"]

RATIONALE_MAX_CHARS = 10_000
BACKOFF_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0


class Asks(Protocol):
    def ask(self, messages: list[dict[str, str]]) -> Answer: ...


class Judge(Protocol):
    """What `judge` reads of an AI labeler."""

    principles: list[str]
    both_orders: bool
    max_retries: int


@dataclass(frozen=True)
class Question:
    prompt_id: int
    conversation: list[dict[str, Any]]
    shown: list[tuple[int, str]]  # (completion id, text), in the order of the first call


@dataclass
class Outcome:
    order: Order | None = None  # None: failed
    error: str = ""
    in_transit: bool = False  # failed for want of an answer, not for a bad one
    calls: list[dict[str, Any]] = field(default_factory=list)
    first_slot_picks: int = 0
    preference: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def rationale(self) -> str:
        """The critiques of its calls, as the ranking's rationale."""
        lines = []
        for call in self.calls:
            for number, text in sorted(call.get("critiques", {}).items(), key=lambda i: int(i[0])):
                lines.append(f"Principle {number}: {text}")
        return "\n".join(lines)[:RATIONALE_MAX_CHARS]


class Pace:
    """Spaces the starts of calls, across threads, to at most `per_minute` a minute."""

    def __init__(self, per_minute: int) -> None:
        self.interval = 60.0 / max(1, per_minute)
        self.lock = threading.Lock()
        self.next_at = 0.0

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_at)
            self.next_at = start + self.interval
        if start > now:
            time.sleep(start - now)


def judge(endpoint: Asks, question: Question, labeler: Judge, *, pace: Pace) -> Outcome:
    """Ask for the question's ranking, once or in both orders, and combine the answers."""
    outcome = Outcome()
    shown_orders = [question.shown]
    if labeler.both_orders:
        shown_orders.append(question.shown[::-1])
    orders: list[Order] = []
    preferences: list[dict[int, float]] = []
    for shown in shown_orders:
        call: dict[str, Any] = {"shown": [completion_id for completion_id, _ in shown]}
        outcome.calls.append(call)
        messages = request_messages(
            question.conversation, [text for _, text in shown], labeler.principles
        )
        try:
            answer = _ask(endpoint, messages, retries=labeler.max_retries, pace=pace)
        except EndpointError as error:
            call["error"] = str(error)
            outcome.error, outcome.in_transit = str(error), True
            return outcome
        outcome.prompt_tokens += answer.prompt_tokens
        outcome.completion_tokens += answer.completion_tokens
        outcome.seconds += answer.seconds
        call.update(raw=answer.text, prompt_tokens=answer.prompt_tokens, seconds=answer.seconds)
        try:
            parsed = parse_answer(answer.text, len(shown))
        except Unparseable as error:
            # Critique first, choose after (Constitutional AI's two steps): ask once more, for
            # the verdict alone, with the model's own critique.
            follow_up = request_messages(
                question.conversation,
                [text for _, text in shown],
                labeler.principles,
                critique=answer.text,
            )
            critiques = critiques_of(answer.text)
            try:
                answer = _ask(endpoint, follow_up, retries=labeler.max_retries, pace=pace)
                outcome.prompt_tokens += answer.prompt_tokens
                outcome.completion_tokens += answer.completion_tokens
                outcome.seconds += answer.seconds
                call["verdict"] = answer.text
                parsed = parse_answer(answer.text, len(shown))
                parsed = replace(parsed, critiques=parsed.critiques or critiques)
            except (EndpointError, Unparseable) as second:
                call["error"] = f"{error}; asked again: {second}"
                outcome.error = call["error"]
                outcome.in_transit = isinstance(second, EndpointError)
                return outcome
        letters = LETTERS[: len(shown)]
        by_letter = {letter: cid for letter, (cid, _) in zip(letters, shown, strict=True)}
        order = [[by_letter[letter] for letter in group] for group in parsed.order]
        call.update(order=order, critiques=parsed.critiques)
        orders.append(order)
        if order[0] == [shown[0][0]]:
            outcome.first_slot_picks += 1
        probabilities = letter_probabilities(
            answer.tokens, answer.alternatives, answer.text, parsed.letter_at, len(shown)
        )
        if probabilities:
            call["probabilities"] = probabilities
            preferences.append({by_letter[k]: p for k, p in probabilities.items()})
    ids = [completion_id for completion_id, _ in question.shown]
    outcome.order = combined(orders, ids) if len(orders) > 1 else orders[0]
    untied_pair = len(ids) == 2 == len(outcome.order)
    if untied_pair and len(preferences) == len(orders):
        chosen = outcome.order[0][0]
        outcome.preference = sum(p[chosen] for p in preferences) / len(preferences)
    return outcome


def _ask(endpoint: Asks, messages: list[dict[str, str]], *, retries: int, pace: Pace) -> Answer:
    """The answer, retrying a call that failed in transit up to `retries` times, with
    exponential backoff and jitter (or the endpoint's Retry-After)."""
    for attempt in range(retries + 1):
        pace.wait()
        try:
            return endpoint.ask(messages)
        except EndpointError as error:
            if not error.retryable or attempt == retries:
                if attempt:
                    raise EndpointError(
                        f"{error} (after {attempt + 1} tries)", retryable=error.retryable
                    ) from None
                raise
            backoff = BACKOFF_SECONDS * 2**attempt * (1 + random.random())
            time.sleep(min(BACKOFF_MAX_SECONDS, error.retry_after or backoff))
    raise AssertionError("unreachable")
