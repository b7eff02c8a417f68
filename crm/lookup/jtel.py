"""A jtel-style REST lookup (jtel-acd-callback-rest.txt).

POST CallerID (E.164 without +), ServiceNumber, ServiceName, Function, UserData,
UserData2, UserData3; 200 = one record (any JSON, kept as the result), 300 = several,
404 = none. The spec does not say how the parameters are encoded: form by default,
`encoding = "json"` for services that want a JSON object.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from crm.lookup.base import (
    LookupConfig,
    LookupRequest,
    LookupResult,
    LookupSource,
    LookupStatus,
    register_lookup,
)
from crm.transport.http_client import AuthConfig, build_auth, parse_json, safe_url, send_with_auth


class JtelLookupConfig(LookupConfig):
    type: str = "jtel"
    url: str
    encoding: Literal["form", "json"] = "form"
    number_formats: list[str] = Field(default_factory=lambda: ["e164_no_plus"])
    function: str | None = None  # default Function when the request has none
    auth: AuthConfig = Field(default_factory=AuthConfig)
    # Dotted paths into the answer for the screen pop's fixed fields.
    name_field: str | None = "Name"
    company_field: str | None = "Company"
    owner_extension_field: str | None = "OwnerExtension"
    url_field: str | None = "Url"


@register_lookup("jtel", JtelLookupConfig)
class JtelLookup(LookupSource):
    config: JtelLookupConfig

    def __init__(self, config: LookupConfig, http: Any) -> None:
        super().__init__(config, http)
        assert isinstance(config, JtelLookupConfig)
        self.auth = build_auth(config.auth, config.timeout_seconds)

    def parameters(self, request: LookupRequest) -> list[tuple[str, str]]:
        user_data = [*request.user_data, "", "", ""][:3]
        return [
            ("CallerID", request.number),
            ("ServiceNumber", request.service_number or ""),
            ("ServiceName", request.service_name or ""),
            ("Function", request.function or self.config.function or ""),
            ("UserData", user_data[0]),
            ("UserData2", user_data[1]),
            ("UserData3", user_data[2]),
        ]

    async def lookup(self, request: LookupRequest) -> LookupResult:
        cfg = self.config
        params = self.parameters(request)
        body: dict[str, Any] = (
            {"json_body": dict(params)} if cfg.encoding == "json" else {"data": params}
        )
        try:
            reply = await send_with_auth(
                self.http, self.auth, "POST", cfg.url, timeout=cfg.timeout_seconds, **body
            )
            if reply.status == 404:
                return LookupResult(status=LookupStatus.NOTFOUND, source=self.name)
            if reply.status == 300:
                record = parse_json(reply) if reply.text.strip() else None
                return LookupResult(status=LookupStatus.MULTIPLE, source=self.name, record=record)
            if reply.status != 200:
                return self._error(f"{safe_url(cfg.url)} answered HTTP {reply.status}")
            record = parse_json(reply)
        except Exception as exc:  # a lookup never raises: the IVR must go on
            return self._error(str(exc))
        return LookupResult(
            status=LookupStatus.FOUND,
            source=self.name,
            contact_name=_text(record, cfg.name_field),
            company=_text(record, cfg.company_field),
            owner_extension=_text(record, cfg.owner_extension_field),
            contact_url=_text(record, cfg.url_field),
            record=record,
        )

    def _error(self, reason: str) -> LookupResult:
        return LookupResult(status=LookupStatus.ERROR, source=self.name, error=reason)


def _text(tree: Any, path: str | None) -> str | None:
    if not path:
        return None
    for part in path.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return None if tree is None or isinstance(tree, dict | list) else str(tree)
