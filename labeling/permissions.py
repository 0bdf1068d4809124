"""Who may call what. Three roles: staff (manage everything), service accounts (training
pipelines: read and export, score), and labelers (every other active user: their own tasks)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

SERVICE_GROUP = "service"


def is_service(user: User) -> bool:
    return user.groups.filter(name=SERVICE_GROUP).exists()


def pseudonym(user_id: int) -> str:
    """A labeler's stable id in exports: a keyed hash, never the username."""
    key = settings.PREFLAB_PSEUDONYM_KEY.encode()
    return "lab-" + hmac.new(key, str(user_id).encode(), hashlib.sha256).hexdigest()[:16]


class IsStaff(BasePermission):
    message = "Only staff accounts may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_active and request.user.is_staff)


class IsStaffOrService(BasePermission):
    message = "Only staff and service accounts may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_active):
            return False
        return bool(user.is_staff or is_service(user))  # type: ignore[arg-type]


class IsLabeler(BasePermission):
    message = "Service accounts cannot label."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_active and not is_service(user))  # type: ignore[arg-type]
