"""Managers' and reviewers' pages and the admin: a signed-in labeler gets the 403 page in
PrefLab's layout, an anonymous visitor the login page; a refused CSRF check gets the same layout."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

# Staff-only pages outside the admin, with the method each answers; the ids need not exist:
# the role is checked before anything is looked up.
STAFF_PAGES = [
    ("get", reverse("labeling:quality-index")),
    ("get", reverse("labeling:quality", args=["any"])),
    ("post", reverse("labeling:quality-refresh", args=["any"])),
    ("get", reverse("labeling:leaderboard", args=["any"])),
    ("get", reverse("labeling:quality-prompt", args=["any", 1])),
    ("post", reverse("labeling:quality-gold", args=["any", 1])),
    ("post", reverse("labeling:labeler-exclude", args=["any", 1])),
    ("post", reverse("labeling:labeler-reinstate", args=["any", 1])),
    ("get", reverse("labeling:pool", args=["any"])),
    ("get", reverse("labeling:workspace-pools", args=["any"])),
    ("get", reverse("labeling:invite", args=["any"])),
    ("get", reverse("rewards:runs")),
    ("get", reverse("rewards:run", args=[1])),
    ("post", reverse("rewards:run-retry", args=[1])),
    ("get", reverse("rewards:run-plot", args=[1, "reliability"])),
    ("post", reverse("rewards:model-activate", args=[1])),
    ("get", reverse("rewards:model-download", args=[1, "onnx"])),
]
ADMIN_PAGES = [
    reverse("admin:index"),
    reverse("admin:auth_user_changelist"),
    reverse("admin:labeling_dataset_changelist"),
    reverse("admin:labeling_dataset_import", args=[1]),
    reverse("admin:login"),
]


def assert_staff_only_page(response) -> None:
    page = response.content.decode()
    assert response.status_code == 403
    assert "Not for your role" in page
    assert "This page is for " in page  # and whose it is
    assert 'class="topbar"' in page  # PrefLab's layout (base.html), not Django's admin
    assert f'href="{reverse("labeling:home")}"' in page


@pytest.mark.parametrize(("method", "url"), STAFF_PAGES)
def test_labeler_on_a_staff_page_gets_403_in_preflab_layout(client, labeler, method, url):
    client.force_login(labeler)
    response = getattr(client, method)(url)
    assert_staff_only_page(response)
    assert labeler.username in response.content.decode()


@pytest.mark.parametrize(("method", "url"), STAFF_PAGES)
def test_anonymous_on_a_staff_page_is_sent_to_log_in(client, db, method, url):
    response = getattr(client, method)(url)
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={url}"


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_labeler_in_the_admin_gets_403_not_the_admin_login(client, labeler, url):
    client.force_login(labeler)
    assert_staff_only_page(client.get(url))


@pytest.mark.parametrize("url", ADMIN_PAGES[:-1])
def test_anonymous_in_the_admin_gets_the_admin_login(client, db, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))


def test_staff_reaches_the_admin_and_staff_pages(client, staff):
    client.force_login(staff)
    assert client.get(reverse("admin:index")).status_code == 200
    assert client.get(reverse("labeling:quality-index")).status_code == 200


def test_staff_without_a_permission_gets_the_general_403(client, db):
    from tests.factories import UserFactory

    client.force_login(UserFactory(is_staff=True))
    response = client.get(reverse("admin:auth_user_changelist"))
    assert response.status_code == 403
    assert "You may not do this" in response.content.decode()


@pytest.mark.parametrize("debug", [True, False])
def test_csrf_failure_is_a_403_in_preflab_layout(labeler, settings, debug):
    settings.DEBUG = debug
    client = Client(enforce_csrf_checks=True)
    client.force_login(labeler)
    response = client.post(reverse("logout"))
    page = response.content.decode()
    assert response.status_code == 403
    assert "The form could not be sent" in page
    assert 'class="topbar"' in page
    assert ("CSRF cookie not set" in page) is debug
