from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

from django.core.cache import cache
from django.core.management.base import BaseCommand, CommandParser

from labeling.demo_accounts import account_rows, box
from labeling.tasks import WORKER_SEEN_KEY

POLL_SECONDS = 0.5
# Straight to the server, whatever http_proxy says.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def server_answers(url: str) -> bool:
    try:
        OPENER.open(url + "healthz?only=database", timeout=2).close()
    except urllib.error.HTTPError:
        return True  # it answered, with an error: the log says which
    except OSError:
        return False
    return True


def worker_started(since: float) -> bool:
    seen = cache.get(WORKER_SEEN_KEY)
    return seen is not None and float(seen) >= since


class Command(BaseCommand):
    help = (
        "Show the app's URL and the demo accounts' passwords in a box. `make run` runs it with "
        "--wait, so the box comes after the server's and the worker's start-up logs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000/")
        parser.add_argument(
            "--wait",
            type=float,
            default=0,
            metavar="SECONDS",
            help="first wait, up to this long, for the server to answer at --url and a worker "
            "to start (after --since)",
        )
        parser.add_argument(
            "--since",
            type=float,
            default=None,
            metavar="UNIX_TIME",
            help="when the worker was started; a worker seen before is a previous run's",
        )

    def handle(
        self, *args: Any, url: str, wait: float, since: float | None, **options: Any
    ) -> None:
        started = time.time()
        url = url if url.endswith("/") else url + "/"
        rows = account_rows()
        notes = []
        if wait:
            notes = self.wait_until_up(url, since or started, deadline=started + wait)
        self.stdout.write("\n" + box(url, rows, notes) + "\n")

    def wait_until_up(self, url: str, since: float, *, deadline: float) -> list[str]:
        """What is still not up at the deadline, as lines for the box; [] when all is."""
        server, worker = False, False
        while True:
            server = server or server_answers(url)
            worker = worker or worker_started(since)
            if (server and worker) or time.time() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        waited = round(deadline - since)
        return [
            note
            for up, note in [
                (server, f"The server did not answer within {waited} s: see the log above."),
                (worker, f"No worker started within {waited} s: imports and training wait."),
            ]
            if not up
        ]
