from __future__ import annotations

import gc
import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# What every web worker's first request would import: the URLconf with every view, and the
# Redis client (no connection is opened here). Under gunicorn's --preload the workers fork from
# this process and share it, instead of each importing it again on its first request: about a
# quarter of a second of CPU each time --max-requests recycles a worker, in that request's time.
get_resolver().url_patterns  # noqa: B018  (an import, not a value)
if "redis" in settings.CACHES["default"]["BACKEND"].lower():
    import redis  # noqa: F401

# What was made so far lives as long as the process. Frozen, it is never scanned again by the
# garbage collector of a forked worker (a full collection of it took 64 ms of the request it fell
# in), and its memory pages stay shared with the master instead of being copied.
gc.freeze()
