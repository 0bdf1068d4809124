from __future__ import annotations

import os
from typing import Any

import pytest
from django.db import connection

from tests.factories import DatasetFactory, UserFactory, make_prompt
from tests.openai_stub import openai_stub  # noqa: F401  (a fixture)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if connection.vendor == "postgresql":
        return
    if os.environ.get("PREFLAB_EXPECT_POSTGRES"):
        raise pytest.UsageError(
            "PREFLAB_EXPECT_POSTGRES is set but the database is not PostgreSQL: set DATABASE_URL"
        )
    skip = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL (make test-postgres)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def fast_password_hasher(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def api_rates(monkeypatch: Any) -> None:
    """Tests call the API faster than anyone should; tests/test_production.py checks the
    throttle itself. (DRF reads the rates once, when the process starts.)"""
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {"anon": "100000/min", "user": "100000/min"}
    )


@pytest.fixture(autouse=True)
def media_root(settings: Any, tmp_path: Any) -> Any:
    """Uploads and model files of each test go to a folder of its own."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def demo_accounts_file(settings: Any, tmp_path: Any) -> Any:
    """`load_demo` notes the demo passwords in a file of each test's own, not the developer's."""
    settings.PREFLAB_DEMO_ACCOUNTS_FILE = tmp_path / "demo-accounts.json"
    return settings.PREFLAB_DEMO_ACCOUNTS_FILE


@pytest.fixture(autouse=True)
def empty_cache(settings: Any) -> Any:
    """Each test starts with an empty cache of its own (throttle counters, cancel requests):
    local memory, not the data directory's files that a developer's app uses."""
    from django.core.cache import cache

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def eager_celery() -> Any:
    """Tasks run where they are sent (in the request that sends them), as a worker would."""
    from config.celery import app

    app.conf.update(task_always_eager=True)
    yield app
    app.conf.update(task_always_eager=False)


@pytest.fixture
def labeler(db: None) -> Any:
    return UserFactory()


@pytest.fixture
def other_labeler(db: None) -> Any:
    return UserFactory()


@pytest.fixture
def staff(db: None) -> Any:
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def dataset(db: None) -> Any:
    return DatasetFactory()


@pytest.fixture
def prompt(dataset: Any) -> Any:
    return make_prompt(dataset, completions=3)


def use_broker(url: str, **transport_options: str) -> None:
    """Point the Celery app at another broker, dropping connections made for the previous one."""
    from config.celery import app

    app.conf.update(broker_url=url, broker_transport_options=transport_options)
    # Forget the pools made for the previous broker (not app.close(): that also unregisters the
    # app, so tasks imported later never reach it; nor closing them: kombu may share them).
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def browser() -> Any:
    """A real Chromium of the test's own (tests/browser.py); modules mark themselves
    `BROWSER_TEST` so it is skipped where Chromium is missing."""
    from tests.browser import fresh_browser

    yield from fresh_browser()


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """llama-cpp-python's OpenAI-compatible server with SmolLM2-135M-Instruct, one for the session
    (tests/llm_server.py); tests that use it are marked `llm` and skip where it is missing."""
    from tests.llm_server import running_server

    yield from running_server(tmp_path_factory.mktemp("llm-server") / "server.log")
