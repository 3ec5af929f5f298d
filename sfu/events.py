"""Typed room events, yielded by ``async for event in room.events()``.

Every event is a frozen dataclass whose first field is the room's name.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal, cast

from ._values import is_int, timeout_seconds
from .errors import InvalidSetting

logger = logging.getLogger(__name__)

__all__ = [
    "ActiveSpeakersChanged",
    "DominantSpeakerChanged",
    "Event",
    "EventStream",
    "MEMBERSHIP_EVENTS",
    "HandLowered",
    "HandRaised",
    "HandsChanged",
    "MEMBER_SCOPED_EVENTS",
    "MixerFailed",
    "MuteChanged",
    "ParticipantConnected",
    "ParticipantJoined",
    "ParticipantLeft",
    "ParticipantRemoved",
    "RoleChanged",
    "RoomClosed",
    "RoomEvent",
    "RosterChanged",
    "SlotInfo",
    "Subscribers",
]

Role = Literal["moderator", "speaker", "listener"]


@dataclass(frozen=True)
class RoomEvent:
    """The base of every room event: ``room`` is the room's name. A stream
    yields :data:`Event`, the union of the concrete ones, for ``match``."""

    room: str


@dataclass(frozen=True)
class ParticipantJoined(RoomEvent):
    """An offer was answered: the participant is a member from now on."""

    identity: str
    role: Role


@dataclass(frozen=True)
class ParticipantConnected(RoomEvent):
    """ICE and DTLS completed: media flows to and from the participant."""

    identity: str


@dataclass(frozen=True)
class ParticipantLeft(RoomEvent):
    """The participant's session is closed; ``reason`` says why."""

    identity: str
    reason: str


@dataclass(frozen=True)
class ParticipantRemoved(RoomEvent):
    """A moderator (``by``; ``None`` for the backend) removed the participant."""

    identity: str
    reason: str
    by: str | None
    banned: bool


@dataclass(frozen=True)
class HandRaised(RoomEvent):
    """A listener raised its hand (a member that may speak has none to
    raise: its ``raise_hand`` is refused, :class:`~sfu.errors.NotAllowed`);
    the hands as a list come batched in :class:`HandsChanged`."""

    identity: str


@dataclass(frozen=True)
class HandLowered(RoomEvent):
    """A raised hand went down. ``by`` is the moderator who lowered it, or
    whose promotion answered it; ``None`` when the member lowered it itself,
    the backend did (``by=None``), or the member left."""

    identity: str
    by: str | None


@dataclass(frozen=True)
class HandsChanged(RoomEvent):
    """The raised hands, oldest first, batched: at most one event per
    ``roster_interval`` while hands are raised or lowered. ``hands`` holds the
    first :data:`sfu.moderation.MAX_HANDS_LISTED` (in a crowd, each member is
    sent it), ``total`` counts them all. For each hand, watch
    :class:`HandRaised` / :class:`HandLowered`."""

    hands: tuple[str, ...]
    total: int


@dataclass(frozen=True)
class RoleChanged(RoomEvent):
    """Promotion or demotion. When ``renegotiate`` is True the client must send
    a new offer (adding or dropping its sending audio line) through
    :meth:`sfu.Participant.renegotiate`; ICE and DTLS stay up."""

    identity: str
    role: Role
    by: str | None
    renegotiate: bool
    #: It holds the ``moderate`` grant after the change. Not always
    #: ``role == "moderator"``: a moderator seated in the audience (a full
    #: stage) is a ``"listener"`` that moderates, and one invited on the
    #: stage as ``"speaker"`` keeps moderating.
    moderates: bool = field(kw_only=True)


@dataclass(frozen=True)
class MuteChanged(RoomEvent):
    """A mute changed. ``muted`` is the effect (nothing of it is forwarded);
    ``moderator_muted`` and ``self_muted`` are the two causes: a self-unmute
    does not lift a moderator's mute. ``by`` is the moderator who acted, the
    identity itself for a self-mute, or ``None`` for the backend."""

    identity: str
    muted: bool
    by: str | None
    moderator_muted: bool = False
    self_muted: bool = False


@dataclass(frozen=True)
class MixerFailed(RoomEvent):
    """The room's :class:`~sfu.media.mixer.Mixer` stopped on an error (a bug,
    logged with its traceback): its recordings were finished (their files
    are complete up to now), its live HTTP streams ended, and its mixed
    members were closed (their clients join again). ``error`` says what
    failed. The mixer is not closed: the next consumer (``room.record()``,
    a live stream, a mixed member joining) starts it again."""

    error: str


@dataclass(frozen=True)
class RosterChanged(RoomEvent):
    """The roster changes of one ``roster_interval``, batched.

    ``joined`` and ``updated`` are ``(identity, role)`` pairs; ``left`` lists
    identities: the net change since the previous event. Anyone gone at the
    interval's end is in ``left``, also someone who joined within it (a
    member who joined in between got a snapshot that may list them, so a
    consumer drops a name it does not know); one that left and came back is
    ``updated``, which may so name someone a consumer never saw join: it
    adds or updates.

    It names only the members the roster names: the stage and at most
    ``RoomPolicy.roster_listeners`` listeners (see
    :class:`~sfu.roster.RosterListing`; a listener named later, in place of
    one that left, comes in ``joined``; one sent back to an audience whose
    named places are taken, in ``left``). ``size`` counts every member; an
    event with no names tells a new ``size`` alone. For every join and
    leave, named or not, watch ``ParticipantJoined`` / ``ParticipantLeft``.
    """

    joined: tuple[tuple[str, Role], ...]
    left: tuple[str, ...]
    updated: tuple[tuple[str, Role], ...]
    size: int


@dataclass(frozen=True)
class SlotInfo:
    """Who a slot carries: the speaker's identity, the CSRC of every packet
    of its voice (:attr:`Participant.csrc <sfu.participant.Participant.csrc>`:
    the room's name for it, not its client's SSRC) and its last RFC 6464
    level (-dBov, None if unknown)."""

    identity: str
    csrc: int
    level: int | None


@dataclass(frozen=True)
class ActiveSpeakersChanged(RoomEvent):
    """The stage changed: who is in each slot (and its CSRC), and the dominant speaker.

    Debounced: at most one per ``stage_interval`` of the room.
    """

    slots: tuple[SlotInfo | None, ...]
    dominant: str | None


@dataclass(frozen=True)
class DominantSpeakerChanged(RoomEvent):
    """A new dominant speaker (``None``: nobody), with the same debounce."""

    identity: str | None


@dataclass(frozen=True)
class RoomClosed(RoomEvent):
    """The room is closed; it is the last event of every stream."""

    reason: str


#: The events about one member's presence. A stream made with ``member=``
#: queues only those about its own member (it learns of the others batched,
#: from :class:`RosterChanged`).
MEMBERSHIP_EVENTS = (ParticipantJoined, ParticipantConnected, ParticipantLeft, ParticipantRemoved)
#: The events a stream made with ``member=`` queues only when they are about
#: its own member: its presence, and its hand (it learns of the others'
#: hands batched, from :class:`HandsChanged`: one member's hand is then not a
#: message to every member).
MEMBER_SCOPED_EVENTS = (*MEMBERSHIP_EVENTS, HandRaised, HandLowered)

#: Streams a consumer is waiting on right now (see EventStream.__anext__).
_AWAITED: set[EventStream] = set()


#: Every event a stream yields, as one type: a ``match`` over the classes
#: can end with ``case _: assert_never(event)`` (``typing``, Python 3.11+) to have a type checker
#: prove it handles each (``RoomEvent`` is their base, for ``isinstance``).
Event = (
    ParticipantJoined
    | ParticipantConnected
    | ParticipantLeft
    | ParticipantRemoved
    | HandRaised
    | HandLowered
    | HandsChanged
    | RoleChanged
    | MuteChanged
    | MixerFailed
    | RosterChanged
    | ActiveSpeakersChanged
    | DominantSpeakerChanged
    | RoomClosed
)


class EventStream(AsyncIterator[Event]):
    """One subscriber's view of a room's events.

    Each subscriber has its own bounded queue (``maxsize`` events), of the
    events ``accept`` (if given) returns True for: the others are not
    queued, and :class:`RoomClosed` always is. When a
    slow subscriber lets it fill, the *oldest* event is dropped and counted
    in :attr:`dropped`, so a stalled consumer costs bounded memory and
    never blocks the room. Iteration stops after :class:`RoomClosed`, or
    when :meth:`close` is called. The room holds its subscribers weakly: a
    stream nobody refers to any more (a loop left with ``break``) stops
    receiving; ``async with room.events() as stream:`` closes it on exit.
    """

    def __init__(
        self,
        maxsize: int = 1024,
        accept: Callable[[RoomEvent], bool] | None = None,
        *,
        member: str | None = None,
    ) -> None:
        if not is_int(maxsize) or maxsize < 1:
            raise InvalidSetting(f"maxsize must be an integer >= 1, got {maxsize!r}")
        if accept is not None and not callable(accept):
            raise InvalidSetting(f"accept must be a callable or None, got {accept!r}")
        if member is not None and not isinstance(member, str):
            raise InvalidSetting(f"member must be an identity (str) or None, got {member!r}")
        self._events: collections.deque[RoomEvent] = collections.deque(maxlen=maxsize)
        self._accept = accept
        #: Of the MEMBER_SCOPED_EVENTS, only those about this identity are queued.
        self.member = member
        # Set by the Subscribers holding it: close() leaves them at once.
        # Where it is subscribed (not the bound method: one object fewer per
        # member for the cyclic GC to walk).
        self._subscribers: Subscribers | None = None
        # The consumers waiting for an event, each on a future of its own made
        # only while it waits: an asyncio.Event per stream would be ~1 KB and
        # three more objects for the cyclic GC per member, waiting or not.
        self._waiters: list[asyncio.Future[None]] | None = None
        self._closed = False
        self._finished = False
        self.dropped = 0

    def _put(self, event: RoomEvent) -> None:
        if self._closed:
            return
        if (
            self.member is not None
            and isinstance(event, MEMBER_SCOPED_EVENTS)
            and event.identity != self.member
        ):
            return  # another member's (Subscribers does not offer those)
        if self._accept is not None and not isinstance(event, RoomClosed):
            try:
                accepted = self._accept(event)
            except Exception:
                # The subscriber's code: it must not stop the room halfway
                # through a change (a join counted but not announced, a close
                # that never ends). Its stream ends, as a Router tap that
                # raises is dropped.
                logger.exception(
                    "an event stream's accept raised on %r: the stream is closed", event
                )
                self.close()
                return
            if not accepted:
                return  # not queued, so never dropped either
        if len(self._events) == self._events.maxlen:
            self.dropped += 1
        self._events.append(event)
        self._wake()
        if isinstance(event, RoomClosed):
            self._closed = True

    def _forget_before(self, mark: Callable[[RoomEvent], bool]) -> bool:
        """Forget the queued events older than the newest one ``mark`` accepts,
        and :attr:`dropped` with them (events are dropped oldest first, so every
        one was older still): for a consumer that has just read the state they
        led to from the room itself. The marked event and those after it stay.
        False, and nothing forgotten, when no queued event is marked."""
        older = len(self._events)
        while older:
            older -= 1
            if mark(self._events[older]):
                break
        else:
            return False
        for _ in range(older):
            self._events.popleft()
        self.dropped = 0
        return True

    @property
    def closed(self) -> bool:
        """No more events will be queued (``RoomClosed`` seen, or :meth:`close`)."""
        return self._closed

    def close(self) -> None:
        """Stop the iteration; events already queued are still delivered. Never raises."""
        self._closed = True
        self._wake()
        subscribers, self._subscribers = self._subscribers, None
        if subscribers is not None:
            subscribers.discard(self)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def __aiter__(self) -> EventStream:
        return self

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    async def __anext__(self) -> Event:
        while not self._events:
            if self._closed or self._finished:
                self._finished = True
                raise StopAsyncIteration
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = [waiter]
            else:
                self._waiters.append(waiter)
            # Held while a consumer waits on it: the room holds streams weakly,
            # and so does asyncio its tasks, so a consumer task nobody keeps
            # (create_task without a reference) would be collected with it.
            _AWAITED.add(self)
            try:
                await waiter
            finally:
                waiters = self._waiters
                if waiters is not None and waiter in waiters:  # not woken (cancelled)
                    waiters.remove(waiter)
                    if not waiters:
                        self._waiters = None
                if self._waiters is None:  # nobody else waits on it either
                    _AWAITED.discard(self)
        return cast(Event, self._events.popleft())

    async def next(self, timeout: float | None = None) -> Event:
        """The next event, waiting at most ``timeout`` seconds (``asyncio.TimeoutError``;
        a queued event is returned at once, even with ``timeout=0``). After the
        last event (``RoomClosed``, or :meth:`close`) it raises
        ``StopAsyncIteration``, as iterating would end. A ``timeout`` that is
        not None or a number raises :class:`~sfu.errors.InvalidSetting`."""
        timeout = timeout_seconds(timeout)
        if self._events:
            return cast(Event, self._events.popleft())
        if timeout is not None and timeout <= 0:
            if self._closed or self._finished:
                self._finished = True
                raise StopAsyncIteration
            raise asyncio.TimeoutError()
        return await asyncio.wait_for(self.__anext__(), timeout)


class Subscribers:
    """A room's event streams, held weakly, and which of them an event goes to.

    A membership or hand event (:data:`MEMBER_SCOPED_EVENTS`) is offered
    only to the streams made without ``member`` and to those of the member it
    is about; every other event to all. Where every member's signaling holds a stream
    of its own (``member=`` its identity), a join or leave then costs a few
    calls instead of one per member: over a join storm of N that was N²/2
    calls, ~2 s of CPU at N = 1,000. A member's streams are a list of weak
    references (a member has one, as a rule), not a ``WeakSet``, which is
    seven objects for the cyclic GC to walk per member instead of two.

    A member's stream let go without :meth:`EventStream.close` (a loop left
    with ``break``) leaves the table when it is collected, not at the next
    event about its member: one who has left the room gets none, and a
    long-lived room would keep an entry for every identity ever watched.
    Each list is replaced, never changed in place, so that a stream
    collected in the middle of :meth:`add`, :meth:`discard` or
    :meth:`emit` changes no list they are reading.
    """

    def __init__(self) -> None:
        self._all: weakref.WeakSet[EventStream] = weakref.WeakSet()
        self._unscoped: weakref.WeakSet[EventStream] = weakref.WeakSet()
        self._by_member: dict[str, list[weakref.KeyedRef[str, EventStream]]] = {}
        # One bound method for every reference's callback, not one per stream.
        self._collected = self._forget_collected

    def add(self, stream: EventStream) -> None:
        """Offer the room's events to ``stream`` from now on."""
        self._all.add(stream)
        member = stream.member
        if member is None:
            self._unscoped.add(stream)
        else:
            refs = [ref for ref in self._by_member.get(member, ()) if ref() is not None]
            refs.append(weakref.KeyedRef(stream, self._collected, member))
            self._by_member[member] = refs
        stream._subscribers = self

    def _forget_collected(self, collected: weakref.KeyedRef[str, EventStream]) -> None:
        """A member's stream was collected (let go without close())."""
        self._keep_live(collected.key, None)

    def _keep_live(self, member: str, leaving: EventStream | None) -> None:
        """Keep ``member``'s references to live streams other than ``leaving``."""
        scoped = self._by_member.get(member)
        if scoped is None:
            return
        live = [ref for ref in scoped if ref() not in (leaving, None)]
        if live:
            self._by_member[member] = live
        else:
            del self._by_member[member]

    def discard(self, stream: EventStream) -> None:
        """Offer ``stream`` nothing more (it closed)."""
        self._all.discard(stream)
        self._unscoped.discard(stream)
        if stream.member is not None:
            self._keep_live(stream.member, stream)

    def emit(self, event: RoomEvent) -> None:
        """Queue ``event`` on every open stream it is for; closed ones are let go."""
        if isinstance(event, MEMBER_SCOPED_EVENTS):
            streams = list(self._unscoped)
            scoped = self._by_member.get(event.identity)
            if scoped is not None:
                alive = [stream for ref in scoped if (stream := ref()) is not None]
                if alive:
                    streams += alive
                else:  # (collected, their callbacks not run yet)
                    self._by_member.pop(event.identity, None)
        else:
            streams = list(self._all)
        for stream in streams:
            if stream.closed:
                self.discard(stream)
            else:
                stream._put(event)

    def clear(self) -> None:
        """Let every stream go (the room closed: its ``RoomClosed`` was their last event)."""
        for stream in list(self._all):
            stream._subscribers = None
        self._all.clear()
        self._unscoped.clear()
        self._by_member.clear()

    def __len__(self) -> int:
        return len(self._all)

    @property
    def members(self) -> int:
        """How many identities have streams of their own (``member=``)."""
        return len(self._by_member)
