"""The JSON-over-WebSocket signaling protocol, independent of any web framework.

One :class:`SignalingSession` per WebSocket; it carries one participant in
one room. The adapter (see :mod:`sfu.signaling.aiohttp`) hands it a
``receive`` coroutine with :meth:`SignalingSession.serve`, which reads the
frames, handles each in turn, and closes the session when the socket
closes, also while a frame is still being handled (a ``join`` waiting its
turn is then abandoned: nobody is told of a member that is already gone).
The session sends through the ``send`` and ``close`` coroutines it was
given. The protocol is documented message by message in ``docs/signaling.md``.

Bad input never breaks the room or other connections: every problem is an
``error`` reply with a code, and the connection goes on. The frames
themselves, read and built, are :mod:`sfu.signaling.messages`.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .._values import refilled, shown, take_token
from ..admission import Admission
from ..auth import Role, signed_identity, verify_token
from ..errors import InvalidSetting, NotAllowed, SfuError
from ..events import (
    DominantSpeakerChanged,
    MixerFailed,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantRemoved,
    RoleChanged,
    RoomEvent,
)
from ..events import RoomClosed as RoomClosedEvent
from ..gate import (
    REPLACED,
    check_claims_before_room,
    joining_via,
    replacing,
)
from .messages import (
    AUDIENCE_PAGE,
    MAX_MESSAGE,
    ProtocolError,
    RoomFrames,
    audience_message,
    encode,
    error_code,
    error_message,
    field,
    joined_message,
    parse_command,
    removed_message,
    room_closed_message,
)
from .refusals import join_refusals

if TYPE_CHECKING:
    from ..participant import Participant
    from ..room import Room
    from ..transport.server import Server

__all__ = [
    "CLOSE_REMOVED",
    "CLOSE_REPLACED",
    "CLOSE_ROOM_CLOSED",
    "CLOSE_SESSION_ENDED",
    "MAX_MESSAGE",
    "SignalingSession",
]

logger = logging.getLogger(__name__)

#: Commands that change room state are told to every member (a mute is a
#: message to each, hands a list every roster interval), so each member (an
#: identity in a room, over its reconnects) may send at most this burst,
#: refilled at this rate per second; the excess is refused.
COMMAND_BURST = 20
COMMAND_RATE = 5.0
# The buckets, per room and identity: kept across a member's reconnects (a new
# connection with a full bucket would undo the limit), for the room's life.
_buckets: weakref.WeakKeyDictionary[Room, dict[str, list[float]]] = weakref.WeakKeyDictionary()
# A room's table is pruned of full buckets (as good as none) past this size.
_BUCKETS_PRUNE_AT = 256
#: What a command costs in the bucket: the ones every member hears of, a
#: page of the audience (up to AUDIENCE_PAGE entries, O(room) to find), and
#: an offer (parsed and answered: up to a few ms for a large one).
_BUDGETED = frozenset(
    {
        "offer",
        "raise_hand",
        "lower_hand",
        "mute",
        "promote",
        "demote",
        "mute_participant",
        "remove",
        "audience",
    }
)
#: Frames of any kind one connection may send: this burst, refilled at this
#: rate per second (a client sends a few a minute). The excess is refused
#: (``rate_limited``) before it is parsed; a client refused a burst's worth
#: before its bucket is full again is disconnected (CLOSE_FLOOD), so one
#: socket cannot keep the event loop, which every room shares, busy.
FRAME_BURST = 100
FRAME_RATE = 50.0
#: A frame the client has not taken within this many seconds (the socket's
#: buffers are full: it stopped reading) ends its session. Without a limit
#: the member's relay, its frame handling and the session would wait on the
#: socket for as long as the client holds the connection open.
SEND_TIMEOUT = 15.0
#: Closing waits this long for the transport's closing handshake, then aborts it.
CLOSE_TIMEOUT = 5.0
#: A connection that has not joined this many seconds after it opened is
#: closed (CLOSE_NO_JOIN), so that idle sockets do not pile up. Generous: a
#: browser may wait on its microphone prompt before it sends ``join``.
JOIN_DEADLINE = 120.0
#: Past JOIN_DEADLINE with a frame under way, the check comes again this much later.
JOIN_RECHECK = 5.0
#: How a member's close reason starts when its room closed (see Room.close).
ROOM_CLOSED_PREFIX = "room closed: "
#: WebSocket close codes (4000-4999 are for applications, RFC 6455 7.4.2).
CLOSE_REMOVED = 4001
CLOSE_ROOM_CLOSED = 4002
CLOSE_SESSION_ENDED = 4003
CLOSE_REPLACED = 4004  # a new connection of the same client took the member over
CLOSE_LEFT = 1000
CLOSE_FLOOD = 1008  # policy violation (RFC 6455 7.4.1): refused frames kept coming
CLOSE_NO_JOIN = 1008  # the same: no join within JOIN_DEADLINE
CLOSE_INTERNAL_ERROR = 1011  # the server failed handling a frame (RFC 6455 7.4.1)
CLOSE_GOING_AWAY = 1001  # "going away" (RFC 6455 7.4.1): the socket or the server closed
#: The reason a connection not joined is closed with when its server closes.
SERVER_CLOSED = "server closed"

_ROLES = ("listener", "speaker", "moderator")

Send = Callable[[str], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]
#: Drop the connection at once, without a closing handshake (the socket's
#: ``abort()``): what ends a client that reads nothing more.
Abort = Callable[[], None]
#: The next frame from the client: text, bytes (answered with an error), or
#: ``None`` once the socket has closed.
Receive = Callable[[], Awaitable["str | bytes | None"]]
RoomFactory = Callable[[str], "Room | None"]


def _relayed(event: RoomEvent) -> bool:
    """Whether a member's relay forwards ``event`` (see SignalingSession._forward_event).

    Of the joins and leaves, only its own reach its stream (``member=``):
    the others come batched, as RosterChanged.
    """
    # (DominantSpeakerChanged is in active_speakers; a mixer's failure is the backend's news.)
    return not isinstance(event, (DominantSpeakerChanged, MixerFailed))


_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


def _kept(
    table: weakref.WeakKeyDictionary[_Key, _Value], key: _Key, make: Callable[[], _Value]
) -> _Value:
    """``table[key]``, made on first use (the table forgets it with ``key``)."""
    value = table.get(key)
    if value is None:
        value = table[key] = make()
    return value


#: Each signaling member's resume key (the ``joined`` reply's ``resume_key``),
#: per room and member number: a join of its identity in its room that carries
#: it (``resume``) replaces it (see SignalingSession._join). Numbers are never
#: reused, so a key never matches a member of another identity or room, nor
#: the member that replaced its own (a key is good for one reconnect). Its
#: session forgets it when it closes. (Numbers and strings, not a weak
#: reference per member: nothing more for the cyclic GC to walk.)
_resume_keys: weakref.WeakKeyDictionary[Room, dict[int, str]] = weakref.WeakKeyDictionary()


def _holds_key(resume: str) -> Callable[[Participant], bool]:
    """Whether a member's resume key is ``resume`` (compared in constant time)."""
    offered = resume.encode("utf-8", "surrogatepass")

    def may_replace(present: Participant) -> bool:
        keys = _resume_keys.get(present.room)
        key = keys.get(present.number) if keys is not None else None
        return key is not None and hmac.compare_digest(key.encode(), offered)

    return may_replace


#: Each room's frames its members are sent alike, encoded once (see RoomFrames).
_FRAMES: weakref.WeakKeyDictionary[Room, RoomFrames] = weakref.WeakKeyDictionary()


def _frames(room: Room) -> RoomFrames:
    return _kept(_FRAMES, room, RoomFrames)


#: Events the members' relays send per event-loop iteration, per server.
#: An event every member is told of (a roster batch) wakes every relay at
#: once: in a room of 1,000, sending it in one iteration held the loop for
#: ~50 ms (a batch of a join storm is ~30 KB a member, written to each
#: socket), and with it the media and the joins.
RELAYS_PER_TURN = 64
_relay_turns: weakref.WeakKeyDictionary[Server, Admission] = weakref.WeakKeyDictionary()

#: Frames whose handling starts per event-loop iteration, per server. A
#: crowd's join frames arrive together (a storm's hundreds in one read of the
#: sockets), and each costs ~50 µs before its join waits for its admission
#: turn (the frame's JSON, the token's signature, the member's event
#: stream): begun in one iteration they held the loop for 30-50 ms. Above
#: the joins admitted per iteration (Server's ``joins_per_turn``; a server
#: admitting more gets that many), so that the admission, not this, paces a
#: crowd.
FRAMES_PER_TURN = 32
_frame_turns: weakref.WeakKeyDictionary[Server, Admission] = weakref.WeakKeyDictionary()


class _SendWatch:
    """The sessions of one server waiting in a send right now, looked over
    every :data:`_SEND_SWEEP` seconds: one that has waited
    :data:`SEND_TIMEOUT` is stalled (:meth:`SignalingSession._stalled`). A
    timer per send would cost an object per frame (cancelled timers stay in
    the loop's queue until it prunes them); here a send costs a set entry."""

    def __init__(self) -> None:
        self.sending: set[SignalingSession] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, session: SignalingSession) -> None:
        self.sending.add(session)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(_SEND_SWEEP, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        now = time.monotonic()
        for session in [s for s in self.sending if now - s._sending_since >= SEND_TIMEOUT]:
            self.sending.discard(session)
            session._stalled(session._sending_task, "a frame", SEND_TIMEOUT)
        if self.sending:
            self._timer = asyncio.get_running_loop().call_later(_SEND_SWEEP, self._sweep)


#: How often a server's sessions waiting in a send are looked over.
_SEND_SWEEP = 1.0
_send_watches: weakref.WeakKeyDictionary[Server, _SendWatch] = weakref.WeakKeyDictionary()


#: Each server's connections being served that have not joined: no room's
#: closing ends them (a member's does), so the server's close does.
_unjoined: weakref.WeakKeyDictionary[Server, set[SignalingSession]] = weakref.WeakKeyDictionary()


def _unjoined_of(server: Server) -> set[SignalingSession]:
    sessions = _unjoined.get(server)
    if sessions is None:
        sessions = _unjoined[server] = set()
        server._close_callbacks.append(functools.partial(_close_unjoined, sessions))
    return sessions


def _close_unjoined(sessions: set[SignalingSession]) -> None:
    """Its server closed: nothing is left to join."""
    for session in list(sessions):
        if not session._closed and session._ending is None:
            session._close_soon(CLOSE_GOING_AWAY, SERVER_CLOSED)
    sessions.clear()


def _send_watch(server: Server) -> _SendWatch:
    return _kept(_send_watches, server, _SendWatch)


def _relay_turn(server: Server) -> Admission:
    return _kept(_relay_turns, server, lambda: Admission(RELAYS_PER_TURN))


def _frame_turn(server: Server) -> Admission:
    return _kept(
        _frame_turns,
        server,
        lambda: Admission(max(FRAMES_PER_TURN, server.admission.per_turn)),
    )


#: Each command's handler, a method of SignalingSession (a table per class, not
#: per connection: bound methods kept per session are objects the cyclic GC
#: walks, ~14 per member, and its pause grows with them).
_HANDLERS = {
    "join": "_join",
    "offer": "_offer",
    "raise_hand": "_raise_hand",
    "lower_hand": "_lower_hand",
    "mute": "_mute",
    "promote": "_promote",
    "demote": "_demote",
    "mute_participant": "_mute_participant",
    "remove": "_remove",
    "leave": "_leave",
    "ping": "_ping",
    "audience": "_audience",
}


class SignalingSession:
    """One client connection speaking ``docs/signaling.md``.

    ``room_factory(name)`` returns the room to join (or ``None`` for "no
    such room"); by default an existing room of ``server``. ``peer`` (the
    client's address) names the connection in the logs, and in the room's
    INFO line about its join. Safe to cancel:
    :meth:`close` ends the event relay task and the participant, and
    abandons a join still waiting for its turn.

    ``send(text)`` and ``close(code, reason)`` raise ``ConnectionError`` (or
    ``RuntimeError``) once the socket is gone; any other exception is taken
    for a bug (logged; the member leaves with "internal error"), so a
    framework's own "disconnected" error (Starlette's
    ``WebSocketDisconnect``) must be turned into one (see the README).

    ``abort()`` drops the connection without a closing handshake. It is
    called when a frame waits longer than :data:`SEND_TIMEOUT` to be sent
    (the client reads no more), or the closing handshake longer than
    :data:`CLOSE_TIMEOUT`; the pending ``send`` or ``close`` must then
    fail or return. Without it, the waiting task is cancelled instead.
    """

    def __init__(
        self,
        server: Server,
        send: Send,
        close: Close,
        *,
        room_factory: RoomFactory | None = None,
        peer: str = "?",
        abort: Abort | None = None,
    ) -> None:
        if getattr(server, "token_secret", None) is None:
            # Said when the app makes its first session, not as a not_allowed
            # to every join (which sfu.js takes for final).
            raise InvalidSetting(
                "the signaling needs a Server with token_secret=...: every join over it"
                " carries a join token (sfu.auth.issue_token)"
            )
        self.server = server
        self._send = send
        self._close_transport = close
        self._abort = abort
        # close() started by the session itself (no join in time; a stall, without abort).
        self._ending: asyncio.Task[None] | None = None
        # While a send waits (see _SendWatch): its server's watch, since when,
        # and in which task.
        self._watch = _send_watch(server)
        self._sending_since = 0.0
        self._sends_waiting = 0
        # Offers the server asked for (role_changed, renegotiate) not yet sent.
        self._offers_asked = 0
        # The JOIN_DEADLINE check, again while a frame (a join) was under way.
        self._join_deadline: asyncio.TimerHandle | None = None
        self._sending_task: asyncio.Task[Any] | None = None
        self._room_factory = room_factory  # None: server.get_room (not kept bound, as above)
        self.peer = peer
        self.participant: Participant | None = None
        self._relay: asyncio.Task[None] | None = None
        # The frame being handled, in a task of its own while serve() reads the
        # next: at rest (nothing handled) a member costs no task but the
        # connection's own and its event relay.
        self._handling: asyncio.Task[None] | None = None
        # The task whose join waits for its turn (close() abandons it, by
        # cancelling that wait), and whether close() did.
        self._join_waiter: asyncio.Task[Any] | None = None
        self._join_abandoned = False
        # Whom the join under way is for, once a token the server signed names
        # it: the line logging its refusal says so (see _refuse).
        self._join_identity: str | None = None
        self._joined_sent: asyncio.Event | None = None
        # Events about this identity before its own ParticipantJoined are about a
        # predecessor of the same name (it left while this join waited its turn).
        self._own_join_seen = False
        self._closed = False
        # The connection's frame bucket (FRAME_BURST, FRAME_RATE), and how many
        # frames it refused since the bucket was last full.
        self._frame_tokens = float(FRAME_BURST)
        self._frame_time = time.monotonic()
        self._frames_refused = 0

    def __repr__(self) -> str:
        who = shown(self.participant.identity) if self.participant else "-"
        return f"<SignalingSession {self.peer} {who}>"

    # -- input ----------------------------------------------------------------

    async def serve(self, receive: Receive) -> None:
        """Handle the client's frames until the socket closes, then close the session.

        ``receive()`` returns the next frame: a text frame as ``str``, a
        binary one as ``bytes`` (answered with ``bad_message``), ``None``
        once the socket is closed. Frames are handled one at a time, in
        order; while one is handled the next is already read (one frame
        ahead, no more), so that a socket closing during a slow frame (a
        ``join`` waiting for its turn in a crowd) closes the session at
        once: the join is abandoned, no member is made. Safe to cancel.
        """
        if self.server.closed:  # nothing to join: told now, not at JOIN_DEADLINE
            await self.close(CLOSE_GOING_AWAY, SERVER_CLOSED)
            return
        loop = asyncio.get_running_loop()
        self._join_deadline = loop.call_later(JOIN_DEADLINE, self._join_deadline_passed)
        _unjoined_of(self.server).add(self)
        try:
            while not self._closed:
                try:
                    # (Awaited here, not in a helper: a coroutine fewer per member at rest.)
                    frame = await receive()
                except Exception as exc:  # a framework's "disconnected": a closed socket
                    logger.debug("%r: receiving failed: %s", self, exc)
                    frame = None
                handling = self._handling
                if handling is not None:
                    if frame is None:
                        # Gone while its frame is handled: a join waiting its turn
                        # ends here, before it makes a member nobody would hear from.
                        await self.close(CLOSE_GOING_AWAY, "signaling connection closed")
                    # In order: the frame before this one first. (Waited, not
                    # awaited: a send given up on cancels its handling.)
                    await asyncio.wait((handling,))
                if frame is None:
                    return
                handling = self._handling = loop.create_task(self._handle_frame(frame))
                handling.add_done_callback(self._handled)
                # The task has the frame (a join's is its offer and token, ~2 KB):
                # neither is held here while the socket rests.
                frame = handling = None
        finally:
            if self._join_deadline is not None:
                self._join_deadline.cancel()
                self._join_deadline = None
            handling = self._handling
            try:
                if handling is not None and not handling.done():
                    handling.cancel()
                    await asyncio.wait((handling,))
            finally:
                # Also when a second cancellation ends that wait: the member
                # must not outlive its connection.
                await self.close(CLOSE_GOING_AWAY, "signaling connection closed")

    def _leave_unjoined(self) -> None:
        """Joined or closed: no longer among the connections its server's close ends."""
        sessions = _unjoined.get(self.server)
        if sessions is not None:
            sessions.discard(self)

    def _join_deadline_passed(self) -> None:
        """JOIN_DEADLINE after the connection opened: close it if it has not
        joined and no frame (a join waiting its turn) is being handled."""
        self._join_deadline = None
        if self._closed or self.participant is not None:
            return
        if self._handling is not None:  # a join waiting its turn, perhaps: look again
            self._join_deadline = asyncio.get_running_loop().call_later(
                JOIN_RECHECK, self._join_deadline_passed
            )
            return
        logger.info("%r: no join within %g s: closing", self, JOIN_DEADLINE)
        self._close_soon(CLOSE_NO_JOIN, f"no join within {JOIN_DEADLINE:g} s")

    def _close_soon(self, code: int, reason: str) -> None:
        """Close in a task of the session's own (from a timer: nobody awaits
        it), whose failure is logged now, not left for the garbage collector."""
        self._ending = asyncio.get_running_loop().create_task(self.close(code, reason))
        self._ending.add_done_callback(self._close_ended)

    def _close_ended(self, task: asyncio.Task[None]) -> None:
        self._log_failure(task, "closing the connection")

    def _log_failure(self, task: asyncio.Task[Any], what: str) -> None:
        """Log ``task``'s exception, if it ended with one (a task nobody awaits)."""
        if not task.cancelled() and task.exception() is not None:
            logger.error("%r: %s failed", self, what, exc_info=task.exception())

    def _handled(self, task: asyncio.Task[None]) -> None:
        # (_handle_frame ends every error itself: the task ends with None, or cancelled.)
        if self._handling is task:
            self._handling = None

    async def _handle_frame(self, frame: str | bytes) -> None:
        """Handle one frame. What escapes the handling (a framework's send
        failing in a way :meth:`send_text` does not expect) ends the session,
        logged, rather than staying in a task nobody awaits while the session
        goes on."""
        try:
            if isinstance(frame, str):
                await self.handle(frame)
            elif await self._frame_admitted():  # a frame of any kind counts
                await self._error("bad_message", "send text frames (JSON)")
        except Exception:
            await self._end_after_failure("handling a frame")

    async def _end_after_failure(self, what: str) -> None:
        """Log the exception being handled and end the session with 1011."""
        logger.exception("%r: %s failed; the session ends", self, what)
        try:
            await self.close(CLOSE_INTERNAL_ERROR, "internal error")
        except Exception:
            logger.exception("%r: closing after that failed too", self)

    async def handle(self, text: str) -> None:
        """Handle one text frame; replies (or an error) are sent before it returns."""
        try:
            await self._handle(text)
        finally:
            # However the join's reply went (sent, failed, an error instead),
            # the relay must not wait for it for ever.
            if self._joined_sent is not None:
                self._joined_sent.set()

    def _take_frame(self) -> bool:
        """Whether the connection's frame bucket lets one more frame in."""
        now = time.monotonic()
        tokens = refilled(self._frame_tokens, self._frame_time, now, FRAME_RATE, FRAME_BURST)
        self._frame_time = now
        if tokens < 1.0:
            self._frame_tokens = tokens
            return False
        if tokens >= FRAME_BURST:
            self._frames_refused = 0  # calm again: its refusals are forgiven
        self._frame_tokens = tokens - 1.0
        return True

    async def _frame_admitted(self) -> bool:
        """Whether the frame limit lets the frame in; if not, it is refused
        (or the connection, flooding, closed)."""
        if self._take_frame():
            return True
        self._frames_refused += 1
        if self._frames_refused > FRAME_BURST:
            logger.warning("%r: disconnected, it sent on past %d refused frames", self, FRAME_BURST)
            await self.close(CLOSE_FLOOD, "too many messages")
            return False
        await self._error(
            "rate_limited",
            f"too many messages: at most {FRAME_RATE:g} per second after a burst of "
            f"{FRAME_BURST}; this one was not read",
        )
        return False

    async def _handle(self, text: str) -> None:
        message_id: Any = None
        message: dict[str, Any] = {}
        kind: Any = None
        if not await self._frame_admitted():
            return
        try:
            # Safe to cancel (the session closing): the frame is then not handled.
            await _frame_turn(self.server).turn()
            message = parse_command(text)
            message_id = message.get("id")
            kind = message.get("type")
            name = _HANDLERS.get(kind) if isinstance(kind, str) else None
            if name is None:
                raise ProtocolError("bad_message", f"unknown message type {kind!r}")
            if kind == "join" and self._closed and self.participant is None:
                # Closed while the frame waited for its turn to begin.
                raise ProtocolError("not_joined", "the connection closed during the join")
            if kind != "ping" and (
                self._closed or (self.participant is not None and self.participant.closed)
            ):
                # A late frame: the member is gone, and a namesake who joined
                # again since must not be acted for (by=identity) with its rights.
                raise ProtocolError(
                    "session_ended", f"this session has ended: {kind!r} was not done; join again"
                )
            if kind not in ("join", "ping") and self.participant is None:
                raise ProtocolError("not_joined", f"send 'join' before {kind!r}")
            if kind in _BUDGETED and not (kind == "offer" and self._owed_offer()):
                self._spend_token(kind)
            reply = await getattr(self, name)(message)
        except ProtocolError as exc:
            await self._refuse(kind, message, exc.code, str(exc), message_id)
            return
        except SfuError as exc:
            await self._refuse(kind, message, error_code(exc), str(exc), message_id)
            return
        except KeyError as exc:
            await self._refuse(
                kind,
                message,
                "not_found",
                f"no participant {exc.args[0]!r} in this room" if exc.args else "not found",
                message_id,
            )
            return
        except Exception:  # a bug must not take the connection (or the room) down
            logger.exception("%r: error handling a message", self)
            await self._error("internal", "internal error (logged on the server)", message_id)
            return
        if message_id is not None:
            reply["id"] = message_id
        await self.send(reply)  # after a join, the room's events follow (handle())

    def _owed_offer(self) -> bool:
        """Whether the server asked this client for the offer it sends (a
        ``role_changed`` with ``renegotiate``): that one is not the client's
        to spend, and refused it would leave a promoted member mute."""
        if self._offers_asked:
            self._offers_asked -= 1
            return True
        return False

    def _spend_token(self, kind: str) -> None:
        assert self.participant is not None  # fanned-out commands need a join
        now = time.monotonic()
        table = _buckets.setdefault(self.participant.room, {})
        bucket = table.get(self.participant.identity)
        if bucket is None:
            if len(table) >= _BUCKETS_PRUNE_AT:
                for identity, (tokens, at) in list(table.items()):
                    if refilled(tokens, at, now, COMMAND_RATE, COMMAND_BURST) >= COMMAND_BURST:
                        del table[identity]
            bucket = table[self.participant.identity] = [float(COMMAND_BURST), now]
        taken, bucket[0] = take_token(bucket[0], bucket[1], now, COMMAND_RATE, COMMAND_BURST)
        bucket[1] = now
        if not taken:
            raise ProtocolError(
                "rate_limited",
                f"too many commands: at most {COMMAND_RATE:g} per second "
                f"(bursts of {COMMAND_BURST}); {kind!r} was not done",
            )

    # -- commands ---------------------------------------------------------------

    async def _join(self, message: dict[str, Any]) -> dict[str, Any]:
        self._join_identity = None
        if self.participant is not None:
            raise ProtocolError(
                "already_joined", "this connection has already joined; open another to join again"
            )
        name = field(message, "room", str)
        token = field(message, "token", str)
        offer = field(message, "offer", str)
        mixed = field(message, "mixed", bool, required=False)  # None: Room.join decides
        # A lesser role than the token's (a speaker joining to listen first).
        role = field(message, "role", str, required=False)
        if role is not None and role not in _ROLES:
            raise ProtocolError("bad_message", f"'role' must be one of {', '.join(_ROLES)}")
        # The resume key of this client's earlier member (a reconnect): that
        # member, if still in (its old connection half-open), is replaced.
        resume = field(message, "resume", str, required=False)
        if self.server.token_secret is None:
            raise NotAllowed("this server has no token_secret: signaling joins need a token")
        existed = self.server.get_room(name) is not None
        identity = signed_identity(self.server.token_secret, token, room=name) if existed else None
        if identity is None:
            # The whole check first: a bad token must not create the room it
            # names, nor wait a turn with the real joins.
            try:
                claims = verify_token(self.server.token_secret, token, room=name)
            except NotAllowed:
                # Whom a token the server signed names (an expired one, say)
                # is worth its refusal's log line; a forged token names nobody.
                self._join_identity = signed_identity(self.server.token_secret, token, room=name)
                raise
            identity = claims.identity
            if not existed:
                self._join_identity = identity
                # Nor a good one whose join a room made now (nothing decided in
                # it) would refuse: an identity no member can have, a role its
                # token does not grant (a listener's, asking for the stage). In
                # a room that exists, a moderator's promotion may allow that
                # role: the gate decides there.
                check_claims_before_room(claims, cast("Role | None", role))
        # Else only its signature was checked (a few µs); the room checks the
        # rest in the join's admission turn (Gate.join), as it always does: in
        # a crowd whose join frames arrive together, PyJWT's ~80 µs then runs
        # for a few joins per loop iteration, not for every frame read in one.
        self._join_identity = identity
        room = (self._room_factory or self.server.get_room)(name)
        if room is None:
            raise ProtocolError("not_found", f"no room {name!r}")
        if not existed:
            room._closing.made_for_join = True  # refused, it leaves no room behind
        # Subscribe first: no event between join and relay is lost. Only what
        # the relay forwards is queued: others' joins and leaves reach the
        # client batched (RosterChanged), and queued they would fill the queue
        # in a join storm and end this session as fallen behind (and offered
        # to every member's stream, a storm's joins would cost N² calls).
        events = room.events(accept=_relayed, member=identity)
        # close() cancels this wait: a connection that goes away while its
        # join waits its turn makes no member (nobody is told of someone
        # already gone, and no seat or session is held for it).
        self._join_waiter = asyncio.current_task()
        try:
            via = "WebSocket" if self.peer == "?" else f"WebSocket from {self.peer}"
            with joining_via(via), replacing(_holds_key(resume) if resume else None):
                participant = await room.join(offer, token=token, mixed=mixed, role=role)
        except BaseException as exc:
            events.close()
            if isinstance(exc, asyncio.CancelledError) and self._join_abandoned:
                task = asyncio.current_task()
                # Python 3.11+: not cancelled by anyone else too. On 3.10 that
                # cannot be told: a second cancel landing with the abandonment
                # ends as this ProtocolError too (serve(), the one caller that
                # cancels this task, does not wait for its outcome then).
                uncancel = getattr(task, "uncancel", None)
                if uncancel is None or uncancel() == 0:
                    raise ProtocolError(
                        "not_joined", "the connection closed during the join"
                    ) from None
            raise
        finally:
            self._join_waiter = None
        self.participant = participant
        self._leave_unjoined()
        self._join_identity = None
        # The `joined` snapshot below is the room as it is now, built before
        # anything else runs. The events queued while this join waited its turn
        # (in a join storm, one per join ahead of it: more than the queue holds)
        # are in it already: forget them, and any they pushed out, so that they
        # do not end the session as "fell behind". Its own ParticipantJoined and
        # what came with it (a renegotiation asked for, a mute that outlived a
        # reconnect) stay, as does everything that happens from now on.
        identity = participant.identity
        events._forget_before(
            lambda event: isinstance(event, ParticipantJoined) and event.identity == identity
        )
        # Events go out only after the `joined` reply: a large reply can yield
        # while it is written (compression), and the client must read it first.
        self._joined_sent = asyncio.Event()
        self._relay = asyncio.get_running_loop().create_task(
            self._relay_events(room, participant, events),
            name=f"sfu-signaling-{participant.identity}",
        )
        self._relay.add_done_callback(lambda _: events.close())  # also if it never ran
        # (The room logged the join at INFO, saying it came by this WebSocket.)
        logger.debug("%r joined room %r as %s", self, room.name, participant.role)
        reply = joined_message(room, participant, _frames(room))
        # A new key for each member: the one this join may have used is spent.
        keys = _kept(_resume_keys, room, dict)
        reply["resume_key"] = keys[participant.number] = secrets.token_urlsafe(16)
        return reply

    async def _offer(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.participant is not None
        answer = await self.participant.renegotiate(field(message, "sdp", str))
        return {"type": "answer", "sdp": answer}

    async def _raise_hand(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.participant is not None
        self.participant.raise_hand()
        return {"type": "ok"}

    async def _lower_hand(self, message: dict[str, Any]) -> dict[str, Any]:
        participant = self.participant
        assert participant is not None
        identity = field(message, "identity", str, required=False, default=participant.identity)
        participant.room.lower_hand(identity, by=participant.identity)
        return {"type": "ok"}

    async def _mute(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.participant is not None
        self.participant.set_self_muted(field(message, "muted", bool))
        return {"type": "ok"}

    async def _promote(self, message: dict[str, Any]) -> dict[str, Any]:
        participant = self.participant
        assert participant is not None
        role = field(message, "role", str, required=False, default="speaker")
        if role not in ("speaker", "moderator"):
            raise ProtocolError("bad_message", "'role' must be 'speaker' or 'moderator'")
        await participant.room.promote(
            field(message, "identity", str), role=role, by=participant.identity
        )
        return {"type": "ok"}

    async def _demote(self, message: dict[str, Any]) -> dict[str, Any]:
        participant = self.participant
        assert participant is not None
        role = field(message, "role", str, required=False, default="listener")
        if role not in ("listener", "speaker"):
            raise ProtocolError("bad_message", "'role' must be 'listener' or 'speaker'")
        await participant.room.demote(
            field(message, "identity", str), role=role, by=participant.identity
        )
        return {"type": "ok"}

    async def _mute_participant(self, message: dict[str, Any]) -> dict[str, Any]:
        participant = self.participant
        assert participant is not None
        identity = field(message, "identity", str)
        if field(message, "muted", bool):
            await participant.room.mute(identity, by=participant.identity)
        else:
            await participant.room.unmute(identity, by=participant.identity)
        return {"type": "ok"}

    async def _remove(self, message: dict[str, Any]) -> dict[str, Any]:
        participant = self.participant
        assert participant is not None
        identity = field(message, "identity", str)
        reason = field(message, "reason", str, required=False, default="removed by a moderator")
        ban = field(message, "ban", bool, required=False, default=False)
        await participant.room.remove(identity, reason[:200], by=participant.identity, ban=ban)
        return {"type": "ok"}

    async def _leave(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.participant is not None
        await self.send({"type": "ok", **({"id": message["id"]} if "id" in message else {})})
        await self.close(CLOSE_LEFT, "left")
        return {"type": "ok"}

    async def _ping(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"type": "pong"}

    async def _audience(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.participant is not None
        offset = field(message, "offset", int, required=False, default=0)
        limit = field(message, "limit", int, required=False, default=AUDIENCE_PAGE)
        after = field(message, "after", int, required=False, default=None)
        if offset < 0 or not 1 <= limit <= AUDIENCE_PAGE:
            raise ProtocolError(
                "bad_message",
                f"'offset' must be >= 0 and 'limit' between 1 and {AUDIENCE_PAGE}",
            )
        if after is not None and (after < 0 or "offset" in message):
            raise ProtocolError(
                "bad_message",
                "'after' must be >= 0 (the 'next' of an earlier audience reply), without 'offset'",
            )
        return audience_message(self.participant.room, offset, limit, after)

    # -- output -------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        """Send one protocol message (a dict) as a JSON frame; see :meth:`send_text`."""
        await self.send_text(encode(message))

    async def send_text(self, text: str) -> None:
        """Send one frame already encoded; a client that takes none for
        :data:`SEND_TIMEOUT` loses its connection (see :meth:`_stalled`)."""
        if self._closed:
            return
        # Watched (not wait_for: a task per frame would cost more than the
        # frame). The relay and a frame's handling may send at once: the
        # clock runs from the last time a send got through.
        watch = self._watch
        if not self._sends_waiting:
            self._sending_since = time.monotonic()
            watch.add(self)
        self._sends_waiting += 1
        self._sending_task = asyncio.current_task()
        try:
            await self._send(text)
        except (ConnectionError, RuntimeError) as exc:  # the socket went away under us
            logger.debug("%r: send failed: %s", self, exc)
        finally:
            self._sends_waiting -= 1
            if self._sends_waiting:
                self._sending_since = time.monotonic()  # this one got through
            else:
                watch.sending.discard(self)
                self._sending_task = None

    def _stalled(self, task: asyncio.Task[Any] | None, what: str, seconds: float) -> None:
        """``what`` waited ``seconds`` for the client: drop its connection.

        Aborting the socket makes the waiting send or close fail at once; the
        session then ends as for any closed socket (``serve`` reads ``None``).
        """
        logger.info(
            "%r: %s waited %g s for the client (it reads no more): dropping the connection",
            self,
            what,
            seconds,
        )
        if self._abort is not None:
            self._abort()
            return
        # The sends that may wait: the relay's and a frame's handling.
        for waiting in (task, self._relay, self._handling):
            if waiting is not None and not waiting.done():
                waiting.cancel()
        if not self._closed:
            # The session ends as for a closed socket (close() is bounded the same way).
            self._close_soon(CLOSE_SESSION_ENDED, "the client reads no more")

    def _relay_ended(self, relay: asyncio.Task[Any]) -> None:
        self._log_failure(relay, "the event relay")

    async def _refuse(
        self, kind: Any, command: dict[str, Any], code: str, message: str, message_id: Any
    ) -> None:
        """The error reply to a command; a refused join is also counted and
        logged at INFO (the room it asked for, for whom when its token named
        someone, why; never the token) at a bounded rate
        (:mod:`sfu.signaling.refusals`), other refusals at DEBUG."""
        if kind == "join":
            identity, self._join_identity = self._join_identity, None
            join_refusals(self.server).refused(
                logger,
                "websocket",
                code,
                "%r: join of room %s%s refused: %s: %s",
                self,
                f"{command.get('room')!r:.80}",
                "" if identity is None else f" as {shown(identity):.80}",
                code,
                message,
            )
        await self._error(code, message, message_id)

    async def _error(self, code: str, message: str, message_id: Any = None) -> None:
        logger.debug("%r: error sent: %s: %s", self, code, message)
        await self.send(error_message(code, message, message_id))

    async def _relay_events(self, room: Room, participant: Participant, events: Any) -> None:
        """Forward the room's events this member needs, until it or the room ends."""
        try:
            if self._joined_sent is not None:
                await self._joined_sent.wait()
                self._joined_sent = None  # done with: not kept for the member's life
            turns = _relay_turn(self.server)
            async for event in events:
                await turns.turn()
                if await self._forward_event(event, participant):
                    return
                if events.dropped:
                    # This client read too slowly and lost events: its roster or
                    # hands would stay wrong. It joins again and starts fresh.
                    await self._error(
                        "session_ended",
                        f"your connection fell behind ({events.dropped} room events lost); "
                        "join again",
                    )
                    await self.close(CLOSE_SESSION_ENDED, "fell behind")
                    return
        except Exception:
            # (A framework's send failing in a way send_text does not expect.)
            # Without its events the member's client would go on with a stale
            # room: the session ends, as when a frame's handling fails.
            await self._end_after_failure("relaying the room's events")
        finally:
            events.close()

    async def _forward_event(self, event: RoomEvent, participant: Participant) -> bool:
        """Send one event; True when the connection must end."""
        if (
            isinstance(event, RoleChanged)
            and event.renegotiate
            and event.identity == participant.identity
        ):
            self._offers_asked += 1  # (before its client can read the request)
        if isinstance(event, ParticipantJoined) and event.identity == participant.identity:
            self._own_join_seen = True
        text = _frames(participant.room).event_text(event, participant)
        if text is not None:
            await self.send_text(text)
        elif (
            isinstance(event, ParticipantRemoved)
            and event.identity == participant.identity
            and self._own_join_seen  # not a predecessor of the same name, removed meanwhile
        ):
            await self.send(removed_message(event))
            await self.close(CLOSE_REMOVED, "removed")
            return True
        elif (
            isinstance(event, ParticipantLeft)
            and event.identity == participant.identity
            and self._own_join_seen  # not a predecessor of the same name leaving late
        ):
            # Every way out ends here: removal was told above; a closing room
            # closes its members first; anything else (consent, DTLS) ends the session.
            if event.reason.startswith(ROOM_CLOSED_PREFIX):
                await self.send(room_closed_message(event.reason[len(ROOM_CLOSED_PREFIX) :]))
                await self.close(CLOSE_ROOM_CLOSED, "room closed")
            elif event.reason == REPLACED:
                # Its client joined again on a new connection (this one is
                # half-open, most likely): told, should it still hear.
                await self.send(
                    error_message(
                        "replaced",
                        "a new connection joined with this session's resume key "
                        "and took your place in the room",
                    )
                )
                await self.close(CLOSE_REPLACED, REPLACED)
            else:
                await self.send(
                    error_message("session_ended", f"your session ended: {event.reason}")
                )
                await self.close(CLOSE_SESSION_ENDED, "session ended")
            return True
        elif isinstance(event, RoomClosedEvent):
            await self.send(room_closed_message(event.reason))
            await self.close(CLOSE_ROOM_CLOSED, "room closed")
            return True
        return False

    # -- end ------------------------------------------------------------------------

    async def close(self, code: int = CLOSE_LEFT, reason: str = "") -> None:
        """Leave the room and close the transport; idempotent, safe to cancel."""
        if self._closed:
            return
        self._closed = True
        self._leave_unjoined()
        waiter = self._join_waiter
        if waiter is not None and waiter is not asyncio.current_task():
            # A join waiting for its turn (nothing is made before it): abandoned.
            self._join_abandoned = True
            waiter.cancel()
        participant = self.participant
        if participant is not None:
            keys = _resume_keys.get(participant.room)
            if keys is not None:
                keys.pop(participant.number, None)  # it replaces nobody from now on
            await participant.close("left" if code == CLOSE_LEFT else reason or "signaling closed")
        cancelled = False
        relay = self._relay
        if relay is not None and relay is not asyncio.current_task():
            relay.cancel()
            # Waited, not awaited: `await relay` raises the relay's CancelledError,
            # which cannot be told from a cancellation of this close (swallowed,
            # the caller's would be lost). This raises only for the latter; the
            # transport is closed all the same (not left open behind a member
            # gone), then the cancellation goes on.
            try:
                await asyncio.wait((relay,))
            except asyncio.CancelledError:
                cancelled = True
                relay.add_done_callback(self._relay_ended)  # its failure is still logged
            else:
                # (The relay ends its own errors; never stop short of the transport.)
                self._relay_ended(relay)
        watchdog = asyncio.get_running_loop().call_later(
            CLOSE_TIMEOUT, self._stalled, asyncio.current_task(), "closing", CLOSE_TIMEOUT
        )
        try:
            await self._close_transport(code, reason)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            watchdog.cancel()
        if cancelled:
            raise asyncio.CancelledError
