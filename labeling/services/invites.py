"""Adding labelers in bulk: `username,email` lines make accounts (or reuse them), memberships
of one workspace, places in dataset pools and groups, and invitation links.

All or nothing: one bad line refuses the whole text, each bad line named with its number. A new
account has no usable password; its invitation is a password-set link (Django's reset token,
valid PASSWORD_RESET_TIMEOUT seconds and until a password is set), shown once to whoever added
it and, when the line gives an address, e-mailed by a worker after the commit. An account that
exists already is added as it is: no link, its e-mail and password untouched (a manager must
not be able to take over someone's account by inviting its username).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.auth.tokens import default_token_generator
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models.functions import Lower
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from labeling.access import check_ability
from labeling.models import (
    Ability,
    AuditEvent,
    Dataset,
    LabelerGroup,
    Membership,
    Role,
    Workspace,
)
from labeling.services import audit
from labeling.services.workspaces import change_pool

logger = logging.getLogger(__name__)

MAX_LINES = 1000
MAX_BYTES = 200_000
# Errors listed at most, so a wrong file does not make a page of them.
MAX_ERRORS = 20
# Roles given only by those who may administer the workspace.
PRIVILEGED_ROLES = (Role.ADMIN, Role.MANAGER)


@dataclass(frozen=True)
class Invited:
    username: str
    email: str
    created: bool
    link: str  # the password-set link of a new account; empty for an existing one


def parse_lines(text: str) -> list[tuple[str, str]]:
    """(username, email) pairs of `username,email` lines (the address optional; blank lines,
    `#` comments and a `username,email` header skipped). ValidationError on `lines`, each
    message naming a line, when any line is wrong or the text is too long."""
    if len(text.encode()) > MAX_BYTES:
        raise ValidationError({"lines": f"Send at most {MAX_BYTES // 1000} KB at once."})
    errors: list[str] = []
    found: dict[str, int] = {}
    pairs: list[tuple[str, str]] = []
    lines = text.splitlines()
    for number, fields in enumerate(csv.reader(lines), start=1):
        fields = [field.strip() for field in fields]
        if not fields or not any(fields) or fields[0].startswith("#"):
            continue
        if number == 1 and [field.lower() for field in fields] == ["username", "email"]:
            continue
        problem = _line_problem(fields, found)
        if problem:
            errors.append(f"line {number}: {problem}")
        else:
            found[fields[0].lower()] = number
            pairs.append((fields[0], fields[1] if len(fields) > 1 else ""))
    if len(pairs) > MAX_LINES:
        errors.insert(0, f"{len(pairs)} accounts: add at most {MAX_LINES} at once.")
    if not errors and not pairs:
        errors.append("Give one `username,email` line per labeler.")
    if errors:
        more = len(errors) - MAX_ERRORS
        shown = errors[:MAX_ERRORS] + ([f"... and {more} more lines."] if more > 0 else [])
        raise ValidationError({"lines": shown})
    return pairs


def _line_problem(fields: list[str], found: dict[str, int]) -> str:
    if len(fields) > 2:
        return "give a username and an e-mail address, no more."
    username, email = fields[0], fields[1] if len(fields) > 1 else ""
    if not username:
        return "the username is missing."
    try:
        UnicodeUsernameValidator()(username)
    except ValidationError:
        return f"{username!r} is not a username (letters, digits and @.+-_ only)."
    if len(username) > 150:
        return "the username is longer than 150 characters."
    if username.lower() in found:
        return f"{username} is on line {found[username.lower()]} already."
    if email:
        try:
            validate_email(email)
        except ValidationError:
            return f"{email!r} is not an e-mail address."
    return ""


def invite_labelers(
    *,
    workspace: Workspace,
    lines: str,
    role: str = Role.LABELER,
    datasets: Iterable[Dataset] = (),
    groups: Iterable[LabelerGroup] = (),
    by: User,
    request: Any = None,
) -> list[Invited]:
    """Make or reuse the accounts of `lines` (`parse_lines`), make them members of the workspace
    with `role` (a member keeps the role they have), add them to the datasets' pools and to the
    groups, all in one transaction; returns a row per line with the new accounts' links.

    Takes the ability to manage the workspace, and to administer it to make admins or managers
    (PermissionDenied); refuses datasets and groups of another workspace."""
    check_ability(by, workspace, Ability.MANAGE)
    if role not in Role.values or role == Role.SERVICE:
        raise ValidationError({"role": "Choose labeler, reviewer, manager or admin."})
    if role in PRIVILEGED_ROLES:
        check_ability(by, workspace, Ability.ADMINISTER)
    datasets, groups = list(datasets), list(groups)
    if any(dataset.workspace_id != workspace.pk for dataset in datasets):
        raise ValidationError({"datasets": "Choose datasets of this workspace."})
    if any(group.workspace_id != workspace.pk for group in groups):
        raise ValidationError({"groups": "Choose groups of this workspace."})
    pairs = parse_lines(lines)
    try:
        return _invite(workspace, pairs, role, datasets, groups, by=by, request=request)
    except IntegrityError:
        # The one unique value two requests can race on: a username made by both at once.
        raise ValidationError(
            {"lines": "Some of these accounts were made meanwhile by someone else: send again."}
        ) from None


def _invite(
    workspace: Workspace,
    pairs: list[tuple[str, str]],
    role: str,
    datasets: list[Dataset],
    groups: list[LabelerGroup],
    *,
    by: User,
    request: Any,
) -> list[Invited]:
    with transaction.atomic():
        users, created = _accounts(pairs)
        _add_members(workspace, users, role)
        for dataset in datasets:
            change_pool(dataset=dataset, add_labelers=users, by=by, request=request)
        for group in groups:
            group.members.add(*users)
        rows = [
            Invited(
                username=user.username,
                email=user.email,
                created=user.pk in created,
                link=invitation_link(user, request) if user.pk in created else "",
            )
            for user in users
        ]
        audit.record(
            action=AuditEvent.Action.LABELERS_INVITED,
            workspace_id=workspace.pk,
            actor=by,
            request=request,
            count=len(rows),
            created=sorted(row.username for row in rows if row.created),
            added=sorted(row.username for row in rows if not row.created),
            role=role,
            datasets=sorted(dataset.slug for dataset in datasets),
            groups=sorted(group.name for group in groups),
        )
        _mail_invitations(workspace, [user for user in users if user.pk in created], request)
    return rows


def _accounts(pairs: list[tuple[str, str]]) -> tuple[list[User], set[int]]:
    """The accounts of the pairs, in their order, and the ids of those made now: an existing
    account is matched ignoring case (as Django's user creation form refuses "Ann" beside
    "ann"); a new one has no usable password."""
    wanted = {username.lower(): (username, email) for username, email in pairs}
    found = User.objects.annotate(key=Lower("username")).filter(key__in=list(wanted))
    existing = {user.key: user for user in found}  # type: ignore[attr-defined]
    new = []
    for key, (username, email) in wanted.items():
        if key not in existing:
            user = User(username=username, email=email)
            user.set_unusable_password()
            new.append(user)
    User.objects.bulk_create(new)  # not every database returns the ids: read them back
    made = list(User.objects.filter(username__in=[user.username for user in new]))
    accounts = existing | {user.username.lower(): user for user in made}
    created = {user.pk for user in made}
    return [accounts[username.lower()] for username, _ in pairs], created


def _add_members(workspace: Workspace, users: list[User], role: str) -> None:
    """Make the users members with `role`; a member keeps the role they have. Admins and
    managers get staff status, as `set_role` gives it."""
    members = set(
        Membership.objects.filter(workspace=workspace, user__in=users).values_list(
            "user_id", flat=True
        )
    )
    joining = [user for user in users if user.pk not in members]
    Membership.objects.bulk_create(
        [Membership(workspace=workspace, user=user, role=role) for user in joining]
    )
    if role in PRIVILEGED_ROLES:
        User.objects.filter(pk__in=[user.pk for user in joining]).update(is_staff=True)


def invitation_link(user: User, request: Any = None) -> str:
    """A link at which the account sets its password (`password_reset_confirm`)."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    path = reverse("password_reset_confirm", args=[uid, default_token_generator.make_token(user)])
    return request.build_absolute_uri(path) if request is not None else path


def _mail_invitations(workspace: Workspace, users: list[User], request: Any) -> None:
    """E-mail each new account with an address a link of its own, made by the worker once the
    transaction commits (a link never travels through the broker)."""
    from labeling import tasks

    domain = request.get_host() if request is not None else "localhost"
    https = bool(request is not None and request.is_secure())
    for user in users:
        if user.email:
            transaction.on_commit(
                partial(tasks.send_invitation.delay, user.pk, workspace.name, domain, https)
            )


def send_invitation(*, user_id: int, workspace_name: str, domain: str, use_https: bool) -> bool:
    """E-mail an invited account its link; False, nothing sent, when the account has since
    gone, lost its address or set a password."""
    user = User.objects.filter(pk=user_id, is_active=True).exclude(email="").first()
    if user is None or user.has_usable_password():
        logger.info("no invitation e-mail for user %s: gone, no address or a password", user_id)
        return False
    link = f"{'https' if use_https else 'http'}://{domain}{invitation_link(user)}"
    send_mail(
        subject=f"You are invited to label in {workspace_name} (PrefLab)",
        message=(
            f"Hello {user.username},\n\nYou were added to {workspace_name} on PrefLab. Choose "
            f"a password here, then sign in as {user.username}:\n\n{link}\n\nThe link works "
            f"until a password is set, for {settings.PASSWORD_RESET_TIMEOUT // 3600} hours.\n"
        ),
        from_email=None,
        recipient_list=[user.email],
    )
    return True
