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

    def count_hit(self, key: str, window: int) -> tuple[int, int]:
        """Count one more hit on `key`: (hits in its window, seconds the window has left). The
        first hit opens a window of `window` seconds; one round trip (SET NX EX, INCR, TTL: no
        command newer than Redis 2.6)."""
        key = self.make_and_validate_key(key)
        client = self._cache.get_client(key, write=True)
        with client.pipeline(transaction=False) as pipe:
            pipe.set(key, 0, ex=window, nx=True)
            pipe.incr(key)
            pipe.ttl(key)
            _, hits, left = pipe.execute()
        return int(hits), int(left)
