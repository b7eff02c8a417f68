"""What the tracker remembers of calls and channels that are gone, bounded."""

from __future__ import annotations

from collections import OrderedDict

GONE_REMEMBERED = 4096


def remember(recent: OrderedDict[str, None], key: str) -> None:
    recent[key] = None
    if len(recent) > GONE_REMEMBERED:
        recent.popitem(last=False)
