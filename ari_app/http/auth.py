"""Who is calling: client address (trusted proxies only), credentials, route family rules.

Every credential comparison goes through `_same` (hmac.compare_digest over SHA-256 digests, so
neither content nor length leaks by timing) and every client is compared, match or not. Refusals
are 401 (no or wrong credentials) or 403 (right credentials, wrong place or route), with a body
that says nothing about which part failed; the log line says it, without the credentials.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from aiohttp import web

from ari_app.http.errors import json_error
from ari_app.http.settings import HttpClient, HttpSettings, Network, RouteFamily

log = logging.getLogger(__name__)

IpAddress = IPv4Address | IPv6Address
CLIENT_KEY = web.RequestKey("pbxcrm_client", HttpClient)
IP_KEY = web.RequestKey("pbxcrm_client_ip", str)


@dataclass(frozen=True, slots=True)
class Presented:
    method: str  # header_token | path_token | basic | params | query_token
    token: str | None = None
    username: str | None = None
    password: str | None = None


class AuthRefused(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


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
        except (binascii.Error, UnicodeDecodeError):
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
            except (ValueError, UnicodeDecodeError):
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


async def authorize(
    request: web.Request, settings: HttpSettings, family: RouteFamily
) -> HttpClient:
    """The calling client, or AuthRefused."""
    rule = settings.routes[family]
    ip = client_ip(request, settings.trusted_proxies)
    request[IP_KEY] = str(ip) if ip is not None else "?"
    if ip is None or not _in(ip, rule.allow_from):
        raise AuthRefused(403, "address not allowed for this route")
    presented = await presented_credentials(request, list(rule.methods))
    if not presented:
        raise AuthRefused(401, "no credentials")
    client = match_client(settings.clients, presented)
    if client is None:
        raise AuthRefused(401, "wrong credentials")
    if not _in(ip, client.allow_from):
        raise AuthRefused(403, f"client {client.name} not allowed from this address")
    if family not in client.routes:
        raise AuthRefused(403, f"client {client.name} may not use {family}")
    request[CLIENT_KEY] = client
    return client


def refusal(exc: AuthRefused, methods: list[str]) -> web.Response:
    if exc.status == 401:
        response = json_error(401, "unauthorized")
        if "basic" in methods:
            response.headers["WWW-Authenticate"] = 'Basic realm="pbxcrm", charset="UTF-8"'
        return response
    return json_error(403, "forbidden")


def current_client(request: web.Request) -> HttpClient:
    return request[CLIENT_KEY]
