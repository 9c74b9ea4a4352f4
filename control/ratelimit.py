"""Token buckets by key (a participant, a source address), bounded in memory.

Per node: a participant reconnecting in a loop, or a source sending refused joins, is slowed
wherever it lands. The table keeps at most `max_keys` buckets; when full, the least recently
used goes (a full bucket: forgetting one only ever lets someone in sooner).
"""

from __future__ import annotations

from collections import OrderedDict


class KeyedBuckets:
    def __init__(self, rate_per_second: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate_per_second
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, at]

    def _bucket(self, key: str, now: float) -> list[float]:
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = [self.burst, now]
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
            b[1] = now
        return b

    def take(self, key: str, now: float) -> bool:
        """Spend one token; False (and nothing spent) when the bucket is empty."""
        b = self._bucket(key, now)
        if b[0] < 1.0:
            return False
        b[0] -= 1.0
        return True

    def spend(self, key: str, now: float) -> None:
        """Spend one token whatever is left (may go negative down to -burst: repeat offenders wait longer)."""
        b = self._bucket(key, now)
        b[0] = max(-self.burst, b[0] - 1.0)

    def empty(self, key: str, now: float) -> bool:
        if key not in self._buckets:
            return False
        return self._bucket(key, now)[0] < 1.0

    def __len__(self) -> int:
        return len(self._buckets)
