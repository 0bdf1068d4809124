"""/healthz for load balancers and monitors: is this web process able to serve?

Unauthenticated and cheap, it says only which of its three checks fail: the database answers,
the broker takes connections, and a worker process was seen recently (each notes the time in the
shared cache every 30 seconds, from its main process, however busy its pool). 200 when all pass,
503 otherwise. `?only=database,broker` runs just those checks: for a load balancer that should
keep web processes in service while the workers are down.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from config.celery import app
from labeling.tasks import WORKER_SEEN_KEY

# A broker check is a network round trip: its result is shared for this long.
BROKER_CHECK_SECONDS = 10
BROKER_CHECK_KEY = "preflab:health:broker"


def database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:
        return False


def broker_answers() -> bool:
    known = cache.get(BROKER_CHECK_KEY)
    if known is not None:
        return bool(known)
    try:
        with app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, timeout=2)
        answers = True
    except Exception:
        answers = False
    cache.set(BROKER_CHECK_KEY, answers, timeout=BROKER_CHECK_SECONDS)
    return answers


def worker_seen() -> bool:
    seen = cache.get(WORKER_SEEN_KEY)
    return seen is not None and time.time() - float(seen) < settings.PREFLAB_WORKER_SEEN_SECONDS


CHECKS = {"database": database_answers, "broker": broker_answers, "worker": worker_seen}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    only = [name for name in request.GET.get("only", "").split(",") if name]
    unknown = sorted(set(only) - set(CHECKS))
    if unknown:
        return JsonResponse(
            {"only": f"Unknown checks {unknown}; use {sorted(CHECKS)}."}, status=400
        )
    checks = {name: check() for name, check in CHECKS.items() if not only or name in only}
    healthy = all(checks.values())
    return JsonResponse(
        {
            "status": "ok" if healthy else "unavailable",
            "checks": {name: "ok" if passed else "failing" for name, passed in checks.items()},
        },
        status=200 if healthy else 503,
    )
