"""FixDigital CRM: `webservice.php?operation=incomingCall|incomingCallAnswered` (GET).

From fixdigital-crm-questionnaire.txt: the PBX tells the CRM about every incoming call
(ringing at an extension) and about its answer, with sExt, sNumber (national digits, as the
sample `033004799` shows) and ClientId; the CRM answers `{"success":true,"result":[]}`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from crm.adapters.base import DeliveryOutcome, register_dialect
from crm.dialects.http_dialect import HttpAdapter, HttpDialectConfig, refuse
from crm.http_client import trim
from crm.model import CallEvent, Direction, EventKind
from crm.numbers import NumberStyle, format_number

OPERATIONS = {EventKind.RINGING: "incomingCall", EventKind.ANSWERED: "incomingCallAnswered"}


class FixDigitalConfig(HttpDialectConfig):
    type: str = "fixdigital"
    url: str  # the full webservice.php URL
    client_id: str
    number_format: NumberStyle = "national"
    default_region: str = "IL"
    inbound_only: bool = True  # the questionnaire only describes incoming calls
    method: str = Field(default="GET", pattern="^(GET|POST)$")


@register_dialect("fixdigital", FixDigitalConfig)
class FixDigitalAdapter(HttpAdapter):
    config: FixDigitalConfig
    default_events: ClassVar[frozenset[EventKind]] = frozenset(OPERATIONS)

    def wants(self, event: CallEvent) -> bool:
        if self.config.inbound_only and event.call.direction != Direction.INBOUND:
            return False
        return event.kind in OPERATIONS and super().wants(event)

    def params(self, event: CallEvent) -> list[tuple[str, str]]:
        """The query in the order of the questionnaire's sample URL."""
        call = event.call
        extension = event.extension or call.agent_extension or ""
        extension = self.config.user_map.get(extension, extension)
        number = format_number(
            call.caller_number or "", self.config.number_format, self.config.default_region
        )
        return [
            ("operation", OPERATIONS[event.kind]),
            ("sExt", extension),
            ("sNumber", number),
            ("ClientId", self.config.client_id),
        ]

    async def deliver(self, event: CallEvent, idempotency_key: str) -> DeliveryOutcome:
        params = self.params(event)
        what = f"fixdigital {params[0][1]}"
        if self.config.method == "GET":
            reply = await self.request("GET", self.config.url, params=params, what=what)
        else:
            reply = await self.request("POST", self.config.url, data=params, what=what)
        answer = reply.json()
        if not isinstance(answer, dict) or answer.get("success") is not True:
            raise refuse(f"{self.name}: {what} not accepted: {trim(reply.text, 160)}", reply)
        return DeliveryOutcome(status=reply.status, response=trim(reply.text), crm_data=answer)
