"""Production behaviour: health for load balancers, sign-in and API throttles, the deploy check
with the README's environment, the security headers every page gets."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.urls import reverse
from rest_framework.throttling import SimpleRateThrottle

from labeling.tasks import WORKER_SEEN_KEY, note_worker_seen
from tests.factories import PASSWORD, UserFactory, token_client

ROOT = Path(__file__).resolve().parent.parent


def test_healthz_needs_a_worker_seen_recently(client, db, settings):
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "broker": "ok", "worker": "failing"},
    }
    note_worker_seen()
    assert client.get("/healthz").json()["status"] == "ok"
    cache.set(WORKER_SEEN_KEY, time.time() - settings.PREFLAB_WORKER_SEEN_SECONDS - 1)
    assert client.get("/healthz").status_code == 503


def test_healthz_says_when_the_broker_is_down(client, db, settings):
    from tests.conftest import use_broker

    note_worker_seen()
    use_broker("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        response = client.get("/healthz")
    finally:
        use_broker(settings.CELERY_BROKER_URL, **settings.CELERY_BROKER_TRANSPORT_OPTIONS)
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == "failing"


def sign_in(client, username: str, password: str, **extra: str):
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


def test_failed_sign_ins_lock_the_account_until_reset(client, db, settings):
    user = UserFactory()
    for _ in range(settings.PREFLAB_LOGIN_FAILURES_PER_ACCOUNT):
        assert sign_in(client, user.username, "wrong").status_code == 200
    refused = sign_in(client, user.username, PASSWORD)  # the right password, too late
    assert refused.status_code == 200
    assert "Too many failed sign-ins" in refused.content.decode()
    assert "_auth_user_id" not in client.session
    call_command("reset_login_throttle", user.username, stdout=io.StringIO())
    assert sign_in(client, user.username, PASSWORD).status_code == 302


def test_failed_sign_ins_from_one_address_lock_it_for_every_account(client, db, settings):
    settings.PREFLAB_LOGIN_FAILURES_PER_ADDRESS = 3
    settings.PREFLAB_PROXY_COUNT = 1
    for n in range(3):
        sign_in(client, f"nobody{n}", "wrong", HTTP_X_FORWARDED_FOR="203.0.113.7")
    user = UserFactory()
    from_there = sign_in(client, user.username, PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert "Too many failed sign-ins" in from_there.content.decode()
    elsewhere = sign_in(client, user.username, PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert elsewhere.status_code == 302


def test_the_admin_sign_in_is_throttled_too(client, db, settings):
    staff = UserFactory(is_staff=True)
    url = reverse("admin:login")
    for _ in range(settings.PREFLAB_LOGIN_FAILURES_PER_ACCOUNT):
        client.post(url, {"username": staff.username, "password": "wrong"})
    page = client.post(url, {"username": staff.username, "password": PASSWORD})
    assert "Too many failed sign-ins" in page.content.decode()


def test_api_calls_past_the_rate_get_429_with_retry_after(db, monkeypatch):
    # DRF reads the rates (PREFLAB_API_RATE) once, when the process starts.
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "2/min", "user": "3/min"})
    client = token_client(UserFactory())
    codes = [client.get(reverse("labeling-api:datasets")).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    response = client.get(reverse("labeling-api:datasets"))
    assert int(response["Retry-After"]) > 0
    assert "throttled" in response.json()["detail"]


def test_api_rate_is_counted_in_redis_windows_in_one_round_trip(db, monkeypatch):
    """With Redis (production's cache) the throttle counts hits in a window that expires."""
    from redis.exceptions import ConnectionError as RedisDown

    from config.cache import RedisCache

    cache = RedisCache("redis://127.0.0.1:6379/9", {})
    try:
        cache.clear()
    except RedisDown:
        pytest.skip("no Redis at 127.0.0.1:6379")
    monkeypatch.setattr(SimpleRateThrottle, "cache", cache)
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "2/min", "user": "3/s"})
    user = UserFactory()
    first, second = token_client(user), token_client(UserFactory())
    url = reverse("labeling-api:datasets")
    assert [first.get(url).status_code for _ in range(4)] == [200, 200, 200, 429]
    refused = first.get(url)
    assert refused.status_code == 429 and refused["Retry-After"] == "1"
    assert cache.get(f"throttle_user_{user.pk}:window") == 5  # a counter, not DRF's list
    assert second.get(url).status_code == 200  # each token has its own count
    time.sleep(1.1)  # the window ends
    assert first.get(url).status_code == 200
    cache.clear()


def test_pages_forbid_inline_script_and_framing(client, db):
    response = client.get(reverse("login"))
    policy = response["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    assert response["X-Frame-Options"] == "DENY"


README_PRODUCTION_ENVIRONMENT = {
    "DEBUG": "false",
    "SECRET_KEY": "k3J9-x2Qm7Vt0pR8wZs4LbN6yHc1DfGa5EuTi9OjKlMnB2vXqYw",
    "ALLOWED_HOSTS": "preflab.example.org",
    "CSRF_TRUSTED_ORIGINS": "https://preflab.example.org",
    "PREFLAB_HTTPS": "true",
    "DATABASE_URL": "postgres://preflab@127.0.0.1:5432/preflab",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "CACHE_URL": "redis://127.0.0.1:6379/1",
}


def test_the_deploy_check_passes_with_the_readmes_production_environment(tmp_path):
    readme = (ROOT / "README.md").read_text()
    for name, value in README_PRODUCTION_ENVIRONMENT.items():
        if name != "SECRET_KEY":
            assert f"{name}={value}" in readme, f"the README's production section sets {name}"
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "DATABASE"))},
        **README_PRODUCTION_ENVIRONMENT,
        "PREFLAB_DATA_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.parametrize("name", ["labeling/rank.js", "labeling/app.css"])
def test_static_files_are_served_by_the_app(client, db, name):
    response = client.get(f"/static/{name}")
    assert response.status_code == 200
    assert b"".join(response.streaming_content)
    response.close()


def test_a_page_renders_before_collectstatic_with_debug_off(client, db, settings, tmp_path):
    settings.STATIC_ROOT = tmp_path / "not-collected"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "config.static.StaticFilesStorage"},
    }
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert "/static/labeling/app.css" in response.content.decode()


def test_an_empty_password_counts_as_a_failure(client, db, settings):
    user = UserFactory()
    for attempt in range(settings.PREFLAB_LOGIN_FAILURES_PER_ACCOUNT):
        sign_in(client, user.username, "wrong" if attempt % 2 else "")
    refused = sign_in(client, user.username, PASSWORD)
    assert "Too many failed sign-ins" in refused.content.decode()


def test_a_good_sign_in_gives_the_address_its_attempt_back(client, db, settings):
    settings.PREFLAB_LOGIN_FAILURES_PER_ADDRESS = 2
    users = UserFactory.create_batch(4)
    for user in users:  # more good sign-ins from one address than its failure limit
        assert sign_in(client, user.username, PASSWORD).status_code == 302
        client.logout()


def test_healthz_can_leave_the_worker_out_for_a_load_balancer(client, db):
    response = client.get("/healthz", {"only": "database,broker"})
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}
    assert client.get("/healthz", {"only": "disk"}).status_code == 400
