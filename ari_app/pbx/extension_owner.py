"""Which PBX owns an agent extension, when several pbxcrm instances share one store.

First the ranges every instance published from its `[pbx] extensions` (table pbx_extensions);
when none matches, the PBX of the latest call the extension took part in (table calls), i.e.
what the instances learned from the events they saw. None: nobody knows; the caller keeps the
request on its own PBX, as before this existed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from crm.store.interface import CallStore

log = logging.getLogger(__name__)

# ASCII: \d and isdigit() also take Arabic-Indic or mathematical digits, which int() reads.
_RANGE_RE = re.compile(r"^(\d{1,15})-(\d{1,15})$", re.ASCII)
_EXACT_RE = re.compile(r"^[A-Za-z0-9_.+*#]{1,32}$")


@dataclass(frozen=True, slots=True)
class ExtensionRange:
    """One exact extension ("101") or a digit range ("7000-7999", both ends included)."""

    text: str
    low: int | None = None
    high: int | None = None

    def matches(self, extension: str) -> bool:
        if self.low is None or self.high is None:
            return extension == self.text
        # Leading zeros matter to a dialplan: "0100-0199" covers "0150", not "150".
        low_text = self.text.partition("-")[0]
        if not (extension.isascii() and extension.isdigit()) or len(extension) < len(low_text):
            return False
        return self.low <= int(extension) <= self.high

    @property
    def size(self) -> int:
        return 1 if self.low is None or self.high is None else self.high - self.low + 1


def parse_extension_range(text: str) -> ExtensionRange:
    """Raises ValueError with a message fit for a config error."""
    value = text.strip()
    match = _RANGE_RE.fullmatch(value)
    if match:
        low, high = int(match.group(1)), int(match.group(2))
        if low > high:
            raise ValueError(f"extension range {text!r}: the first number is above the second")
        return ExtensionRange(value, low, high)
    if _EXACT_RE.fullmatch(value):
        return ExtensionRange(value)
    raise ValueError(f'{text!r} is neither an extension ("101") nor a range ("7000-7999")')


class ExtensionOwners:
    """Answers "which pbx_id owns extension X" from the shared store (SQLite or PostgreSQL)."""

    def __init__(self, store: CallStore, pbx_id: str, ranges: Sequence[str]) -> None:
        self._store = store
        self.pbx_id = pbx_id
        self.ranges = [parse_extension_range(text) for text in ranges]

    async def publish(self) -> None:
        """Replace this PBX's rows in pbx_extensions with the configured ranges."""
        await self._store.set_pbx_extensions(self.pbx_id, [r.text for r in self.ranges])

    async def owner_of(self, extension: str) -> str | None:
        # Our own configuration first: it is current even if the table lags a restart.
        if any(r.matches(extension) for r in self.ranges):
            return self.pbx_id
        rows = await self._store.reader.execute_fetchall(
            "SELECT pbx_id, extension_range FROM pbx_extensions WHERE pbx_id <> ?",
            (self.pbx_id,),
        )
        matching: list[tuple[int, str]] = []
        for pbx_id, text in rows:
            try:
                parsed = parse_extension_range(text)
            except ValueError:
                log.warning("pbx_extensions: ignoring %r of pbx %s (not a range)", text, pbx_id)
                continue
            if parsed.matches(extension):
                matching.append((parsed.size, pbx_id))
        if matching:
            # Overlapping configs: the narrowest range (an exact extension) is the deliberate one.
            matching.sort()
            if len({pbx for _, pbx in matching}) > 1:
                log.warning(
                    "extension %s is in the ranges of several PBXs %s; using %s",
                    extension,
                    sorted({pbx for _, pbx in matching}),
                    matching[0][1],
                )
            return matching[0][1]
        rows = await self._store.reader.execute_fetchall(
            "SELECT pbx_id FROM calls WHERE agent_extension = ?"
            # NULL sorts first in PostgreSQL's DESC and last in SQLite's: never let it decide.
            " ORDER BY COALESCE(start_epoch, updated_at) DESC LIMIT 1",
            (extension,),
        )
        for (pbx_id,) in rows:
            return str(pbx_id)
        return None
