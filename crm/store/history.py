"""Call history for a CRM: one number's calls, newest first, with an opaque stable cursor.

The query runs on the store's read connection, parameterised only. A number matches in each
form a switch may have stored it (E.164, national, as received): the store keeps the outside
party's digits in `calls.remote_digits`, so matching is an indexed `IN` over the digits of each
variant.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import asdict, dataclass
from datetime import datetime

import phonenumbers

from crm.numbers import digits_only, normalize, number_variants
from crm.store.interface import QmarkReader

MAX_LIMIT = 10_000


class HistoryError(ValueError):
    """A query parameter that cannot be used; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    number: str | None = None
    extension: str | None = None
    start: datetime | None = None  # inclusive, timezone-aware
    end: datetime | None = None  # exclusive
    limit: int = 100
    cursor: str | None = None
    pbx_id: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryRow:
    call_id: str
    pbx_id: str
    time: str | None  # ISO 8601 UTC start of the call
    extension: str | None
    number: str | None  # the outside party as received
    direction: str | None
    incoming: bool
    duration: float  # talk seconds
    ring_seconds: float
    disposition: str | None
    recording_file: str | None
    recording_url: str | None
    ended: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    calls: list[HistoryRow]
    next_cursor: str | None


COLUMNS = [
    "time",
    "extension",
    "number",
    "duration",
    "recording_url",
    "incoming",
    "disposition",
    "direction",
    "ring_seconds",
    "recording_file",
    "call_id",
    "pbx_id",
    "ended",
]


def match_digits(number: str, region: str) -> list[str]:
    """The digit strings `number` may be stored under (E.164, national, significant, as given)."""
    found: list[str] = []
    for variant in number_variants(number, region):
        digits = digits_only(variant)
        if digits and digits not in found:
            found.append(digits)
    parsed = normalize(number, region)
    if parsed is not None:
        significant = phonenumbers.national_significant_number(parsed)
        if significant and significant not in found:
            found.append(significant)
    return found


def encode_cursor(epoch: float, pbx_id: str, call_id: str) -> str:
    raw = json.dumps([epoch, pbx_id, call_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        epoch, pbx_id, call_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(pbx_id, str) or not isinstance(call_id, str):
            raise TypeError
        moment = float(epoch)
        if not math.isfinite(moment):
            raise ValueError
        return moment, pbx_id, call_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError):
        raise HistoryError("cursor", "not a cursor this server issued") from None


async def query_calls(db: QmarkReader, query: HistoryQuery, *, region: str) -> HistoryPage:
    """One page of calls matching `query`, newest first; `next_cursor` None on the last page."""
    if not 1 <= query.limit <= MAX_LIMIT:
        raise HistoryError("limit", f"must be between 1 and {MAX_LIMIT}")
    where: list[str] = []
    params: list[object] = []
    if query.number is not None:
        digits = match_digits(query.number, region)
        if not digits:
            raise HistoryError("number", "has no digits")
        where.append(f"remote_digits IN ({','.join('?' * len(digits))})")
        params.extend(digits)
    if query.extension is not None:
        where.append("agent_extension = ?")
        params.append(query.extension)
    if query.pbx_id is not None:
        where.append("pbx_id = ?")
        params.append(query.pbx_id)
    if query.start is not None:
        where.append("start_epoch >= ?")
        params.append(query.start.timestamp())
    if query.end is not None:
        where.append("start_epoch < ?")
        params.append(query.end.timestamp())
    if query.cursor is not None:
        epoch, pbx_id, call_id = decode_cursor(query.cursor)
        # Keyset pagination on (start, pbx, call): stable while new calls arrive.
        where.append(
            "(COALESCE(start_epoch, 0) < ? OR (COALESCE(start_epoch, 0) = ?"
            " AND (pbx_id < ? OR (pbx_id = ? AND call_id < ?))))"
        )
        params.extend([epoch, epoch, pbx_id, pbx_id, call_id])
    sql = (
        "SELECT pbx_id, call_id, start_time, COALESCE(start_epoch, 0), agent_extension,"
        " remote_number, direction, talk_seconds, ring_seconds, disposition, recording_file,"
        " recording_url, ended FROM calls"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY COALESCE(start_epoch, 0) DESC, pbx_id DESC, call_id DESC LIMIT ?"
    )
    params.append(query.limit + 1)
    rows = list(await db.execute_fetchall(sql, params))
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    calls = [
        HistoryRow(
            call_id=row[1],
            pbx_id=row[0],
            time=row[2],
            extension=row[4],
            number=row[5],
            direction=row[6],
            incoming=row[6] == "inbound",
            duration=float(row[7] or 0.0),
            ring_seconds=float(row[8] or 0.0),
            disposition=row[9],
            recording_file=row[10],
            recording_url=row[11],
            ended=bool(row[12]),
        )
        for row in rows
    ]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(float(last[3]), last[0], last[1])
    return HistoryPage(calls=calls, next_cursor=next_cursor)
