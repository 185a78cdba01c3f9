"""A cache that forgets what was not used lately, so a process's memory follows the series that
are alive, not every series it ever saw (a CronJob namespace makes thousands a day).

Two generations swapped every `ttl_s` of the caller's clock (wall time in `cost serve`, the
simulated clock in the soak benchmark): a hit in the old generation moves the entry to the new
one, the old generation is dropped whole at the next swap. Every entry used within the last
`ttl_s` is kept; nothing unused for 2 × `ttl_s` is. Only for caches whose miss is safe (the
database holds the truth and a miss costs a query).
"""

from __future__ import annotations

from typing import Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
_MISSING = object()


class ExpiringCache(Generic[K, V]):
    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._new: dict[K, V] = {}
        self._old: dict[K, V] = {}
        self._swapped_s: float | None = None

    def rotate(self, now_s: float) -> None:
        if self._swapped_s is None:
            self._swapped_s = now_s
        elif now_s - self._swapped_s >= self.ttl_s:
            self._old, self._new = self._new, {}
            self._swapped_s = now_s

    def get(self, key: K, default=None):
        v = self._new.get(key, _MISSING)
        if v is not _MISSING:
            return v
        v = self._old.pop(key, _MISSING)
        if v is _MISSING:
            return default
        self._new[key] = v
        return v

    def __contains__(self, key: K) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def __setitem__(self, key: K, value: V) -> None:
        self._new[key] = value
        self._old.pop(key, None)

    def pop(self, key: K) -> None:
        self._new.pop(key, None)
        self._old.pop(key, None)

    def __len__(self) -> int:
        return len(self._new) + len(self._old)

    def clear(self) -> None:
        self._new.clear()
        self._old.clear()
