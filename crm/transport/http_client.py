"""HTTP plumbing every CRM dialect and lookup source shares.

One place decides what a CRM answer means (status -> retry or dead letter, HTML where JSON
was due, Retry-After) and how each auth scheme is applied, so the dialect modules only say
*what* to send. Error messages never carry a secret: URLs lose their query string and any
configured secret is starred before the message is built.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.cookies import SimpleCookie
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, model_validator

from crm.secrets import Secret, redact
from crm.transport.errors import DeliveryError

log = logging.getLogger(__name__)

RESPONSE_KEEP_CHARS = 500
Params = Sequence[tuple[str, str]] | Mapping[str, str] | None


# --------------------------------------------------------------------------- redaction


def safe_url(url: str) -> str:
    """`url` fit for a log line: no query string (tokens live there), secrets starred."""
    try:
        parts = urlsplit(str(url))
        return redact(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))
    except ValueError:
        return "<unparseable url>"


def trim(body: str | None, limit: int = RESPONSE_KEEP_CHARS) -> str | None:
    """The start of a response body, kept for `outbox list` and error messages."""
    if body is None:
        return None
    body = redact(body.strip())
    return body if len(body) <= limit else body[:limit] + "..."


# --------------------------------------------------------------------------- answers


@dataclass(slots=True)
class HttpReply:
    status: int
    text: str
    content_type: str
    headers: Mapping[str, str]
    url: str
    cookies: dict[str, str] = field(default_factory=dict)

    def json(self, *, lenient: bool = False) -> Any:
        return parse_json(self, lenient=lenient)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, delta)


_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def parse_json(reply: HttpReply, *, lenient: bool = False) -> Any:
    """The body as JSON, or a DeliveryError that says what came instead (status kept).

    `lenient` forgives trailing commas: the cal4care DBN spec's own examples have them and
    real DBN servers are written from that spec.
    """
    body = reply.text
    where = f"{safe_url(reply.url)} answered {reply.status}"
    if not body.strip():
        raise DeliveryError(
            f"{where} with an empty body where JSON was expected",
            retryable=True,
            status=reply.status,
            response="",
        )
    try:
        return json.loads(body)
    except ValueError:
        pass
    if lenient:
        try:
            return json.loads(_TRAILING_COMMA.sub(r"\1", body))
        except ValueError:
            pass
    # Only now look at the content type: PHP CRMs send good JSON labelled text/html.
    if "html" in reply.content_type.lower() or body.lstrip()[:1] == "<":
        title = _html_title(body)
        raise DeliveryError(
            f"{where} with an HTML page{f' ({title})' if title else ''} where JSON was expected",
            retryable=True,
            status=reply.status,
            response=trim(body),
        )
    raise DeliveryError(
        f"{where} with a body that is not JSON: {trim(body, 80)!r}",
        retryable=True,
        status=reply.status,
        response=trim(body),
    )


def _html_title(body: str) -> str:
    match = re.search(r"<title[^>]*>(.*?)</title>", body, re.IGNORECASE | re.DOTALL)
    return redact(" ".join(match.group(1).split()))[:80] if match else ""


def status_error(reply: HttpReply, what: str = "") -> DeliveryError | None:
    """None for 2xx; otherwise the DeliveryError the outbox needs (retry vs dead letter)."""
    if 200 <= reply.status < 300:
        return None
    retryable = reply.status in (408, 425, 429) or reply.status >= 500
    detail = _error_detail(reply)
    message = f"{what or safe_url(reply.url)} answered HTTP {reply.status}"
    if detail:
        message += f": {detail}"
    return DeliveryError(
        message,
        retryable=retryable,
        status=reply.status,
        response=trim(reply.text),
        retry_after=parse_retry_after(reply.headers.get("Retry-After")),
    )


def _error_detail(reply: HttpReply) -> str:
    text = reply.text.strip()
    if not text:
        return "empty body"
    if "html" in reply.content_type.lower() or text[:1] == "<":
        title = _html_title(text)
        return f"HTML page ({title})" if title else "HTML page"
    return trim(text, 160) or ""


# --------------------------------------------------------------------------- auth


class AuthConfig(BaseModel):
    """How a dialect authenticates; one block shared by every dialect that needs one.

    none | bearer | basic | header | oauth2 (client_credentials or password grant) |
    cookie_login (POST credentials, keep the cookies, echo a CSRF cookie as a header).
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["none", "bearer", "basic", "header", "oauth2", "cookie_login"] = "none"
    token: Secret | None = None  # bearer / header
    header: str = "Authorization"  # header mode: the header that carries `token`
    username: str | None = None  # basic / oauth2 password grant / cookie_login
    password: Secret | None = None
    # oauth2
    token_url: str | None = None
    grant_type: Literal["client_credentials", "password"] = "client_credentials"
    client_id: str | None = None
    client_secret: Secret | None = None
    security_token: Secret | None = None  # Salesforce appends it to the password
    scope: str | None = None
    # cookie_login
    login_url: str | None = None
    login_body: dict[str, str] = Field(
        default_factory=lambda: {"UserName": "{username}", "UserPassword": "{password}"}
    )
    csrf_cookie: str | None = "BPMCSRF"
    csrf_header: str | None = "BPMCSRF"
    # Statuses that mean "the session/token is no longer good": refresh once and retry.
    reauth_statuses: list[int] = Field(default_factory=lambda: [401])

    @model_validator(mode="after")
    def _complete(self) -> AuthConfig:
        need: dict[str, list[str]] = {
            "bearer": ["token"],
            "header": ["token"],
            "basic": ["username", "password"],
            "oauth2": ["token_url", "client_id"],
            "cookie_login": ["login_url", "username", "password"],
        }
        missing = [name for name in need.get(self.mode, []) if getattr(self, name) is None]
        if self.mode == "oauth2" and self.grant_type == "password":
            missing += [n for n in ("username", "password") if getattr(self, n) is None]
        if missing:
            raise ValueError(f"auth mode {self.mode!r} needs {', '.join(missing)}")
        return self


class Auth:
    """No auth; the base of every scheme. `prepare` may log in; `invalidate` forgets it."""

    reauth_statuses: frozenset[int] = frozenset()

    async def prepare(self, http: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        return None

    async def invalidate(self) -> bool:
        """Forget the token/session. True if a fresh one can be fetched (worth a retry)."""
        return False


class StaticHeaderAuth(Auth):
    def __init__(self, header: str, value_secret: Any, prefix: str = "") -> None:
        self._header = header
        self._secret = value_secret
        self._prefix = prefix

    async def prepare(self, http: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        headers[self._header] = self._prefix + _reveal(self._secret)


class BasicAuth(Auth):
    def __init__(self, username: str, password: Any) -> None:
        raw = f"{username}:{_reveal(password)}".encode()
        self._value = "Basic " + base64.b64encode(raw).decode("ascii")

    async def prepare(self, http: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        headers["Authorization"] = self._value


class OAuth2Auth(Auth):
    """Bearer token from a token URL, cached until it expires or the CRM answers 401."""

    def __init__(self, config: AuthConfig, timeout: float) -> None:
        self._config = config
        self._timeout = timeout
        self._token: str | None = None
        self._expires_at: float | None = None
        self._lock = asyncio.Lock()
        self.reauth_statuses = frozenset(config.reauth_statuses)
        self.instance_url: str | None = None
        self.fetches = 0

    async def prepare(self, http: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        headers["Authorization"] = f"Bearer {await self._current(http)}"

    async def invalidate(self) -> bool:
        self._token = None
        return True

    async def _current(self, http: aiohttp.ClientSession) -> str:
        async with self._lock:  # one token fetch however many deliveries are waiting
            fresh = self._expires_at is None or time.monotonic() < self._expires_at
            if self._token is None or not fresh:
                await self._fetch(http)
            assert self._token is not None
            return self._token

    async def _fetch(self, http: aiohttp.ClientSession) -> None:
        cfg = self._config
        assert cfg.token_url is not None
        form = {"grant_type": cfg.grant_type, "client_id": cfg.client_id or ""}
        if cfg.client_secret is not None:
            form["client_secret"] = _reveal(cfg.client_secret)
        if cfg.grant_type == "password":
            password = _reveal(cfg.password) + (
                _reveal(cfg.security_token) if cfg.security_token is not None else ""
            )
            form |= {"username": cfg.username or "", "password": password}
        if cfg.scope:
            form["scope"] = cfg.scope
        self.fetches += 1
        reply = await send(http, "POST", cfg.token_url, data=form, timeout=self._timeout)
        error = status_error(reply, f"OAuth2 token URL {safe_url(cfg.token_url)}")
        if error is not None:
            # A rejected client or password will not heal by retrying in a second.
            error.retryable = error.retryable and reply.status not in (400, 401, 403)
            raise error
        body = parse_json(reply)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise DeliveryError(
                f"OAuth2 token URL {safe_url(cfg.token_url)} answered without an access_token",
                retryable=True,
                status=reply.status,
                response=trim(reply.text),
            )
        self._token = token
        expires_in = body.get("expires_in")
        # Salesforce sends no expires_in: such a token lives until the CRM says 401.
        self._expires_at = (
            time.monotonic() + max(0.0, float(expires_in) - 30)
            if isinstance(expires_in, int | float) or str(expires_in).isdigit()
            else None
        )
        instance = body.get("instance_url")
        self.instance_url = instance if isinstance(instance, str) else None


class CookieLoginAuth(Auth):
    """Session login (Creatio AuthService): keep the cookies, echo the CSRF cookie as a header.

    Cookies are kept here, not in the shared session's jar: aiohttp's jar refuses cookies
    from IP-address hosts, and two CRMs must never see each other's session.
    """

    def __init__(self, config: AuthConfig, timeout: float) -> None:
        self._config = config
        self._timeout = timeout
        self._cookies: dict[str, str] | None = None
        self._lock = asyncio.Lock()
        self.reauth_statuses = frozenset(config.reauth_statuses)
        self.logins = 0

    async def prepare(self, http: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        async with self._lock:
            if self._cookies is None:
                await self._login(http)
            cookies = self._cookies or {}
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        cfg = self._config
        if cfg.csrf_cookie and cfg.csrf_header and cfg.csrf_cookie in cookies:
            headers[cfg.csrf_header] = cookies[cfg.csrf_cookie]

    async def invalidate(self) -> bool:
        self._cookies = None
        return True

    async def _login(self, http: aiohttp.ClientSession) -> None:
        cfg = self._config
        assert cfg.login_url is not None
        values = {"username": cfg.username or "", "password": _reveal(cfg.password)}
        body = {key: _fill(template, values) for key, template in cfg.login_body.items()}
        self.logins += 1
        reply = await send(http, "POST", cfg.login_url, json_body=body, timeout=self._timeout)
        error = status_error(reply, f"login at {safe_url(cfg.login_url)}")
        if error is not None:
            error.retryable = error.retryable and reply.status not in (400, 401, 403)
            raise error
        answer = parse_json(reply) if reply.text.strip() else {}
        # Creatio answers 200 with Code != 0 for a wrong password.
        if isinstance(answer, dict) and answer.get("Code") not in (None, 0):
            raise DeliveryError(
                f"login at {safe_url(cfg.login_url)} refused: "
                f"{redact(str(answer.get('Message') or answer.get('Code')))}",
                retryable=False,
                status=reply.status,
                response=trim(reply.text),
            )
        if not reply.cookies:
            raise DeliveryError(
                f"login at {safe_url(cfg.login_url)} set no cookies",
                retryable=True,
                status=reply.status,
                response=trim(reply.text),
            )
        if cfg.csrf_cookie and cfg.csrf_cookie not in reply.cookies:
            log.warning(
                "login at %s set no %s cookie; sending requests without the CSRF header",
                safe_url(cfg.login_url),
                cfg.csrf_cookie,
            )
        self._cookies = dict(reply.cookies)


def build_auth(config: AuthConfig | None, timeout: float) -> Auth:
    if config is None or config.mode == "none":
        return Auth()
    if config.mode == "bearer":
        return StaticHeaderAuth("Authorization", config.token, "Bearer ")
    if config.mode == "header":
        return StaticHeaderAuth(config.header, config.token)
    if config.mode == "basic":
        return BasicAuth(config.username or "", config.password)
    if config.mode == "oauth2":
        return OAuth2Auth(config, timeout)
    return CookieLoginAuth(config, timeout)


def _reveal(secret: Any) -> str:
    if secret is None:
        return ""
    getter = getattr(secret, "get_secret_value", None)
    return getter() if getter else str(secret)


def _fill(template: str, values: Mapping[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


# --------------------------------------------------------------------------- sending


async def send(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    params: Params = None,
    json_body: Any = None,
    data: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float,
) -> HttpReply:
    """One request; transport trouble becomes a retryable DeliveryError, never a raw error."""
    try:
        async with http.request(
            method,
            url,
            params=params,
            json=json_body,
            data=data,
            headers=dict(headers or {}),
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            raw = await response.read()
            cookies = _response_cookies(response)
            return HttpReply(
                status=response.status,
                text=raw.decode(response.charset or "utf-8", errors="replace"),
                content_type=response.headers.get("Content-Type", ""),
                headers=response.headers,
                url=str(response.url),
                cookies=cookies,
            )
    except TimeoutError:
        raise DeliveryError(
            f"{method} {safe_url(url)} timed out after {timeout:g}s", retryable=True
        ) from None
    except aiohttp.ClientError as exc:
        raise DeliveryError(
            f"{method} {safe_url(url)} failed: {redact(type(exc).__name__ + ': ' + str(exc))}",
            retryable=True,
        ) from None
    except ValueError as exc:  # a malformed URL from config or a template
        raise DeliveryError(
            f"{method} {safe_url(url)}: invalid request: {redact(str(exc))}", retryable=False
        ) from None


def _response_cookies(response: aiohttp.ClientResponse) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for header in response.headers.getall("Set-Cookie", []):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except Exception:  # a malformed cookie from the CRM: keep what parses
            continue
        for name, morsel in jar.items():
            cookies[name] = morsel.value
    return cookies


async def send_with_auth(
    http: aiohttp.ClientSession,
    auth: Auth,
    method: str,
    url: str,
    *,
    params: Params = None,
    json_body: Any = None,
    data: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float,
) -> HttpReply:
    """`send` with `auth` applied; on a reauth status, refresh the credentials once and retry."""
    for attempt in (1, 2):
        request_headers = dict(headers or {})
        await auth.prepare(http, request_headers)
        reply = await send(
            http,
            method,
            url,
            params=params,
            json_body=json_body,
            data=data,
            headers=request_headers,
            timeout=timeout,
        )
        if attempt == 1 and reply.status in auth.reauth_statuses and await auth.invalidate():
            log.info(
                "%s %s answered %s; refreshing credentials and retrying once",
                method,
                safe_url(url),
                reply.status,
            )
            continue
        return reply
    return reply  # pragma: no cover - the loop always returns
