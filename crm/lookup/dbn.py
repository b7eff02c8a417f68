"""An existing cal4care DBN server as a lookup: `query?cid=&token=` -> `{"success": true}`."""

from __future__ import annotations

from typing import Literal

from crm.lookup.base import (
    LookupConfig,
    LookupRequest,
    LookupResult,
    LookupSource,
    LookupStatus,
    register_lookup,
)
from crm.secrets import Secret
from crm.transport.http_client import parse_json, safe_url, send


class DbnLookupConfig(LookupConfig):
    type: str = "dbn"
    base_url: str
    path: str = "/3cx/query"
    token: Secret
    method: Literal["GET", "POST"] = "GET"


@register_lookup("dbn", DbnLookupConfig)
class DbnLookup(LookupSource):
    config: DbnLookupConfig

    async def lookup(self, request: LookupRequest) -> LookupResult:
        cfg = self.config
        url = cfg.base_url.rstrip("/") + cfg.path
        params = [("cid", request.number), ("token", cfg.token.get_secret_value())]
        try:
            if cfg.method == "GET":
                reply = await send(
                    self.http, "GET", url, params=params, timeout=cfg.timeout_seconds
                )
            else:
                reply = await send(self.http, "POST", url, data=params, timeout=cfg.timeout_seconds)
            if reply.status != 200:
                return self._error(f"{safe_url(url)} answered HTTP {reply.status}")
            answer = parse_json(reply, lenient=True)  # the spec's own examples end in ",}"
        except Exception as exc:  # DeliveryError, and anything odd: a lookup never raises
            return self._error(str(exc))
        success = answer.get("success") if isinstance(answer, dict) else None
        if success in (True, 1, "true", "1") and not isinstance(success, float):
            return LookupResult(status=LookupStatus.FOUND, source=self.name, record=answer)
        if success in (False, 0, "false", "0") and not isinstance(success, float):
            return LookupResult(status=LookupStatus.NOTFOUND, source=self.name, record=answer)
        return self._error(f"{safe_url(url)} answered without a success field: {answer!r:.80}")

    def _error(self, reason: str) -> LookupResult:
        return LookupResult(status=LookupStatus.ERROR, source=self.name, error=reason)
