"""Fan-out of slot packets to receivers: the pure-Python reference.

:class:`FanOut` holds the receivers of one Router and, for each incoming
(already decrypted) speaker packet, writes a fresh RTP header per receiver,
copies the Opus payload byte for byte, protects it with the receiver's SRTP
session and sends it from the server's one UDP socket.

The compiled :mod:`sfu._relay` has the same API and produces byte-identical
datagrams (tests compare them); this module is the readable reference and the
fallback when the extension is not built (``SFU_NO_EXTENSIONS=1``).

The header written for every receiver (RFC 3550 section 5.1, RFC 8285
section 4.2 for the one-byte header extension carrying the RFC 6464
``ssrc-audio-level``)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V=2|P=0|X| CC=1|M|     PT      |       sequence number         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                           timestamp                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                   SSRC (the slot's stream)                    |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                 CSRC (the speaker's own SSRC)                 |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |      0xBE     |      0xDE     |          length = 1           |  X=1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  only
    |  ID   | L=0   |V| level       |       0 (padding)             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                 Opus payload, as the speaker sent it ...      |

X is set only when the receiver negotiated the extension
(``audio_level_id`` != 0) and the packet has a level (``audio_level`` >= 0).
"""

from __future__ import annotations

import errno
import operator
import socket
import struct

import pylibsrtp

from .errors import RoomFull

__all__ = ["MAX_BATCH", "MAX_PAYLOAD", "FanOut"]

#: Largest Opus payload forwarded; larger ones are dropped and counted. One
#: Opus frame is at most 1275 bytes (RFC 6716 section 3.2.1), what a 20 ms
#: frame at Opus's top rate of 510 kbit/s takes; voice is ~100 bytes.
MAX_PAYLOAD = 1275
#: sendmmsg(2) accepts at most UIO_MAXIOV messages per call.
MAX_BATCH = 1024

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_COMMON = struct.Struct("!HIII")  # sequence, timestamp, ssrc, csrc
# errnos meaning "the socket's send queue is full": drop the rest, never queue.
_CONGESTED = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)


def _check_int(name: str, value: int, low: int, high: int) -> int:
    """``value`` as an int in ``low..high`` (not a float, as the compiled twin)."""
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")
    return value


def _destination(family: int, address: tuple[object, ...]) -> tuple[object, ...]:
    """Validate `address` for a socket of `family`; return the sendto() form.

    Only IP literals are accepted (no name resolution on the media path). An
    IPv4 peer of a dual-stack AF_INET6 socket becomes ``::ffff:a.b.c.d``.
    """
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise ValueError(f"address must be (host, port) or an IPv6 4-tuple, got {address!r}")
    host, port = address[0], address[1]
    if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"address must be (host: str, port: 1..65535), got {address!r}")
    flowinfo = address[2] if len(address) == 4 else 0
    scope_id = address[3] if len(address) == 4 else 0
    if not isinstance(flowinfo, int) or not isinstance(scope_id, int):
        raise ValueError(f"IPv6 flowinfo and scope_id must be int, got {address!r}")
    if not 0 <= flowinfo <= 0xFFFFF or not 0 <= scope_id <= 0xFFFFFFFF:
        raise ValueError(f"IPv6 flowinfo must fit 20 bits, scope_id 32, got {address!r}")
    try:
        socket.inet_pton(socket.AF_INET, host)
        is_ipv4 = True
    except OSError:
        is_ipv4 = False
    if not is_ipv4:
        try:
            socket.inet_pton(socket.AF_INET6, host)
        except OSError:
            raise ValueError(f"address host must be an IP literal, got {host!r}") from None
    if family == socket.AF_INET:
        if not is_ipv4 or len(address) == 4:
            raise ValueError(f"an IPv4 socket cannot send to {address!r}")
        return (host, port)
    if family == socket.AF_INET6:
        if is_ipv4:
            if len(address) == 4:
                raise ValueError(f"an IPv6 4-tuple needs an IPv6 host, got {address!r}")
            host = "::ffff:" + host
        return (host, port, flowinfo, scope_id)
    raise ValueError(f"the socket must be AF_INET or AF_INET6, got family {family}")


class _Receiver:
    __slots__ = (
        "audio_level_id",
        "destination",
        "octets",
        "packets",
        "payload_type",
        "receiver_id",
        "slot_count",
        "srtp",
    )

    def __init__(
        self,
        receiver_id: int,
        destination: tuple[object, ...],
        srtp: pylibsrtp.Session,
        payload_type: int,
        audio_level_id: int,
        slot_count: int,
    ) -> None:
        self.receiver_id = receiver_id
        self.destination = destination
        self.srtp = srtp
        self.payload_type = payload_type
        self.audio_level_id = audio_level_id
        self.slot_count = slot_count
        self.packets = [0] * slot_count
        self.octets = [0] * slot_count


class FanOut:
    """Receivers of one Router and the batched send of slot packets to them."""

    def __init__(
        self, sock: socket.socket, *, batch_size: int = 64, max_receivers: int = 0
    ) -> None:
        """Send from `sock`, the server's non-blocking UDP socket.

        `batch_size` datagrams are queued per send call (sendmmsg(2) in the
        compiled version, 1..1024); `max_receivers` caps the receivers
        (0: grow as needed).
        """
        if sock.type != socket.SOCK_DGRAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError("sock must be an AF_INET or AF_INET6 UDP socket")
        _check_int("batch_size", batch_size, 1, MAX_BATCH)
        _check_int("max_receivers", max_receivers, 0, 1 << 30)
        self._sock: socket.socket | None = sock
        self._family = sock.family
        self._batch_size = batch_size
        self._max_receivers = max_receivers
        # Dense list with swap-remove, like the compiled version's C array, so
        # both visit receivers in the same order.
        self._receivers: list[_Receiver] = []
        self._index: dict[int, int] = {}
        self._sent = 0
        self._dropped = 0

    def add_receiver(
        self,
        receiver_id: int,
        address: tuple[object, ...],
        srtp: pylibsrtp.Session,
        *,
        payload_type: int,
        audio_level_id: int,
        slot_count: int,
    ) -> None:
        """Add a receiver taking slots ``0..slot_count-1``.

        `srtp` is its outbound SRTP session (kept alive by the FanOut);
        `audio_level_id` its extmap id for ssrc-audio-level (1..14, 0 = send
        no extension). Raises ValueError for a duplicate id or a bad value,
        RoomFull past `max_receivers`.
        """
        if self._sock is None:
            raise RuntimeError("FanOut is closed")
        receiver_id = _check_int("receiver_id", receiver_id, _INT64_MIN, _INT64_MAX)
        if receiver_id in self._index:
            raise ValueError(f"receiver {receiver_id} is already in this FanOut")
        if not isinstance(srtp, pylibsrtp.Session):
            raise TypeError("srtp must be a pylibsrtp.Session")
        payload_type = _check_int("payload_type", payload_type, 0, 127)
        audio_level_id = _check_int("audio_level_id", audio_level_id, 0, 14)
        slot_count = _check_int("slot_count", slot_count, 0, 255)
        destination = _destination(self._family, address)
        if self._max_receivers and len(self._receivers) >= self._max_receivers:
            raise RoomFull(f"this FanOut holds at most {self._max_receivers} receivers")
        self._index[receiver_id] = len(self._receivers)
        self._receivers.append(
            _Receiver(receiver_id, destination, srtp, payload_type, audio_level_id, slot_count)
        )

    def set_address(self, receiver_id: int, address: tuple[object, ...]) -> None:
        """Send to `address` from now on (ICE re-nomination)."""
        receiver = self._receivers[self._index[receiver_id]]
        receiver.destination = _destination(self._family, address)

    def remove_receiver(self, receiver_id: int) -> None:
        """Stop sending to `receiver_id` (KeyError if unknown)."""
        index = self._index.pop(receiver_id)
        last = self._receivers.pop()
        if index < len(self._receivers):
            self._receivers[index] = last
            self._index[last.receiver_id] = index

    def forward(
        self,
        slot: int,
        packet: bytes,
        payload_offset: int,
        ssrc: int,
        sequence: int,
        timestamp: int,
        marker: bool,
        csrc: int,
        audio_level: int,
        exclude: int,
        only: int = -1,
    ) -> int:
        """Send ``packet[payload_offset:]`` on `slot` to every receiver having it.

        `ssrc`, `sequence`, `timestamp` and `marker` are the slot stream's
        (the same for every receiver); `csrc` names the speaker (its room-given CSRC);
        `audio_level` the RFC 6464 byte (V bit 7, level 0..127) or -1 for
        none; `exclude` a receiver id that must not get it (the speaker);
        `only`, when >= 0, the one receiver id that gets it.
        Returns the number of datagrams the kernel accepted; the others are
        counted in :attr:`dropped`.
        """
        if slot < 0:
            raise ValueError(f"slot must be >= 0, got {slot}")
        _check_int("payload_offset", payload_offset, 0, len(packet))
        _check_int("ssrc", ssrc, 0, 0xFFFFFFFF)
        _check_int("sequence", sequence, 0, 0xFFFF)
        _check_int("timestamp", timestamp, 0, 0xFFFFFFFF)
        _check_int("csrc", csrc, 0, 0xFFFFFFFF)
        _check_int("audio_level", audio_level, -1, 255)
        payload = bytes(packet[payload_offset:])
        size = len(payload)
        if size > MAX_PAYLOAD:
            for receiver in self._receivers:
                if slot >= receiver.slot_count or receiver.receiver_id == exclude:
                    continue
                if only < 0 or receiver.receiver_id == only:
                    self._dropped += 1
            return 0
        common = _COMMON.pack(sequence, timestamp, ssrc, csrc)
        mark = 0x80 if marker else 0
        batch: list[tuple[bytes, _Receiver]] = []
        sent = 0
        for receiver in self._receivers:
            if slot >= receiver.slot_count or receiver.receiver_id == exclude:
                continue
            if only >= 0 and receiver.receiver_id != only:
                continue
            second = mark | receiver.payload_type
            if receiver.audio_level_id and audio_level >= 0:
                header = (
                    bytes((0x91, second))
                    + common
                    + bytes((0xBE, 0xDE, 0, 1, receiver.audio_level_id << 4, audio_level, 0, 0))
                )
            else:
                header = bytes((0x81, second)) + common
            try:
                datagram = receiver.srtp.protect(header + payload)
            except pylibsrtp.Error:
                self._dropped += 1
                continue
            batch.append((datagram, receiver))
            if len(batch) == self._batch_size:
                sent += self._flush(batch, slot, size)
                batch = []
        if batch:
            sent += self._flush(batch, slot, size)
        return sent

    def _flush(self, batch: list[tuple[bytes, _Receiver]], slot: int, size: int) -> int:
        assert self._sock is not None
        sendto = self._sock.sendto
        sent = 0
        for position, (datagram, receiver) in enumerate(batch):
            try:
                sendto(datagram, receiver.destination)
            except OSError as exc:
                if exc.errno in _CONGESTED:
                    # Congestion is met by dropping media: the rest of this
                    # batch is dropped, never queued.
                    self._dropped += len(batch) - position
                    break
                self._dropped += 1
                continue
            sent += 1
            receiver.packets[slot] += 1
            receiver.octets[slot] += size
        self._sent += sent
        return sent

    def counters(self, receiver_id: int) -> list[tuple[int, int]]:
        """Per slot: (packets sent, payload octets sent), for RTCP sender reports."""
        receiver = self._receivers[self._index[receiver_id]]
        return list(zip(receiver.packets, receiver.octets, strict=True))

    def __len__(self) -> int:
        return len(self._receivers)

    def __contains__(self, receiver_id: object) -> bool:
        return receiver_id in self._index

    @property
    def sent(self) -> int:
        """Datagrams the kernel accepted, in total."""
        return self._sent

    @property
    def dropped(self) -> int:
        """Datagrams not sent (oversize, SRTP failure, full socket, send error)."""
        return self._dropped

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._sock is None

    def close(self) -> None:
        """Forget every receiver and its SRTP session; idempotent.

        The socket belongs to the caller and stays open. After close,
        :meth:`forward` sends nothing and :meth:`add_receiver` raises.
        """
        self._receivers.clear()
        self._index.clear()
        self._sock = None
