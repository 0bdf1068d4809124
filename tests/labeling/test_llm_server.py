"""What the AI labeler may rely on from an OpenAI-compatible server, pinned on the local one
(llama-cpp-python 0.3.36 with SmolLM2-135M-Instruct, tests/llm_server.py): greedy answers repeat,
usage is counted, and log-probabilities come in OpenAI's shapes with llama-cpp-python's quirks."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from tests.llm_server import LLMServer

pytestmark = pytest.mark.llm


def post(server: LLMServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        server.base_url + path,
        data=json.dumps({"model": server.model, **body}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.load(reply)


def chat(server: LLMServer, question: str, **options: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": question}]
    return post(server, "/chat/completions", {"messages": messages, "temperature": 0, **options})


def judge_prompt(prompt: str, response_a: str, response_b: str) -> str:
    return (
        f"Prompt: {prompt}\n\nResponse A: {response_a}\n\nResponse B: {response_b}\n\n"
        "Which response is better, A or B? Answer with a letter."
    )


def test_models_lists_the_served_model(llm_server: LLMServer) -> None:
    with urllib.request.urlopen(llm_server.base_url + "/models", timeout=10) as reply:
        models = json.load(reply)

    assert [model["id"] for model in models["data"]] == ["SmolLM2-135M-Instruct"]
    assert llm_server.model == "SmolLM2-135M-Instruct"


def test_chat_at_temperature_zero_repeats_its_answer_and_counts_tokens(
    llm_server: LLMServer,
) -> None:
    # Another request comes between the two. The same request right after itself is served from
    # the KV cache by replaying only its last token, and a one-token decode rounds differently
    # from a batched one: on this model "Name three colours." then answers differently. (The AI
    # labeler's two orders and its follow-up question are different requests.)
    first = chat(llm_server, "Name three colours.", max_tokens=40)
    chat(llm_server, "Say hello.", max_tokens=4)
    second = chat(llm_server, "Name three colours.", max_tokens=40)

    assert first["choices"][0]["message"]["content"]
    assert second["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]
    assert first["choices"][0]["finish_reason"] == "length"
    usage = first["usage"]
    assert usage["prompt_tokens"] > 10  # the chat template adds a system message
    assert usage["completion_tokens"] == 40
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert second["usage"] == usage


def test_chat_logprobs_give_the_top_tokens_of_each_answer_token(llm_server: LLMServer) -> None:
    reply = chat(llm_server, "What is 2 + 2?", max_tokens=4, logprobs=True, top_logprobs=5)

    tokens = reply["choices"][0]["logprobs"]["content"]
    assert len(tokens) == reply["usage"]["completion_tokens"] == 4
    assert "".join(token["token"] for token in tokens) == reply["choices"][0]["message"]["content"]
    for token in tokens:
        top = token["top_logprobs"]
        assert len(top) == 5
        assert [entry["logprob"] for entry in top] == sorted(
            (entry["logprob"] for entry in top), reverse=True
        )
        assert all(entry["logprob"] <= 0 for entry in top)
        # Greedy: the chosen token is the most likely one.
        assert (top[0]["token"], top[0]["logprob"]) == (token["token"], token["logprob"])


def test_chat_logprobs_without_top_logprobs_are_null(llm_server: LLMServer) -> None:
    # OpenAI returns each token's own logprob here; llama-cpp-python returns nothing.
    reply = chat(llm_server, "What is 2 + 2?", max_tokens=4, logprobs=True)

    assert reply["choices"][0]["logprobs"] is None


def test_completion_logprobs_give_a_dict_of_top_tokens_per_token(llm_server: LLMServer) -> None:
    reply = post(
        llm_server,
        "/completions",
        {"prompt": "The capital of France is", "temperature": 0, "max_tokens": 3, "logprobs": 5},
    )

    logprobs = reply["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == 3
    assert "".join(logprobs["tokens"]) == reply["choices"][0]["text"]
    assert [len(top) for top in logprobs["top_logprobs"]] == [5, 5, 5]
    for token, top in zip(logprobs["tokens"], logprobs["top_logprobs"], strict=True):
        assert max(top, key=top.get) == token


def test_the_small_model_answers_a_whichever_response_is_better(llm_server: LLMServer) -> None:
    """SmolLM2-135M cannot judge: a test of the AI labeler gets "A" in either order, the
    position bias a swapped second judgment has to catch."""
    good, bad = "The capital of France is Paris.", "France is a country. The sky is green."
    prompt = "What is the capital of France?"

    good_first = chat(llm_server, judge_prompt(prompt, good, bad), max_tokens=1)
    good_second = chat(llm_server, judge_prompt(prompt, bad, good), max_tokens=1)

    assert good_first["choices"][0]["message"]["content"] == "A"
    assert good_second["choices"][0]["message"]["content"] == "A"
