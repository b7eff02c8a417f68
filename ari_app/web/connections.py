"""What keeps slow or stuck sockets from locking everyone out of the HTTP port.

* Headers: aiohttp closes a connection whose handler still waits for a whole request when its
  keep-alive timer fires, and that timer runs from the connection's start and from each answer;
  `start_http` sets it to `[http] header_timeout_seconds`, so half a header is held that long.
* Bodies: `body_deadline_middleware` answers 408 and closes when a body has not fully arrived
  `body_timeout_seconds` after its headers.
* Count: at most `max_connections` are open at once (`ConnectionGuard`), so file descriptors
  are left for the store, the PBX link and the CRMs; past it the oldest connection that never
  sent a whole request is closed to make room, else the new one is told 503 and closed
  (pbxcrm_http_connections_refused_total{reason="stalled"|"limit"}).
* When descriptors run out anyway, asyncio reports every failed accept() (tens of thousands a
  second); `AcceptErrorLog` turns that into one line per interval with the count.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import web

from crm import metrics

log = logging.getLogger("pbxcrm.http")

_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
    b"Content-Type: application/json\r\nContent-Length: 33\r\n\r\n"
    b'{"error": "too many connections"}'
)
_ACCEPT_FAILED = "socket.accept() out of system resource"
BODY_TIMEOUT_KEY = web.AppKey("pbxcrm_body_timeout", float)


class RequestBodyTimeout(Exception):
    """The body did not arrive within `[http] body_timeout_seconds` of its headers."""


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_REFUSAL)
        transport.close()


class _Counted(asyncio.Protocol):
    """aiohttp's handler for one connection, with the guard told when it ends."""

    __slots__ = ("_guard", "_inner", "counted", "transport")

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self.counted = True
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.closed(self, self._inner)
        self._inner.connection_lost(exc)


class ConnectionGuard:
    """Protocol factory in front of aiohttp's server: at most `max_connections` open at once.

    When full, the oldest connection that has not yet delivered one whole request (a socket
    trickling half a header) is closed to make room, so a client that asks properly still gets
    in; only when every open connection has made a request is the new one told 503 and closed.
    Counted from the factory call (not connection_made), so a burst of accepts in one loop
    turn cannot overshoot.
    """

    def __init__(self, max_connections: int) -> None:
        self.server: Callable[[], asyncio.Protocol] | None = None  # set when the site starts
        self.max_connections = max_connections
        self.open = 0
        self.refused = 0
        self.evicted = 0
        # aiohttp handler -> its wrapper, for connections with no whole request yet; oldest first
        self._waiting: OrderedDict[object, _Counted] = OrderedDict()

    def __call__(self) -> asyncio.Protocol:
        assert self.server is not None
        if self.open >= self.max_connections and not self._evict_one():
            self.refused += 1
            metrics.http_connections_refused_total.labels("limit").inc()
            return _Refused()
        self.open += 1
        metrics.http_connections_open.inc()
        inner = self.server()
        wrapper = _Counted(inner, self)
        self._waiting[inner] = wrapper
        return wrapper

    def _evict_one(self) -> bool:
        while self._waiting:
            _inner, victim = self._waiting.popitem(last=False)
            if victim.transport is None or victim.transport.is_closing():
                continue
            self._uncount(victim)
            victim.transport.abort()
            self.evicted += 1
            metrics.http_connections_refused_total.labels("stalled").inc()
            return True
        return False

    def request_arrived(self, handler: object) -> None:
        """A whole request came in on this connection: it is no longer a candidate to close."""
        self._waiting.pop(handler, None)

    def _uncount(self, wrapper: _Counted) -> None:
        if wrapper.counted:
            wrapper.counted = False
            self.open -= 1
            metrics.http_connections_open.dec()

    def closed(self, wrapper: _Counted, inner: object) -> None:
        self._waiting.pop(inner, None)
        self._uncount(wrapper)


GUARD_KEY = web.AppKey("pbxcrm_connection_guard", ConnectionGuard)


@web.middleware
async def request_arrived_middleware(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    request.app[GUARD_KEY].request_arrived(request.protocol)
    return await handler(request)


class GuardedSite(web.BaseSite):
    """web.TCPSite with the app's ConnectionGuard as protocol factory."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        app = getattr(self._runner, "app", None)
        assert server is not None and app is not None
        guard = app[GUARD_KEY]
        guard.server = server
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(guard, self._host, self._port, reuse_address=True)


@web.middleware
async def body_deadline_middleware(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    content = request.content
    if not request.body_exists or content.is_eof():
        return await handler(request)
    timeout = request.app[BODY_TIMEOUT_KEY]

    def too_slow() -> None:
        if not content.is_eof():
            # Wakes whoever awaits the body (a handler, the auth form read) with this error.
            content.set_exception(RequestBodyTimeout())

    timer = asyncio.get_running_loop().call_later(timeout, too_slow)
    try:
        return await handler(request)
    except RequestBodyTimeout:
        metrics.http_slow_requests_total.inc()
        log.warning(
            "HTTP port: closed a request from %s whose body did not arrive within %.0f s",
            request.remote,
            timeout,
        )
        response = web.json_response({"error": "request body too slow"}, status=408)
        response.force_close()
        return response
    finally:
        timer.cancel()


class AcceptErrorLog:
    """Loop exception handler: accept() failing for want of descriptors is logged once per
    `interval` seconds with how often it happened; everything else goes to the handler that
    was there before."""

    def __init__(
        self,
        previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.previous = previous
        self.interval = interval
        self._clock = clock
        self._last: float | None = None
        self._since_last = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != _ACCEPT_FAILED:
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        metrics.http_accept_errors_total.inc()
        self._since_last += 1
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            return
        log.error(
            "HTTP port: accept() failed %d time(s) since the last report: %s; raise the open-"
            "file limit (LimitNOFILE) or lower [http] max_connections",
            self._since_last,
            context.get("exception"),
        )
        self._last = now
        self._since_last = 0


def install_accept_error_log(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Rate-limit accept() errors on `loop`; returns what puts the old handler back."""
    previous = loop.get_exception_handler()
    loop.set_exception_handler(AcceptErrorLog(previous))

    def restore() -> None:
        loop.set_exception_handler(previous)

    return restore


def warn_if_few_descriptors(max_connections: int, reserve: int = 256) -> None:
    """A cap above the process's open-file limit would never be reached: accept() fails first."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < max_connections + reserve:
        log.warning(
            "open-file limit %d is below [http] max_connections %d + %d for the store, the PBX "
            "and the CRMs: raise LimitNOFILE (config/systemd/pbxcrm.service) or lower "
            "max_connections",
            soft,
            max_connections,
            reserve,
        )
