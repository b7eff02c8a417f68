"""The agents' live board: which call shows a card at which extension, fed by the pipeline.

Rules (what agents of ring-all groups and queues expect):
- a leg ringing at an extension shows the call there, until that leg ends (LEG_ENDED);
- once someone answers, the card stays only with the agent who answered: every other
  extension that rang loses it (and a later transfer target takes it over);
- when the conversation ends the answering agent keeps the card, marked ended, to write the
  note; cards nobody answered disappear (missed calls belong to call history, not the pop);
- an ended card goes when its agent dismisses it, after `keep_ended_seconds`, or when its
  agent has more than `max_ended_per_extension` ended cards (the oldest goes): a busy queue
  agent ends hundreds of calls in a shift, and the board must not grow with them.

The board only keeps state and wakes whoever watches an extension; the HTTP port renders it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from crm.model import Call, CallEvent, Direction, EventKind

CardState = Literal["ringing", "answered", "ended"]

# After any of these nobody's phone rings for the call any more.
_RINGING_OVER = frozenset(
    {EventKind.HANGUP, EventKind.DROPPED, EventKind.COMPLETED, EventKind.VOICEMAIL}
)


@dataclass(slots=True)
class Card:
    """One call as one extension sees it."""

    call_id: str
    extension: str
    state: CardState
    call: Call  # the latest snapshot
    created: float  # board clock, orders the cards
    ended_at: float | None = None  # board clock, for expiry


@dataclass(eq=False, slots=True)
class Subscription:
    """Woken whenever the cards of `extension` may have changed; bursts coalesce."""

    extension: str
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def wake(self) -> None:
        self._changed.set()

    async def wait(self, timeout: float) -> bool:
        """True when something changed (or the board closed), False on timeout."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        self._changed.clear()
        return True


class AgentBoard:
    def __init__(
        self,
        *,
        directions: Iterable[Direction | str] = (Direction.INBOUND, Direction.OUTBOUND),
        keep_ended_seconds: float = 4 * 3600.0,
        max_ended_per_extension: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directions = frozenset(Direction(d) for d in directions)
        self.keep_ended_seconds = keep_ended_seconds
        self.max_ended_per_extension = max_ended_per_extension
        self._clock = clock
        self._cards: dict[str, dict[str, Card]] = {}  # call_id -> extension -> card
        # extension -> call ids of its ended cards, oldest first (expiry and the cap)
        self._ended: dict[str, OrderedDict[str, None]] = {}
        self._subscribers: dict[str, set[Subscription]] = {}
        self.closed = False
        self._next_expiry = float("-inf")

    # -- input (Pipeline.add_call_listener) -----------------------------------------------

    def on_call_event(self, event: CallEvent) -> None:
        call = event.call
        cards = self._cards.get(event.call_id)
        if call.direction not in self.directions:
            if cards:  # the call turned out to be of a kind not shown (rare): take it back
                self._drop(event.call_id)
            return
        touched: set[str] = set()
        if cards is None:
            if event.kind not in (EventKind.RINGING, EventKind.ANSWERED):
                return  # a call that never rang or was answered here (IVR, started before us)
            cards = self._cards[event.call_id] = {}
        for card in cards.values():
            card.call = call
            touched.add(card.extension)
        if event.kind is EventKind.RINGING and event.extension:
            if event.extension not in cards:
                cards[event.extension] = Card(
                    event.call_id, event.extension, "ringing", call, self._clock()
                )
                touched.add(event.extension)
        if event.kind is EventKind.LEG_ENDED and event.extension in cards:
            # That phone's part is over: a ring that was not answered there goes, an agent
            # who talked keeps an ended card for the note.
            card = cards[event.extension]
            if card.state == "ringing":
                del cards[event.extension]
            elif card.state == "answered":
                self._end(card)
            touched.add(event.extension)
        answerer = event.extension if event.kind is EventKind.ANSWERED else None
        if answerer is None and call.answer_time is not None:
            answerer = call.agent_extension  # a transfer moves the call without ANSWERED
        if answerer:
            touched |= self._answered_by(cards, event.call_id, answerer, call)
        if event.kind in _RINGING_OVER or call.ended:
            for extension, card in list(cards.items()):
                if card.state == "ringing":
                    del cards[extension]
                elif card.state == "answered" and (
                    event.kind is not EventKind.VOICEMAIL or call.end_time is not None
                ):
                    self._end(card)
                touched.add(extension)
        if not cards:
            del self._cards[event.call_id]
        self._wake(touched)
        self._expire(throttled=True)

    def _answered_by(
        self, cards: dict[str, Card], call_id: str, answerer: str, call: Call
    ) -> set[str]:
        touched: set[str] = set()
        mine = cards.get(answerer)
        if mine is None:
            mine = cards[answerer] = Card(call_id, answerer, "answered", call, self._clock())
            touched.add(answerer)
        elif mine.state == "ringing":
            mine.state = "answered"
            touched.add(answerer)
        if mine.state != "answered":
            return touched  # the answerer's card already ended: nothing moves any more
        for extension, card in list(cards.items()):
            if extension == answerer:
                continue
            if card.state == "ringing":
                del cards[extension]  # rang too, someone else picked up
                touched.add(extension)
            elif card.state == "answered":
                self._end(card)  # handed the call on: their part is over
                touched.add(extension)
        return touched

    # -- reading --------------------------------------------------------------------------

    def cards_for(self, extension: str) -> list[Card]:
        """The extension's cards, newest first."""
        self._expire()
        found = [cards[extension] for cards in self._cards.values() if extension in cards]
        return sorted(found, key=lambda card: card.created, reverse=True)

    def card(self, extension: str, call_id: str) -> Card | None:
        return self._cards.get(call_id, {}).get(extension)

    def extensions_of(self, call_id: str) -> list[str]:
        return list(self._cards.get(call_id, {}))

    @property
    def open_cards(self) -> int:
        return sum(len(cards) for cards in self._cards.values())

    # -- changes from the page ------------------------------------------------------------

    def dismiss(self, extension: str, call_id: str) -> bool:
        """The agent closes an ended card; a live call's card cannot be dismissed."""
        cards = self._cards.get(call_id)
        card = cards.get(extension) if cards else None
        if card is None or card.state != "ended":
            return False
        self._remove(extension, call_id)
        self._wake({extension})
        return True

    def touch(self, call_id: str) -> None:
        """Wake everyone showing `call_id` (its caller details or note changed)."""
        self._wake(set(self._cards.get(call_id, {})))

    # -- watching -------------------------------------------------------------------------

    def subscribe(self, extension: str) -> Subscription:
        subscription = Subscription(extension)
        subscription.closed = self.closed
        self._subscribers.setdefault(extension, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        watchers = self._subscribers.get(subscription.extension)
        if watchers is not None:
            watchers.discard(subscription)
            if not watchers:
                del self._subscribers[subscription.extension]

    def close(self) -> None:
        """Shutting down: every watcher wakes and sees `closed`."""
        self.closed = True
        for watchers in self._subscribers.values():
            for subscription in watchers:
                subscription.closed = True
                subscription.wake()

    # -- internals ------------------------------------------------------------------------

    def _wake(self, extensions: set[str]) -> None:
        for extension in extensions:
            for subscription in self._subscribers.get(extension, ()):
                subscription.wake()

    def _end(self, card: Card) -> None:
        card.state = "ended"
        card.ended_at = self._clock()
        ended = self._ended.setdefault(card.extension, OrderedDict())
        ended[card.call_id] = None
        while len(ended) > self.max_ended_per_extension:
            oldest = next(iter(ended))
            self._remove(card.extension, oldest)
            self._wake({card.extension})

    def _remove(self, extension: str, call_id: str) -> None:
        """Forget one card (and the call once no card shows it)."""
        cards = self._cards.get(call_id)
        if cards is not None and cards.pop(extension, None) is not None and not cards:
            del self._cards[call_id]
        ended = self._ended.get(extension)
        if ended is not None:
            ended.pop(call_id, None)
            if not ended:
                del self._ended[extension]

    def _drop(self, call_id: str) -> None:
        cards = self._cards.get(call_id, {})
        extensions = set(cards)
        for extension in extensions:
            self._remove(extension, call_id)
        self._wake(extensions)

    def _expire(self, *, throttled: bool = False) -> None:
        now = self._clock()
        if throttled:
            # Once per call event would be a pass per event for nothing; readers still expire
            # exactly.
            if now < self._next_expiry:
                return
            self._next_expiry = now + min(1.0, self.keep_ended_seconds / 10)
        limit = now - self.keep_ended_seconds
        # Each extension's ended cards are in the order they ended: only the expired head is
        # walked, not every card.
        for extension, ended in list(self._ended.items()):
            while ended:
                call_id = next(iter(ended))
                card = self._cards.get(call_id, {}).get(extension)
                if card is not None and card.ended_at is not None and card.ended_at >= limit:
                    break
                self._remove(extension, call_id)
                self._wake({extension})
