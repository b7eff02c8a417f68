"""The AMI wire on panoramisk: its protocol class carries the connection, its `Action` builds,
serialises and collects every action, and our `FrameReader` reads the stream.

panoramisk 1.4's `AMIProtocol` is kept for its `responses` table (ActionID -> `Action`) and
`handle_message`, which feeds `Action.add_message`, the code that decides when an answer and
its list events are complete and resolves the action's future. It is overridden where pbxcrm
needs a different guarantee (panoramisk/ami_protocol.py, version 1.4):

* `data_received` (lines 39-72): panoramisk decodes every read, turns every frame into a
  `Message` (a case-insensitive dict) and dispatches each event through the Manager; that is
  the ingest ceiling. Here `FrameReader` drops unwanted events before parsing them, wanted
  events go to `on_frame` as plain dicts, synchronously, in wire order, and only the answers to
  our own actions (a handful per session) become panoramisk `Message`s.
* `close` (lines 94-116): panoramisk moves every unanswered action into the Manager's
  `awaiting_actions`, which the Manager re-sends after the next login: an Originate could ring
  a phone twice. Here every unanswered action fails with AmiConnectionLost and nothing is kept.
* `connection_lost` (lines 89-92): the base hands over to a Manager (`factory`, None here);
  this one fails the unanswered actions and tells the owner why the connection ended.
* `send` (lines 21-37): the base logs the whole action if the write fails, a Login's Secret
  included; this one refuses to write on a closing transport instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from ari_app.pbx.ami.errors import AmiConnectionLost, AmiNotConnected
from ari_app.pbx.ami.frames import Frame, FrameReader

log = logging.getLogger("ari_app.pbx.ami.client")

# Timed-out actions remembered per connection (their late answers are recognised).
_MAX_ABANDONED = 1000


@dataclass(slots=True, frozen=True)
class AmiResponse:
    """The `Response:` frame of an action and, for list actions (CoreShowChannels, Status
    ...), the list events that followed; `complete` is the closing `...Complete` event."""

    response: Frame
    events: list[Frame] = field(default_factory=list)
    complete: Frame | None = None

    @property
    def ok(self) -> bool:
        return self.response.get("Response", "").lower() in ("success", "follows", "goodbye")

    @property
    def message(self) -> str:
        return self.response.get("Message", "")

    @property
    def action_id(self) -> str:
        return self.response.get("ActionID", "")


class _Answer(Message):
    """A panoramisk `Message` for `Action.add_message` that keeps the frame it was made of:
    callers get our plain dicts back, with the wire's headers and nothing added."""

    def __init__(self, frame: Frame) -> None:
        super().__init__(frame)
        self.frame = frame


def new_action_id() -> str:
    """panoramisk's ActionID generator: a uuid per process and a counter, never repeated."""
    action_id: str = Action.action_id_generator()
    return action_id


def build_action(action: Mapping[str, str], action_id: str | None = None) -> Action:
    """A panoramisk `Action` (its ActionID and wire text), after refusing what must never
    reach the wire. Raises ValueError before anything is sent."""
    name = action.get("Action")
    if not name:
        raise ValueError("an AMI action needs an 'Action' header")
    headers: dict[str, str] = {}
    for key, value in action.items():
        if key.lower() in ("action", "actionid"):
            continue
        if not isinstance(value, str):
            raise ValueError(f"AMI {name}: header {key!r} must be a string")
        if "\r" in key or "\n" in key or ":" in key or "\r" in value or "\n" in value:
            # A line break would let a value inject headers or a whole second action.
            raise ValueError(f"AMI {name}: header {key!r} contains a line break or colon")
        headers[key] = value
    built = Action({"Action": name, "ActionID": action_id or new_action_id(), **headers})
    if len(built) != len(headers) + 2:
        # panoramisk's Action is case-insensitive: `Channel` and `channel` would be one header.
        raise ValueError(f"AMI {name}: two headers differ only in case")
    return built


def is_list_start(response: Frame) -> bool:
    if response.get("Response", "").lower() not in ("success", "follows"):
        return False
    return (
        response.get("EventList", "").lower() == "start"
        or "will follow" in response.get("Message", "").lower()
    )


def response_of(result: Message | list[Message]) -> AmiResponse:
    """What `Action.future` resolves to (the answer, or the answer and its list events up to
    the closing one) as an AmiResponse of the original frames."""
    if not isinstance(result, list):
        return AmiResponse(_frame_of(result))
    frames = [_frame_of(message) for message in result]
    complete = frames.pop() if len(frames) > 1 else None
    return AmiResponse(frames[0], frames[1:], complete)


def _frame_of(message: Message) -> Frame:
    return message.frame if isinstance(message, _Answer) else dict(message.items())


class AmiProtocol(AMIProtocol):
    """panoramisk's AMI protocol with our reader in front and no action ever kept to re-send
    (see the module docstring). One instance per TCP connection."""

    # The base encodes actions as ASCII: a CallerID like "Müller" could not be sent.
    encoding = "utf-8"

    def __init__(
        self,
        reader: FrameReader,
        on_frame: Callable[[Frame], None],
        on_lost: Callable[[AmiProtocol, str], None],
        where: str,
    ) -> None:
        self.reader = reader
        self.on_frame = on_frame
        self.on_lost = on_lost
        self.where = where
        # Why the connection ends, when we know better than the socket (Shutdown, Ping).
        self.drop_reason: str | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.responses: dict[str, Action] = {}
        # Actions we stopped waiting for (timed out), whose answer may still come.
        self.abandoned: dict[str, Action] = {}
        self.factory = None  # no Manager: nothing to dispatch to, nowhere to queue actions

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # sets transport, responses, factory=None, log

    @property
    def is_open(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    # -- actions ---------------------------------------------------------------------------

    def send(
        self, data: Action, as_list: bool | None = None
    ) -> asyncio.Future[Message | list[Message]]:
        """Register `data` in panoramisk's `responses` table and write it once.

        `as_list` None: decided from the answer (see `_answer`)."""
        if not self.is_open:
            raise AmiNotConnected(f"AMI {self.where} not connected: {data['Action']} not sent")
        if data.id in self.responses:
            raise ValueError(f"ActionID {data.id} is already waiting for an answer")
        data.as_list = as_list
        self.responses[data.id] = data
        assert self.transport is not None
        self.transport.write(str(data).encode(self.encoding))
        future: asyncio.Future[Message | list[Message]] = data.future
        return future

    def forget(self, action: Action) -> None:
        """Stop waiting for an answer (timed out): a late one is logged and dropped."""
        # Compared through a name checked for None: `get(...) is action` would narrow `action`
        # (untyped, from panoramisk) to the get's Action | None.
        waiting = self.responses.get(action.id)
        if waiting is not None and waiting is action:
            del self.responses[action.id]
            if not action.future.done() or action.future.cancelled():
                self.abandoned[action.id] = action
                if len(self.abandoned) > _MAX_ABANDONED:
                    del self.abandoned[next(iter(self.abandoned))]

    # -- wire side -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        responses = self.responses
        abandoned = self.abandoned
        on_frame = self.on_frame
        shutdown = False
        # An action sent while these frames are handled is answered in a later read at the
        # earliest, so whether any can be answered is known before this one is read.
        self.reader.action_events = bool(responses or abandoned)
        for frame in self.reader.feed(data):
            if responses or abandoned:
                action_id = frame.get("ActionID")
                if action_id is not None:
                    action = responses.get(action_id)
                    if action is not None and self._answer(action, frame):
                        continue
                    action = abandoned.get(action_id)
                    if action is not None and self._late(action, frame):
                        continue
            event = frame.get("Event")
            if event is None:
                log.debug("AMI: response nobody waits for (late?): %s", frame.get("ActionID"))
                continue
            if event == "Shutdown":
                shutdown = True
                restart = frame.get("Restart", "").lower() == "true"
                self.drop_reason = f"Asterisk shut down ({frame.get('Shutdown', '?')}"
                self.drop_reason += ", restarting)" if restart else ")"
            try:
                on_frame(frame)
            except Exception:
                log.exception("AMI: on_frame failed for a %s event; continuing", event)
        if shutdown:
            # Asterisk closes right after; closing first makes the reconnect start now.
            self.close()

    def _answer(self, action: Action, frame: Frame) -> bool:
        """Hand a frame carrying a waiting action's ActionID to panoramisk's matching.
        False: not part of the answer, it is an ordinary event."""
        if not action.responses:
            if "Response" not in frame:
                return False
            # Decided here, not by panoramisk's `Action.multi`, which also reads QueueAdd's
            # "Added ... to queue" and an async Originate's "successfully queued" as the start
            # of a list: the first would wait for events that never come, the second would
            # swallow the OriginateResponse event the originate tracker needs.
            action.as_list = is_list_start(frame)
        elif "Event" not in frame:
            log.debug("AMI: second response for ActionID %s ignored", action.id)
            return True
        self.handle_message(_Answer(frame))
        if action.id in self.responses and frame.get("EventList", "").lower() == "complete":
            # A list closed by `EventList: Complete` under a name that does not end in
            # "Complete", which `Action.completed` does not recognise.
            del self.responses[action.id]
            if not action.future.done():
                action.future.set_result(list(action.responses))
        return True

    def _late(self, action: Action, frame: Frame) -> bool:
        """A frame answering an action that timed out. Its list events are dropped: the rest
        of a channel list, with its closing event, would make the tracker close the calls
        listed in the part that came in time. Other events (an Originate's
        OriginateResponse) are ordinary events. False: not part of the answer."""
        name = action["Action"]
        if "Event" not in frame:
            if "Response" not in frame:
                return True
            log.info("AMI: late answer to %s (ActionID %s) dropped", name, action.id)
            if action.as_list is None:
                action.as_list = is_list_start(frame)
            if not action.as_list:
                del self.abandoned[action.id]
            return True
        if not action.as_list:
            return False
        event = frame["Event"]
        if event.endswith("Complete") or frame.get("EventList", "").lower() == "complete":
            log.warning(
                "AMI: the rest of the %s list (ActionID %s) came after its timeout; dropped",
                name,
                action.id,
            )
            del self.abandoned[action.id]
        return True

    # -- end of the connection -------------------------------------------------------------

    def abort(self, reason: str) -> None:
        """Drop the connection at once (the peer may be gone: nothing to flush)."""
        self.drop_reason = reason
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """End the connection. Unlike panoramisk's, keeps no unanswered action to re-send:
        each fails with AmiConnectionLost now."""
        self._abandon(self.drop_reason or "the connection was closed by pbxcrm")
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reason = self.drop_reason or (
            f"connection error: {exc}" if exc else "the server closed the connection"
        )
        self._abandon(reason)
        self.on_lost(self, reason)

    def _abandon(self, reason: str) -> None:
        pending, self.responses = self.responses, {}
        for action in pending.values():
            if not action.future.done():
                action.future.set_exception(
                    AmiConnectionLost(
                        f"AMI {self.where}: connection lost before the answer to "
                        f"{action['Action']} (ActionID {action.id}): {reason}; "
                        "it is not re-sent"
                    )
                )
