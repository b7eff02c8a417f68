"""FixDigital CRM: `webservice.php?operation=incomingCall|incomingCallAnswered` (GET).

From fixdigital-crm-questionnaire.txt: the PBX tells the CRM about every incoming call
(ringing at an extension) and about its answer, with sExt, sNumber (national digits, as the
sample `033004799` shows) and ClientId; the CRM answers `{"success":true,"result":[]}`.

Every agent leg that rings gets `incomingCall`; every agent who talks (a transfer target, a
pickup) gets `incomingCallAnswered` with their own sExt. The questionnaire names no operation
for the end of a ring: if the CRM has one, `leg_ended_operation` sends it, with the same
parameters, for every ring and answer when that agent's leg ends.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from crm.dialects.base import DeliveryOutcome, register_dialect
from crm.dialects.http_dialect import HttpAdapter, HttpDialectConfig, refuse
from crm.model import CallEvent, Direction, EventKind
from crm.numbers import NumberStyle, format_number
from crm.transport.http_client import trim

OPERATIONS = {EventKind.RINGING: "incomingCall", EventKind.ANSWERED: "incomingCallAnswered"}


class FixDigitalConfig(HttpDialectConfig):
    type: str = "fixdigital"
    url: str  # the full webservice.php URL
    client_id: str
    number_format: NumberStyle = "national"
    default_region: str = "IL"
    inbound_only: bool = True  # the questionnaire only describes incoming calls
    method: str = Field(default="GET", pattern="^(GET|POST)$")
    leg_ended_operation: str = Field(default="", pattern=r"^[A-Za-z0-9_]*$")


@register_dialect("fixdigital", FixDigitalConfig)
class FixDigitalAdapter(HttpAdapter):
    config: FixDigitalConfig
    default_events: ClassVar[frozenset[EventKind]] = frozenset({*OPERATIONS, EventKind.LEG_ENDED})

    def wants(self, event: CallEvent) -> bool:
        if self.config.inbound_only and event.call.direction != Direction.INBOUND:
            return False
        return self._operation(event) is not None and super().wants(event)

    def _operation(self, event: CallEvent) -> str | None:
        if event.kind == EventKind.LEG_ENDED:
            return self.config.leg_ended_operation or None
        return OPERATIONS.get(event.kind)

    def params(self, event: CallEvent) -> list[tuple[str, str]]:
        """The query in the order of the questionnaire's sample URL."""
        call = event.call
        extension = event.extension or call.agent_extension or ""
        extension = self.config.user_map.get(extension, extension)
        number = format_number(
            call.caller_number or "", self.config.number_format, self.config.default_region
        )
        return [
            ("operation", self._operation(event) or ""),
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
