"""The API's shared plumbing: one mapping from the services' errors to the API's error body for
every view, and the JSON parser that bounds what a body may hold.

Services refuse with Django's ValidationError naming the field; DRF knows only its own. Here a
Django ValidationError becomes a 400 whose body names the field (`{"field": ["message"]}`, or
`{"detail": [...]}` when no field is named); DRF's default handler does the rest (its own
ValidationError, PermissionDenied and Http404 included).
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, ValidationError
from rest_framework import status, throttling
from rest_framework.exceptions import APIException, ParseError
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(error: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(error, RequestDataTooBig):
        error = RequestTooLarge("The request body is larger than this endpoint takes.")
    elif isinstance(error, ValidationError):
        if hasattr(error, "error_dict"):
            error = ApiValidationError(error.message_dict)
        else:
            error = ApiValidationError({"detail": error.messages})
    return drf_exception_handler(error, context)


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (a scalar is 0), without
    recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in item)
    return deepest


class LimitedJSONParser(BaseParser):
    """JSON bodies of at most `max_bytes` (a 413 naming the limit) nested at most
    PREFLAB_API_MAX_JSON_DEPTH deep (a 400): a body can neither hold a worker's memory nor crash
    the parser. (Not a JSONParser subclass: DRF reads those through `request.body`, whose own
    limit answers with an HTML 400.)"""

    media_type = "application/json"
    renderer_class = JSONRenderer

    @property
    def max_bytes(self) -> int:
        return int(settings.PREFLAB_API_MAX_JSON_BYTES)

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise self.too_large()
        if request is not None and self.max_bytes <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            body = request.body  # read through Django, so it stays readable afterwards
        else:
            body = stream.read(self.max_bytes + 1) if stream is not None else b""
        if len(body) > self.max_bytes:
            raise self.too_large()
        try:
            # JSON is UTF-8 (RFC 8259), whatever charset a client names.
            data = json.loads(body.decode("utf-8"))
        except RecursionError:
            raise ParseError("JSON parse error: nested too deeply.") from None
        except ValueError as error:  # UnicodeDecodeError is one
            raise ParseError(f"JSON parse error: {error}") from None
        limit = settings.PREFLAB_API_MAX_JSON_DEPTH
        if json_depth(data) > limit:
            raise ParseError(f"JSON parse error: nested deeper than {limit} levels.")
        return data

    def too_large(self) -> RequestTooLarge:
        return RequestTooLarge(
            f"The request body is larger than {self.max_bytes} bytes, the limit here."
        )


class ScoreJSONParser(LimitedJSONParser):
    """The score endpoint takes batches of up to PREFLAB_SCORE_BATCH_MAX long conversations."""

    @property
    def max_bytes(self) -> int:
        return int(settings.PREFLAB_SCORE_MAX_JSON_BYTES)


ERROR_RESPONSES = {
    "400": "Refused: the body names each field and what is wrong with it "
    '({"field": ["message"]}), or says why in "detail".',
    "401": "No token, or a token that is not valid.",
    "403": "This token's role may not do this.",
    "404": "No such object, or not one this token may see.",
    "413": "The body is larger than this endpoint takes; the message names the limit.",
    "429": "Too many requests from this token (or address): retry after the seconds in the "
    "Retry-After header.",
}
ERROR_SCHEMA = {
    "type": "object",
    "description": "An error: `detail`, or one list of messages per refused field.",
    "properties": {
        "detail": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    },
    "additionalProperties": True,
}


def add_error_responses(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing: every operation lists the errors it can answer with and
    their body (413 only where a body is sent)."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for code, description in ERROR_RESPONSES.items():
                if code == "413" and method not in ("post", "put", "patch"):
                    continue
                response = responses.setdefault(code, {"description": description})
                response.setdefault("content", body)
    return result


class CountingThrottle(throttling.SimpleRateThrottle):
    """A DRF rate counted in fixed windows, in one cache round trip where the cache can
    (`config.cache.RedisCache.count_hit`).

    DRF's own throttles keep the time of every request in the window and read and write that
    list on each call: two round trips and a list of up to the rate's count pickled each time,
    a tenth of a labeling request's CPU. Here the window's first request starts a counter that
    expires with the window, and `Retry-After` is what the window has left. As with any fixed
    window, a client may fit up to twice the rate across a window's edge. A cache without
    `count_hit` (the embedded defaults' file cache) keeps DRF's way."""

    num_requests: int  # set by SimpleRateThrottle.__init__ from the rate
    duration: int
    left = 0

    def allow_request(self, request: Any, view: Any) -> bool:
        count_hit = getattr(self.cache, "count_hit", None)
        if count_hit is None:
            return super().allow_request(request, view)
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        hits, self.left = count_hit(f"{self.key}:window", self.duration)
        return hits <= self.num_requests

    def wait(self) -> float | None:
        if getattr(self.cache, "count_hit", None) is None:
            return super().wait()
        return max(self.left, 1)


class UserRateThrottle(CountingThrottle, throttling.UserRateThrottle):
    """Per token or signed-in user: `PREFLAB_API_RATE`."""


class AnonRateThrottle(CountingThrottle, throttling.AnonRateThrottle):
    """Per address, for calls without credentials: `PREFLAB_API_ANON_RATE`."""
