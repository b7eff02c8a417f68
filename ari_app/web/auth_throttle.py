"""Wrong credentials counted per address: past `max_failures` within `window_seconds` the
address is refused (429) without its credentials being looked at, so a token or password cannot
be guessed by trying many. The table is bounded: an attacker cycling through addresses (IPv6
gives plenty) must not grow it without end. A success does not reset the count: a client
holding one weak credential must not be able to guess others between its own requests.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class FailedAuthThrottle:
    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._clock = clock
        self._max_addresses = max_addresses
        # address -> times of its newest failures (at most max_failures), least recent first
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def locked_for(self, address: str) -> float:
        """Seconds until `address` may try again; 0 when it may now."""
        times = self._failures.get(address)
        if times is None or len(times) < self.max_failures:
            return 0.0
        left = times[0] + self.window_seconds - self._clock()
        if left <= 0:
            del self._failures[address]
            return 0.0
        return left

    def failed(self, address: str) -> None:
        times = self._failures.pop(address, None) or deque(maxlen=self.max_failures)
        times.append(self._clock())
        self._failures[address] = times  # now the most recent
        while len(self._failures) > self._max_addresses:
            self._failures.popitem(last=False)

    @property
    def addresses(self) -> int:
        return len(self._failures)
