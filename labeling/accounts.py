"""Who an account is to PrefLab: its role, and the pseudonym that stands for it in exports.

Roles are held per workspace (`labeling.workspace_models.Role`); what each may do is
`labeling.access`. This module signs accounts in (tokens, the sign-in throttle), guards pages by
role (`role_required`) and names labelers in exports (`pseudonym`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseBase
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from labeling.compiled import CompiledQuery

# The signed-in user of a token, in one query compiled once per process: every API request
# runs it, and building it with the ORM cost more CPU than running it.
TOKEN_USER = CompiledQuery(lambda key: User.objects.filter(auth_token__key=key), key=str)


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication in one compiled query. A token is its user's: what it may
    read is what the user's roles allow in their workspaces (`labeling.access`)."""

    def authenticate_credentials(self, key: str) -> tuple[User, Token]:
        user = TOKEN_USER.first(key=key)
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return user, Token(key=key, user=user)


View = TypeVar("View", bound=Callable[..., HttpResponseBase])


def role_required(test: Callable[[Any], bool], refusal: str) -> Callable[[View], View]:
    """A page's door for one role: an anonymous visitor is sent to log in; a signed-in user who
    fails `test` gets 403 (templates/403.html says whose page it is), not a login form that no
    password of theirs can pass."""

    def decorate(view: View) -> View:
        @wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not test(request.user):
                raise PermissionDenied(refusal)
            return view(request, *args, **kwargs)

        return cast(View, guarded)

    return decorate


def pseudonym(user_id: int) -> str:
    """A labeler's stable id in exports: a keyed hash, never the username."""
    key = settings.PREFLAB_PSEUDONYM_KEY.encode()
    return "lab-" + hmac.new(key, str(user_id).encode(), hashlib.sha256).hexdigest()[:16]


def labeler_with_pseudonym(wanted: str) -> int | None:
    """The id of the user whose pseudonym is `wanted`, or None. A keyed hash cannot be turned
    back, so this hashes every user's id."""
    users = get_user_model().objects.order_by("pk").values_list("pk", flat=True)
    return next((user_id for user_id in users.iterator() if pseudonym(user_id) == wanted), None)


# --- Sign-in throttle ------------------------------------------------------------------------
# Sign-in attempts are counted in the shared cache per account and per address, each for
# PREFLAB_LOGIN_WINDOW_SECONDS from the first; a successful one is taken back. An attempt is
# counted before its password is checked, so parallel attempts cannot all slip under the limit;
# past the limit signing in is refused, whatever the password, until the window ends or
# `reset_login_failures`.


def client_address(request: HttpRequest) -> str:
    """The client's address: with PREFLAB_PROXY_COUNT proxies in front, the entry of
    X-Forwarded-For that the outermost of them appended."""
    proxies = settings.PREFLAB_PROXY_COUNT
    forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    if proxies and len([a for a in forwarded if a]) >= proxies:
        return forwarded[-proxies]
    return str(request.META.get("REMOTE_ADDR", ""))


def _failure_keys(username: str, address: str) -> list[tuple[str, int]]:
    account = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return [
        (f"preflab:login:account:{account}", settings.PREFLAB_LOGIN_FAILURES_PER_ACCOUNT),
        (f"preflab:login:address:{address}", settings.PREFLAB_LOGIN_FAILURES_PER_ADDRESS),
    ]


def count_attempt(key: str, window_seconds: int) -> int:
    """Add one to the counter `key`, which starts at the first attempt and is forgotten
    `window_seconds` later; the count so far. Atomic on Redis: increments, no read-then-write."""
    if cache.add(key, 1, timeout=window_seconds):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=window_seconds)
        return 1


def begin_login_attempt(username: str, address: str) -> bool:
    """Count a sign-in attempt; False when the account or the address is past its limit (the
    attempt must then be refused)."""
    window = settings.PREFLAB_LOGIN_WINDOW_SECONDS
    counts = [
        (count_attempt(key, window), limit) for key, limit in _failure_keys(username, address)
    ]
    return all(count <= limit for count, limit in counts)


def login_succeeded(username: str, address: str) -> None:
    """A good password: the account starts afresh, the address gets this attempt back."""
    account_key, address_key = (key for key, _ in _failure_keys(username, address))
    cache.delete(account_key)
    try:
        if cache.decr(address_key) < 0:
            cache.delete(address_key)
    except ValueError:  # the window ended meanwhile
        pass


def reset_login_failures(*, username: str = "", address: str = "") -> None:
    """Forget the failed sign-ins of an account and/or an address."""
    keys = _failure_keys(username, address)
    cache.delete_many(([keys[0][0]] if username else []) + ([keys[1][0]] if address else []))


def begin_password_reset(email: str, address: str) -> bool:
    """Count a request for a password reset e-mail; False when the e-mail address or the
    client's address is past its limit within PREFLAB_PASSWORD_RESET_WINDOW_SECONDS. Counted
    whether or not an account has the address, so a refusal says nothing about which do; the
    per-address limit keeps the form from being used to flood someone's mailbox."""
    mailbox = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    window = settings.PREFLAB_PASSWORD_RESET_WINDOW_SECONDS
    counts = [
        (count_attempt(key, window), limit)
        for key, limit in [
            (f"preflab:reset:email:{mailbox}", settings.PREFLAB_PASSWORD_RESETS_PER_EMAIL),
            (f"preflab:reset:address:{address}", settings.PREFLAB_PASSWORD_RESETS_PER_ADDRESS),
        ]
    ]
    return all(count <= limit for count, limit in counts)
