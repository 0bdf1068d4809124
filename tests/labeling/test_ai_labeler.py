"""The AI labeler's calls, parsing, runs and storage, against a scripted OpenAI-compatible server
on loopback (tests/openai_stub.py); tests/labeling/test_ai_labeler_llm.py runs the same against
a real model."""

from __future__ import annotations

import math
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from labeling import ai_judge
from labeling.ai_prompts import Unparseable, parse_answer
from labeling.models import (
    AIJudgment,
    AIRun,
    Assignment,
    Comparison,
    Dataset,
    Prompt,
    Ranking,
    labeler_counts,
)
from labeling.services import ai_labeling, leasing
from tests.factories import DatasetFactory, UserFactory, make_prompt
from tests.openai_stub import Stub, chat_reply

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: Any) -> None:
    monkeypatch.setattr(ai_judge, "BACKOFF_SECONDS", 0.0)


def make_labeler(stub: Stub, dataset: Dataset | None = None, **fields: Any) -> Any:
    dataset = dataset or DatasetFactory(labels_per_prompt=1)
    settings = {
        "name": "judge",
        "base_url": stub.base_url,
        "model": "stub-model",
        "requests_per_minute": 60_000,
        "max_retries": 1,
        "timeout_seconds": 5.0,
    }
    return ai_labeling.add_ai_labeler(dataset=dataset, **{**settings, **fields})


def run_once(ai_labeler: Any, **kwargs: Any) -> AIRun:
    run = ai_labeling.start_run(ai_labeler=ai_labeler, **kwargs)
    ai_labeling.run_ai_labeler(run_id=run.pk)
    run.refresh_from_db()
    return run


@pytest.mark.parametrize(
    ("answer", "count", "order"),
    [
        ("Principle 1: fine.\nRanking: B > A", 2, [["B"], ["A"]]),
        ("A: A is better than B because it answers.", 2, [["A"], ["B"]]),
        ("Response B is better.", 2, [["B"], ["A"]]),
        ("B", 2, [["B"], ["A"]]),
        ("The answer is A.", 2, [["A"], ["B"]]),
        ("The better response is: **B**", 2, [["B"], ["A"]]),
        ("The best response is:\n[Response B]\nParis.", 2, [["B"], ["A"]]),  # as shown
        ("**Ranking:** C > A = B (a is short)", 3, [["C"], ["A", "B"]]),
        ("Ranking: C, A, B", 3, [["C"], ["A"], ["B"]]),
        ("Ranking: C > A", 3, [["C"], ["A"], ["B"]]),  # the one left out is the worst
        ("Ranking: B > A\nOn second thought:\nRanking: A > B", 2, [["A"], ["B"]]),
        ("Ranking: <B> > <A>", 2, [["B"], ["A"]]),  # the form's brackets kept
    ],
)
def test_answers_parse_leniently(answer: str, count: int, order: list[list[str]]) -> None:
    assert parse_answer(answer, count).order == order


@pytest.mark.parametrize(
    ("answer", "count"),
    [
        ("I cannot decide.", 2),
        ("The best response is C", 3),  # only the best: not a ranking of three
        ("Ranking: A > B > A", 2),
        ("Ranking: A > D", 3),
        ("A good answer would be to call the police.", 2),  # the article, not a vote
        ("Response A is better than B? No, response B is better.", 2),  # names both
        ("Ranking: <best> > <worst>", 2),  # the form copied, not filled in
        ("Ranking: <best> > <next> > <worst>", 3),
        ("", 2),
    ],
)
def test_answers_without_a_complete_order_do_not_parse(answer: str, count: int) -> None:
    with pytest.raises(Unparseable, match="no ranking"):
        parse_answer(answer, count)


def test_request_names_every_principle_and_response_and_the_ranking_becomes_rows(
    openai_stub: Stub,
) -> None:
    ai_labeler = make_labeler(openai_stub, principles=["Be kind.", "Be exact.", "Be brief."])
    prompt = make_prompt(ai_labeler.dataset, completions=3)
    openai_stub.default = lambda body: (
        200,
        chat_reply("Principle 1: ok\nPrinciple 2: B errs\nPrinciple 3: ok\nRanking: C > A > B"),
        0.0,
    )

    run = run_once(ai_labeler)

    assert (run.status, run.judged, run.failed, run.progress) == ("succeeded", 1, 0, 1.0)
    text = openai_stub.requests[0]["messages"][1]["content"]
    for number, principle in enumerate(["Be kind.", "Be exact.", "Be brief."], 1):
        assert f"{number}. {principle}" in text
    for completion in prompt.completions.all():
        assert completion.text in text
    assert openai_stub.requests[0]["temperature"] == 0.0
    judgment = AIJudgment.objects.get()
    shown = judgment.calls[0]["shown"]
    ranking = judgment.ranking
    assert ranking.order == [[shown[2]], [shown[0]], [shown[1]]]  # C > A > B, as shown
    assert ranking.labeler == ai_labeler.user and ranking.assignment is None
    assert "Principle 2: B errs" in ranking.rationale
    assert Comparison.objects.filter(ranking=ranking).count() == 3
    assert (judgment.prompt_tokens, judgment.completion_tokens) == (100, 10)
    assert judgment.constitution_version == 1 and judgment.model == "stub-model"
    # Kept apart: the human-only rows (the default) do not see it.
    assert not Ranking.objects.counted().exists()
    assert Ranking.objects.filter(labeler_counts(labelers="ai")).count() == 1


def test_an_unparseable_answer_is_a_failure_never_a_ranking(openai_stub: Stub) -> None:
    ai_labeler = make_labeler(openai_stub)
    make_prompt(ai_labeler.dataset, completions=2)
    openai_stub.default = lambda body: (200, chat_reply("Both are lovely."), 0.0)

    run = run_once(ai_labeler)

    assert (run.status, run.judged, run.failed) == ("succeeded", 0, 1)
    judgment = AIJudgment.objects.get()
    assert judgment.status == "failed" and judgment.ranking is None
    assert "no ranking of the 2 responses" in judgment.error
    assert judgment.calls[0]["raw"] == "Both are lovely."
    assert not Ranking.objects.exists()


def test_malformed_bodies_and_errors_are_failures_with_their_reason(openai_stub: Stub) -> None:
    ai_labeler = make_labeler(openai_stub, max_retries=0)
    for _ in range(3):
        make_prompt(ai_labeler.dataset, completions=2)
    openai_stub.answers = [
        lambda body: (200, b"<html>not json</html>", 0.0),
        lambda body: (200, {"choices": []}, 0.0),
        lambda body: (400, {"error": {"message": "unknown model"}}, 0.0),
    ]

    run = run_once(ai_labeler)

    errors = sorted(AIJudgment.objects.values_list("error", flat=True))
    assert run.failed == 3 and not Ranking.objects.exists()
    assert any("not JSON" in error for error in errors)
    assert any("no choices[0] text" in error for error in errors)
    assert any("HTTP 400" in error and "unknown model" in error for error in errors)


def test_a_slow_endpoint_times_out_and_a_busy_one_is_retried(openai_stub: Stub) -> None:
    ai_labeler = make_labeler(openai_stub, timeout_seconds=1.0, max_retries=2)
    make_prompt(ai_labeler.dataset, completions=2)
    openai_stub.answers = [
        lambda body: (200, chat_reply("Ranking: A > B"), 3.0),  # longer than the timeout
        lambda body: (503, {"error": "loading"}, 0.0),
    ]

    run = run_once(ai_labeler)

    assert run.judged == 1 and len(openai_stub.requests) == 3  # timeout, 503, then the answer

    ai_labeler.max_retries = 0
    ai_labeler.save()
    make_prompt(ai_labeler.dataset, completions=2)
    openai_stub.answers = [lambda body: (200, chat_reply("Ranking: A > B"), 3.0)]
    run = run_once(ai_labeler)
    failed = AIJudgment.objects.get(status="failed")
    assert "no answer within 1 s (timeout)" in failed.error


def test_the_run_fails_loudly_when_the_endpoint_is_down_and_resumes(openai_stub: Stub) -> None:
    ai_labeler = make_labeler(openai_stub, max_retries=0, budget_prompts=20)
    for _ in range(8):
        make_prompt(ai_labeler.dataset, completions=2)
    openai_stub.default = lambda body: (502, {"error": "down"}, 0.0)

    run = ai_labeling.start_run(ai_labeler=ai_labeler)
    with pytest.raises(RuntimeError, match="in a row failed in transit"):
        ai_labeling.run_ai_labeler(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == "failed" and "HTTP 502" in run.error and "resume" in run.error

    openai_stub.default = lambda body: (200, chat_reply("Ranking: B > A"), 0.0)
    ai_labeling.resume_run(run=run)
    ai_labeling.run_ai_labeler(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert AIJudgment.objects.filter(status="ok").count() == 8  # the failed ones again


def test_a_missing_api_key_fails_the_run_and_a_set_one_is_sent_not_stored(
    openai_stub: Stub, monkeypatch: Any
) -> None:
    ai_labeler = make_labeler(openai_stub, api_key_env="PREFLAB_TEST_KEY")
    make_prompt(ai_labeler.dataset, completions=2)
    monkeypatch.delenv("PREFLAB_TEST_KEY", raising=False)
    run = ai_labeling.start_run(ai_labeler=ai_labeler)
    with pytest.raises(ValidationError):
        ai_labeling.run_ai_labeler(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == "failed" and "PREFLAB_TEST_KEY" in run.error
    assert not openai_stub.requests

    monkeypatch.setenv("PREFLAB_TEST_KEY", "sk-secret-123")
    ai_labeling.resume_run(run=run)
    ai_labeling.run_ai_labeler(run_id=run.pk)
    assert openai_stub.headers[0]["Authorization"] == "Bearer sk-secret-123"
    ai_labeler.refresh_from_db()
    assert "sk-secret" not in str(ai_labeler.__dict__)


def test_both_orders_cancel_a_constant_position_bias(openai_stub: Stub) -> None:
    """A model that always answers "A" ranks whatever is shown first best; asked both ways
    round, its two answers cancel into a tie, and its position bias shows in the counts."""
    ai_labeler = make_labeler(openai_stub, both_orders=True)
    for _ in range(4):
        make_prompt(ai_labeler.dataset, completions=2)
    openai_stub.default = lambda body: (200, chat_reply("A"), 0.0)

    run_once(ai_labeler)

    for judgment in AIJudgment.objects.all():
        first, second = judgment.calls
        assert second["shown"] == first["shown"][::-1]
        assert judgment.first_slot_picks == 2
        assert judgment.ranking.order == [sorted(first["shown"])]  # a tie
    assert not Comparison.objects.exists()

    one_way = make_labeler(openai_stub, dataset=ai_labeler.dataset, name="one way")
    run_once(one_way)
    assert Comparison.objects.filter(labeler=one_way.user).count() == 4


def test_log_probabilities_give_a_pairs_preference_and_strength(openai_stub: Stub) -> None:
    ai_labeler = make_labeler(openai_stub)
    make_prompt(ai_labeler.dataset, completions=2)
    tokens = [("Ranking", {"Ranking": -0.1}), (":", {":": -0.1}), (" B", {" B": -0.1, " A": -2.5})]
    openai_stub.default = lambda body: (200, chat_reply("Ranking: B", logprobs=tokens), 0.0)

    run_once(ai_labeler)

    judgment = AIJudgment.objects.get()
    expected = math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.5))
    assert judgment.preference == pytest.approx(expected)
    assert openai_stub.requests[0]["logprobs"] is True
    assert Comparison.objects.get().strength == "better"  # 0.917: between 0.8 and 0.95


def test_budget_limit_pause_and_cancel(openai_stub: Stub) -> None:
    ai_labeler = make_labeler(openai_stub, budget_prompts=3)
    for _ in range(5):
        make_prompt(ai_labeler.dataset, completions=2)

    run = run_once(ai_labeler, limit=2)
    assert (run.planned, run.judged) == (2, 2)
    run = run_once(ai_labeler)
    assert (run.planned, run.judged) == (1, 1)  # the budget's last prompt
    with pytest.raises(ValidationError, match="budget of 3 prompts is used up"):
        ai_labeling.start_run(ai_labeler=ai_labeler)

    ai_labeler.budget_prompts = 10
    ai_labeler.save()
    paused = ai_labeling.pause_run(run=ai_labeling.start_run(ai_labeler=ai_labeler))
    ai_labeling.run_ai_labeler(run_id=paused.pk)  # the worker finds it paused: nothing
    assert AIJudgment.objects.count() == 3
    with pytest.raises(ValidationError, match="queued, running or paused already"):
        ai_labeling.start_run(ai_labeler=ai_labeler)
    cancelled = ai_labeling.cancel_run(run=paused)
    assert cancelled.status == "cancelled"
    with pytest.raises(ValidationError):
        ai_labeling.resume_run(run=cancelled)


def test_a_pause_stops_a_running_run_after_its_batch(openai_stub: Stub, monkeypatch: Any) -> None:
    ai_labeler = make_labeler(openai_stub, concurrency=1)  # batches of two
    for _ in range(6):
        make_prompt(ai_labeler.dataset, completions=2)
    run = ai_labeling.start_run(ai_labeler=ai_labeler)
    note_progress = ai_labeling._note_progress

    def paused_meanwhile(run: AIRun, outcomes: Any) -> bool:
        AIRun.objects.filter(pk=run.pk).update(status="paused")  # the admin's button
        return note_progress(run, outcomes)

    monkeypatch.setattr(ai_labeling, "_note_progress", paused_meanwhile)
    ai_labeling.run_ai_labeler(run_id=run.pk)
    monkeypatch.undo()
    run.refresh_from_db()
    assert run.status == "paused" and AIJudgment.objects.count() == 2

    ai_labeling.resume_run(run=run)
    ai_labeling.run_ai_labeler(run_id=run.pk)
    run.refresh_from_db()
    assert (run.status, run.judged, run.planned) == ("succeeded", 6, 6)


def test_prompts_outside_the_review_sample_leave_the_human_queue(openai_stub: Stub) -> None:
    dataset = DatasetFactory(labels_per_prompt=1, status=Dataset.Status.ACTIVE)
    ai_labeler = make_labeler(openai_stub, dataset=dataset, review_rate=0.3, budget_prompts=100)
    prompts = [make_prompt(dataset, completions=2) for _ in range(40)]
    human = UserFactory()
    taken = leasing.lease_next_assignment(dataset=dataset, labeler=human)  # a human took one

    run_once(ai_labeler)

    sampled = set(AIJudgment.objects.filter(review_sampled=True).values_list("prompt", flat=True))
    left = set(Prompt.objects.filter(left_to_ai=True).values_list("pk", flat=True))
    assert 4 <= len(sampled) <= 20  # about 30% of 40
    assert left == {p.pk for p in prompts} - sampled - {taken.prompt_id}
    offered = {taken.prompt_id}
    while lease := leasing.lease_next_assignment(dataset=dataset, labeler=UserFactory()):
        offered.add(lease.prompt_id)
    assert offered == {p.pk for p in prompts} - left
    assert Assignment.objects.filter(labeler=ai_labeler.user).count() == 0
    progress = Dataset.objects.with_progress().get(pk=dataset.pk)
    assert progress.prompt_count == 40 - len(left)


def test_principles_are_versioned_and_checked(openai_stub: Stub) -> None:
    ai_labeler = make_labeler(openai_stub)
    ai_labeling.update_ai_labeler(ai_labeler=ai_labeler, principles=["Only this one."])
    assert ai_labeler.constitution_version == 2
    ai_labeling.update_ai_labeler(ai_labeler=ai_labeler, max_tokens=300)
    assert ai_labeler.constitution_version == 2
    with pytest.raises(ValidationError, match="1 to 20 principles"):
        ai_labeling.update_ai_labeler(ai_labeler=ai_labeler, principles=[" "])
    with pytest.raises(ValidationError, match="base_url"):
        make_labeler(openai_stub, base_url="not a url", name="other")


def test_an_answer_without_a_ranking_is_asked_once_more_for_the_verdict(
    openai_stub: Stub,
) -> None:
    ai_labeler = make_labeler(openai_stub, principles=["Be right.", "Be kind."])
    make_prompt(ai_labeler.dataset, completions=2)
    critique = "Principle 1: the second one errs.\nPrinciple 2: both are kind.\nHard to say."

    def answer(body: dict[str, Any]) -> Any:
        asked = body["messages"][-1]["content"]
        return (200, chat_reply("B" if "A or B?" in asked else critique), 0.0)

    openai_stub.default = answer
    run_once(ai_labeler)

    first, again = (body["messages"][-1]["content"] for body in openai_stub.requests)
    assert "Principle <number>" in first and critique in again
    assert again.endswith("Which response is better, A or B? Answer with the letter only.")
    judgment = AIJudgment.objects.get()
    (call,) = judgment.calls
    assert (judgment.status, call["raw"], call["verdict"]) == ("ok", critique, "B")
    assert call["critiques"] == {"1": "the second one errs.", "2": "both are kind."}
    shown_second = call["shown"][1]
    assert judgment.ranking.order[0] == [shown_second]
    assert "the second one errs" in judgment.ranking.rationale


def test_a_verdict_that_still_names_no_ranking_fails_the_judgment(openai_stub: Stub) -> None:
    ai_labeler = make_labeler(openai_stub)
    make_prompt(ai_labeler.dataset, completions=2)
    openai_stub.default = lambda body: (200, chat_reply("They are both fine."), 0.0)

    run = run_once(ai_labeler)

    judgment = AIJudgment.objects.get()
    assert (judgment.status, judgment.ranking) == ("failed", None)
    assert "asked again: no ranking" in judgment.error
    assert len(openai_stub.requests) == 2 and run.failed == 1
