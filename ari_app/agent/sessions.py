"""Sign-in to the screen pop: one extension per browser session, PIN or token from config.

Sessions are kept by the SHA-256 of their cookie, never the cookie itself, and saved to the
store (`dump`/`load`, see agent_port) so that restarting pbxcrm does not sign agents out; a
copy of the database therefore holds no usable session.
Each session also keeps a proof of the secret it was made with: an HMAC of that PIN or token
keyed with the session's own cookie, so a changed or removed secret ends it (in memory and
after a restart) while the database, which never holds the cookie, gives no way to test PINs.
Wrong secrets count per extension and per address; past `max_failures` sign-in is refused for
`lockout_seconds`, so a short PIN cannot be guessed by trying them all. That bookkeeping is
bounded: an attacker inventing extensions and addresses must not grow it without end.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ari_app.agent.settings import AgentLogin, AgentSettings

log = logging.getLogger("pbxcrm.agent")

COOKIE = "pbxcrm_agent"


def _same(given: str, expected: str) -> bool:
    # Digests first: neither the content nor the length of the secret leaks by timing.
    a = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
    b = hashlib.sha256(expected.encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(a, b)


def session_key(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("utf-8", "surrogateescape")).hexdigest()


def secret_proof(cookie: str, kind: str, secret: str) -> str:
    message = f"{kind}\0{secret}".encode("utf-8", "surrogateescape")
    return hmac.new(cookie.encode("utf-8", "surrogateescape"), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class AgentSession:
    key: str  # session_key(cookie)
    extension: str
    name: str
    expires: float  # wall clock: it must mean the same after a restart
    secret_kind: str = ""  # "pin" or "token": which secret signed the agent in
    proof: str = ""  # secret_proof(cookie, secret_kind, secret); "" is never valid


class SignInRefused(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status  # 401 wrong secret, 429 locked out
        self.why = why  # for the log line; never holds the secret


class AgentSessions:
    def __init__(self, settings: AgentSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._clock = clock
        self._sessions: dict[str, AgentSession] = {}  # session_key(cookie) -> session
        # Called after a sign-in or sign-out, so the owner can save `dump()`.
        self.on_change: Callable[[], None] | None = None
        self._failures: dict[str, list[float]] = {}  # "ext:7181" / "ip:10.0.0.5" -> times
        self._failures_swept = clock()

    def sign_in(
        self, extension: str | None, secret: str, client_ip: str
    ) -> tuple[AgentSession, str]:
        """A new session and its cookie value for the agent whose PIN or token this is, or
        SignInRefused.

        With an extension the secret may be its PIN or its token; without one only a token
        identifies the agent (a PIN alone could belong to anyone).
        """
        # Only configured extensions are counted: failures for made-up ones lock nobody out
        # and would only grow the table (the address still counts them).
        known = extension is not None and self.settings.login_for(extension) is not None
        keys = [f"ip:{client_ip}"] + ([f"ext:{extension}"] if known else [])
        self._sweep_failures()
        if any(self._locked(key) for key in keys):
            raise SignInRefused(429, "too many failed sign-ins; locked out for a while")
        agent, kind = self._match(extension, secret)
        if agent is None:
            for key in keys:
                times = self._failures.setdefault(key, [])
                times.append(self._clock())
                del times[: -self.settings.max_failures]  # only the newest count
            raise SignInRefused(401, "wrong extension, PIN or token")
        for key in keys:
            self._failures.pop(key, None)
        self._expire()
        cookie = secrets.token_urlsafe(32)
        session = AgentSession(
            key=session_key(cookie),
            extension=agent.extension,
            name=agent.name,
            expires=self._clock() + self.settings.session_hours * 3600.0,
            secret_kind=kind,
            proof=secret_proof(cookie, kind, secret),
        )
        self._sessions[session.key] = session
        self._changed()
        return session, cookie

    def _match(self, extension: str | None, secret: str) -> tuple[AgentLogin | None, str]:
        matched: AgentLogin | None = None
        kind = ""
        # Every configured secret is compared, match or not: timing says nothing about which.
        for agent in self.settings.agents:
            token_ok = pin_ok = False
            if agent.token is not None:
                token_ok = _same(secret, agent.token.get_secret_value())
            if extension and agent.pin is not None:
                pin_ok = _same(secret, agent.pin.get_secret_value())
            ok = token_ok or pin_ok
            if ok and matched is None and (extension is None or agent.extension == extension):
                matched = agent
                kind = "token" if token_ok else "pin"
        return matched, kind

    def _still_valid(self, session: AgentSession, cookie: str) -> bool:
        """The secret the session was made with is still the agent's (not changed, not gone)."""
        agent = self.settings.login_for(session.extension)
        if agent is None or not session.proof:
            return False
        secret = agent.pin if session.secret_kind == "pin" else agent.token
        if session.secret_kind not in ("pin", "token") or secret is None:
            return False
        proof = secret_proof(cookie, session.secret_kind, secret.get_secret_value())
        return hmac.compare_digest(proof, session.proof)

    def _sweep_failures(self) -> None:
        """Forget keys whose failures are all older than the lockout window (at most once
        per window, so sign-in stays O(1) on average)."""
        now = self._clock()
        if now - self._failures_swept < self.settings.lockout_seconds:
            return
        self._failures_swept = now
        window_start = now - self.settings.lockout_seconds
        for key, times in list(self._failures.items()):
            if not times or times[-1] < window_start:
                del self._failures[key]

    @property
    def failure_keys(self) -> int:
        return len(self._failures)

    def _locked(self, key: str) -> bool:
        window_start = self._clock() - self.settings.lockout_seconds
        recent = [t for t in self._failures.get(key, []) if t >= window_start]
        if recent:
            self._failures[key] = recent
        else:
            self._failures.pop(key, None)
        return len(recent) >= self.settings.max_failures

    def get(self, cookie: str | None) -> AgentSession | None:
        if not cookie:
            return None
        key = session_key(cookie)
        session = self._sessions.get(key)
        if session is None:
            return None
        if session.expires <= self._clock() or not self._still_valid(session, cookie):
            if self._sessions.pop(key, None) is not None:
                self._changed()
            return None
        return session

    def sign_out(self, cookie: str | None) -> None:
        if cookie and self._sessions.pop(session_key(cookie), None) is not None:
            self._changed()

    def dump(self) -> str:
        """The live sessions as JSON, for the store (keys only, no cookie)."""
        self._expire()
        return json.dumps([asdict(session) for session in self._sessions.values()])

    def load(self, saved: str | None) -> int:
        """Take back sessions `dump()` saved before a restart; returns how many are live.

        Expired ones, and ones of extensions no longer configured, are left out; a damaged
        blob is logged and ignored (agents sign in again)."""
        if not saved:
            return 0
        try:
            sessions = [AgentSession(**item) for item in json.loads(saved)]
        except (ValueError, TypeError) as exc:
            log.warning("screen pop: saved sessions unreadable (%s); agents sign in again", exc)
            return 0
        now = self._clock()
        for session in sessions:
            # Without its proof (saved by an older pbxcrm) a session cannot be checked: dropped.
            if (
                session.expires > now
                and session.proof
                and self.settings.login_for(session.extension) is not None
            ):
                self._sessions[session.key] = session
        return len(self._sessions)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _expire(self) -> None:
        now = self._clock()
        for session_id, session in list(self._sessions.items()):
            if session.expires <= now:
                del self._sessions[session_id]

    @property
    def active(self) -> int:
        self._expire()
        return len(self._sessions)
