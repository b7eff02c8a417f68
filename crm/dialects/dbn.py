"""cal4care DBN (cal4care-3cx-dbn-http-api.txt): push an agent's screen-pop note.

    NOTE -> GET|POST {base_url}/3cx/query?cid=&status=&comments=&token=  ->  {"success": 1|0}

For sites that already run a DBN server: the agent's status (No Answer, Schedule Later,
Do not Disturb, Completed) and comments, saved against the caller's number.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from crm.dialects.base import DeliveryError, DeliveryOutcome, register_dialect
from crm.dialects.http_dialect import HttpAdapter, HttpDialectConfig, refuse
from crm.model import CallEvent, EventKind
from crm.numbers import NumberStyle, format_number
from crm.secrets import Secret
from crm.transport.http_client import trim

STATUSES = ("No Answer", "Schedule Later", "Do not Disturb", "Completed")
# Spellings seen in the spec's own example and from real screen pops.
_ALIASES = {s.lower(): s for s in STATUSES} | {
    "scheduled later": "Schedule Later",
    "do not disturb": "Do not Disturb",
    "dnd": "Do not Disturb",
    "noanswer": "No Answer",
}


def canonical_status(value: str) -> str | None:
    """The spec's spelling of a note status, or None if it is not one of the four."""
    return _ALIASES.get(" ".join(str(value).split()).lower())


class DbnConfig(HttpDialectConfig):
    type: str = "dbn"
    base_url: str  # the DBN server; requests go to {base_url}{path}
    path: str = "/3cx/query"
    token: Secret
    method: Literal["GET", "POST"] = "GET"
    number_format: NumberStyle = "as_received"


@register_dialect("dbn", DbnConfig)
class DbnAdapter(HttpAdapter):
    config: DbnConfig
    default_events: ClassVar[frozenset[EventKind]] = frozenset({EventKind.NOTE})

    def params(self, event: CallEvent) -> list[tuple[str, str]]:
        raw_status = str(event.data.get("status", ""))
        status = canonical_status(raw_status)
        if status is None:
            raise DeliveryError(
                f"{self.name}: note status {raw_status!r} is not one of {', '.join(STATUSES)}",
                retryable=False,
            )
        number = str(event.data.get("number") or event.call.caller_number or "")
        return [
            ("cid", format_number(number, self.config.number_format, self.config.default_region)),
            ("status", status),
            ("comments", str(event.data.get("comments", ""))),
            ("token", self.config.token.get_secret_value()),
        ]

    async def deliver(self, event: CallEvent, idempotency_key: str) -> DeliveryOutcome:
        params = self.params(event)
        url = self.config.base_url.rstrip("/") + self.config.path
        if self.config.method == "GET":
            reply = await self.request("GET", url, params=params, what="dbn note")
        else:
            reply = await self.request("POST", url, data=params, what="dbn note")
        answer = reply.json(lenient=True)
        success = answer.get("success") if isinstance(answer, dict) else None
        if success not in (1, True) or isinstance(success, float):
            raise refuse(f"{self.name}: dbn note not inserted: {trim(reply.text, 160)}", reply)
        return DeliveryOutcome(status=reply.status, response=trim(reply.text), crm_data=answer)
