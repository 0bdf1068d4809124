"""The AI labeler against a real model: llama-cpp-python's OpenAI-compatible server on loopback
serving SmolLM2-135M-Instruct (the `llm_server` fixture, tests/llm_server.py; skipped with the
reason where it cannot run). That model is at chance on real preferences and mostly answers
"A", so these tests assert structure, not quality: valid rankings or recorded failures, the same
answer twice at temperature 0, every principle in the request, and both orders turning a
constant position bias into ties. Each call takes about a second on a 2-core runner, so the
tests make few."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from labeling import ai_judge
from labeling.ai_client import Answer, Endpoint
from labeling.models import AIJudgment, Comparison, Ranking
from labeling.orders import members
from labeling.services import ai_labeling
from tests.factories import DatasetFactory, make_prompt

pytestmark = [pytest.mark.django_db, pytest.mark.llm]

PRINCIPLES = [
    "Choose the response that answers the question correctly.",
    "Choose the response that is polite.",
]


def small_dataset() -> Any:
    dataset = DatasetFactory(labels_per_prompt=1)
    for question, right, wrong in [
        ("What is 2 + 2?", "2 + 2 is 4.", "2 + 2 is 5."),
        ("What is the capital of France?", "Paris.", "Berlin."),
        ("Is the sun a star?", "Yes, the sun is a star.", "No, it is a planet."),
    ]:
        prompt = make_prompt(
            dataset, completions=2, messages=[{"role": "user", "content": question}]
        )
        first, second = prompt.completions.order_by("position")
        first.text, second.text = right, wrong
        first.save()
        second.save()
    prompt = make_prompt(dataset, completions=3)  # a ranking of three, too
    return dataset


def add(dataset: Any, server: Any, **fields: Any) -> Any:
    return ai_labeling.add_ai_labeler(
        dataset=dataset,
        name=fields.pop("name", "smol"),
        base_url=server.base_url,
        model=server.model,
        principles=PRINCIPLES,
        max_tokens=fields.pop("max_tokens", 96),
        timeout_seconds=120,
        max_retries=1,
        concurrency=1,
        **fields,
    )


def test_it_labels_a_small_dataset_in_both_orders_through_the_worker(
    llm_server: Any, eager_celery: Any, django_capture_on_commit_callbacks: Any
) -> None:
    dataset = small_dataset()
    labeler = add(dataset, llm_server, both_orders=True)

    with django_capture_on_commit_callbacks(execute=True):
        run = ai_labeling.start_run(ai_labeler=labeler)  # the task runs where it is sent
    run.refresh_from_db()

    assert run.status == "succeeded" and run.judged + run.failed == 4 == run.planned
    assert run.prompt_tokens > 0 and run.completion_tokens > 0
    for judgment in AIJudgment.objects.select_related("ranking", "prompt"):
        completion_ids = set(judgment.prompt.completions.values_list("pk", flat=True))
        assert judgment.calls[0]["raw"] is not None and judgment.seconds > 0
        if judgment.status == "ok":
            first, second = judgment.calls  # the responses shown in one order, then the other
            assert second["shown"] == first["shown"][::-1]
            assert set(members(judgment.ranking.order)) == completion_ids
            assert judgment.ranking.labeler_id == labeler.user_id
        else:  # an answer that names no complete order: a failure with its reason, no ranking
            assert judgment.ranking is None and "no ranking" in judgment.error
    pairs = AIJudgment.objects.filter(status="ok", prompt__completions__position=1).exclude(
        prompt__completions__position=2
    )
    assert pairs.exists()
    for judgment in pairs.distinct():
        # The same slot picked both times (both first, or both second) is no preference at all.
        tied = len(judgment.ranking.order) == 1
        assert tied == (judgment.first_slot_picks in (0, 2))
        assert Comparison.objects.filter(ranking=judgment.ranking).exists() != tied
    rankings = Ranking.objects.filter(labeler=labeler.user)
    assert rankings.count() == run.judged
    assert not Ranking.objects.counted().exists()  # kept apart from the humans


def test_the_same_question_gets_the_same_answer_at_temperature_zero(llm_server: Any) -> None:
    dataset = small_dataset()
    labeler = add(dataset, llm_server)
    first_pair, second_pair = dataset.prompts.order_by("pk")[:2]
    question, other = ai_labeling._questions(labeler, [first_pair.pk, second_pair.pk])
    sent: list[list[dict[str, str]]] = []

    class Recording(Endpoint):
        def ask(self, messages: list[dict[str, str]]) -> Answer:
            sent.append(messages)
            return super().ask(messages)

    endpoint = Recording(**{**ai_labeling.endpoint_of(labeler).__dict__})
    pace = ai_judge.Pace(600)
    first = ai_judge.judge(endpoint, question, labeler, pace=pace)
    ai_judge.judge(endpoint, other, labeler, pace=pace)  # see test_llm_server: not back to back
    second = ai_judge.judge(endpoint, question, labeler, pace=pace)

    assert first.calls[0]["raw"] == second.calls[0]["raw"]
    assert first.order == second.order
    request = sent[0][-1]["content"]
    for number, principle in enumerate(PRINCIPLES, 1):
        assert f"{number}. {principle}" in request
    for _, text in question.shown:
        assert text in request


def test_a_cut_off_answer_is_a_failure_or_a_whole_ranking(llm_server: Any) -> None:
    dataset = small_dataset()
    labeler = add(dataset, llm_server, max_tokens=16)  # too short for critiques and a ranking
    run = ai_labeling.start_run(ai_labeler=labeler)
    ai_labeling.run_ai_labeler(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == "succeeded" and run.judged + run.failed == 4
    for judgment in AIJudgment.objects.all():
        assert (judgment.status == "ok") == (judgment.ranking_id is not None)
        if judgment.status == "failed":
            assert judgment.error


def test_an_answer_slower_than_the_timeout_fails_in_transit(llm_server: Any, monkeypatch: Any):
    monkeypatch.setattr(ai_judge, "BACKOFF_SECONDS", 0.01)
    dataset = small_dataset()
    labeler = add(dataset, llm_server)  # max_retries=1: two tries
    question = ai_labeling._questions(labeler, [dataset.prompts.order_by("pk")[0].pk])[0]
    # Below the 1 s that an AI labeler may set, so that the small model cannot answer in time.
    endpoint = replace(ai_labeling.endpoint_of(labeler), timeout=0.001)

    outcome = ai_judge.judge(endpoint, question, labeler, pace=ai_judge.Pace(600))

    assert outcome.in_transit and outcome.order is None
    assert "(timeout) (after 2 tries)" in outcome.error
    assert outcome.calls == [{"shown": outcome.calls[0]["shown"], "error": outcome.error}]
