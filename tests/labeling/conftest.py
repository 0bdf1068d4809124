from __future__ import annotations

import threading
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun

from config.celery import app
from tests.conftest import use_broker
from tests.labeling import quality_data


@pytest.fixture
def worker() -> Any:
    """celery's testing worker on an in-memory broker, in a thread of this process."""
    use_broker("memory://")
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        yield app


@pytest.fixture
def finished() -> Any:
    """An event set when the worker has run a task."""
    done = threading.Event()

    def on_postrun(**kwargs: object) -> None:
        done.set()

    task_postrun.connect(on_postrun, weak=False)
    yield done
    task_postrun.disconnect(on_postrun)


@pytest.fixture
def people(db: None) -> dict[str, Any]:
    """The labelers ann, bob and cat."""
    return quality_data.make_people()


@pytest.fixture
def small(people: dict[str, Any]) -> dict[str, Any]:
    """A small dataset ranked by ann, bob and cat, its figures worked out by hand: see
    `quality_data.make_small`."""
    return quality_data.make_small(people)
