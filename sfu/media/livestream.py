"""The room mix as a live Ogg/Opus HTTP stream, for audiences beyond the room's cap.

Mount the aiohttp handler::

    app.router.add_get("/rooms/{room}/live.ogg", live_stream_handler(server))

and any number of clients (an ``<audio src=".../live.ogg">`` element,
ffplay, VLC) get ``200 audio/ogg`` with chunked transfer encoding: the
OpusHead and OpusTags pages first, then pages of the mix as the Mixer
encodes it (one page per ``packets_per_page`` packets, 100 ms by default).
Each client gets a well-formed Ogg stream of its own (page sequence from 0,
granule positions counting what it was sent), paginated from the same
shared Opus packets: the encode happens once per room.

A client that joins a running mix starts mid-stream, where a decoder
needs a run-up to converge (RFC 7845 section 4.2: at least 3840 samples,
80 ms): its first audio page starts with the mix's last four packets,
and its OpusHead's pre-skip (the encoder's delay, 312 samples with
libopus, plus those 3840) has them decoded and discarded. Its first
sample played is the audio of the first packet mixed after it joined, as
for the client that started the mix (whose pre-skip is the encoder's
alone).

Slow clients: every client has a bounded queue of packets, at most
``max_lag`` seconds (2 s) of audio. A client that falls that far behind
skips ahead: its queue is emptied and it continues from the live edge (an
audible cut, and still a valid Ogg/Opus stream). A client that has had to
skip ``max_skips`` times (5) is disconnected. Nothing is ever buffered
without bound: memory per client is at most ``max_lag`` of audio plus what
aiohttp holds for one write.

Private rooms need a join token, as ``Authorization: Bearer <token>`` or,
since ``<audio>`` cannot set headers, ``?token=<token>`` (aiohttp's access
log writes that down with the URL: keep the ``aiohttp.access`` logger above
INFO, or log without the query). A stream opened
with a token whose holder is then banned from the room (``room.remove(...,
ban=True)``) ends at its next page, like a stream of a closed room.

The live stream is a Mixer consumer: the first client starts the room's
mixer, the last one leaving lets it stop. The room closing ends every
stream (with an end-of-stream page).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from .._values import is_int, is_number, shown
from ..auth import verify_token
from ..errors import InvalidSetting, NotAllowed
from .mixer import PTIME, MixOutput
from .ogg import OggWriter, opus_tags, packet_samples

if TYPE_CHECKING:
    from ..room import Room
    from ..transport.server import Server
    from .mixer import Mixer

__all__ = ["LiveClient", "LiveStream", "live_stream_handler"]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LiveClient:
    """One HTTP client of a :class:`LiveStream`: a bounded packet queue and its Ogg pages."""

    def __init__(
        self, stream: LiveStream, serial: int, opus_head: bytes, preroll: Sequence[bytes] = ()
    ) -> None:
        self.stream = stream
        # Kept: the stream's mixer output may be gone (the room closed) by the
        # time the handler writes the headers.
        self._opus_head = opus_head
        # The mix's packets before the first one queued, for its decoder to
        # converge on (the OpusHead's pre-skip discards them).
        self._preroll = list(preroll)
        self.writer = OggWriter(serial, packets_per_page=255)
        self.queue: collections.deque[tuple[bytes, int]] = collections.deque()
        self.skips = 0
        self.sent_packets = 0
        self.closed = False
        #: Called when the client is dropped for being too slow: its writer may be
        #: blocked on a peer that does not read, so the connection must be cut.
        self.on_drop: Callable[[], None] | None = None
        #: Asked before each read's pages are made: True ends the stream there
        #: (what is queued is dropped; the end-of-stream page follows).
        self.end_if: Callable[[], bool] | None = None
        self._granule = 0
        self._wake = asyncio.Event()

    def headers(self) -> bytes:
        """The OpusHead and OpusTags pages, first thing on the wire (the pre-roll
        packets go on the first audio page, before the queued ones)."""
        out = self.writer.headers(self._opus_head, opus_tags("sfu live"))
        for packet in self._preroll:
            self._granule += packet_samples(packet)
            self.sent_packets += 1
            out += self.writer.write(packet, self._granule)
        self._preroll = []
        return out

    def _put(self, packet: bytes, samples: int) -> None:
        queue = self.queue
        if len(queue) >= self.stream.max_packets:
            # Too far behind: skip to the live edge, or give up on this client.
            queue.clear()
            self.skips += 1
            self.stream.skipped += 1
            if self.skips >= self.stream.max_skips:
                logger.info("live stream %r: dropping a client too slow to follow", self.stream)
                self.close()
                if self.on_drop is not None:
                    self.on_drop()
                return
        queue.append((packet, samples))
        if len(queue) >= self.stream.packets_per_page:
            self._wake.set()

    def close(self) -> None:
        """End this client's stream (its reader gets the EOS page, then ``b""``)."""
        if not self.closed:
            self.closed = True
            self._wake.set()
            self.stream._remove(self)

    async def read(self) -> bytes:
        """The next pages to send; ``b""`` once the stream has ended and all was read."""
        if self.closed and not self.queue:
            return self.writer.close()
        await self._wake.wait()
        self._wake.clear()
        if not self.closed and self.end_if is not None and self.end_if():
            self.queue.clear()
            self.close()
        out = []
        while self.queue:
            packet, samples = self.queue.popleft()
            self._granule += samples
            self.sent_packets += 1
            out.append(self.writer.write(packet, self._granule))
        out.append(self.writer.flush())
        if self.closed:
            out.append(self.writer.close())
        return b"".join(out)


class LiveStream:
    """The room mix fanned out to HTTP clients; one per room, alive while it has clients."""

    def __init__(
        self,
        mixer: Mixer,
        *,
        max_lag: float = 2.0,
        packets_per_page: int = 5,
        max_skips: int = 5,
    ) -> None:
        _check_settings(max_lag, packets_per_page, max_skips)
        self.mixer = mixer
        self.max_lag = max_lag
        self.packets_per_page = packets_per_page
        self.max_packets = max(1, round(max_lag / PTIME))
        self.max_skips = max_skips
        self.clients: list[LiveClient] = []
        self.skipped = 0
        self._serial = secrets.randbits(32)
        self._output: MixOutput | None = None

    def __repr__(self) -> str:
        return f"<LiveStream {self.mixer.name!r} {len(self.clients)} clients>"

    @property
    def opus_head(self) -> bytes:
        """The mix encoder's OpusHead (a client that joined a running mix gets
        one with a longer pre-skip, covering its run-up: see ``preroll``)."""
        assert self._output is not None
        return self._output.opus_head

    def subscribe(self) -> LiveClient:
        """A new client; the first one attaches the stream to the mixer."""
        if self._output is None:
            self._output = self.mixer.add_output(self._on_packet, on_close=self._on_mixer_closed)
        client = LiveClient(self, self._serial, *self._output.preroll())
        self.clients.append(client)
        return client

    def _remove(self, client: LiveClient) -> None:
        if client in self.clients:
            self.clients.remove(client)
        if not self.clients and self._output is not None:
            self._output.close()
            self._output = None

    def _on_packet(self, packet: bytes, samples: int, now: float) -> None:
        for client in list(self.clients):
            client._put(packet, samples)

    def _on_mixer_closed(self) -> None:
        self._output = None
        for client in list(self.clients):
            client.close()

    def close(self) -> None:
        """End every client's stream."""
        for client in list(self.clients):
            client.close()


def _check_settings(max_lag: float, packets_per_page: int, max_skips: int) -> None:
    """:class:`~sfu.errors.InvalidSetting` naming the first bad setting."""
    if not is_int(packets_per_page) or packets_per_page < 1:
        raise InvalidSetting(f"packets_per_page must be an integer >= 1, got {packets_per_page!r}")
    if not is_int(max_skips) or max_skips < 1:
        raise InvalidSetting(f"max_skips must be an integer >= 1, got {max_skips!r}")
    if not is_number(max_lag):
        raise InvalidSetting(f"max_lag must be a finite number of seconds, got {max_lag!r}")
    if max_lag < PTIME * packets_per_page:
        raise InvalidSetting(
            f"max_lag must hold at least one page of packets ({packets_per_page} x "
            f"{PTIME * 1000:.0f} ms = {PTIME * packets_per_page:g} s), got {max_lag!r}"
        )


def _token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token") or None


def live_stream_handler(
    server: Server,
    *,
    max_lag: float = 2.0,
    packets_per_page: int = 5,
    max_skips: int = 5,
    public: bool = False,
    max_clients: int = 1000,
) -> Handler:
    """A GET handler streaming room ``{room}``'s mix as chunked ``audio/ogg``.

    Mount it on a path with a ``{room}`` part, e.g.
    ``/rooms/{room}/live.ogg``. 404 for an unknown room (rooms are not
    created by listening). A token for the room is needed (403 without a
    valid one, or for a banned member) when the server has a
    ``token_secret``, as for every other way in, and for a private room;
    ``public=True`` opens the streams of the rooms that are not private to
    anyone (a broadcast). A room's stream takes ``max_clients`` clients at
    once (each costs its own Ogg pages, ~0.3 ms of CPU a second): 503 past
    them. :class:`~sfu.errors.InvalidSetting` at once for a bad setting.
    """
    _check_settings(max_lag, packets_per_page, max_skips)
    if not isinstance(public, bool):
        raise InvalidSetting(f"public must be True or False, got {public!r}")
    if not is_int(max_clients) or max_clients < 1:
        raise InvalidSetting(f"max_clients must be an integer >= 1, got {max_clients!r}")
    streams: dict[str, LiveStream] = {}

    def stream_of(room: Room) -> LiveStream:
        live = streams.get(room.name)
        if live is None or live.mixer is not room.mixer or not live.clients:
            live = streams[room.name] = LiveStream(
                room.mixer,
                max_lag=max_lag,
                packets_per_page=packets_per_page,
                max_skips=max_skips,
            )
        return live

    async def handler(request: web.Request) -> web.StreamResponse:
        name = request.match_info["room"]
        room = server.get_room(name)
        if room is None or room.closed:
            return web.Response(status=404, text=f"no room {name!r}\n")
        claims = None
        if room.policy.private or (server.token_secret is not None and not public):
            secret = server.token_secret
            try:
                if secret is None:
                    raise NotAllowed("no token_secret")
                claims = verify_token(secret, _token(request), room=name)
                if room.is_banned(claims.identity, claims.token_id):
                    raise NotAllowed(f"{claims.identity!r} was removed from room {name!r}")
            except NotAllowed as exc:
                return web.Response(status=403, text=f"{exc}\n")
        if request.method == "HEAD":
            # Headers only: a HEAD must not subscribe (the mixer would run for
            # it) nor send a body its client will read as the next response.
            return web.Response(
                headers={
                    "Content-Type": "audio/ogg",
                    "Cache-Control": "no-cache, no-store",
                    "X-Content-Type-Options": "nosniff",
                }
            )
        live = stream_of(room)
        if len(live.clients) >= max_clients:
            return web.Response(
                status=503,
                headers={"Retry-After": "10"},
                text=f"room {name!r} has {max_clients} live listeners already: try again later\n",
            )
        client = live.subscribe()
        transport = request.transport

        def cut() -> None:
            if transport is not None:
                # Not close(): that waits for the unsent bytes to go, which they
                # never do to a peer that stopped reading (its socket would stay
                # open for good). A blocked write then fails: the handler ends.
                transport.abort()

        client.on_drop = cut
        if claims is not None:
            identity, token_id = claims.identity, claims.token_id

            def banned() -> bool:
                # Banned after the stream opened: not one more packet of the room's audio.
                if not room.is_banned(identity, token_id):
                    return False
                logger.info("live stream of room %r ended: %s was banned", name, shown(identity))
                return True

            client.end_if = banned
        response = web.StreamResponse(
            headers={
                "Content-Type": "audio/ogg",
                "Cache-Control": "no-cache, no-store",
                "X-Content-Type-Options": "nosniff",
            }
        )
        if request.version >= (1, 1):
            response.enable_chunked_encoding()
        # (HTTP/1.0, e.g. a proxy's default upstream protocol: no chunks, the
        # body ends when the connection does.)
        # A peer that stops reading blocks a write; past this long it is cut off
        # (the packets meanwhile are skipped or the client dropped, as above).
        write_timeout = max(5.0, 4 * max_lag)
        try:
            await response.prepare(request)
            await asyncio.wait_for(response.write(client.headers()), write_timeout)
            while True:
                chunk = await client.read()
                if not chunk:
                    break
                await asyncio.wait_for(response.write(chunk), write_timeout)
            await asyncio.wait_for(response.write_eof(), write_timeout)
        except (ConnectionError, asyncio.TimeoutError):
            cut()  # the client went away, or stopped reading
        finally:
            client.close()
            if not live.clients and streams.get(name) is live:
                del streams[name]  # nobody listens: forget it (and its mixer)
        return response

    return handler
