"""Bounded retries of store calls on the paths that must not give up at the first failure.

A participant who drops, leaves or is let go after the reconnection grace must leave the room,
and a room everyone left must finish, even when the store stalls or restarts for a while (a
paused or restarting Redis). Those paths call the store through `retrying`: only `StoreError`
is retried, with full-jitter exponential backoff, and never past `deadline_seconds`; then the
last error is raised for the caller to handle (log, hold, fail closed).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from control.store.base import StoreError

log = logging.getLogger("telesfu.store")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    deadline_seconds: float  # no new attempt starts after this much time
    base_seconds: float = 0.05
    cap_seconds: float = 2.0
    max_attempts: int = 64

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Sleep before attempt `attempt + 1`: uniform in [base/2, min(cap, base * 2**attempt)]."""
        ceiling = min(self.cap_seconds, self.base_seconds * (2 ** min(attempt, 20)))
        return max(self.base_seconds / 2, ceiling * rand())


# A participant's own request (a join, an action): short, the person is waiting for an answer.
INTERACTIVE = RetryPolicy(deadline_seconds=2.0)
# Background effects nobody waits on (a drop, the grace running out, a room finishing): ride
# out a Redis restart or a long stall.
BACKGROUND = RetryPolicy(deadline_seconds=120.0)


async def retrying(op: Callable[[], Awaitable[T]], what: str, policy: RetryPolicy = BACKGROUND,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                   on_retry: Callable[[], None] | None = None) -> T:
    """`await op()`, retried on StoreError with backoff until the policy's deadline."""
    start = clock()
    attempt = 0
    while True:
        try:
            return await op()
        except StoreError as e:
            attempt += 1
            delay = policy.delay(attempt - 1)
            if attempt >= policy.max_attempts or clock() + delay - start > policy.deadline_seconds:
                log.warning("store: %s failed after %d attempts: %s", what, attempt, e)
                raise
            if attempt == 1:
                log.info("store: %s failed (%s); retrying for up to %.0fs", what, e, policy.deadline_seconds)
            if on_retry is not None:
                on_retry()
            await sleep(delay)
