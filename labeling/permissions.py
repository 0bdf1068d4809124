"""Who may call what in the API: one permission class per role (see `labeling.accounts`)."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from labeling.accounts import is_service


class IsStaff(BasePermission):
    message = "Only staff accounts may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_active and request.user.is_staff)


class IsStaffToChange(IsStaff):
    """Anyone signed in may read; only staff may change."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in SAFE_METHODS:
            return bool(request.user and request.user.is_authenticated)
        return super().has_permission(request, view)


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
