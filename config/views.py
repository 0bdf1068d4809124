"""Pages of the whole site rather than of an app."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """A form refused by the CSRF check (an old page, a blocked cookie): the 403 page in
    PrefLab's layout, telling the user to reload and send it again. (CSRF_FAILURE_VIEW)"""
    context = {"csrf_failure": True, "reason": reason if settings.DEBUG else ""}
    return render(request, "403.html", context, status=403)
