"""Retry delays: exponential from an initial delay up to a cap, with jitter.

One policy for every retry in pbxcrm (AMI and ARI reconnects, CRM deliveries): many
connectors restarting with one PBX, or many deliveries failing at one CRM outage, must not
retry in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def exponential_ceiling(attempt: int, initial: float, cap: float) -> float:
    """The longest wait before retry number `attempt` (0-based): `initial` doubled per retry."""
    return min(cap, initial * 2 ** min(attempt, 30))


def jittered(
    ceiling: float, *, floor: float = 0.0, rand: Callable[[], float] = random.random
) -> float:
    """A random wait between `floor * ceiling` and `ceiling`."""
    return ceiling * (floor + (1.0 - floor) * rand())


def reconnect_delay(attempt: int, initial: float, cap: float) -> float:
    """Before reconnect number `attempt` (0-based) to a PBX: half to all of the ceiling, so a
    reconnect is never immediate yet a fleet spreads out."""
    return jittered(exponential_ceiling(attempt, initial, cap), floor=0.5)
