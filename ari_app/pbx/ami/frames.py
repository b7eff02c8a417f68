"""AMI wire frames: split the byte stream into header dicts, skipping unwanted events cheaply.

This is the hot path of AMI ingest. Most events a PBX sends (VarSet, Newexten,
DeviceStateChange, RTCPSent ...) never matter to the call tracker, so the reader looks at
the `Event:` line of each frame first and drops unwanted frames without decoding or
splitting the rest. Only wanted frames become a `dict[str, str]`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Frame = dict[str, str]

MAX_FRAME_BYTES = 64 * 1024
BANNER_PREFIX = b"Asterisk Call Manager/"

# Malformed frames are logged one line each, but a flood of garbage must not flood the log:
# after the first few only every Nth is logged (the counter says how many were skipped).
_LOG_FIRST_MALFORMED = 10
_LOG_EVERY_MALFORMED = 1000
_MAX_DECISIONS = 1024


@dataclass(frozen=True, slots=True)
class HeaderRule:
    """Wants an otherwise unwanted event when one header's value is listed or has a prefix."""

    header: str
    values: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    # Asterisk marks inherited variables with `_`/`__` (`__MONITOR_FILE`); the name is the same.
    strip_underscores: bool = False
    _needle: bytes = field(init=False, repr=False, compare=False)
    _values: frozenset[bytes] = field(init=False, repr=False, compare=False)
    _prefixes: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    _candidate: re.Pattern[bytes] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        def norm(name: str) -> bytes:
            return (name.lstrip("_") if self.strip_underscores else name).encode()

        needle = b"\n" + self.header.encode() + b": "
        values = frozenset(norm(v) for v in self.values)
        prefixes = tuple(norm(p) for p in self.prefixes)
        object.__setattr__(self, "_needle", needle)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_prefixes", prefixes)
        # Most frames a rule sees are unwanted (VarSet of every variable the dialplan sets):
        # one regex search, in C, rules them out when no line of this header could match.
        # It finds any line that would, so a miss is a sure no; a hit is checked exactly.
        head = re.escape(needle) + (b"_*" if self.strip_underscores else b"")
        whole = [head + b"(?:" + b"|".join(map(re.escape, sorted(values))) + b")\r?(?:\n|$)"]
        starts = [head + b"(?:" + b"|".join(map(re.escape, prefixes)) + b")"]
        alternatives = (whole if values else []) + (starts if prefixes else [])
        candidate = re.compile(b"|".join(alternatives)) if alternatives else None
        object.__setattr__(self, "_candidate", candidate)

    def matches(self, raw: bytes) -> bool:
        """`raw` is one LF-separated frame; looks at the first occurrence of the header only."""
        if self._candidate is None or self._candidate.search(raw) is None:
            return False
        start = raw.find(self._needle)
        if start < 0:
            return False
        start += len(self._needle)
        end = raw.find(b"\n", start)
        value = raw[start:] if end < 0 else raw[start:end]
        if value[-1:] == b"\r":  # a CRLF frame
            value = value[:-1]
        if self.strip_underscores:
            value = value.lstrip(b"_")
        return value in self._values or (bool(self._prefixes) and value.startswith(self._prefixes))


class FrameFilter:
    """Which event frames the reader turns into dicts. Responses are always delivered, and so
    is every event carrying an `ActionID` (the list events answering our own actions) while
    the reader's `action_events` is on.

    `events=None` wants every event (parse-all). Event names are case-insensitive.
    `when` wants an event whose name is not in `events` if its `HeaderRule` matches, e.g.
    `VarSet` only for some `Variable`s.
    """

    __slots__ = ("_decisions", "_events", "_rules", "events", "when")

    def __init__(
        self,
        events: Iterable[str] | None,
        when: Mapping[str, HeaderRule] | None = None,
    ) -> None:
        self.events: frozenset[str] | None = None if events is None else frozenset(events)
        self.when: dict[str, HeaderRule] = dict(when or {})
        self._events: frozenset[bytes] | None = (
            None if self.events is None else frozenset(e.lower().encode() for e in self.events)
        )
        self._rules: dict[bytes, HeaderRule] = {
            name.lower().encode(): rule for name, rule in self.when.items()
        }
        # The decision for an event name as it came off the wire (any case): True, False or
        # the rule that decides. A PBX sends a few dozen names, so this stays small; it is
        # bounded anyway, against garbage.
        self._decisions: dict[bytes, bool | HeaderRule] = {}

    @classmethod
    def for_calls(
        cls,
        events: Iterable[str],
        *,
        variables: Iterable[str] = (),
        variable_prefixes: Iterable[str] = (),
        applications: Iterable[str] = (),
    ) -> FrameFilter:
        """The usual shape: some events; VarSet only for some variables (leading underscores
        ignored); Newexten only when it starts one of `applications` (VoiceMail, Queue ...)."""
        when: dict[str, HeaderRule] = {}
        variables, variable_prefixes = frozenset(variables), tuple(variable_prefixes)
        if variables or variable_prefixes:
            when["VarSet"] = HeaderRule(
                "Variable", variables, variable_prefixes, strip_underscores=True
            )
        applications = frozenset(applications)
        if applications:
            when["Newexten"] = HeaderRule("Application", applications)
        return cls(events, when)

    def including(self, *names: str) -> FrameFilter:
        """The same filter, also wanting these events (no-op for parse-all)."""
        if self.events is None:
            return self
        return FrameFilter(self.events | set(names), self.when)

    def wants_raw(self, name_lower: bytes, raw: bytes) -> bool:
        decision = self.decision(name_lower)
        return decision if decision is True or decision is False else decision.matches(raw)

    def decision(self, name: bytes) -> bool | HeaderRule:
        """Whether an event named `name` (any case) is wanted: True, False, or the rule that
        decides from its headers."""
        known = self._decisions.get(name)
        if known is not None:
            return known
        lower = name.lower()
        wanted = self._events
        decision: bool | HeaderRule
        if wanted is None or lower in wanted:
            decision = True
        else:
            decision = self._rules.get(lower, False)
        if len(self._decisions) < _MAX_DECISIONS:
            self._decisions[name] = decision
        return decision

    def wants(self, frame: Mapping[str, str]) -> bool:
        """The same decision for an already parsed frame (slow path, tests)."""
        if "Event" not in frame:
            return True
        if "ActionID" in frame:
            return True
        raw = "\n" + "\n".join(f"{k}: {v}" for k, v in frame.items())
        return self.wants_raw(frame["Event"].lower().encode(), raw.encode())

    def __repr__(self) -> str:
        return f"FrameFilter(events={self.events!r}, when={self.when!r})"


ALL_EVENTS = FrameFilter(None)


class FrameReader:
    """Feed it bytes as they arrive; it returns the complete frames they finish.

    Handles frames and lines split across reads, CRLF or bare LF line ends, the
    `Asterisk Call Manager/x.y.z` banner line (kept in `banner`). Never raises on bad
    input: malformed or oversized frames are counted in `malformed`, logged and skipped.
    Header dicts keep the wire's key case; the first occurrence of a repeated header wins
    (except a Response's `Output:` lines, which are joined with newlines).
    """

    __slots__ = (
        "_buf",
        "_discarding",
        "_filter",
        "action_events",
        "banner",
        "delivered",
        "malformed",
        "skipped",
    )

    def __init__(self, frame_filter: FrameFilter | None = None) -> None:
        self._filter = frame_filter or ALL_EVENTS
        self._buf = b""
        self._discarding = False
        self.banner: str | None = None
        # Whether an unwanted event carrying an ActionID is delivered (a list event answering
        # an action). The AMI protocol turns it off while no action of its own can still be
        # answered: looking for the header costs a scan of every unwanted frame (a third of
        # the time a skipped frame takes), and then nothing would wait for such an event.
        self.action_events = True
        self.malformed = 0
        self.skipped = 0  # unwanted events dropped by the filter
        self.delivered = 0

    def reset(self) -> None:
        """Forget a partial frame (a new connection starts clean)."""
        self._buf = b""
        self._discarding = False

    def feed(self, data: bytes) -> list[Frame]:
        # The partial frame is kept as it came off the wire, so a CRLF cut between two reads
        # needs no special case.
        buf = self._buf + data if self._buf else data
        # Asterisk ends every line with CRLF: such a stream is split on CRLF as it is. Copying
        # every read to turn CRLF into LF (bytes.replace) was a third of this reader's time;
        # only a stream with bare LF line ends mixed in is still rewritten first.
        eol = b"\r\n"
        if buf.count(b"\n") != buf.count(b"\r\n"):
            if b"\r" in buf:
                buf = buf.replace(b"\r\n", b"\n")
            eol = b"\n"
        if self._discarding:
            buf = buf.replace(b"\r\n", b"\n") if eol == b"\r\n" else buf
            eol = b"\n"
            end = buf.find(b"\n\n")
            if end < 0:
                self._buf = buf[-2:]  # a separator may straddle this read and the next
                return []
            buf = buf[end + 2 :]
            self._discarding = False
        parts = buf.split(eol + eol)
        rest = parts.pop()
        if len(rest) > MAX_FRAME_BYTES:
            self._bad(rest, f"frame longer than {MAX_FRAME_BYTES} bytes")
            self._discarding = True
            rest = rest[-3:]
        self._buf = rest
        return self._frames(parts, eol)

    def _frames(self, parts: list[bytes], eol: bytes = b"\n") -> list[Frame]:
        frames: list[Frame] = []
        decisions = self._filter._decisions
        decide = self._filter.decision
        action_events = self.action_events
        skipped = 0
        for part in parts:
            if part[:7] == b"Event: ":
                nl = part.find(eol, 7)
                name = part[7:] if nl < 0 else part[7:nl]
                wanted = decisions.get(name)
                if wanted is None:
                    wanted = decide(name)
                if (
                    wanted is not True
                    and (wanted is False or not wanted.matches(part))
                    and not (action_events and b"\nActionID: " in part)
                ):
                    skipped += 1
                    continue
            elif part[:10] != b"Response: ":
                if not part:
                    continue
                # The banner, stray line ends, garbage: rare, so read with bare LF only.
                frame = self._odd_frame(part.replace(b"\r\n", b"\n") if eol != b"\n" else part)
                if frame is not None:
                    frames.append(frame)
                continue
            if len(part) > MAX_FRAME_BYTES:
                self._bad(part, f"frame longer than {MAX_FRAME_BYTES} bytes")
                continue
            frame = self._parse(part, "\r\n" if eol == b"\r\n" else "\n")
            if frame is not None:
                frames.append(frame)
        self.skipped += skipped
        self.delivered += len(frames)
        return frames

    def _parse(self, part: bytes, eol: str = "\n") -> Frame | None:
        try:
            text = part.decode()
        except UnicodeDecodeError:
            # Keep the undecodable bytes visible (\xNN) rather than losing them.
            text = part.decode("utf-8", "backslashreplace")
        lines = text.split(eol)
        try:
            frame = dict([line.split(": ", 1) for line in lines])
        except ValueError:
            return self._parse_slow(part, lines)
        if len(frame) != len(lines):
            return self._parse_slow(part, lines)  # a repeated header: first one wins
        return frame

    def _parse_slow(self, part: bytes, lines: list[str]) -> Frame | None:
        frame: Frame = {}
        is_response = lines[0].startswith("Response:")
        for line in lines:
            if not line:
                continue
            key, sep, value = line.partition(":")
            key = key.strip()
            if not sep or not key or " " in key:
                self._bad(part, f"line without a header: {line[:60]!r}")
                return None
            value = value[1:] if value[:1] == " " else value
            if key in frame:
                if is_response and key == "Output":
                    frame[key] += "\n" + value
                continue
            frame[key] = value
        return frame

    def _odd_frame(self, part: bytes) -> Frame | None:
        """Anything not starting with `Event:`/`Response:`: the banner, stray blank lines,
        a frame with its headers in an unusual order, or garbage."""
        if part[:1] == b"\n":
            part = part.lstrip(b"\n")
            if not part:
                return None
            if part[:7] == b"Event: " or part[:10] == b"Response: ":
                frames = self._frames([part])
                self.delivered -= len(frames)  # counted again by the caller's loop
                return frames[0] if frames else None
        if part.startswith(BANNER_PREFIX):
            nl = part.find(b"\n")
            line = part if nl < 0 else part[:nl]
            self.banner = line.decode("ascii", "backslashreplace").strip()
            log.debug("AMI banner: %s", self.banner)
            part = b"" if nl < 0 else part[nl + 1 :]
            if not part:
                return None
            frames = self._frames([part])
            self.delivered -= len(frames)
            return frames[0] if frames else None
        if len(part) > MAX_FRAME_BYTES:
            self._bad(part, f"frame longer than {MAX_FRAME_BYTES} bytes")
            return None
        frame = self._parse(part)
        if frame is None:
            return None
        if "Response" in frame:
            return frame
        event = frame.get("Event")
        if event is None:
            self._bad(part, "neither Event nor Response header")
            return None
        if "ActionID" in frame or self._filter.wants_raw(event.lower().encode(), b"\n" + part):
            return frame
        self.skipped += 1
        return None

    def _bad(self, part: bytes, why: str) -> None:
        self.malformed += 1
        n = self.malformed
        if n <= _LOG_FIRST_MALFORMED or n % _LOG_EVERY_MALFORMED == 0:
            log.warning("AMI: skipped malformed frame (%s; %d so far): %r", why, n, part[:120])


def parse_frames(data: bytes, frame_filter: FrameFilter | None = None) -> list[Frame]:
    """Every frame of a complete byte string (a recording); the banner is skipped."""
    reader = FrameReader(frame_filter)
    frames = reader.feed(data)
    frames.extend(reader.feed(b"\r\n\r\n"))
    return frames
