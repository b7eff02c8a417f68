"""Creatio CC360 (creatio-cc360-call-events-api.txt): OmniWhoCallsService.

    RINGING / ANSWERED / LEG_ENDED -> GET  .../RingingEventHandler?id=&eventName=&callerid=&user=
    COMPLETED                      -> POST .../PushHistoryData?id=&callerid=&user=&event=&duration=
                                      body {"FILES": [recording URLs]}

RingingEventHandler keeps a card per user: every agent leg gets `ringing`, `answer` if that
agent talked (transfer targets and pickups included) and one `hangup` when that leg ends
(LEG_ENDED), so a ring group's or a queue's other members see their card close and the first
agent of a transfer is closed when they hand the caller on.

PushHistoryData is customer history: internal calls are left out unless `internal_history`
is set, and a call no agent touched (IVR only, hung up in the IVR) is sent under
`fallback_user` or not at all, since Creatio refuses a history record with no operator.

Two ways in: `auth_mode = "login"` (POST AuthService.svc/Login, keep the cookies, send the
BPMCSRF cookie back as a BPMCSRF header; log in again on 401/403) under `/0/rest/...`, or
`auth_mode = "anonymous"` under `/0/ServiceModel/...svc/`. Both carry the "Who Calls Token"
in the path. Creatio knows agents by their extension, digits only.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from crm.dialects.base import DeliveryOutcome, register_dialect
from crm.dialects.http_dialect import HttpAdapter, HttpDialectConfig
from crm.model import CallEvent, Direction, EventKind
from crm.numbers import NumberStyle, digits_only, format_number
from crm.secrets import Secret
from crm.transport.http_client import AuthConfig, trim

EVENT_NAMES = {
    EventKind.RINGING: "ringing",
    EventKind.ANSWERED: "answer",
    EventKind.LEG_ENDED: "hangup",
}


class CreatioConfig(HttpDialectConfig):
    type: str = "creatio"
    base_url: str  # https://yourcompany.creatio.com
    token: Secret  # the OmniWhoCallsToken system setting
    auth_mode: Literal["login", "anonymous"] = "login"
    username: str | None = None
    password: Secret | None = None
    login_path: str = "/ServiceModel/AuthService.svc/Login"
    rest_prefix: str = "/0/rest/OmniWhoCallsService"
    anonymous_prefix: str = "/0/ServiceModel/OmniWhoCallsService.svc"
    number_format: NumberStyle = "e164_no_plus"
    # Internal calls (agent to agent) are not customer history.
    internal_history: bool = False
    # The operator's extension for history records of calls no agent touched; empty: not sent.
    fallback_user: str = Field(default="", pattern=r"^[0-9]*$")

    @model_validator(mode="after")
    def _credentials(self) -> CreatioConfig:
        if self.auth_mode == "login" and (self.username is None or self.password is None):
            raise ValueError('auth_mode = "login" needs username and password')
        if self.auth.mode != "none":
            raise ValueError("creatio sets its own auth from auth_mode; remove [crm.auth]")
        return self


@register_dialect("creatio", CreatioConfig)
class CreatioAdapter(HttpAdapter):
    config: CreatioConfig
    default_events: ClassVar[frozenset[EventKind]] = frozenset({*EVENT_NAMES, EventKind.COMPLETED})

    def _auth_config(self) -> AuthConfig | None:
        cfg = self.config
        if cfg.auth_mode == "anonymous":
            return None
        return AuthConfig(
            mode="cookie_login",
            login_url=cfg.base_url.rstrip("/") + cfg.login_path,
            username=cfg.username,
            password=cfg.password,
            login_body={"UserName": "{username}", "UserPassword": "{password}"},
            csrf_cookie="BPMCSRF",
            csrf_header="BPMCSRF",
            reauth_statuses=[401, 403],
        )

    def wants(self, event: CallEvent) -> bool:
        if not super().wants(event):
            return False
        if event.kind == EventKind.COMPLETED:
            if event.call.direction == Direction.INTERNAL and not self.config.internal_history:
                return False
            if event.data.get("merged_into"):
                return False  # a consult call folded into the customer's: its history is there
        # Both requests name one user; without an extension Creatio refuses them.
        return bool(self._user(event))

    def _service_url(self, method: str) -> str:
        cfg = self.config
        prefix = cfg.rest_prefix if cfg.auth_mode == "login" else cfg.anonymous_prefix
        token = cfg.token.get_secret_value()
        return f"{cfg.base_url.rstrip('/')}{prefix}/{token}/{method}"

    def _user(self, event: CallEvent) -> str:
        call = event.call
        if event.kind == EventKind.COMPLETED:
            # The agent who finally had the customer; else who rang; else the fallback.
            extension = call.agent_extension or (
                call.rang_extensions[-1] if call.rang_extensions else ""
            )
        else:
            extension = event.extension or ""
        user = digits_only(self.config.user_map.get(extension, extension))
        if not user and event.kind == EventKind.COMPLETED:
            return self.config.fallback_user
        return user

    def _callerid(self, event: CallEvent) -> str:
        call = event.call
        # The client's number: the caller on inbound calls, the dialled number on outbound.
        number = call.called_number if call.direction == Direction.OUTBOUND else call.caller_number
        return format_number(number or "", self.config.number_format, self.config.default_region)

    def request_for(self, event: CallEvent) -> tuple[str, str, list[tuple[str, str]], object]:
        """Method, URL, query (in the spec's parameter-table order) and JSON body."""
        call = event.call
        if event.kind in EVENT_NAMES:
            return (
                "GET",
                self._service_url("RingingEventHandler"),
                [
                    ("id", call.call_id),
                    ("eventName", EVENT_NAMES[event.kind]),
                    ("callerid", self._callerid(event)),
                    ("user", self._user(event)),
                ],
                None,
            )
        if event.kind == EventKind.COMPLETED:
            direction = "incoming" if call.direction == Direction.INBOUND else "outgoing"
            return (
                "POST",
                self._service_url("PushHistoryData"),
                [
                    ("id", call.call_id),
                    ("callerid", self._callerid(event)),
                    ("user", self._user(event)),
                    ("event", direction),
                    ("duration", str(round(call.talk_seconds))),
                ],
                {"FILES": [call.recording_url] if call.recording_url else []},
            )
        raise ValueError(f"creatio has no request for {event.kind.value} events")

    async def deliver(self, event: CallEvent, idempotency_key: str) -> DeliveryOutcome:
        method, url, params, body = self.request_for(event)
        what = "PushHistoryData" if method == "POST" else f"RingingEventHandler {params[1][1]}"
        reply = await self.request(
            method, url, params=params, json_body=body, what=f"creatio {what}"
        )
        # Creatio answers these with an empty body or a small JSON; only the status counts.
        return DeliveryOutcome(status=reply.status, response=trim(reply.text))
