"""Client-side rate limiting: a rolling window, so a normal run draws few or no 429s."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class RollingWindow:
    """At most ``limit`` calls in any ``window`` seconds (HubSpot's TEN_SECONDLY_ROLLING,
    Google's per-minute quota). ``acquire()`` blocks until a call may go."""

    def __init__(self, limit: int, window: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.limit, self.window, self.clock, self.sleep = limit, window, clock, sleep
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for a slot; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self.clock()
                while self._sent and self._sent[0] <= now - self.window:
                    self._sent.popleft()
                if len(self._sent) < self.limit:
                    self._sent.append(now)
                    return waited
                delay = self._sent[0] + self.window - now
            self.sleep(delay)
            waited += delay

    def pause(self, seconds: float) -> None:
        """The platform said 'slow down' (429 with Retry-After): hold every caller."""
        with self._lock:
            until = self.clock() + seconds
            # fill the window so no call goes before `until`
            self._sent.clear()
            self._sent.extend([until - self.window] * self.limit)
