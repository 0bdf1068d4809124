"""Password reset by e-mail: the "Forgot your password?" form, its throttle, the link, the
staff's admin action and the admin's set-password form; the e-mail settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from labeling import tasks
from tests.factories import PASSWORD, UserFactory

ROOT = Path(__file__).resolve().parents[2]
NEW_PASSWORD = "a-fresh-long-passphrase-42"


def ask_for_reset(client, email: str, **extra: str):
    return client.post(reverse("password_reset"), {"email": email}, **extra)


@pytest.fixture
def queue_in_process(monkeypatch):
    """`.delay` runs the task at once, in this process."""
    monkeypatch.setattr(
        tasks.send_password_reset, "delay", lambda *args: tasks.send_password_reset(*args)
    )


def test_login_page_links_to_the_reset_form(client, db):
    page = client.get(reverse("login")).content.decode()
    assert f'href="{reverse("password_reset")}"' in page


def test_a_labeler_resets_their_password_through_the_emailed_link(
    client, db, mailoutbox, queue_in_process, django_capture_on_commit_callbacks
):
    user = UserFactory(email="ann@example.org")
    form = client.get(reverse("password_reset"))
    assert 'class="topbar"' in form.content.decode()  # PrefLab's layout, not the admin's
    with django_capture_on_commit_callbacks(execute=True):
        response = ask_for_reset(client, "ANN@example.org")
    assert response.status_code == 302 and response.url == reverse("password_reset_done")
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["ann@example.org"]
    assert mailoutbox[0].subject == "Reset your PrefLab password"
    link = re.search(r"http://testserver(/password-reset/\S+/\S+/)", mailoutbox[0].body)
    assert link and user.username in mailoutbox[0].body

    set_password_page = client.get(link[1], follow=True)
    assert "Choose a new password" in set_password_page.content.decode()
    done = client.post(
        set_password_page.redirect_chain[-1][0],
        {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert done.url == reverse("password_reset_complete")
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    used_again = client.get(link[1], follow=True).content.decode()
    assert "This link no longer works" in used_again


def test_the_form_answers_the_same_whether_an_account_has_the_address(
    client, db, django_capture_on_commit_callbacks
):
    UserFactory(email="ann@example.org")
    with django_capture_on_commit_callbacks() as known_callbacks:
        known = ask_for_reset(client, "ann@example.org")
    with django_capture_on_commit_callbacks() as unknown_callbacks:
        unknown = ask_for_reset(client, "nobody@example.org")
    assert (known.status_code, known.url) == (unknown.status_code, unknown.url)
    assert len(known_callbacks) == 1 and not unknown_callbacks
    done = client.get(known.url).content.decode()
    assert "If an account has this address" in done


def test_reset_requests_are_throttled_per_email_whether_or_not_it_has_an_account(
    client, db, settings, django_capture_on_commit_callbacks
):
    settings.PREFLAB_PASSWORD_RESETS_PER_EMAIL = 2
    UserFactory(email="ann@example.org")
    for email in ("ann@example.org", "nobody@example.org"):
        with django_capture_on_commit_callbacks() as callbacks:
            for _ in range(2):
                assert ask_for_reset(client, email).status_code == 302
            refused = ask_for_reset(client, email)
        assert refused.status_code == 200
        assert "Too many password reset requests" in refused.content.decode()
        assert len(callbacks) == (2 if email.startswith("ann") else 0)


def test_reset_requests_are_throttled_per_client_address(client, db, settings):
    settings.PREFLAB_PASSWORD_RESETS_PER_ADDRESS = 3
    settings.PREFLAB_PROXY_COUNT = 1
    for n in range(3):
        ask_for_reset(client, f"person{n}@example.org", HTTP_X_FORWARDED_FOR="203.0.113.7")
    there = ask_for_reset(client, "other@example.org", HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert "Too many password reset requests" in there.content.decode()
    elsewhere = ask_for_reset(client, "other@example.org", HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert elsewhere.status_code == 302


def test_a_new_password_lifts_the_sign_in_throttle(
    client, db, settings, mailoutbox, queue_in_process, django_capture_on_commit_callbacks
):
    user = UserFactory(email="ann@example.org")
    for _ in range(settings.PREFLAB_LOGIN_FAILURES_PER_ACCOUNT + 1):
        client.post(reverse("login"), {"username": user.username, "password": "wrong"})
    with django_capture_on_commit_callbacks(execute=True):
        ask_for_reset(client, user.email)
    link = re.search(r"http://testserver(/password-reset/\S+/\S+/)", mailoutbox[0].body)
    page = client.get(link[1], follow=True)
    client.post(
        page.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    signed_in = client.post(reverse("login"), {"username": user.username, "password": NEW_PASSWORD})
    assert signed_in.status_code == 302


def test_the_email_task_sends_nothing_to_an_account_deactivated_meanwhile(db, mailoutbox):
    user = UserFactory(email="ann@example.org", is_active=False)
    tasks.send_password_reset(user.pk, "testserver", False)
    tasks.send_password_reset(user.pk + 1, "testserver", False)
    assert not mailoutbox


def test_staff_send_reset_links_from_the_user_list_and_see_who_has_no_address(
    client, staff, mailoutbox, queue_in_process, django_capture_on_commit_callbacks
):
    ann = UserFactory(email="ann@example.org")
    new = UserFactory(email="new@example.org", password=None)  # no usable password yet
    assert not new.has_usable_password()
    bob = UserFactory(email="")
    client.force_login(staff)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:auth_user_changelist"),
            {"action": "send_password_reset_links", "_selected_action": [ann.pk, new.pk, bob.pk]},
            follow=True,
        )
    assert sorted(mail.to[0] for mail in mailoutbox) == ["ann@example.org", "new@example.org"]
    sent = ", ".join(sorted([ann.username, new.username]))  # the list's order: "labeler100" first
    assert [str(message) for message in response.context["messages"]] == [
        f"{bob.username}: has no e-mail address.",
        f"A password reset link is on its way to: {sent}.",
    ]
    assert "/password-reset/" in mailoutbox[0].body


def test_staff_set_a_password_in_the_admin(client, staff, labeler):
    client.force_login(staff)
    change_page = client.get(reverse("admin:auth_user_change", args=[labeler.pk]))
    password_form = reverse("admin:auth_user_password_change", args=[labeler.pk])
    assert 'href="../password/"' in change_page.content.decode()
    response = client.post(
        password_form,
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )
    assert response.status_code == 302
    labeler.refresh_from_db()
    assert labeler.check_password(NEW_PASSWORD) and not labeler.check_password(PASSWORD)


def test_the_admin_login_links_to_the_reset_form(client, db):
    page = client.get(reverse("admin:login")).content.decode()
    assert reverse("admin_password_reset") in page
    assert client.get(reverse("admin_password_reset")).url == reverse("password_reset")


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, "console.EmailBackend None False"),
        (
            {"EMAIL_HOST": "mail.example.org", "EMAIL_HOST_USER": "preflab"},
            "smtp.EmailBackend 587 True",
        ),
        (
            {"EMAIL_HOST": "mail.example.org", "EMAIL_USE_SSL": "true"},
            "smtp.EmailBackend 587 False",
        ),
    ],
)
def test_email_is_configured_from_the_environment(tmp_path, environment, expected):
    script = (
        "from django.conf import settings as s; "
        "print(s.EMAIL_BACKEND.rsplit('.', 2)[-2] + '.' + s.EMAIL_BACKEND.rsplit('.', 1)[-1], "
        "s.EMAIL_PORT if s.EMAIL_HOST else None, s.EMAIL_USE_TLS and bool(s.EMAIL_HOST))"
    )
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {script}"],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("EMAIL_")},
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "PREFLAB_DATA_DIR": str(tmp_path),
            **environment,
        },
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == expected.split()
