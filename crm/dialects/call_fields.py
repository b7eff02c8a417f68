"""The values a dialect can put in a request, and the tiny template language over them.

Templates are `{name}` or `{name|filter}` (filters: a number style from crm.numbers, a
time format, `int`, `digits`, `lower`, `upper`). Deliberately not `str.format`: config text
must never reach attributes of Python objects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crm.model import CallEvent
from crm.numbers import NUMBER_STYLES, digits_only, format_number

NUMBER_FIELDS = frozenset({"caller_number", "called_number", "number", "external_number"})
TIME_FIELDS = frozenset({"at", "start_time", "answer_time", "end_time"})
TIME_STYLES = ("iso8601", "iso8601_local", "epoch", "epoch_ms")
OTHER_FILTERS = ("int", "digits", "lower", "upper")
FILTERS = frozenset((*NUMBER_STYLES, *TIME_STYLES, *OTHER_FILTERS))

FIELD_NAMES = frozenset(
    {
        *NUMBER_FIELDS,
        *TIME_FIELDS,
        "call_id",
        "event_id",
        "idempotency_key",
        "seq",
        "kind",
        "pbx_id",
        "direction",
        "caller_name",
        "agent_extension",
        "extension",
        "user",
        "disposition",
        "answered",
        "terminating_party",
        "hangup_cause",
        "ring_seconds",
        "talk_seconds",
        "duration",
        "total_seconds",
        "recording_url",
        "recording_file",
        "recording_urls",
        "recording_error",
        "queue",
        "voicemail",
        "originate_id",
        "rating",
        "status",
        "comments",
    }
)

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w.]*)(?:\|(\w+))?\}")
# `{name|something}` that _PLACEHOLDER does not accept: a typo, not literal text.
_BROKEN_FILTER = re.compile(r"\{[A-Za-z_][\w.]*\|[^{}]*\}")


def format_time(value: datetime | None, style: str, timezone: str = "UTC") -> str:
    """`iso8601` (UTC, `Z`), `iso8601_local`, `epoch`, `epoch_ms` or any strftime pattern."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if style == "iso8601":
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if style == "epoch":
        return str(int(value.timestamp()))
    if style == "epoch_ms":
        return str(int(value.timestamp() * 1000))
    local = value.astimezone(_zone(timezone))
    if style == "iso8601_local":
        return local.isoformat(timespec="seconds")
    return local.strftime(style)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def check_time_format(value: str) -> str:
    if value in TIME_STYLES or "%" in value:
        return value
    raise ValueError(f"time format must be one of {', '.join(TIME_STYLES)} or a strftime pattern")


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


def event_fields(
    event: CallEvent, idempotency_key: str, user_map: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Every template field for one event, raw (numbers as received, times as datetimes)."""
    call = event.call
    extension = event.extension or event.data.get("extension") or call.agent_extension
    if not extension and call.rang_extensions:
        extension = call.rang_extensions[0]
    extension = str(extension) if extension else ""
    external = call.called_number if call.direction == "outbound" else call.caller_number
    total = (
        (call.end_time - call.start_time).total_seconds()
        if call.end_time and call.start_time
        else 0.0
    )
    fields: dict[str, Any] = {
        "call_id": call.call_id,
        "event_id": event.event_id,
        "idempotency_key": idempotency_key,
        "seq": event.seq,
        "kind": event.kind.value,
        "pbx_id": call.pbx_id,
        "direction": call.direction.value,
        "caller_number": call.caller_number or "",
        "called_number": call.called_number or "",
        "number": str(event.data.get("number") or call.caller_number or ""),
        "external_number": external or "",
        "caller_name": call.caller_name or "",
        "agent_extension": call.agent_extension or "",
        "extension": extension,
        "user": (user_map or {}).get(extension, extension),
        "disposition": call.disposition.value if call.disposition else "",
        "answered": call.answer_time is not None or call.disposition == "answered",
        "terminating_party": call.terminating_party.value if call.terminating_party else "",
        "hangup_cause": call.hangup_cause if call.hangup_cause is not None else "",
        "ring_seconds": call.ring_seconds,
        "talk_seconds": call.talk_seconds,
        "duration": round(call.talk_seconds),
        "total_seconds": round(total),
        "recording_url": call.recording_url or "",
        "recording_file": call.recording_file or "",
        "recording_urls": [call.recording_url] if call.recording_url else [],
        "recording_error": call.recording_error or "",
        "queue": call.queue or "",
        "voicemail": call.voicemail,
        "originate_id": call.originate_id or "",
        "at": event.at,
        "start_time": call.start_time,
        "answer_time": call.answer_time,
        "end_time": call.end_time,
        "rating": str(event.data.get("rating", "")),
        "status": str(event.data.get("status", "")),
        "comments": str(event.data.get("comments", "")),
    }
    for key, value in event.data.items():
        fields[f"data.{key}"] = value
    for key, value in call.variables.items():
        fields[f"var.{key}"] = value
    return fields


def apply_filter(
    name: str, value: Any, style: str | None, region: str, timezone: str = "UTC"
) -> Any:
    if style is None:
        if isinstance(value, datetime):
            return format_time(value, "iso8601")
        return value
    if style in NUMBER_STYLES:
        return format_number(str(value), style, region)
    if style in TIME_STYLES:
        return format_time(value, style, timezone) if isinstance(value, datetime) else ""
    if style == "int":
        try:
            return round(float(value))
        except (TypeError, ValueError):
            return 0
    if style == "digits":
        return digits_only(str(value))
    if style == "lower":
        return str(value).lower()
    if style == "upper":
        return str(value).upper()
    return value


def check_template(template: str) -> str:
    """Reject unknown fields and filters when the config is loaded, not at the first call."""
    for match in _BROKEN_FILTER.finditer(template):
        if not _PLACEHOLDER.fullmatch(match.group(0)):
            raise ValueError(f"unknown filter in {match.group(0)} in template {template!r}")
    for match in _PLACEHOLDER.finditer(template):
        name, style = match.group(1), match.group(2)
        if name not in FIELD_NAMES and not name.startswith(("data.", "var.")):
            raise ValueError(f"unknown field {{{name}}} in template {template!r}")
        if style is not None and style not in FILTERS:
            raise ValueError(f"unknown filter |{style} in template {template!r}")
    return template


def render(template: str, fields: Mapping[str, Any], region: str, timezone: str = "UTC") -> Any:
    """Fill a template. A template that is exactly one placeholder keeps the value's type."""
    whole = _PLACEHOLDER.fullmatch(template)
    if whole:
        return _value(whole, fields, region, timezone)

    def text(match: re.Match[str]) -> str:
        value = _value(match, fields, region, timezone)
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else str(value)

    return _PLACEHOLDER.sub(text, template)


def _value(match: re.Match[str], fields: Mapping[str, Any], region: str, timezone: str) -> Any:
    name, style = match.group(1), match.group(2)
    return apply_filter(name, fields.get(name, ""), style, region, timezone)


def render_tree(tree: Any, fields: Mapping[str, Any], region: str, timezone: str = "UTC") -> Any:
    """`render` over every string of a JSON-like structure (for JSON body templates)."""
    if isinstance(tree, str):
        return render(tree, fields, region, timezone)
    if isinstance(tree, list):
        return [render_tree(item, fields, region, timezone) for item in tree]
    if isinstance(tree, dict):
        return {key: render_tree(value, fields, region, timezone) for key, value in tree.items()}
    return tree


def check_tree(tree: Any) -> Any:
    if isinstance(tree, str):
        check_template(tree)
    elif isinstance(tree, list):
        for item in tree:
            check_tree(item)
    elif isinstance(tree, dict):
        for value in tree.values():
            check_tree(value)
    return tree


def query_value(value: Any) -> str:
    """How a rendered value goes into a query string (bools as JSON spells them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)
