"""CRM data -> channel variables: names the dialplan can use, values of a bounded size.

jtel flattens its REST answer into `$SalesForce.Entity.FieldName`; Asterisk variable names
cannot hold dots, so here it is `CRM_ENTITY_FIELDNAME`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger("pbxcrm.agi")

MAX_NAME_LENGTH = 80
MAX_DEPTH = 8

_NOT_NAME = re.compile(r"[^A-Z0-9]+")
# Goes into Dial(PJSIP/...) in the dialplan: digits only, so neither `&`, `,`, `/` nor an
# endpoint name such as `trunk` (which Dial would call) can get through.
_EXTENSION = re.compile(r"[0-9]{1,32}")


def variable_part(key: object) -> str:
    """`"First name"` -> `FIRST_NAME`; `"Тел."` -> `FIELD` (nothing usable left)."""
    part = _NOT_NAME.sub("_", str(key).upper()).strip("_")
    return part or "FIELD"


def cut_value(value: str, max_bytes: int) -> str:
    """At most `max_bytes` of UTF-8, never half a character."""
    encoded = value.encode("utf-8")
    if len(encoded) <= max_bytes:
        return value
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def safe_extension(value: str | None) -> str | None:
    if value and _EXTENSION.fullmatch(value):
        return value
    if value:
        log.warning("CRM owner extension %r is not an extension (digits only); ignored", value[:40])
    return None


def scalar_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def flatten(record: Any, prefix: str, max_variables: int, max_value_bytes: int) -> dict[str, str]:
    """Nested JSON -> `{PREFIX_ENTITY_FIELD: value}`; lists give `_1.._N` and `_COUNT`.

    Bounded in every direction (depth, count, name and value length) because the JSON comes
    from a CRM we do not control and every variable costs one AGI round trip.
    """
    out: dict[str, str] = {}
    dropped = 0

    def put(name: str, value: str) -> None:
        nonlocal dropped
        name = name[:MAX_NAME_LENGTH]
        if name in out:
            return  # two keys that sanitise to one name: the first wins
        if len(out) >= max_variables:
            dropped += 1
            return
        out[name] = cut_value(value, max_value_bytes)

    def walk(node: Any, name: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            put(name, "")
            return
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, f"{name}_{variable_part(key)}", depth + 1)
        elif isinstance(node, list):
            put(f"{name}_COUNT", str(len(node)))
            for index, child in enumerate(node, start=1):
                walk(child, f"{name}_{index}", depth + 1)
        else:
            put(name, scalar_text(node))

    if isinstance(record, dict | list):
        walk(record, prefix, 0)
    elif record is not None:
        put(f"{prefix}_VALUE", scalar_text(record))
    if dropped:
        log.warning(
            "CRM record has more than %d fields; %d not set as channel variables",
            max_variables,
            dropped,
        )
    return out
