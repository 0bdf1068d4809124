"""Password reset e-mails: asked for on the "Forgot your password?" form, or by staff for chosen
accounts in the admin. A worker sends them, so a web request never waits for a mail server, and
the form answers as fast whether or not an account has the address."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.forms import PasswordResetForm
from django.contrib.auth.models import User
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

logger = logging.getLogger(__name__)

SUBJECT_TEMPLATE = "registration/password_reset_subject.txt"
BODY_TEMPLATE = "registration/password_reset_email.html"


def request_password_reset(*, user: User, domain: str, use_https: bool) -> None:
    """Queue the reset e-mail for `user`, once the transaction commits. Raises ValidationError
    when the account has no e-mail address or is inactive (an excluded labeler is reinstated
    first). An account without a usable password yet gets the link too: that is how staff let
    a new labeler choose one."""
    from labeling import tasks

    if not user.email:
        raise ValidationError("has no e-mail address.")
    if not user.is_active:
        raise ValidationError("is inactive: reinstate the account first.")
    transaction.on_commit(lambda: tasks.send_password_reset.delay(user.pk, domain, use_https))


def send_password_reset(*, user_id: int, domain: str, use_https: bool) -> bool:
    """E-mail the account a link that sets a new password (valid PASSWORD_RESET_TIMEOUT seconds,
    and only until the password changes). Nothing is sent, and False returned, when the account
    was deleted, deactivated or lost its address since the request was queued."""
    user = User.objects.filter(pk=user_id, is_active=True).exclude(email="").first()
    if user is None:
        logger.info("no password reset e-mail for user %s: gone, inactive or no address", user_id)
        return False
    context = {
        "email": user.email,
        "domain": domain,
        "site_name": "PrefLab",
        "uid": urlsafe_base64_encode(force_bytes(user.pk)),
        "user": user,
        "token": default_token_generator.make_token(user),
        "protocol": "https" if use_https else "http",
        "timeout_hours": settings.PASSWORD_RESET_TIMEOUT // 3600,
    }
    PasswordResetForm().send_mail(SUBJECT_TEMPLATE, BODY_TEMPLATE, context, None, user.email)
    return True
