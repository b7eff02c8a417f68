"""Salesforce (salesforce-3cx-webservices.txt): four JSON POSTs, OAuth 2.0 bearer token.

    SURVEY    -> saveSurvey         {callingNumber, extension, calledDateTime, rating}
    COMPLETED -> rocverification    {callType, startTime, endTime, terminatingParty,
                                     calledNumber, callingNumber, agentExtension,
                                     callRecordingURL}   (answered calls and outbound calls)
    VOICEMAIL -> Event              {Subject, StartDateTime, EndDateTime, IsAllDayEvent,
                                     Description}
    DROPPED   -> recordDroppedCall  {dateAndTime, calledNumber, callingNumber, creExtension}

Every answer is `{"status": ..., "errorMessage": ..., "errorCode": ...}`: a non-empty error
is a refusal; `"status": "unmatched"` is a success Salesforce could not match to a record,
kept on the outcome and counted, never retried.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from crm.dialects.base import DeliveryOutcome, register_dialect
from crm.dialects.call_fields import check_time_format, check_timezone, format_time
from crm.dialects.http_dialect import HttpAdapter, HttpDialectConfig, refuse
from crm.model import Call, CallEvent, Direction, EventKind, Party
from crm.numbers import NumberStyle, format_number
from crm.transport.http_client import AuthConfig, trim


class SalesforceConfig(HttpDialectConfig):
    type: str = "salesforce"
    base_url: str  # https://yourdomain.my.salesforce.com
    # Use the `instance_url` the token endpoint returns instead of base_url (real orgs).
    use_instance_url: bool = False
    save_survey_path: str = "/services/data/v31.0/subjects/saveSurvey"
    wrapup_path: str = "/services/data/v31.0/subjects/rocverification"
    voicemail_event_path: str = "/services/data/v31.0/subjects/Event"
    dropped_call_path: str = "/services/apexrest/recordDroppedCall"
    timestamp_format: str = "iso8601"  # iso8601 | iso8601_local | epoch | epoch_ms | strftime
    timezone: str = "UTC"
    number_format: NumberStyle = "as_received"
    # What unanswered inbound calls get on COMPLETED: they were already reported as
    # recordDroppedCall or Event, so by default no wrap-up.
    wrapup_unanswered_inbound: bool = False
    wrapup_internal: bool = False
    call_types: dict[Direction, str] = Field(
        default_factory=lambda: {
            Direction.INBOUND: "Inbound",
            Direction.OUTBOUND: "Outbound",
            Direction.INTERNAL: "Outbound",
        }
    )
    terminating_parties: dict[Party, str] = Field(
        default_factory=lambda: {
            Party.CALLER: "Customer",
            Party.AGENT: "Agent",
            Party.SYSTEM: "System",
        }
    )
    voicemail_subject: str = "Voicemail from {caller}"
    voicemail_description: str = "Voicemail from {caller} for extension {extension}"
    auth: AuthConfig = Field(default_factory=lambda: AuthConfig(mode="none"))

    @field_validator("timestamp_format")
    @classmethod
    def _time_format(cls, value: str) -> str:
        return check_time_format(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_timezone(value)

    @model_validator(mode="after")
    def _oauth(self) -> SalesforceConfig:
        if self.use_instance_url and self.auth.mode != "oauth2":
            raise ValueError('use_instance_url needs [crm.auth] mode = "oauth2"')
        return self


@register_dialect("salesforce", SalesforceConfig)
class SalesforceAdapter(HttpAdapter):
    config: SalesforceConfig
    default_events: ClassVar[frozenset[EventKind]] = frozenset(
        {EventKind.SURVEY, EventKind.COMPLETED, EventKind.VOICEMAIL, EventKind.DROPPED}
    )

    def wants(self, event: CallEvent) -> bool:
        if not super().wants(event):
            return False
        call = event.call
        if event.kind != EventKind.COMPLETED:
            return True
        if call.direction == Direction.INTERNAL:
            return self.config.wrapup_internal
        if call.direction == Direction.INBOUND and call.answer_time is None:
            return self.config.wrapup_unanswered_inbound
        return True

    # ------------------------------------------------------------------ request bodies

    def _time(self, value: Any) -> str:
        return format_time(value, self.config.timestamp_format, self.config.timezone)

    def _number(self, value: str | None) -> str:
        return format_number(value or "", self.config.number_format, self.config.default_region)

    def _extension(self, event: CallEvent) -> str:
        call = event.call
        extension = (
            event.extension
            or call.agent_extension
            or (call.rang_extensions[0] if call.rang_extensions else "")
        )
        return self.config.user_map.get(extension, extension)

    def request_for(self, event: CallEvent) -> tuple[str, dict[str, Any]]:
        """The path and JSON body the spec defines for this event."""
        call = event.call
        if event.kind == EventKind.SURVEY:
            extension = str(event.data.get("extension") or self._extension(event))
            return self.config.save_survey_path, {
                "callingNumber": self._number(
                    str(event.data.get("number") or call.caller_number or "")
                ),
                "extension": self.config.user_map.get(extension, extension),
                "calledDateTime": self._time(call.start_time or event.at),
                "rating": str(event.data.get("rating", "")),
            }
        if event.kind == EventKind.COMPLETED:
            return self.config.wrapup_path, {
                "callType": self.config.call_types.get(call.direction, "Inbound"),
                "startTime": self._time(call.start_time),
                "endTime": self._time(call.end_time or event.at),
                "terminatingParty": self._party(call),
                "calledNumber": self._number(call.called_number),
                "callingNumber": self._number(call.caller_number),
                "agentExtension": self._extension(event),
                "callRecordingURL": call.recording_url or "",
            }
        if event.kind == EventKind.VOICEMAIL:
            words = {"caller": call.caller_number or "unknown", "extension": self._extension(event)}
            return self.config.voicemail_event_path, {
                "Subject": _words(self.config.voicemail_subject, words),
                "StartDateTime": self._time(call.start_time or event.at),
                "EndDateTime": self._time(call.end_time or event.at),
                "IsAllDayEvent": False,
                "Description": _words(self.config.voicemail_description, words),
            }
        if event.kind == EventKind.DROPPED:
            return self.config.dropped_call_path, {
                "dateAndTime": self._time(call.start_time or event.at),
                "calledNumber": self._number(call.called_number),
                "callingNumber": self._number(call.caller_number),
                "creExtension": self._extension(event),
            }
        raise ValueError(f"salesforce has no request for {event.kind.value} events")

    def _party(self, call: Call) -> str:
        if call.terminating_party is None:
            return ""
        return self.config.terminating_parties.get(call.terminating_party, "")

    # ------------------------------------------------------------------ delivery

    def _base_url(self) -> str:
        instance = getattr(self.auth, "instance_url", None)
        if self.config.use_instance_url and instance:
            return instance.rstrip("/")
        return self.config.base_url.rstrip("/")

    async def deliver(self, event: CallEvent, idempotency_key: str) -> DeliveryOutcome:
        path, body = self.request_for(event)
        what = path.rsplit("/", 1)[-1]
        if self.config.use_instance_url and getattr(self.auth, "instance_url", None) is None:
            await self.auth.prepare(self.http, {})  # learn instance_url before the first POST
        reply = await self.request(
            "POST", self._base_url() + path, json_body=body, what=f"salesforce {what}"
        )
        answer = reply.json()
        if not isinstance(answer, dict):
            raise refuse(f"{self.name}: {what} answered JSON that is not an object", reply)
        code = str(answer.get("errorCode") or "").strip()
        message = str(answer.get("errorMessage") or "").strip()
        if code or message:
            detail = ": ".join(part for part in (code, message) if part)
            raise refuse(f"{self.name}: {what} refused: {detail}", reply)
        status = str(answer.get("status") or "")
        matched: bool | None = None
        if event.kind == EventKind.COMPLETED:
            # The outbox counts matched=False as `unmatched` in pbxcrm_deliveries_total.
            matched = status.lower() != "unmatched"
        return DeliveryOutcome(
            status=reply.status, matched=matched, response=trim(reply.text), crm_data=answer
        )


def _words(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template
