"""The ContactUrl 3CX shows on the caller card: never empty, because 3CX needs one.

In order: the contact's own URL (from the lookup source), `[http.threecx]
contact_url_template`, `[http.agent] crm_url_template`, and last pbxcrm's own agent page
(`/agent`), which shows the caller's card and call history. pbxcrm's public address is
the one 3CX used for the lookup: the Host header, and the scheme a trusted TLS proxy reports.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

from aiohttp import web

from ari_app.threecx.lookup import Caller
from ari_app.web.deps import HttpDeps
from ari_app.web.safe_links import safe_web_link
from ari_app.web.settings import Network
from crm.numbers import digits_only


def _from_trusted_proxy(request: web.Request, trusted_proxies: list[Network]) -> bool:
    try:
        peer: IPv4Address | IPv6Address = ip_address(request.remote or "")
    except ValueError:
        return False
    if isinstance(peer, IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    return any(peer.version == net.version and peer in net for net in trusted_proxies)


def public_origin(request: web.Request, trusted_proxies: list[Network]) -> str:
    """`scheme://host[:port]` as the client addressed pbxcrm (behind a proxy: as it reports)."""
    scheme, host = request.scheme, request.host
    if _from_trusted_proxy(request, trusted_proxies):
        forwarded_proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip()
        if forwarded_proto.lower() in ("http", "https"):
            scheme = forwarded_proto.lower()
        forwarded_host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
        if forwarded_host:
            host = forwarded_host
    return f"{scheme}://{host}"


def contact_url(deps: HttpDeps, caller: Caller, origin: str) -> str:
    # A record's own link counts only when it is a plain absolute web address (no
    # javascript:, no //host): anything else falls through to the templates.
    own = safe_web_link(caller.url, allow_path=False)
    if own:
        return own
    digits = digits_only(caller.number)
    threecx_template = deps.settings.http.threecx.contact_url_template
    if threecx_template:
        return threecx_template.format(number=caller.number, digits=digits, id=caller.id)
    agent_template = deps.settings.http.agent.crm_url_template
    if agent_template:
        url = agent_template.format(number=caller.number, digits=digits)
        return origin + url if url.startswith("/") else url
    return f"{origin}/agent"
