"""Who is calling: client address (trusted proxies only), credentials, route family rules.

Every credential comparison goes through `_same` (hmac.compare_digest over SHA-256 digests, so
neither content nor length leaks by timing) and every client is compared, match or not. Refusals
are 401 (no or wrong credentials, or right ones from an address the client may not call from:
the answer must not tell a stolen token from a wrong one) or 403 (a route's address rule, or a
known client asking for a family it lacks), with a body that says nothing about which part
failed; the log line says it, without the credentials.

The `{token}` slot of a recording URL is written into CRM records, so there it is either a
signed link (ari_app/calls/recording_links.py) or the token of a client that may open recordings and
nothing else: a token that can dial never opens a recording from a URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from aiohttp import web

from ari_app.calls.recording_links import RecordingLinkSigner
from ari_app.web.auth_throttle import FailedAuthThrottle
from ari_app.web.errors import json_error
from ari_app.web.parsing import UNREADABLE_FORM
from ari_app.web.settings import HttpClient, HttpSettings, Network, RouteFamily

log = logging.getLogger(__name__)

IpAddress = IPv4Address | IPv6Address
CLIENT_KEY = web.RequestKey("pbxcrm_client", HttpClient)
IP_KEY = web.RequestKey("pbxcrm_client_ip", str)
THROTTLE_KEY = web.AppKey("pbxcrm_auth_throttle", FailedAuthThrottle)
# Families whose routes start calls: a browser must never be asked for (and then keep sending)
# Basic credentials there, or any page's <img> could dial with them.
_NO_CHALLENGE: frozenset[str] = frozenset({"originate", "creatio", "fixdigital"})


@dataclass(frozen=True, slots=True)
class Presented:
    method: str  # header_token | path_token | basic | params | query_token
    token: str | None = None
    username: str | None = None
    password: str | None = None


class AuthRefused(Exception):
    def __init__(
        self, status: int, why: str, *, guess: bool = False, retry_after: float = 0.0
    ) -> None:
        super().__init__(why)
        self.status = status
        self.why = why
        self.guess = guess  # credentials were presented and were wrong: counts per address
        self.retry_after = retry_after


def _same(given: str, expected: str) -> bool:
    a = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
    b = hashlib.sha256(expected.encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(a, b)


def _plain(ip: IpAddress) -> IpAddress:
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _in(ip: IpAddress, networks: list[Network]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


def client_ip(request: web.Request, trusted_proxies: list[Network]) -> IpAddress | None:
    """The caller's address; X-Forwarded-For counts only when the peer is a trusted proxy."""
    try:
        ip = _plain(ip_address(request.remote or ""))
    except ValueError:
        return None
    if not trusted_proxies or not _in(ip, trusted_proxies):
        return ip
    hops = [
        hop.strip()
        for value in request.headers.getall("X-Forwarded-For", [])
        for hop in value.split(",")
    ]
    # Walk from the nearest hop outwards; the first address not ours is the client.
    for hop in reversed(hops):
        try:
            candidate = _plain(ip_address(hop))
        except ValueError:
            return ip  # a forged or broken header: trust only what we saw
        if not _in(candidate, trusted_proxies):
            return candidate
        ip = candidate
    return ip


async def presented_credentials(request: web.Request, methods: list[str]) -> list[Presented]:
    found: list[Presented] = []
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if "header_token" in methods:
        if scheme.lower() == "bearer" and value.strip():
            found.append(Presented("header_token", token=value.strip()))
        api_token = request.headers.get("X-Api-Token", "").strip()
        if api_token:
            found.append(Presented("header_token", token=api_token))
    if "path_token" in methods and request.match_info.get("token"):
        found.append(Presented("path_token", token=request.match_info["token"]))
    if "basic" in methods and scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):  # not base64 (or not ASCII), or not UTF-8
            decoded = ""
        user, sep, password = decoded.partition(":")
        if sep:
            found.append(Presented("basic", username=user, password=password))
    if "params" in methods or "query_token" in methods:
        fields: dict[str, str] = dict(request.query)
        if request.method == "POST" and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            try:
                form = await request.post()
            except UNREADABLE_FORM:
                form = None  # an unreadable form presents no credentials; the handler says 400
            if form is not None:
                fields.update({k: v for k, v in form.items() if isinstance(v, str)})
        if "params" in methods and "username" in fields and "password" in fields:
            found.append(
                Presented("params", username=fields["username"], password=fields["password"])
            )
        if "query_token" in methods:
            # 3CX call flows are hand-written: `Token=` and ` token=` are the same field.
            for key, value in fields.items():
                if key.strip().lower() == "token" and value.strip():
                    found.append(Presented("query_token", token=value.strip()))
    return found


def match_client(clients: list[HttpClient], presented: list[Presented]) -> HttpClient | None:
    matched: HttpClient | None = None
    for credential in presented:
        for client in clients:  # no early exit: every client costs the same time
            ok = False
            if credential.token is not None and client.token is not None:
                ok = _same(credential.token, client.token.get_secret_value())
            elif (
                credential.username is not None
                and client.username is not None
                and client.password is not None
            ):
                user_ok = _same(credential.username, client.username)
                password_ok = _same(credential.password or "", client.password.get_secret_value())
                ok = user_ok and password_ok
            if ok and matched is None:
                matched = client
    return matched


def signed_link_opens(request: web.Request, signer: RecordingLinkSigner | None, now: float) -> bool:
    """The `{token}` slot is pbxcrm's signature for this very `{file}`, not yet expired."""
    slot = request.match_info.get("token")
    file = request.match_info.get("file")
    if signer is None or not slot or not file:
        return False
    return signer.opens(slot, file, now)


def _recordings_only(presented: list[Presented], client: HttpClient, family: str) -> bool:
    # A path token that opens a recording sits in CRM records: only a client that can do
    # nothing else may be named by it.
    uses_path = any(p.method == "path_token" for p in presented)
    return not (family == "recordings" and uses_path and set(client.routes) != {"recordings"})


async def authorize(
    request: web.Request,
    settings: HttpSettings,
    family: RouteFamily,
    signer: RecordingLinkSigner | None = None,
    *,
    throttle: FailedAuthThrottle | None = None,
) -> HttpClient | None:
    """The calling client (None: a signed recording link let it in), or AuthRefused."""
    rule = settings.routes[family]
    ip = client_ip(request, settings.trusted_proxies)
    request[IP_KEY] = str(ip) if ip is not None else "?"
    if ip is None or not _in(ip, rule.allow_from):
        raise AuthRefused(403, "address not allowed for this route")
    if "signed_link" in rule.methods and signed_link_opens(request, signer, time.time()):
        return None
    presented = await presented_credentials(request, list(rule.methods))
    if not presented:
        raise AuthRefused(401, "no credentials")
    # Only a request that presents credentials is a guess: a locked-out address still hears
    # 401 for none, and 429 (before any comparison) for every credential it tries.
    wait = throttle.locked_for(str(ip)) if throttle is not None else 0.0
    if wait > 0:
        raise AuthRefused(429, "too many wrong credentials from this address", retry_after=wait)
    client = match_client(settings.clients, presented)
    if client is None:
        raise AuthRefused(401, "wrong credentials", guess=True)
    if not _in(ip, client.allow_from):
        raise AuthRefused(401, f"client {client.name} not allowed from this address", guess=True)
    if not _recordings_only(presented, client, family):
        raise AuthRefused(
            401,
            f"client {client.name} may do more than open recordings: its token is "
            "refused in a recording URL",
            guess=True,
        )
    if family not in client.routes:
        raise AuthRefused(403, f"client {client.name} may not use {family}")
    request[CLIENT_KEY] = client
    return client


def refusal(exc: AuthRefused, methods: list[str], family: str = "") -> web.Response:
    if exc.status == 401:
        response = json_error(401, "unauthorized")
        if "basic" in methods and family not in _NO_CHALLENGE:
            response.headers["WWW-Authenticate"] = 'Basic realm="pbxcrm", charset="UTF-8"'
        return response
    if exc.status == 429:
        response = json_error(429, "too many requests")
        response.headers["Retry-After"] = str(max(1, int(exc.retry_after)))
        return response
    return json_error(403, "forbidden")


def current_client(request: web.Request) -> HttpClient:
    return request[CLIENT_KEY]
