"""The demo accounts' passwords, for the box `make run` ends with (`manage.py demo_accounts`).

`manage.py load_demo` makes random passwords; a hash cannot be turned back, so it also writes
them to PREFLAB_DEMO_ACCOUNTS_FILE under the data directory (owner-only, never committed). The
box shows a password only while it still opens its account.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.contrib.auth.models import User

DEMO_USERS = [("admin", True), ("labeler1", False), ("labeler2", False)]


def remembered_passwords() -> dict[str, str]:
    path = Path(settings.PREFLAB_DEMO_ACCOUNTS_FILE)
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def remember_passwords(created: list[tuple[str, str]]) -> None:
    """Add the new accounts' passwords to the file, which only its owner may read."""
    passwords = remembered_passwords() | dict(created)
    path = Path(settings.PREFLAB_DEMO_ACCOUNTS_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        json.dump(passwords, stream, indent=1)
    path.chmod(0o600)  # a file made before, with wider rights


def account_rows() -> list[tuple[str, str, str]]:
    """(username, password or how to set one, role) of each demo account that exists."""
    users = {user.username: user for user in User.objects.filter(username__in=dict(DEMO_USERS))}
    passwords = remembered_passwords()
    rows = []
    for username, is_admin in DEMO_USERS:
        user = users.get(username)
        if user is None:
            continue
        password = passwords.get(username, "")
        if not (password and check_password(password, user.password)):
            password = f"(changed: manage.py changepassword {username})"
        rows.append((username, password, "staff, /admin/" if is_admin else "labeler"))
    return rows


def box(url: str, rows: list[tuple[str, str, str]], notes: list[str]) -> str:
    """The welcome box: the URL, then each account's username and password."""
    lines = [f"PrefLab is running on {url}", ""]
    if rows:
        width = max(len(username) for username, _, _ in rows)
        lines += [f"  {u:{width}}  {p}   ({role})" for u, p, role in rows]
    else:
        lines.append("No demo accounts: python manage.py load_demo makes them.")
    lines += ["", f"Admin: {url}admin/   API docs: {url}api/docs/", *notes, "Stop with Ctrl-C."]
    inner = max(len(line) for line in lines)
    border = "+" + "-" * (inner + 2) + "+"
    return "\n".join([border, *(f"| {line:{inner}} |" for line in lines), border])
