"""Pages of the whole site rather than of an app."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import SetPasswordForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from labeling import accounts
from labeling.forms import ThrottledPasswordResetForm


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """A form refused by the CSRF check (an old page, a blocked cookie): the 403 page in
    PrefLab's layout, telling the user to reload and send it again. (CSRF_FAILURE_VIEW)"""
    context = {"csrf_failure": True, "reason": reason if settings.DEBUG else ""}
    return render(request, "403.html", context, status=403)


class PasswordResetView(auth_views.PasswordResetView):
    """Django's "Forgot your password?" page with PrefLab's throttled form, which needs the
    request to count by the client's address."""

    form_class = ThrottledPasswordResetForm

    def get_form_kwargs(self) -> dict[str, Any]:
        return super().get_form_kwargs() | {"request": self.request}


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """Django's page behind the e-mailed link. A new password also lifts the account's sign-in
    throttle: whoever reset it can log in at once."""

    def form_valid(self, form: SetPasswordForm) -> HttpResponse:
        accounts.reset_login_failures(username=form.user.get_username())
        return super().form_valid(form)
