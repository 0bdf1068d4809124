"""One mapping from the services' errors to the API's error body, for every API view.

Services refuse with Django's ValidationError naming the field; DRF knows only its own. Here a
Django ValidationError becomes a 400 whose body names the field (`{"field": ["message"]}`, or
`{"detail": [...]}` when no field is named); DRF's default handler does the rest (its own
ValidationError, PermissionDenied and Http404 included).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(error: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(error, ValidationError):
        if hasattr(error, "error_dict"):
            error = ApiValidationError(error.message_dict)
        else:
            error = ApiValidationError({"detail": error.messages})
    return drf_exception_handler(error, context)
