"""The room mix as a live Ogg/Opus HTTP stream, for audiences beyond the room's cap.

Mount the aiohttp handler::

    app.router.add_get("/rooms/{room}/live.ogg", live_stream_handler(server))

and any number of clients (an ``<audio src=".../live.ogg">`` element,
ffplay, VLC) get ``200 audio/ogg`` with chunked transfer encoding: the
OpusHead and OpusTags pages first, then, to a client joining a running
stream, a burst of the mix's latest seconds (below), then pages of the mix
as the Mixer encodes it (one page per ``packets_per_page`` packets, 100 ms
by default).
Each client gets a well-formed Ogg stream of its own (page sequence from 0,
granule positions counting what it was sent), paginated from the same
shared Opus packets: the encode happens once per room.

How soon a browser plays, and how far behind live: Chromium's media cache
(its MultiBuffer) hands the demuxer whole blocks of 32 KiB and nothing
before the first one is full, and an ``<audio>`` element plays a live
stream from its first byte on. So the stream's byte rate decides both:
Chromium starts once 32 KiB have come, and then plays 32 KiB's worth of
audio behind the live edge for good (at 48 kbit/s ~4.5 s; measured in
``bench/README.md``, "How soon a browser plays the live stream"). Two
settings keep that short:

* the burst: a client joining a running stream is sent the stream's latest
  packets at once, with its headers: as many as fit in ``burst_bytes``
  (32 KiB, Chromium's first block: ~4 s at 48 kbit/s). Chromium then starts
  in a fraction of a second instead of ~4.5 s, at the lag it would have had
  anyway; a player that starts on fewer bytes plays that much further
  behind live than it would without (``burst_bytes=0``: no burst). A
  burst holds at most :data:`MAX_BURST_SECONDS` (15 s) of audio, as with
  padding off (below) a quiet room's 32 KiB would be minutes of it. The
  stream keeps ``burst_bytes`` of its latest packets for this (one copy,
  whatever the number of clients); the first client of a stream has no
  burst, nothing having been sent before it.
* padding: silence encodes to 3-byte packets, at which rate 32 KiB take
  70 s. Every packet shorter than ``min_bitrate`` over 20 ms (default: the
  mixer's bit rate, 120 bytes at 48 kbit/s) is padded to it, with the Opus
  padding decoders skip (RFC 6716 section 3.2.5): a quiet room costs the
  bytes of a speaking one, and a pause no longer holds a Chromium listener
  back (without it, one joining a quiet room waited ~70 s, and one
  listening fell behind by every pause, for good). A higher
  ``min_bitrate`` shortens Chromium's lag for that bandwidth; 0 turns
  padding off. The packets are padded once, for every client.

Stalls: with playback started at the first block, a player has no audio
in hand when the next one comes (bytes come as fast as they are played),
and Chromium stopped for a moment (8-250 ms) at some block ends. So
every client's stream starts with ``start_silence`` seconds (1 s) of
silence in 1-byte packets: they add that much to what the player holds
and almost nothing to the bytes, so each next block comes about a second
before it is needed; the stream plays that much further behind live, in
every player. It covers blocks whose audio differs in length by up to a
second (at the default padding a block holds ~5 s of silence, less of
speech the encoder gives more than 48 kbit/s). It is rounded to whole
20 ms packets (``silence_packets``). After the silence, a client that
joined a running mix hears its pre-roll (below) too: its decoder
converges on it, the audio fading in over ~80 ms with libopus (browsers)
and ~140 ms with FFmpeg's own decoder, which decodes the empty frames as
coded silence rather than concealing them.

A client that joins a running mix starts mid-stream, where a decoder
needs a run-up to converge (RFC 7845 section 4.2: at least 3840 samples,
80 ms): its first audio page starts with the four packets before the
first one it plays (the burst's first, or without a burst the first
packet mixed after it joined). After the silence they play; with
``start_silence=0`` its OpusHead's pre-skip (the encoder's delay, 312
samples with libopus, plus those 3840) has them decoded and discarded,
as the client that started the mix has the encoder's delay alone
discarded.

Slow clients: every client has a bounded queue of packets. Its queue and
the packets written to its connection that the peer has not taken yet
(the transport's buffer and, on Linux, the kernel's send queue: SIOCOUTQ)
hold at most ``max_lag`` seconds (2 s) of audio together. A client that
falls that far behind skips ahead: its queue is emptied and it continues
from the live edge (an audible cut, and still a valid Ogg/Opus stream). A
client that has had to skip ``max_skips`` times (5) is disconnected. A
connection that has not taken half of ``max_lag`` is written nothing more
until it has: the server's send buffer grows to megabytes, minutes of the
stream, and would otherwise take every packet while the client fell
behind for good. Nothing is ever buffered without bound: memory per client
is at most ``max_lag`` of audio plus what aiohttp holds for one write.
What the client's own system has taken (acknowledged) but its player has
not read yet is not seen: a client that stops reading falls behind
unnoticed until its receive buffer is full (megabytes, when the system
grows it), and is skipped from then on. (Elsewhere than Linux the server's
kernel queue is not counted.)

Private rooms need a join token, as ``Authorization: Bearer <token>`` or,
since ``<audio>`` cannot set headers, ``?token=<token>`` (aiohttp's access
log writes that down with the URL: keep the ``aiohttp.access`` logger above
INFO, or log without the query). A stream opened
with a token whose holder is then banned from the room (``room.remove(...,
ban=True)``) ends at its next page, like a stream of a closed room.

The live stream is a Mixer consumer: the first client starts the room's
mixer, the last one leaving lets it stop. The room closing ends every
stream (with an end-of-stream page); so does the app's shutdown when the
handler was mounted with :func:`sfu.signaling.aiohttp.add_live_stream`
(``LiveStream.close()`` on each of :func:`live_streams`). A handler mounted
by hand has no such hook: at shutdown close the :class:`~sfu.Server` first
(``await server.close()``, then ``await runner.cleanup()``), or
``runner.cleanup()`` waits for the open streams for aiohttp's
``shutdown_timeout`` (60 s) and then as long again, ~2 minutes.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import secrets
import sys
import termios
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from .._values import is_int, is_number, shown
from ..auth import verify_token
from ..errors import InvalidSetting, NotAllowed
from .mix_stream import PREROLL_PACKETS
from .mixer import MAX_BITRATE, PTIME, MixOutput
from .ogg import OggWriter, opus_tags, packet_samples, padded_to, parse_opus_head, with_pre_skip

if TYPE_CHECKING:
    from ..room import Room
    from ..transport.server import Server
    from .mixer import Mixer

__all__ = [
    "BURST_BYTES",
    "MAX_BURST_BYTES",
    "MAX_BURST_SECONDS",
    "MAX_START_SILENCE",
    "START_SILENCE",
    "LiveClient",
    "LiveStream",
    "live_stream_handler",
    "live_streams",
]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: What a client joining a running stream is sent at once, by default (bytes,
#: its headers included): Chromium's media cache hands the demuxer whole
#: blocks of 32 KiB and nothing before the first one is full.
BURST_BYTES = 32768
#: Seconds of silence each client's stream starts with, by default: what a
#: player has in hand when each next block comes (see the module documentation).
START_SILENCE = 1.0
#: The longest ``start_silence`` taken (s).
MAX_START_SILENCE = 10.0
#: The largest ``burst_bytes`` taken (each room's stream keeps that much of its audio).
MAX_BURST_BYTES = 262144
#: A burst holds at most this much audio (s), whatever ``burst_bytes``: with
#: padding off a quiet room's 3-byte packets would fill 32 KiB with minutes of
#: it, and every joiner would play that far behind live.
MAX_BURST_SECONDS = 15.0
_TAGS = opus_tags("sfu live")
_PAGE_HEADER = 27  # an Ogg page's fixed header (its lacing values come on top)


def _ogg_size(packet: bytes) -> int:
    """What ``packet`` adds to a page: its lacing values and itself."""
    return len(packet) // 255 + 1 + len(packet)


# 20 ms with nothing coded: a TOC byte (CELT, fullband, 20 ms, mono; its
# stereo bit set for a stereo stream) and a frame of 0 bytes, which decoders
# conceal (RFC 6716 section 3.2.1): from nothing, as silence. Unlike coded
# silence (3 bytes) it leaves a decoder as it was made, so the pre-roll after
# it converges one as at a stream's start (in libopus; FFmpeg's own decoder
# takes it as coded silence). Pages of a second each.
_SILENCE = b"\xf8"
_SILENCE_PER_PAGE = 50


def _silence_packet(channels: int) -> bytes:
    return bytes([_SILENCE[0] | (0x04 if channels == 2 else 0)])


def _silence_bytes(packets: int) -> int:
    """What ``packets`` silence packets take on the wire, in their pages."""
    pages = -(-packets // _SILENCE_PER_PAGE)
    return packets * _ogg_size(_SILENCE) + pages * _PAGE_HEADER


class LiveClient:
    """One HTTP client of a :class:`LiveStream`: a bounded packet queue and its Ogg pages."""

    def __init__(
        self,
        stream: LiveStream,
        serial: int,
        opus_head: bytes,
        preroll: Sequence[bytes] = (),
        burst: Sequence[bytes] = (),
        burst_per_page: int = 255,
        silence: int = 0,
    ) -> None:
        self.stream = stream
        # Kept: the stream's mixer output may be gone (the room closed) by the
        # time the handler writes the headers.
        self._opus_head = opus_head
        # The mix's packets before the first one played, for its decoder to
        # converge on (the OpusHead's pre-skip discards them, or after the
        # silence they play).
        self._preroll = list(preroll)
        # The mix's latest packets, played before the first one queued.
        self._burst = list(burst)
        self._burst_per_page = burst_per_page
        # Silence packets to start with (see start_silence), before the pre-roll.
        self._silence = silence
        self.writer = OggWriter(serial, packets_per_page=255)
        self.queue: collections.deque[tuple[bytes, int]] = collections.deque()
        self.skips = 0
        self.sent_packets = 0
        self.closed = False
        #: Called when the client is dropped for being too slow: its writer may be
        #: blocked on a peer that does not read, so the connection must be cut.
        self.on_drop: Callable[[], None] | None = None
        #: The bytes written to this client's connection that its peer has not
        #: taken yet (see _unsent_bytes); None: not known (nothing counted).
        self.unsent_bytes: Callable[[], int] | None = None
        #: Queued packets written since (see wrote) that its peer has not
        #: taken, as of the last measure(): they count in its lag.
        self.unsent_packets = 0
        # (wire bytes, packets) of each write not known to have been taken, oldest first.
        self._unsent_writes: collections.deque[tuple[int, int]] = collections.deque()
        #: Asked before each read's pages are made: True ends the stream there
        #: (what is queued is dropped; the end-of-stream page follows).
        self.end_if: Callable[[], bool] | None = None
        self._granule = 0
        self._wake = asyncio.Event()

    def headers(self) -> bytes:
        """The first thing on the wire: the OpusHead and OpusTags pages, the
        silence's pages, then the burst's pages (``packets_per_page`` packets
        each, fewer when that many would not fit in one page; the first one
        preceded by the pre-roll). Without a burst the pre-roll packets go on
        the first page of queued ones."""
        out = [self.writer.headers(self._opus_head, _TAGS)]
        per_page = self._burst_per_page
        if self._silence:
            silence = _silence_packet(parse_opus_head(self._opus_head)[0])
            samples = packet_samples(silence)
            for index in range(1, self._silence + 1):
                self._granule += samples
                out.append(self.writer.write(silence, self._granule))
                if index % _SILENCE_PER_PAGE == 0 or index == self._silence:
                    out.append(self.writer.flush())
            self._silence = 0
        for packet in self._preroll:
            self._granule += packet_samples(packet)
            self.sent_packets += 1
            out.append(self.writer.write(packet, self._granule))
        for index, packet in enumerate(self._burst, 1):
            self._granule += packet_samples(packet)
            self.sent_packets += 1
            out.append(self.writer.write(packet, self._granule))
            if index % per_page == 0:
                out.append(self.writer.flush())
        out.append(self.writer.flush() if self._burst else b"")
        self._preroll = []
        self._burst = []
        return b"".join(out)

    def wrote(self, size: int, packets: int) -> None:
        """``size`` bytes went to the connection, carrying ``packets`` queued
        packets (0 for the headers and burst: sent ahead of time, not late)."""
        self._unsent_writes.append((size, packets))

    def measure(self) -> int:
        """How many packets written to the connection its peer has not taken
        (``unsent_packets``, now): the newest writes that the unsent bytes span."""
        unsent = self.unsent_bytes() if self.unsent_bytes is not None else 0
        writes = self._unsent_writes
        spanned = packets = 0
        kept = 0
        for size, count in reversed(writes):
            if spanned >= unsent:
                break
            spanned += size
            packets += count
            kept += 1
        for _ in range(len(writes) - kept):
            writes.popleft()  # taken: older than the unsent bytes, for good
        self.unsent_packets = packets
        return packets

    def _behind(self) -> bool:
        """Whether the queue and the packets its peer has not taken yet make
        ``max_lag`` (measured again first when written ones count in it)."""
        limit = self.stream.max_packets
        if len(self.queue) + self.unsent_packets < limit:
            return False
        return len(self.queue) + (self.measure() if self.unsent_packets else 0) >= limit

    def _put(self, packet: bytes, samples: int) -> None:
        queue = self.queue
        if self._behind():
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
        burst_bytes: int = BURST_BYTES,
        min_bitrate: int | None = None,
        start_silence: float = START_SILENCE,
    ) -> None:
        _check_settings(
            max_lag, packets_per_page, max_skips, burst_bytes, min_bitrate, start_silence
        )
        self.mixer = mixer
        self.max_lag = max_lag
        self.packets_per_page = packets_per_page
        self.max_packets = max(1, round(max_lag / PTIME))
        self.max_skips = max_skips
        self.burst_bytes = burst_bytes
        self.min_bitrate = min_bitrate
        self.start_silence = start_silence
        self.silence_packets = round(start_silence / PTIME)
        self.clients: list[LiveClient] = []
        self.skipped = 0
        self._serial = secrets.randbits(32)
        self._output: MixOutput | None = None
        # The stream's latest packets, at most burst_bytes of them, for the
        # bursts; and the PREROLL_PACKETS ones before those.
        self._recent: collections.deque[bytes] = collections.deque()
        self._recent_bytes = 0
        self._max_burst_packets = round(MAX_BURST_SECONDS / PTIME)
        self._before: collections.deque[bytes] = collections.deque(maxlen=PREROLL_PACKETS)

    def __repr__(self) -> str:
        return f"<LiveStream {self.mixer.name!r} {len(self.clients)} clients>"

    @property
    def opus_head(self) -> bytes:
        """The mix encoder's OpusHead (a client that joined a running mix gets
        one with a longer pre-skip, covering its run-up: see ``preroll``)."""
        assert self._output is not None
        return self._output.opus_head

    @property
    def min_packet_bytes(self) -> int:
        """The size shorter packets are padded to: ``min_bitrate`` (default: the
        mixer's bit rate) over one packet's 20 ms."""
        bitrate = self.mixer.bitrate if self.min_bitrate is None else self.min_bitrate
        return -(-bitrate * 20 // 8000)

    def subscribe(self) -> LiveClient:
        """A new client; the first one attaches the stream to the mixer.

        Its stream starts with ``start_silence`` of silence, then a burst of
        the latest packets (up to ``burst_bytes`` with the headers) and the
        pre-roll before them: the :data:`~sfu.media.mix_stream.PREROLL_PACKETS`
        packets before the first one played, for the decoder to converge on
        (RFC 7845 section 4.2; only a stream's very first packets have
        fewer). Without the silence the OpusHead's pre-skip discards the
        pre-roll; after it the pre-roll plays, the decoder converging from
        silence. The first client has no burst: the stream is just starting.
        """
        if self._output is None:
            self._output = self.mixer.add_output(self._on_packet, on_close=self._on_mixer_closed)
            _, preroll = self._output.preroll()
            floor = self.min_packet_bytes
            self._recent.clear()
            self._recent_bytes = 0
            self._before.clear()
            self._before.extend(padded_to(packet, floor) for packet in preroll)
        preroll, burst, per_page = self._start()
        head = self._output.opus_head
        pre_skip = parse_opus_head(head)[1]
        if not self.silence_packets:
            pre_skip += sum(packet_samples(p) for p in preroll)
        client = LiveClient(
            self,
            self._serial,
            with_pre_skip(head, pre_skip),
            preroll,
            burst,
            per_page,
            self.silence_packets,
        )
        self.clients.append(client)
        return client

    def _start(self) -> tuple[list[bytes], list[bytes], int]:
        """A new client's (pre-roll, burst, packets per burst page): the latest
        packets whose pages fit in ``burst_bytes`` with the headers', and up to
        PREROLL_PACKETS before them."""
        packets = [*self._before, *self._recent]
        # The headers' and the silence's pages, and the first audio page's
        # header and pre-roll.
        budget = self.burst_bytes - (
            2 * _PAGE_HEADER
            + _ogg_size(self.opus_head)
            + _ogg_size(_TAGS)
            + _silence_bytes(self.silence_packets)
        )
        sizes = [len(packet) // 255 + 1 + len(packet) for packet in packets]  # _ogg_size
        # Pages the Ogg writer does not split (at most 255 lacing values, the
        # pre-roll's on the first), or each split would add a header not counted.
        lacing = max((len(packet) // 255 + 1 for packet in packets), default=1)
        per_page = max(1, min(self.packets_per_page, 255 // lacing - PREROLL_PACKETS))
        start = len(packets)
        size = 0
        # The first PREROLL_PACKETS are never played: they are the pre-roll of
        # a burst that reaches back to them.
        while start > PREROLL_PACKETS:
            cost = sizes[start - 1]
            if (len(packets) - start) % per_page == 0:  # it opens a page
                cost += _PAGE_HEADER
            # With it in the burst, the pre-roll is the PREROLL_PACKETS before it.
            preroll = sum(sizes[start - 1 - PREROLL_PACKETS : start - 1])
            if size + cost + preroll > budget:
                break
            size += cost
            start -= 1
        return packets[max(0, start - PREROLL_PACKETS) : start], packets[start:], per_page

    def _remove(self, client: LiveClient) -> None:
        if client in self.clients:
            self.clients.remove(client)
        if not self.clients and self._output is not None:
            self._output.close()
            self._output = None

    def _on_packet(self, packet: bytes, samples: int, now: float) -> None:
        # Padded once for every client (the encode is the room's too).
        packet = padded_to(packet, self.min_packet_bytes)
        recent = self._recent
        recent.append(packet)
        self._recent_bytes += len(packet)
        while self._recent_bytes > self.burst_bytes or len(recent) > self._max_burst_packets:
            old = recent.popleft()
            self._recent_bytes -= len(old)
            self._before.append(old)
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


def _check_settings(
    max_lag: float,
    packets_per_page: int,
    max_skips: int,
    burst_bytes: int = BURST_BYTES,
    min_bitrate: int | None = None,
    start_silence: float = START_SILENCE,
) -> None:
    """:class:`~sfu.errors.InvalidSetting` naming the first bad setting."""
    if not is_number(start_silence) or not 0 <= start_silence <= MAX_START_SILENCE:
        raise InvalidSetting(
            f"start_silence must be a number of seconds in 0..{MAX_START_SILENCE:g}, "
            f"got {start_silence!r}"
        )
    if not is_int(burst_bytes) or not 0 <= burst_bytes <= MAX_BURST_BYTES:
        raise InvalidSetting(
            f"burst_bytes must be an integer in 0..{MAX_BURST_BYTES}, got {burst_bytes!r}"
        )
    if min_bitrate is not None and (not is_int(min_bitrate) or not 0 <= min_bitrate <= MAX_BITRATE):
        raise InvalidSetting(
            f"min_bitrate must be None (the mixer's bit rate) or an integer in "
            f"0..{MAX_BITRATE} bit/s, got {min_bitrate!r}"
        )
    if not is_int(packets_per_page) or packets_per_page < 1:
        raise InvalidSetting(f"packets_per_page must be an integer >= 1, got {packets_per_page!r}")
    if not is_int(max_skips) or max_skips < 1:
        raise InvalidSetting(f"max_skips must be an integer >= 1, got {max_skips!r}")
    if not is_number(max_lag):
        raise InvalidSetting(f"max_lag must be a finite number of seconds, got {max_lag!r}")
    if round(max_lag / PTIME) < packets_per_page:  # (in packets, as max_packets)
        raise InvalidSetting(
            f"max_lag must hold at least one page of packets ({packets_per_page} x "
            f"{PTIME * 1000:.0f} ms = {PTIME * packets_per_page:g} s), got {max_lag!r}"
        )


def _unsent_bytes(transport: asyncio.BaseTransport | None) -> int:
    """What was written to ``transport`` and its peer has not taken: its
    buffer, and on Linux the kernel's send queue (unsent and unacknowledged
    bytes, SIOCOUTQ); elsewhere the transport's buffer alone."""
    if transport is None or transport.is_closing():
        return 0
    # Duck-typed: uvloop's transports have the method but do not derive from
    # asyncio.WriteTransport (an isinstance check failed every stream there).
    buffered = getattr(transport, "get_write_buffer_size", None)
    unsent = int(buffered()) if buffered is not None else 0
    sock = transport.get_extra_info("socket")
    if _SIOCOUTQ is not None and sock is not None:
        try:
            queued = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return unsent
        unsent += int.from_bytes(queued, sys.byteorder)
    return unsent


_SIOCOUTQ = termios.TIOCOUTQ if sys.platform.startswith("linux") else None


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
    burst_bytes: int = BURST_BYTES,
    min_bitrate: int | None = None,
    start_silence: float = START_SILENCE,
) -> Handler:
    """A GET handler streaming room ``{room}``'s mix as chunked ``audio/ogg``.

    Mount it on a path with a ``{room}`` part, e.g.
    ``/rooms/{room}/live.ogg``. 404 for an unknown room (rooms are not
    created by listening). A token for the room is needed (403 without a
    valid one, or for a banned member) when the server has a
    ``token_secret``, as for every other way in, and for a private room;
    on a server with a ``token_secret`` an unknown room answers 403 too
    without a valid token for it (404 with one), so room names cannot be
    probed;
    ``public=True`` opens the streams of the rooms that are not private to
    anyone (a broadcast). A room's stream takes ``max_clients`` clients at
    once (each costs its own Ogg pages, ~0.3 ms of CPU a second): 503 past
    them. A client joining a running stream gets its latest audio at once,
    up to ``burst_bytes`` (0..262144, 32 KiB: what Chromium waits for before
    it plays) with the headers; packets shorter than ``min_bitrate`` (bit/s
    over 20 ms, 0..256000; None: the room mixer's bit rate, 0: none) are
    padded to it; every client's stream starts with ``start_silence``
    seconds of silence (0..10, 1 s, rounded to whole 20 ms packets: what a
    browser has in hand when each next block of the stream comes; it plays
    that much further behind live). See the module documentation for why and what each costs.
    :class:`~sfu.errors.InvalidSetting` at once for a bad setting.

    A stream ends when its client leaves or its room closes, and, mounted
    with :func:`sfu.signaling.aiohttp.add_live_stream`, when the app shuts
    down. Mounted by hand, close the server before ``runner.cleanup()``, or
    that waits ~2 minutes for open streams (see the module documentation).
    """
    _check_settings(max_lag, packets_per_page, max_skips, burst_bytes, min_bitrate, start_silence)
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
                burst_bytes=burst_bytes,
                min_bitrate=min_bitrate,
                start_silence=start_silence,
            )
        return live

    async def handler(request: web.Request) -> web.StreamResponse:
        name = request.match_info["room"]
        claims = None
        room = server.get_room(name)
        if room is not None and room.closed:
            room = None
        try:
            secret = server.token_secret
            if secret is not None and (not public or room is None or room.policy.private):
                # Before "no such room": without a valid token for it, a room
                # that does not exist answers as a private one does (403), so
                # room names cannot be probed.
                claims = verify_token(secret, _token(request), room=name)
            if room is None:
                return web.Response(status=404, text=f"no room {name!r}\n")
            if claims is None and room.policy.private:
                raise NotAllowed("no token_secret")  # (a private room needs one: not reached)
            if claims is not None and room.is_banned(claims.identity, claims.token_id):
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
        client.unsent_bytes = lambda: _unsent_bytes(transport)
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
        # A client whose connection has not taken half its max_lag of audio is
        # written nothing more until it has: its packets wait in its queue,
        # where they count (with the unsent ones) towards a skip. Else the
        # transport's and the kernel's send buffers (megabytes, minutes of the
        # stream) would take them all, and the client would fall behind for good.
        hold = max(1, live.max_packets // 2)
        page_seconds = PTIME * packets_per_page

        async def write(chunk: bytes, packets: int) -> None:
            await asyncio.wait_for(response.write(chunk), write_timeout)
            framing = len(f"{len(chunk):x}") + 4 if response.chunked else 0
            client.wrote(len(chunk) + framing, packets)
            while not client.closed and client.measure() >= hold:
                await asyncio.sleep(page_seconds)

        try:
            await response.prepare(request)
            await write(client.headers(), 0)
            while True:
                sent = client.sent_packets
                chunk = await client.read()
                if not chunk:
                    break
                await write(chunk, client.sent_packets - sent)
            await asyncio.wait_for(response.write_eof(), write_timeout)
        except (ConnectionError, asyncio.TimeoutError):
            cut()  # the client went away, or stopped reading
        finally:
            client.close()
            if not live.clients and streams.get(name) is live:
                del streams[name]  # nobody listens: forget it (and its mixer)
        return response

    _streams_of[handler] = streams
    return handler


#: The open streams of each handler live_stream_handler made (for live_streams).
_streams_of: weakref.WeakKeyDictionary[Handler, dict[str, LiveStream]] = weakref.WeakKeyDictionary()


def live_streams(handler: Handler) -> list[LiveStream]:
    """The streams ``handler`` (made by :func:`live_stream_handler`) serves
    now, one per room with clients: ``LiveStream.close()`` ends one's
    clients (each gets its last page, then its response ends)."""
    streams = _streams_of.get(handler)
    if streams is None:
        raise InvalidSetting("not a handler made by live_stream_handler")
    return list(streams.values())
