"""PrefLab's admin site: Django's, with the throttled sign-in and a 403 page for labelers."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseBase

from labeling.forms import ThrottledAdminAuthenticationForm

View = TypeVar("View", bound=Callable[..., HttpResponseBase])


class AdminSite(admin.AdminSite):
    """A signed-in labeler who opens an admin page gets the 403 page (templates/403.html), not
    Django's admin login form, which asks for a password their account can never satisfy.
    Anonymous visitors still get the admin login form."""

    login_form = ThrottledAdminAuthenticationForm

    def denies(self, request: HttpRequest) -> bool:
        return request.user.is_authenticated and not self.has_permission(request)

    def admin_view(self, view: View, cacheable: bool = False) -> View:
        inner = super().admin_view(view, cacheable)

        @wraps(inner)
        def staff_only(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if self.denies(request):
                raise PermissionDenied("This page is for staff.")
            return inner(request, *args, **kwargs)

        return cast(View, staff_only)

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        # A POST still signs in: the form may be for another, staff, account.
        if request.method == "GET" and self.denies(request):
            raise PermissionDenied("This page is for staff.")
        return super().login(request, extra_context)
