"""A ValidationError as text: for a form's errors, a message to the user, a job's error field."""

from __future__ import annotations

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError


def errors_text(error: ValidationError) -> list[str]:
    """A ValidationError's messages as lines, each prefixed by its field when it has one."""
    if hasattr(error, "error_dict"):
        return [
            f"{name}: {message}" if name != NON_FIELD_ERRORS else message
            for name, messages in error.message_dict.items()
            for message in messages
        ]
    return list(error.messages)


def failure_text(error: BaseException) -> str:
    """Why a background job failed, in one line: a refusal's messages, else the exception."""
    if isinstance(error, ValidationError):
        return "; ".join(errors_text(error))
    return f"{type(error).__name__}: {error}"
