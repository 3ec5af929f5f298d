"""The Server: one UDP port, ICE-lite, DTLS-SRTP, shared by every room.

Every datagram is demultiplexed by its first byte (RFC 7983): STUN
(0-3) is matched to a session by the USERNAME's server ufrag and checked
against that session's password; DTLS (20-63) and SRTP/SRTCP (128-191)
are matched by source address, and only addresses that passed a STUN
check are known. Everything else is dropped and counted in
:attr:`Server.drops` by reason.

The socket and its asyncio protocol are :mod:`sfu.transport.port`; DTLS
handshake datagrams wait their turn in :mod:`sfu.transport.handshakes`.
STUN, DTLS and RTCP are sent straight to the socket (not queued behind the
transport); the media fan-out writes to it from :mod:`sfu.relay` with
``sendmmsg``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import errno
import functools
import ipaddress
import logging
import secrets
import socket
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .._values import is_int, is_number, take_token
from ..admission import Admission
from ..auth import check_secret
from ..errors import InvalidSetting, ServerClosed
from ..stats import ServerStats
from .dtls import Certificate

# The handshake limits were defined here before sfu.transport.handshakes: still importable.
from .handshakes import HANDSHAKES_PER_TURN as HANDSHAKES_PER_TURN
from .handshakes import MAX_HANDSHAKE_BACKLOG as MAX_HANDSHAKE_BACKLOG
from .handshakes import MAX_HANDSHAKE_QUEUED_PER_SESSION as MAX_HANDSHAKE_QUEUED_PER_SESSION
from .handshakes import Handshakes
from .ice import (
    ROLE_CONFLICT,
    UNKNOWN_ATTRIBUTE,
    IceCredentials,
    error_response,
    parse_binding_request,
    success_response,
)
from .port import SOCKET_BUFFER as SOCKET_BUFFER
from .port import PortProtocol, format_address, open_socket

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..policy import RoomSettings
    from ..room import Room
    from .session import Session

__all__ = ["Server"]

logger = logging.getLogger(__name__)

Address = tuple[Any, ...]

#: How often the housekeeping task runs (DTLS retransmissions, consent, RTCP).
TICK = 0.25
#: Address proofs (a binding request of the server's, see Session.receive_binding)
#: to addresses other than a session's selected one, per second over all
#: sessions, and the burst allowed: such an address is the client's word
#: only, perhaps a victim's, so what the port may send there is capped.
#: Proofs come with address moves (a nomination elsewhere, a NAT rebinding):
#: a few per join at most. Each session also has a share of its own
#: (SESSION_PROOFS_PER_SECOND in sfu.transport.session), so that one member
#: answering its own proofs cannot spend this and leave others' moves unproven.
PROOFS_PER_SECOND = 100.0
PROOF_BURST = 200.0


def _cancelled_itself(awaited: asyncio.Future[None]) -> bool:
    """After a CancelledError out of ``await shield(awaited)``: was the current
    task cancelled (rather than only ``awaited``, someone else's start)?"""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    if cancelling is not None:
        return bool(cancelling())
    return not awaited.cancelled()


def _release_endpoint(
    sock: socket.socket, endpoint: asyncio.Future[tuple[asyncio.DatagramTransport, Any]]
) -> None:
    """Close what a start that failed or was cancelled made: the transport (if
    the endpoint was made after all) and the socket."""
    if not endpoint.cancelled() and endpoint.exception() is None:
        endpoint.result()[0].close()
    sock.close()


def _announced(host: str, announce: str | Sequence[str] | None) -> tuple[str, ...]:
    """``announce`` (or ``host``) as the addresses answers name, checked."""
    named = "announce" if announce is not None else "host"
    given = [host] if announce is None else [announce] if isinstance(announce, str) else announce
    if isinstance(given, (bytes, bytearray)) or not isinstance(given, Sequence):
        raise InvalidSetting(f"announce must be an IP address or a list of them, got {announce!r}")
    if not 1 <= len(given) <= 2:
        raise InvalidSetting(
            f"announce must name one or two addresses (one per IP version), got {len(given)}"
        )
    addresses: list[str] = []
    for address in given:
        if not isinstance(address, str) or not address:
            raise InvalidSetting(f"{named} must be a non-empty string, got {address!r}")
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise InvalidSetting(
                f"{named} must be an IP address, got {address!r}: answers carry the "
                "address clients send to (bind a host name with announce=<its IP address>)"
            ) from None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            # An IPv4 address in IPv6 form (as a dual-stack socket names IPv4
            # peers): answers name it as IPv4, which clients reach.
            ip = ip.ipv4_mapped
            address = str(ip)
        if ip.is_unspecified:
            raise InvalidSetting(
                f"announce must be the IP address clients reach, not {address!r}: "
                f"binding host={host!r} needs announce=<that address>"
            )
        addresses.append(address)
    if len(addresses) == 2 and (
        ipaddress.ip_address(addresses[0]).version == ipaddress.ip_address(addresses[1]).version
    ):
        raise InvalidSetting(
            f"announce's two addresses must be one IPv4 and one IPv6, got {addresses}"
        )
    return tuple(addresses)


class Server:
    """One process's media endpoint: a single UDP port for all rooms.

    ``host`` and ``port`` are where the socket binds (port 0 picks a free
    one); ``announce`` is the IP address written into SDP answers (defaults
    to ``host``; set it when binding 0.0.0.0, a host name, or behind NAT).
    A socket bound to ``::`` takes both families: ``announce`` may then be
    a list of one IPv4 and one IPv6 address, each written as a host
    candidate, so clients of either family reach the server (the first is
    the answers' default address, their ``c=`` line). A session that
    sends no valid STUN or SRTP for ``consent_timeout`` seconds is closed
    (RFC 7675 consent freshness, seen from the ICE-lite side); once nothing
    authenticated (SRTP or SRTCP) came for a third of it, its checks renew
    consent only if it answers a check of the server's (a check can be replayed).
    A session not connected (ICE check and DTLS handshake done)
    ``handshake_timeout`` seconds after its answer was made is closed, its
    member's seat given back (one whose client goes silent first goes at
    ``consent_timeout`` when that is shorter); each is counted in
    ``handshakes_timed_out``.
    ``token_secret`` is the HS256 key that join tokens are checked with
    (:mod:`sfu.auth`); private rooms need it. ``joins_per_turn`` bounds how
    many joins run in one event-loop iteration (:mod:`sfu.admission`).

    Use ``async with Server(...) as server:`` or ``await server.start()``
    and ``await server.close()``; ``close`` is idempotent and leaves no
    task, socket or session behind.

    Plain attributes, beside the properties below: ``announce_addresses``
    (every address the answers name; an IPv4-mapped ``::ffff:a.b.c.d``
    given is listed as its IPv4 address), ``announce`` (the first: the
    answers' ``c=`` address),
    ``token_secret``, ``consent_timeout`` and ``handshake_timeout`` as
    given, and ``drops``, a :class:`collections.Counter` of the datagrams
    dropped, by reason (the README's "What the server counts").
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        announce: str | Sequence[str] | None = None,
        consent_timeout: float = 30.0,
        handshake_timeout: float = 30.0,
        token_secret: str | bytes | None = None,
        joins_per_turn: int = 4,
    ) -> None:
        self._started = self._closed = False  # first: __del__ reads them even if this raises
        if not is_int(port) or not 0 <= port <= 65535:
            raise InvalidSetting(f"port must be an integer in 0..65535, got {port!r}")
        if not isinstance(host, str) or not host:
            raise InvalidSetting(f"host must be a non-empty string, got {host!r}")
        if not is_int(joins_per_turn) or joins_per_turn < 1:
            raise InvalidSetting(f"joins_per_turn must be an integer >= 1, got {joins_per_turn!r}")
        for name, seconds in (
            ("consent_timeout", consent_timeout),
            ("handshake_timeout", handshake_timeout),
        ):
            if not is_number(seconds) or seconds <= 0:
                raise InvalidSetting(
                    f"{name} must be a positive number of seconds, got {seconds!r}"
                )
        if token_secret is not None:
            if not isinstance(token_secret, (str, bytes)):
                raise InvalidSetting(
                    f"token_secret must be str or bytes, got {type(token_secret).__name__}"
                )
            check_secret(token_secret)  # the same rule (bytes, not characters) as sfu.auth
        self.token_secret = token_secret
        # Joins per event-loop turn (see sfu.admission): a crowd cannot stall the loop.
        self.admission = Admission(joins_per_turn)
        self.host = host
        self.requested_port = port
        #: Every address answers name, one per IP version; the first is
        #: :attr:`announce`.
        self.announce_addresses = _announced(host, announce)
        #: The answers' default address (their ``c=`` line).
        self.announce = self.announce_addresses[0]
        self.consent_timeout = consent_timeout
        self.handshake_timeout = handshake_timeout
        self._proof_tokens = PROOF_BURST
        self._proof_tokens_at = 0.0
        self.certificate = Certificate.generate()
        self.drops: collections.Counter[str] = collections.Counter()
        self.packets_in = 0
        self.bytes_in = 0
        # Upper bounds (seconds) of the join-latency histogram: answer -> DTLS done.
        self.join_buckets = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, float("inf"))
        self.join_counts = [0] * len(self.join_buckets)
        self.join_sum = 0.0
        #: Sessions closed because ICE and DTLS were not done within handshake_timeout.
        self.handshakes_timed_out = 0
        # Media counters of rooms already closed, so totals never go back.
        self._retired_out = {"packets": 0, "dropped": 0, "payload_bytes": 0, "not_forwarded": 0}
        self._rooms: dict[str, Room] = {}
        self._making_room: str | None = None  # the name server.room() is making a Room of
        self._closing_rooms: set[Room] = set()  # closing, no longer in _rooms
        self._sessions_by_ufrag: dict[str, Session] = {}
        self._sessions_by_address: dict[Address, Session] = {}
        # Address proofs under way (see Session.receive_binding), by transaction id.
        self._proofs: dict[bytes, Session] = {}
        #: The ICE-CONTROLLED tie-breaker of the server's own checks (RFC 8445 7.1.1).
        self.tie_breaker = secrets.token_bytes(8)
        # DTLS handshakes under way, their datagrams worked on a few per loop turn.
        self.handshakes = Handshakes(self)
        self._socket: socket.socket | None = None
        self._bound_port = 0  # the socket's port, read once (every answer names it)
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._starting: asyncio.Future[None] | None = None
        self._close_done: asyncio.Event | None = None
        self._closing: asyncio.Task[None] | None = None  # what close() waits for
        # Called once as close() begins, for what the server ends but no room
        # does: the signaling's connections that have not joined.
        self._close_callbacks: list[Callable[[], None]] = []

    # -- life cycle --------------------------------------------------------

    async def start(self) -> Server:
        """Bind the socket and start the timers; idempotent (concurrent calls share one start).

        Raises :class:`~sfu.errors.ServerClosed` once :meth:`close` was
        called, :class:`~sfu.errors.InvalidSetting` when ``announce`` is not
        an address of the socket's family, and ``OSError`` when the socket
        cannot be bound (the port is taken, the host is not this machine's).
        """
        if self._closed:
            raise ServerClosed("this Server is closed; create a new one")
        if self._started:
            return self
        if self._starting is not None:
            other = self._starting
            try:
                await asyncio.shield(other)
            except asyncio.CancelledError:
                if _cancelled_itself(other):
                    raise  # this call was cancelled
                # The other caller's start was cancelled, not this one: start here.
            return await self.start()
        starting = self._starting = asyncio.get_running_loop().create_future()
        try:
            await self._start()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                starting.cancel()
            else:
                starting.set_exception(exc)
                starting.exception()  # retrieved: no warning when nobody else waited
            raise
        else:
            starting.set_result(None)
        finally:
            self._starting = None
        return self

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        sock = open_socket(self.host, self.requested_port, self.announce_addresses)
        # Made in a task of its own and shielded: uvloop's endpoint, cancelled
        # while it waits for connection_made, keeps the transport it made (the
        # socket's fd and port with it) for the loop's life; asyncio's closes
        # it. Cancelled here, the endpoint is let finish and then closed.
        endpoint = self._loop.create_task(
            self._loop.create_datagram_endpoint(lambda: PortProtocol(self), sock=sock)
        )
        try:
            transport, _ = await asyncio.shield(endpoint)
        except BaseException:
            if endpoint.done():
                _release_endpoint(sock, endpoint)
            else:
                endpoint.add_done_callback(functools.partial(_release_endpoint, sock))
            raise
        if self._closed:  # close() ran while the endpoint was being made
            transport.close()
            sock.close()
            raise ServerClosed("the server was closed while it started")
        self._socket = sock
        self._bound_port = int(sock.getsockname()[1])
        self._transport = transport
        self._task = self._loop.create_task(self._housekeeping(), name=f"sfu-server-{self.port}")
        self._started = True
        logger.info(
            "sfu server listening on udp %s (announced %s)",
            format_address((self.host, self.port)),
            " and ".join(self.announce_addresses),
        )

    async def __aenter__(self) -> Server:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (it cannot be started again)."""
        return self._closed

    async def close(self) -> None:
        """Close every room, session and the socket; idempotent (a second call
        returns when the first has finished). Signaling connections close too
        (:mod:`sfu.signaling`): a member's is told its room closed, one that
        has not joined is closed with 1001 ("going away").

        Safe to cancel: a close cancelled half-way has still ended every room
        (members told, recordings finished), session, timer and the socket,
        and what takes a moment more (the rooms' mixers stopping at their next
        frame) finishes in a task of the server's; a later ``close()`` returns
        once that is done too. Never raises.
        """
        if self._closed:
            if self._close_done is not None:
                await self._close_done.wait()
            return
        self._closed = True
        self._close_done = asyncio.Event()
        for callback in self._close_callbacks:
            try:
                callback()
            except Exception:
                logger.exception("a callback of the server's close failed")
        self._close_callbacks.clear()
        rooms: list[Room] = []
        begun: set[Room] = set()
        try:
            starting = self._starting
            if starting is not None:
                # A start under way sees the close and releases what it made.
                try:
                    await asyncio.shield(starting)
                except (ServerClosed, OSError):
                    pass
                except asyncio.CancelledError:
                    if _cancelled_itself(starting):
                        raise  # this close was cancelled (released below all the same)
            rooms = [*self._rooms.values(), *self._closing_rooms]
            # Every room stops at once (members told, name released); only then
            # are their mixers awaited, so a cancelled close leaves none open.
            begun = {room for room in rooms if room._closing.begin("server closed")}
            for room in rooms:
                if room in begun:
                    await room._closing.finish()
                else:
                    await room.close()  # a close under way elsewhere: wait for it
        finally:
            # Even if a room's close failed or this call was cancelled: no
            # room, session, timer or socket is left, and a later close() returns.
            for room in begun:
                room._closing.finish_now()
            for session in list(self._sessions_by_ufrag.values()):
                session.close("server closed")
            task, self._task = self._task, None
            if task is not None:
                task.cancel()
            transport, self._transport = self._transport, None
            if transport is not None:
                transport.close()  # closes the socket once connection_lost has run
            sock, self._socket = self._socket, None
            # The rest waits for tasks to end: in a task of the server's, so
            # that it is done even if this call was cancelled, and a later
            # close() returns only then (it waits for _close_done).
            self._closing = asyncio.get_running_loop().create_task(
                self._close_rest(rooms, task, sock), name="sfu-server-close"
            )
        await asyncio.shield(self._closing)

    async def _close_rest(
        self, rooms: list[Room], task: asyncio.Task[None] | None, sock: socket.socket | None
    ) -> None:
        """The part of :meth:`close` that waits: rooms closing elsewhere, every
        room's mixer task, the timer task, the transport's ``connection_lost``."""
        assert self._close_done is not None
        try:
            for room in rooms:
                try:
                    await room.close()  # closed already, or under way elsewhere: waits for it
                    mixer = room._mixer
                    if mixer is not None:
                        mixer._close_now()  # (a room's close that failed before it)
                        await mixer.wait_stopped()
                except Exception:
                    logger.exception("room %r: closing failed", room.name)
            if task is not None:
                await asyncio.wait((task,))
            # Let the loop run the transport's connection_lost callback.
            await asyncio.sleep(0)
        finally:
            if sock is not None:
                sock.close()
            self._close_done.set()
            logger.info("sfu server closed")

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._started and not self._closed:
            _warn(f"unclosed {self!r}", ResourceWarning, source=self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("listening" if self._started else "new")
        return (
            f"<sfu.Server {state} "
            f"{format_address((self.host, self.port if self._socket else self.requested_port))}>"
        )

    # -- public API --------------------------------------------------------

    @property
    def port(self) -> int:
        """The UDP port bound (the free one picked for ``port=0``).

        Raises :class:`~sfu.errors.ServerClosed` before :meth:`start` and
        after :meth:`close`."""
        if self._socket is None:
            raise ServerClosed(self._not_running())
        return self._bound_port

    @property
    def socket(self) -> socket.socket:
        """The one UDP socket every room's media goes through (for its
        address or options; reading from it would take datagrams from the
        server). Raises :class:`~sfu.errors.ServerClosed` before
        :meth:`start` and after :meth:`close`."""
        if self._socket is None:
            raise ServerClosed(self._not_running())
        return self._socket

    def _not_running(self) -> str:
        return "the server is closed" if self._closed else "the server is not started"

    def room(self, name: str, **settings: Unpack[RoomSettings]) -> Room:
        """The room called ``name``, created on first use.

        Keyword arguments are :class:`~sfu.policy.RoomPolicy` fields
        (``slots``, ``max_speakers``, ``max_listeners``, ``private``,
        ``roster_interval``, ``roster_listeners``, ``hold``,
        ``decision_interval``, ``thresholds``, ``stage_interval``,
        ``close_when_empty``; typed as :class:`~sfu.policy.RoomSettings`).
        Asking for an existing room with no settings returns it whatever its
        settings. Raises :class:`~sfu.errors.InvalidSetting` for settings
        that differ from an existing room's, an unknown or invalid setting
        or name, and :class:`~sfu.errors.ServerClosed` before
        :meth:`start` or after :meth:`close`.
        """
        from ..policy import policy_of
        from ..room import Room

        if self._closed:
            raise ServerClosed("the server is closed")
        self._check_loop()
        if not self._started:
            raise ServerClosed(
                "start the server first: `async with Server() as server` or `await server.start()`"
            )
        if not isinstance(name, str):
            raise InvalidSetting(f"a room name must be a string, got {type(name).__name__}")
        room = self._rooms.get(name)
        if room is not None:
            # Asked for by the backend: no longer a room a signaling adapter
            # made for a join (which a refused join would close again).
            room._closing.made_for_join = False
        policy: dict[str, object] = dict(settings)
        slots = policy.pop("slots", None)
        if (
            room is not None
            and not policy
            and (slots is None or (is_int(slots) and slots == room.policy.slots))
        ):
            return room  # the common case, once per join: no settings to compare
        if slots is not None:
            policy["slots"] = slots
        wanted = policy_of(policy)
        if room is not None:
            if room.policy != wanted:
                # A setting not asked for is compared as its default.
                differ = [
                    f"{field.name} is {getattr(room.policy, field.name)!r}, "
                    f"not {getattr(wanted, field.name)!r}"
                    + ("" if field.name in policy else ", the default, as not given")
                    for field in dataclasses.fields(room.policy)
                    if getattr(room.policy, field.name) != getattr(wanted, field.name)
                ]
                raise InvalidSetting(
                    f"room {name!r} exists with other settings: {'; '.join(differ)} "
                    "(ask with no settings to get it as it is)"
                )
            return room
        self._making_room = name  # (Room refuses to be made otherwise)
        try:
            room = Room(self, name, wanted)
        finally:
            self._making_room = None
        self._rooms[name] = room
        return room

    @property
    def rooms(self) -> dict[str, Room]:
        """The open rooms by name (a copy: safe to iterate while rooms change)."""
        return dict(self._rooms)

    def get_room(self, name: str) -> Room | None:
        """The open room called ``name``, or None; unlike :meth:`room`, never
        creates one, and unlike :attr:`rooms`, copies nothing. Never raises
        (a ``name`` that is not a str names no room: None)."""
        if not isinstance(name, str):
            return None
        return self._rooms.get(name)

    def sessions(self) -> Iterator[Session]:
        """The media sessions (a copy: safe while sessions come and go). Never raises."""
        return iter(list(self._sessions_by_ufrag.values()))

    def stats(self) -> ServerStats:
        """Totals since start: datagrams in, media out (all rooms, closed ones too), drops by reason.

        See :class:`~sfu.stats.ServerStats`. Never raises.
        """
        # Closing rooms too: until they are retired their counts are in no total,
        # and a counter that dips reads as a reset to Prometheus.
        rooms = [*self._rooms.values(), *self._closing_rooms]
        live = [room._out_counts() for room in rooms]
        packets, dropped, payload = (sum(column) for column in zip((0, 0, 0), *live))
        not_forwarded = sum(room.router.packets_dropped for room in rooms)
        return {
            "rooms": len(self._rooms),
            "sessions": len(self._sessions_by_ufrag),
            "participants": sum(len(room.participants) for room in self._rooms.values()),
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            "packets_out": self._retired_out["packets"] + packets,
            "packets_out_dropped": self._retired_out["dropped"] + dropped,
            "payload_bytes_out": self._retired_out["payload_bytes"] + payload,
            # Speakers' RTP the rooms did not forward: malformed, not the
            # negotiated codec, a stray or late SSRC, one another speaker uses, a sequence
            # jump, more packets than a voice sends (PACKET_RATE).
            "rtp_not_forwarded": self._retired_out["not_forwarded"] + not_forwarded,
            "drops": dict(self.drops),
        }

    # -- used by rooms and sessions ----------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the server was started in (its rooms' timers run
        there). Raises :class:`~sfu.errors.ServerClosed` before :meth:`start`."""
        if self._loop is None:
            raise ServerClosed("the server is not started")
        return self._loop

    def _check_loop(self) -> None:
        """InvalidSetting when called from an event loop other than the one
        the server started in (its socket, timers and rooms live there: a
        second ``asyncio.run()``, or a test framework's per-test loop)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return  # plain synchronous use (server.room() before a loop runs it)
        if self._loop is not None and running is not self._loop:
            raise InvalidSetting(
                "this Server was started in another event loop: start, use and close it"
                " in one loop (one asyncio.run)"
            )

    def _new_credentials(self) -> IceCredentials:
        """ICE credentials for a new session whose ufrag (48 random bits) no
        live session has: sessions are found by it, and one registered under
        another's would take that session's checks (and so its consent) over."""
        while True:
            credentials = IceCredentials.generate()
            if credentials.ufrag not in self._sessions_by_ufrag:
                return credentials

    def _register(self, session: Session) -> None:
        if self._closed:
            raise ServerClosed("the server is closed")
        self._sessions_by_ufrag[session.credentials.ufrag] = session

    def _forget_room(self, room: Room) -> None:
        """A closing room gives its name back at once."""
        if self._rooms.get(room.name) is room:
            del self._rooms[room.name]
            self._closing_rooms.add(room)

    def _room_closed(self, room: Room) -> None:
        self._forget_room(room)
        self._closing_rooms.discard(room)
        packets, dropped, payload = room._out_counts()
        self._retired_out["packets"] += packets
        self._retired_out["dropped"] += dropped
        self._retired_out["payload_bytes"] += payload
        self._retired_out["not_forwarded"] += room.router.packets_dropped

    def _observe_join(self, seconds: float) -> None:
        self.join_sum += seconds
        for index, bound in enumerate(self.join_buckets):
            if seconds <= bound:
                self.join_counts[index] += 1
                break

    def _address_checked(self, session: Session, address: Address, proven: bool = False) -> None:
        previous = self._sessions_by_address.get(address)
        if previous is not None and previous is not session:
            # The client's port now belongs to another session (a reconnect).
            previous.checked_addresses.pop(address, None)
            if proven and previous.address == address and previous.state != "closed":
                # The client there answered the new session's proof: the old
                # session's client is gone (a reconnect from the same port, a
                # NAT mapping given to someone else), so its stream stops now
                # rather than when its consent runs out.
                previous.close("its address was taken over by a new session")
        self._sessions_by_address[address] = session

    def _address_forgotten(self, session: Session, address: Address) -> None:
        if self._sessions_by_address.get(address) is session:
            del self._sessions_by_address[address]

    def _session_closed(self, session: Session) -> None:
        if self._sessions_by_ufrag.get(session.credentials.ufrag) is session:
            del self._sessions_by_ufrag[session.credentials.ufrag]
        for address in session.checked_addresses:
            if self._sessions_by_address.get(address) is session:
                del self._sessions_by_address[address]
        self.handshakes.done(session)

    def _send(self, data: bytes, address: Address) -> None:
        """One control datagram (STUN, DTLS, RTCP), straight to the socket.

        Not through the transport: on a full socket buffer asyncio would queue
        it without bound behind the fan-out's traffic. Like the fan-out's
        packets it is dropped and counted then; STUN and DTLS are retried by
        the client, RTCP is periodic.
        """
        sock = self._socket
        if sock is None:
            return
        try:
            sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            self.drops["control datagram: socket buffer full"] += 1
        except OSError as exc:
            reason = "socket buffer full" if exc.errno == errno.ENOBUFS else "send failed"
            self.drops[f"control datagram: {reason}"] += 1
            logger.debug("x control datagram to %s not sent: %s", address, exc)

    # -- the socket --------------------------------------------------------

    def _datagram_received(self, data: bytes, addr: Address) -> None:
        self.packets_in += 1
        self.bytes_in += len(data)
        if not data:
            self.drops["empty datagram"] += 1
            return
        first = data[0]
        if 127 < first < 192:
            session = self._sessions_by_address.get(addr)
            if session is None:
                self.drops["srtp from unchecked address"] += 1
            else:
                session.receive_srtp(data, self.loop.time(), addr)
        elif first < 4:  # STUN (RFC 7983); only binding requests are answered
            if first == 1 and data[1:2] == b"\x01":  # a success response: to a proof
                self._stun_response_received(data, addr)
            else:
                self._stun_received(data, addr)
        elif 19 < first < 64:
            session = self._sessions_by_address.get(addr)
            if session is None:
                self.drops["dtls from unchecked address"] += 1
            elif session.state == "connected":
                session.receive_dtls(data, self.loop.time())
            else:
                self.handshakes.queue(session, data)
        else:
            self.drops["not stun, dtls or rtp"] += 1

    def _stun_received(self, data: bytes, addr: Address) -> None:
        try:
            request = parse_binding_request(data)
        except ValueError as exc:
            self.drops["stun malformed"] += 1
            if logger.isEnabledFor(logging.DEBUG):  # a flood of them makes nothing
                logger.debug("x malformed stun from %s: %s", format_address(addr), exc)
            return
        session = self._sessions_by_ufrag.get(request.local_ufrag)
        if session is None:
            self.drops["stun unknown ufrag"] += 1
            return
        if not request.check(session.credentials, session.remote_ufrag):
            # No error response: answering unauthenticated requests would make
            # the port a reflector; the client retries with the right credentials.
            self.drops["stun bad credentials"] += 1
            session.bad_checks += 1
            return
        if session.copied_check(request.transaction_id, addr):
            # Sent again from elsewhere by someone who saw it go by: no answer.
            self.drops["stun check copied from another address"] += 1
            return
        if request.unknown or request.ice_controlled:
            # Not a check that passed (RFC 8489 6.3.1.1, RFC 8445 7.3.1.1): the
            # client is told why, signed, and its address is not taken.
            code = UNKNOWN_ATTRIBUTE if request.unknown else ROLE_CONFLICT
            self.drops[f"stun check refused with {code}"] += 1
            self._send(error_response(request, code, session.credentials), addr)
            return
        self._send(success_response(request, (addr[0], addr[1]), session.credentials), addr)
        session.receive_binding(request, addr, self.loop.time())

    def _stun_response_received(self, data: bytes, addr: Address) -> None:
        session = self._proofs.get(data[8:20])
        if session is None:
            self.drops["stun response unexpected"] += 1
            return
        session.receive_proof(data[8:20], data, addr, self.loop.time())

    def _proof_budget(self, now: float) -> bool:
        """Spend one of the server's address proofs (PROOFS_PER_SECOND); False
        when none is left."""
        taken, self._proof_tokens = take_token(
            self._proof_tokens, self._proof_tokens_at, now, PROOFS_PER_SECOND, PROOF_BURST
        )
        self._proof_tokens_at = now
        return taken

    def _proof_sent(self, session: Session, transaction_id: bytes) -> None:
        self._proofs[transaction_id] = session

    def _proof_done(self, transaction_id: bytes) -> None:
        self._proofs.pop(transaction_id, None)

    # -- timers --------------------------------------------------------------

    async def _housekeeping(self) -> None:
        loop = self.loop
        next_second = loop.time() + 1.0
        while True:
            await asyncio.sleep(TICK)
            now = loop.time()
            # Each room and session on its own: a bug in one must not stop the
            # timers (retransmissions, deadlines, consent) of every other.
            for room in list(self._rooms.values()):
                try:
                    room._check_stage(now)
                except Exception:
                    logger.exception("room %r: stage check failed", room.name)
            for session in set(self._proofs.values()):
                try:
                    session.resend_proofs(now)
                except Exception:
                    logger.exception("%r: address proofs failed", session)
            self.handshakes.check_timers(now)
            if now >= next_second:
                next_second = now + 1.0
                self._check_consent(now)
                for room in list(self._rooms.values()):
                    try:
                        room._tick(now)
                    except Exception:
                        logger.exception("room %r: its once-a-second work failed", room.name)

    def _check_consent(self, now: float) -> None:
        limit = now - self.consent_timeout
        unchecked_limit = now - self.handshake_timeout
        for session in list(self._sessions_by_ufrag.values()):
            if session.state == "new" and (
                session.created < unchecked_limit or session.last_valid < limit
            ):
                # Never checked (the client is gone, or its UDP blocked): its seat
                # goes back at the handshake's timeout, as a stalled handshake's, or
                # at consent's when that is shorter; either way it is a handshake
                # that timed out, the counter an operator alerts on. (The
                # handshakes' own timer covers sessions past their first check.)
                checks = session.bad_checks
                reason = (
                    f"handshake timed out: {checks} ICE check{'s' if checks > 1 else ''} came"
                    " with the wrong credentials (not this answer's password, or another"
                    " client's ufrag)"
                    if checks
                    else "handshake timed out: no ICE check from the client"
                )
                self.handshakes_timed_out += 1
            elif session.last_valid < limit and session.state != "connected":
                # Checked, then silent before its DTLS handshake was done: also a
                # handshake that timed out (at consent's timeout, the shorter).
                reason = "handshake timed out: the client went silent during the DTLS handshake"
                self.handshakes_timed_out += 1
            elif session.last_valid < limit:
                reason = "consent expired: no valid STUN or SRTP from the client"
            else:
                continue
            try:
                session.close(reason)
            except Exception:
                logger.exception("%r: closing it failed", session)
