"""The AMI connection: login, reconnect, ping watchdog, actions sent at most once.

Built on panoramisk, a maintained AMI library: each TCP connection is a panoramisk
`AMIProtocol` (subclassed in `ari_app.pbx.ami.protocol`) and every action, Login and Ping
included, is a panoramisk `Action`, serialised, matched to its answer and collected (list events) by
panoramisk. panoramisk's `Manager` is not used: it re-sends actions queued while disconnected
after a reconnect (an Originate could ring a phone twice), retries at a fixed interval and
never checks its Ping replies. This module is the small connection manager in its place:
capped exponential backoff with jitter, a ping watchdog that aborts a silent connection, and
actions refused (never queued) while disconnected. docs/ami.md has the longer reasoning.

Events go to `on_frame` synchronously, straight from `data_received`, in wire order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ari_app.pbx.ami.errors import (
    AmiActionTimeout,
    AmiConnectionLost,
    AmiError,
    AmiLoginError,
    AmiNotConnected,
)
from ari_app.pbx.ami.frames import Frame, FrameFilter, FrameReader
from ari_app.pbx.ami.protocol import (
    AmiProtocol,
    AmiResponse,
    build_action,
    new_action_id,
    response_of,
)
from ari_app.pbx.settings import AmiSettings
from crm.backoff import reconnect_delay
from crm.shutdown import cancel_and_wait

__all__ = [
    "AmiActionTimeout",
    "AmiClient",
    "AmiConnectionLost",
    "AmiError",
    "AmiLoginError",
    "AmiNotConnected",
    "AmiResponse",
]

_ORIGINATES_REMEMBERED = 100_000

log = logging.getLogger(__name__)
audit_log = logging.getLogger("pbxcrm.audit")


class AmiClient:
    """One AMI session to one Asterisk, kept alive forever (see module docstring)."""

    def __init__(
        self,
        settings: AmiSettings,
        *,
        on_frame: Callable[[Frame], None],
        on_connected: Callable[[], Awaitable[None]] | None = None,
        on_disconnected: Callable[[str], None] | None = None,
        frame_filter: FrameFilter | None = None,
    ) -> None:
        self.settings = settings
        self._on_frame = on_frame
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        # Shutdown is how we learn a restart is coming, whatever the caller wants.
        self.reader = FrameReader(frame_filter.including("Shutdown") if frame_filter else None)
        self.connected = False
        self.banner: str | None = None
        self.last_error: AmiError | OSError | None = None
        self._protocol: AmiProtocol | None = None
        self._lost: asyncio.Future[str] | None = None
        # ActionIDs of Originates sent, newest last; bounded (ids are random, so a retry of an
        # old one is a caller's bug the originate service already stops by idempotency key).
        self._originated: OrderedDict[str, None] = OrderedDict()
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connects = 0  # successful logins so far

    @property
    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name=f"ami {self._where}")

    async def stop(self) -> None:
        self._stop.set()
        if self.connected:
            self.connected = False  # our own goodbye is not a disconnect to report
            with contextlib.suppress(AmiError):
                await self._request({"Action": "Logoff"}, timeout=1.0)
        protocol = self._protocol
        if protocol is not None:
            protocol.close()
        if self._task is not None:
            # `_session` also watches `_stop`: a cancel alone can be lost (see crm.shutdown).
            await cancel_and_wait([self._task], f"AMI {self._where}")
            self._task = None

    async def wait_connected(self, timeout: float) -> None:
        """Until logged in. Raises AmiLoginError at once if Asterisk refused the login,
        AmiNotConnected if not connected within `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._changed.clear()  # before the checks: a change after them must wake us
            if self.connected:
                return
            if isinstance(self.last_error, AmiLoginError):
                raise self.last_error
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AmiNotConnected(
                    f"not connected to AMI at {self._where} within {timeout}s"
                    + (f" (last error: {self.last_error})" if self.last_error else "")
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                await self._session()
            except AmiLoginError as exc:
                self.last_error = exc
                log.error("%s", exc)
            except (OSError, TimeoutError, AmiError) as exc:
                self.last_error = exc
                log.warning("AMI %s: cannot connect or log in: %s", self._where, exc or type(exc))
            else:
                attempt = 0  # a session that logged in resets the backoff
            self._changed.set()
            if self._stop.is_set():
                break
            delay = self._backoff(attempt)
            attempt += 1
            log.info("AMI %s: reconnecting in %.1fs", self._where, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    def _backoff(self, attempt: int) -> float:
        return reconnect_delay(
            attempt, self.settings.reconnect_initial_seconds, self.settings.reconnect_max_seconds
        )

    async def _session(self) -> None:
        """Connect, log in, then run until the connection is lost. Returns normally only
        after a successful login."""
        loop = asyncio.get_running_loop()
        settings = self.settings
        self.reader.reset()
        self._lost = loop.create_future()
        _, protocol = await asyncio.wait_for(
            loop.create_connection(
                lambda: AmiProtocol(self.reader, self._on_frame, self._on_lost, self._where),
                settings.host,
                settings.port,
            ),
            settings.connect_timeout_seconds,
        )
        self._protocol = protocol
        pinger: asyncio.Task[None] | None = None
        try:
            # wait_for (3.11) drops a cancel landing as the connection completes: stop() may
            # have been called meanwhile with nothing left to interrupt us.
            if self._stop.is_set():
                return
            response = await self._request(
                {
                    "Action": "Login",
                    "Username": settings.username,
                    "Secret": settings.password.get_secret_value(),
                    "Events": "on",
                },
                timeout=settings.action_timeout_seconds,
            )
            if self._stop.is_set():
                return
            if not response.ok:
                raise AmiLoginError(
                    f"AMI {self._where}: login as user {settings.username!r} refused: "
                    f"{response.message or response.response.get('Response', '?')}"
                    " (check username/secret in manager.conf and [pbx.ami])"
                )
            self.banner = self.reader.banner
            self.connected = True
            self.connects += 1
            self.last_error = None
            self._changed.set()
            log.info(
                "AMI connected to %s as %s (%s)",
                self._where,
                settings.username,
                self.banner or "no banner",
            )
            pinger = asyncio.create_task(self._ping_loop(protocol))
            if self._on_connected is not None:
                # Awaited here, not from the protocol: on_disconnected (below) must never
                # overtake it, even when the connection dies in the same read as the login.
                await self._greet(self._on_connected)
            reason = await self._until_lost_or_stopped()
            if reason is not None:
                log.warning("AMI %s disconnected: %s", self._where, reason)
                if self._on_disconnected is not None:
                    try:
                        self._on_disconnected(reason)
                    except Exception:
                        log.exception("AMI %s: on_disconnected failed", self._where)
        finally:
            if pinger is not None:
                pinger.cancel()
            if not self._lost.done():
                protocol.abort("pbxcrm gave up on the connection")
            # Its connection_lost comes later: it must not touch the next session's state.
            self._protocol = None
            self.connected = False
            self._changed.set()

    async def _until_lost_or_stopped(self) -> str | None:
        """The reason the connection was lost, or None once stop() was called."""
        assert self._lost is not None
        lost = asyncio.shield(self._lost)
        stopped = asyncio.ensure_future(self._stop.wait())
        waiting: set[asyncio.Future[Any]] = {lost, stopped}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            lost.cancel()  # the shield only: `_lost` itself is left as it is
        if self._stop.is_set() or not self._lost.done():
            return None
        return self._lost.result()

    async def _greet(self, on_connected: Callable[[], Awaitable[None]]) -> None:
        try:
            await on_connected()
        except AmiError as exc:
            log.warning("AMI %s: on_connected could not finish: %s", self._where, exc)
        except Exception:
            log.exception("AMI %s: on_connected failed", self._where)

    async def _ping_loop(self, protocol: AmiProtocol) -> None:
        settings = self.settings
        while True:
            await asyncio.sleep(settings.ping_interval_seconds)
            try:
                pong = await self._request(
                    {"Action": "Ping"}, timeout=settings.ping_timeout_seconds
                )
            except AmiActionTimeout:
                # TCP may never notice a dead peer (half-open); only a missing Pong tells.
                reason = (
                    f"no reply to Ping within {settings.ping_timeout_seconds}s "
                    "(half-open connection)"
                )
                log.warning("AMI %s: %s; dropping the connection", self._where, reason)
                protocol.abort(reason)
                return
            except AmiError:
                return
            if not pong.ok:
                # Any answer proves the connection alive; a refusal is worth a line all the same.
                log.warning("AMI %s: Ping answered %r", self._where, pong.message)

    def _on_lost(self, protocol: AmiProtocol, reason: str) -> None:
        if protocol is not self._protocol:
            return
        self.connected = False
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)
        self._changed.set()

    # -- actions ---------------------------------------------------------------------------

    async def send_action(
        self, action: Mapping[str, str], *, timeout: float | None = None
    ) -> AmiResponse:
        """Send once and wait for the answer (list actions: until their `...Complete` event).

        Raises AmiNotConnected at once when not logged in (nothing is queued), ValueError for
        an action that cannot be put on the wire, AmiActionTimeout / AmiConnectionLost when
        the answer does not come (the action is never re-sent)."""
        if not self.connected:
            raise AmiNotConnected(
                f"AMI {self._where} not connected: {action.get('Action', '?')} not sent"
            )
        return await self._request(action, timeout=timeout)

    async def originate(self, action: Mapping[str, str], *, timeout: float) -> AmiResponse:
        """`send_action` for an Originate, with an audit log line, refusing to send the same
        ActionID twice in this process (a caller's retry must not ring a phone twice)."""
        action = dict(action)
        if action.setdefault("Action", "Originate").lower() != "originate":
            raise ValueError(f"originate() sends Originate, not {action['Action']!r}")
        action_id = _action_id_of(action) or new_action_id()
        action["ActionID"] = action_id
        if action_id in self._originated:
            raise ValueError(f"Originate ActionID {action_id} was already sent once; not again")
        summary = " ".join(
            f"{key}={action[key]!r}"
            for key in ("Channel", "Context", "Exten", "Application", "CallerID", "Timeout")
            if key in action
        )
        if not self.connected:
            audit_log.info("originate %s not sent (AMI not connected): %s", action_id, summary)
            raise AmiNotConnected(f"AMI {self._where} not connected: Originate not sent")
        self._originated[action_id] = None
        if len(self._originated) > _ORIGINATES_REMEMBERED:
            self._originated.popitem(last=False)
        audit_log.info("originate %s sent: %s", action_id, summary)
        try:
            response = await self._request(action, timeout=timeout)
        except AmiError as exc:
            audit_log.warning("originate %s: outcome unknown, not retried: %s", action_id, exc)
            raise
        audit_log.info(
            "originate %s answered: %s %s",
            action_id,
            response.response.get("Response", "?"),
            response.message,
        )
        return response

    async def _request(self, action: Mapping[str, str], *, timeout: float | None) -> AmiResponse:
        protocol = self._protocol
        if protocol is None or not protocol.is_open:
            raise AmiNotConnected(f"AMI {self._where} not connected: not sent")
        built = build_action(action, _action_id_of(action))
        name, action_id = built["Action"], built.id
        future = protocol.send(built)
        log.debug("AMI -> %s (ActionID %s)", name, action_id)  # never the headers: Secret
        wait = self.settings.action_timeout_seconds if timeout is None else timeout
        try:
            # asyncio.timeout, not wait_for: wait_for (3.11) wraps the future in a second one
            # with its own callbacks, a twentieth of a click-to-call request's CPU.
            async with asyncio.timeout(wait):
                result = await future
        except TimeoutError:
            raise AmiActionTimeout(
                f"AMI {self._where}: no answer to {name} (ActionID {action_id}) within "
                f"{wait}s; it is not re-sent"
            ) from None
        finally:
            protocol.forget(built)
        return response_of(result)


def _action_id_of(action: Mapping[str, str]) -> str | None:
    for key, value in action.items():
        if key.lower() == "actionid":
            return value or None
    return None
