"""A CRM described entirely in config: per event kind, one request template and a success rule.

    [[crm]]
    type = "declarative"
    name = "my-crm"
    [crm.requests.ringing]
    method = "GET"
    url = "https://crm.example.com/webservice.php"
    query = { operation = "incomingCall", sExt = "{extension}", sNumber = "{number|national}" }
    [crm.success]
    json_field = "success"
    json_equals = [true]

Query and form parameters keep the order they are written in, so a CRM that compares URLs
byte for byte gets exactly the request its built-in dialect would send.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crm.dialects.base import DeliveryOutcome, register_dialect
from crm.dialects.call_fields import (
    check_template,
    check_timezone,
    check_tree,
    event_fields,
    query_value,
    render,
    render_tree,
)
from crm.dialects.http_dialect import HttpAdapter, HttpDialectConfig, refuse
from crm.dialects.upload import (
    RecordingFiles,
    UploadSpec,
    content_type_of,
    multipart_body,
    read_recording,
    safe_filename,
)
from crm.model import CallEvent, Direction, EventKind
from crm.transport.http_client import trim

_MISSING = object()


class SuccessRule(BaseModel):
    """What counts as accepted: a status code in `status`, and (if set) a JSON field's value."""

    model_config = ConfigDict(extra="forbid")

    status: list[int] = Field(default_factory=lambda: list(range(200, 300)))
    json_field: str | None = None  # dotted path, e.g. "result.ok"
    json_equals: list[Any] | None = None  # accepted values; None: any non-empty value
    error_field: str | None = None  # dotted path to the CRM's error text, kept in the message
    matched_field: str | None = None  # dotted path whose value says matched/unmatched
    unmatched_values: list[Any] = Field(default_factory=lambda: ["unmatched"])


class RequestTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str
    query: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = None  # any JSON structure; its strings are templates
    form: dict[str, str] | None = None
    body: str | None = None  # raw text body template
    content_type: str | None = None  # for `body`
    directions: list[Direction] | None = None  # None: every direction
    answered: bool | None = None  # None: both; True/False: only (un)answered calls
    success: SuccessRule | None = None  # overrides the dialect-wide rule
    upload: UploadSpec | None = None  # send the recording file itself (crm.dialects.upload)

    @field_validator("url", "body")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return check_template(value) if value is not None else None

    @field_validator("query", "headers", "form")
    @classmethod
    def _templates(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for template in (value or {}).values():
            check_template(template)
        return value

    @field_validator("json_body")
    @classmethod
    def _tree(cls, value: Any) -> Any:
        return check_tree(value)

    @model_validator(mode="after")
    def _one_body(self) -> RequestTemplate:
        bodies = [b for b in (self.json_body, self.form, self.body) if b is not None]
        if len(bodies) > 1:
            raise ValueError("a request has at most one of json_body, form, body")
        if self.upload is not None and (self.json_body is not None or self.body is not None):
            raise ValueError("an upload's body is the file: use form for multipart fields")
        if self.upload is not None and self.upload.mode == "raw" and self.form is not None:
            raise ValueError("a raw upload's body is the file alone: drop form or use multipart")
        return self


class DeclarativeConfig(HttpDialectConfig):
    type: str = "declarative"
    requests: dict[EventKind, RequestTemplate]
    success: SuccessRule = Field(default_factory=SuccessRule)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_timezone(value)

    @property
    def uploads_recordings(self) -> bool:
        return any(template.upload is not None for template in self.requests.values())

    @field_validator("requests")
    @classmethod
    def _some(cls, value: dict[EventKind, RequestTemplate]) -> dict[EventKind, RequestTemplate]:
        if not value:
            raise ValueError("a declarative CRM needs at least one [crm.requests.<event>] table")
        return value


@register_dialect("declarative", DeclarativeConfig)
class DeclarativeAdapter(HttpAdapter):
    config: DeclarativeConfig
    default_events: ClassVar[frozenset[EventKind]] = frozenset(EventKind)
    recordings: RecordingFiles | None = None

    def use_recordings(self, files: RecordingFiles) -> None:
        self.recordings = files

    def wants(self, event: CallEvent) -> bool:
        template = self.config.requests.get(event.kind)
        if template is None or not super().wants(event):
            return False
        if template.upload is not None and not event.call.recording_file:
            return False  # nothing to upload: a call that was not recorded
        if template.directions is not None and event.call.direction not in template.directions:
            return False
        answered = event.call.answer_time is not None
        return template.answered is None or template.answered == answered

    async def deliver(self, event: CallEvent, idempotency_key: str) -> DeliveryOutcome:
        template = self.config.requests[event.kind]
        fields = event_fields(event, idempotency_key, self.config.user_map)
        region, zone = self.config.default_region, self.config.timezone

        def fill(value: str) -> str:
            return query_value(render(value, fields, region, zone))

        url = fill(template.url)
        params = [(key, fill(value)) for key, value in template.query.items()] or None
        headers = {key: fill(value) for key, value in template.headers.items()}
        json_body: Any = None
        data: list[tuple[str, str]] | bytes | None = None
        if template.json_body is not None:
            json_body = render_tree(template.json_body, fields, region, zone)
        elif template.form is not None:
            data = [(key, fill(value)) for key, value in template.form.items()]
        elif template.body is not None:
            data = fill(template.body).encode()
            headers.setdefault("Content-Type", template.content_type or "text/plain")
        if template.upload is not None:
            data = await self._upload_body(template.upload, event, data, fill, headers)
        what = f"{event.kind.value} request"
        reply = await self.request(
            template.method,
            url,
            params=params,
            json_body=json_body,
            data=data,
            headers=headers,
            what=what,
        )
        rule = template.success or self.config.success
        if reply.status not in rule.status:
            raise refuse(f"{self.name}: {what} answered {reply.status}, not a success", reply)
        outcome = DeliveryOutcome(status=reply.status, response=trim(reply.text))
        if rule.json_field is None and rule.matched_field is None and rule.error_field is None:
            return outcome
        answer = reply.json()
        if rule.error_field is not None:
            error = _dig(answer, rule.error_field)
            if error not in (_MISSING, None, ""):
                raise refuse(f"{self.name}: {what} refused: {error}", reply)
        if rule.json_field is not None:
            value = _dig(answer, rule.json_field)
            ok = (
                value not in (_MISSING, None, "", False, 0)
                if rule.json_equals is None
                else value is not _MISSING and _equals_any(value, rule.json_equals)
            )
            if not ok:
                shown = "missing" if value is _MISSING else json.dumps(value)
                raise refuse(f"{self.name}: {what}: {rule.json_field} is {shown}", reply)
        if rule.matched_field is not None:
            value = _dig(answer, rule.matched_field)
            if value is not _MISSING:
                outcome.matched = not _equals_any(value, rule.unmatched_values)
        if isinstance(answer, dict):
            outcome.crm_data = answer
        return outcome

    async def _upload_body(
        self,
        spec: UploadSpec,
        event: CallEvent,
        form: Any,
        fill: Callable[[str], str],
        headers: dict[str, str],
    ) -> bytes:
        served, content = await read_recording(
            self.recordings, event.call, self.name, self.config.timeout_seconds / 2
        )
        content_type = content_type_of(spec, served)
        filename = safe_filename(fill(spec.filename) if spec.filename is not None else served)
        if spec.mode == "raw":
            headers.setdefault("Content-Type", content_type)
            headers.setdefault("Content-Disposition", f'attachment; filename="{filename}"')
            return content
        body, headers["Content-Type"] = await multipart_body(
            spec, list(form or []), filename, content_type, content
        )
        return body


def _dig(tree: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(tree, dict) and part in tree:
            tree = tree[part]
        elif isinstance(tree, list) and part.isdigit() and int(part) < len(tree):
            tree = tree[int(part)]
        else:
            return _MISSING
    return tree


def _equals_any(value: Any, accepted: list[Any]) -> bool:
    # `True == 1` in Python; a CRM's `1` and `true` are different answers, so compare types.
    return any(type(value) is type(candidate) and value == candidate for candidate in accepted)
