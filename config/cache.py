"""The Redis cache, with one client object per connection pool.

Django's Redis backend builds a new `redis.Redis` object for every get and set; with a throttle
reading and writing its counter on every API request, that was a few percent of a web
worker's CPU under load. The client is thread-safe and holds no state of its own beyond its
pool, so one per pool is enough.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.core.cache.backends import redis


class ReusingClient(redis.RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)  # type: ignore[attr-defined]
        client = self._clients.get(id(pool))
        if client is None:
            client = self._client(connection_pool=pool)  # type: ignore[attr-defined]
            self._clients[id(pool)] = client
        return client


class RedisCache(redis.RedisCache):
    @cached_property
    def _cache(self) -> ReusingClient:
        return ReusingClient(self._servers, **self._options)  # type: ignore[attr-defined]
