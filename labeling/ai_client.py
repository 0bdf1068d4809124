"""A small client of OpenAI-compatible endpoints (llama.cpp's server, vLLM, Ollama, hosted APIs):
one chat or text completion per call, with its usage and, where the endpoint gives them, the
log-probabilities of each answer token's alternatives. Standard library only, so a web process
that never labels with a model loads nothing for it.

Every answer is untrusted: the body is read up to `MAX_BODY_BYTES`, and anything but the fields
read here is ignored.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

MAX_BODY_BYTES = 4 * 1024 * 1024
TOP_LOGPROBS = 5
# Errors worth another try: the endpoint is busy, restarting or slow.
RETRYABLE_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}


class EndpointError(Exception):
    """A call that gave no usable answer. `retryable` for what may pass on another try (a
    timeout, a refused connection, 429 or 5xx); `retry_after` is the endpoint's own hint."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class Answer:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    # Per answer token, where given: the token and its alternatives' log-probabilities.
    tokens: list[str] = field(default_factory=list)
    alternatives: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    api: str = "chat"  # or "completions"
    api_key: str = ""
    timeout: float = 60.0
    max_tokens: int = 512
    temperature: float = 0.0
    logprobs: bool = True

    def ask(self, messages: list[dict[str, str]]) -> Answer:
        """One completion of the conversation `messages` (system, user...); raises
        EndpointError."""
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": 0,
        }
        if self.api == "chat":
            path = "/chat/completions"
            body["messages"] = messages
            if self.logprobs:
                body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        else:
            path = "/completions"
            body["prompt"] = as_plain_prompt(messages)
            if self.logprobs:
                body["logprobs"] = TOP_LOGPROBS
        started = time.monotonic()
        reply = self._post(path, body)
        return _answer(reply, api=self.api, seconds=time.monotonic() - started)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            self.base_url.rstrip("/") + path,
            data=json.dumps(body).encode(),
            headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read(MAX_BODY_BYTES + 1)
        except urllib.error.HTTPError as error:
            retry_after = _seconds(error.headers.get("Retry-After")) if error.headers else None
            detail = error.read(500).decode("utf-8", "replace").strip()
            raise EndpointError(
                f"the endpoint answered HTTP {error.code}: {detail[:300]}",
                retryable=error.code in RETRYABLE_STATUSES,
                retry_after=retry_after,
            ) from None
        except TimeoutError:
            raise EndpointError(
                f"no answer within {self.timeout:g} s (timeout)", retryable=True
            ) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise EndpointError(f"could not reach the endpoint: {reason}", retryable=True) from None
        if len(raw) > MAX_BODY_BYTES:
            raise EndpointError(
                f"the answer is over {MAX_BODY_BYTES // 1024 // 1024} MB", retryable=False
            )
        try:
            reply = json.loads(raw)
        except ValueError:
            raise EndpointError("the answer is not JSON", retryable=True) from None
        if not isinstance(reply, dict):
            raise EndpointError("the answer is not a JSON object", retryable=False)
        return reply


def as_plain_prompt(messages: list[dict[str, str]]) -> str:
    """A conversation as one text, for the text completions API."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    turns = [f"{names.get(m['role'], m['role'].title())}: {m['content']}" for m in messages]
    return "\n\n".join(turns) + "\n\nAssistant:"


def _answer(reply: dict[str, Any], *, api: str, seconds: float) -> Answer:
    try:
        choice = reply["choices"][0]
        text = choice["message"]["content"] if api == "chat" else choice["text"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError(
            "the answer has no choices[0] text (is this an OpenAI-compatible endpoint?)",
            retryable=False,
        ) from None
    if not isinstance(text, str):
        raise EndpointError("the answer's text is not a string", retryable=False)
    usage: dict[str, Any] = reply["usage"] if isinstance(reply.get("usage"), dict) else {}
    tokens, alternatives = _logprobs(choice.get("logprobs"), api=api)
    return Answer(
        text=text,
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        seconds=seconds,
        tokens=tokens,
        alternatives=alternatives,
    )


def _logprobs(logprobs: Any, *, api: str) -> tuple[list[str], list[dict[str, float]]]:
    """The answer's tokens and each one's alternatives, in either API's shape; nothing where
    the endpoint gave none or something else."""
    tokens: list[str] = []
    alternatives: list[dict[str, float]] = []
    try:
        if api == "chat":
            for entry in (logprobs or {}).get("content") or []:
                tokens.append(str(entry["token"]))
                alternatives.append(
                    {str(top["token"]): float(top["logprob"]) for top in entry["top_logprobs"]}
                )
        else:
            logprobs = logprobs or {}
            for token, top in zip(
                logprobs.get("tokens") or [], logprobs.get("top_logprobs") or [], strict=False
            ):
                tokens.append(str(token))
                alternatives.append({str(k): float(v) for k, v in (top or {}).items()})
    except (KeyError, TypeError, ValueError, AttributeError):
        return [], []
    return tokens, alternatives


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _seconds(value: str | None) -> float | None:
    try:
        return min(600.0, max(0.0, float(value))) if value else None
    except ValueError:
        return None
