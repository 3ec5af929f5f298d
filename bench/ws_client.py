"""A minimal WebSocket client for the load generator's joins over the product's signaling.

:class:`WebSocketClient` is RFC 6455 and RFC 7692 as far as a listener's
page needs them, hand-written as an :class:`asyncio.Protocol` like
:class:`loadgen.ControlConnection` and for the same reason: in a join storm
the load generator shares the machine with the server, and a client
library's own cost per message would let the load generator, not the
server, set the pace. It does:

* the HTTP/1.1 Upgrade handshake (status 101, ``Sec-WebSocket-Accept``
  checked against the key sent), offering ``permessage-deflate`` with
  ``client_max_window_bits`` as browsers do (or not, ``deflate=False``);
* masked client frames, compressed when the server agreed to deflate (as a
  browser compresses its own: the server then inflates them);
* server frames of any length (7, 16 and 64-bit lengths), fragmented
  messages, compressed ones (inflated with ``zlib.decompressobj(-15)``,
  ``00 00 ff ff`` appended per message), ping -> pong, close (echoed);
* counts of what arrived: frames, bytes on the wire, bytes inflated, messages
  by type. JSON is parsed only while a request waits for its reply.

:class:`SignalingConnections` opens such sockets ahead of a storm (as each
browser's page opens its own before it has an offer) and joins a listener
over one: ``{"type": "join", "room", "token", "offer", "role": "listener"}``
(``docs/signaling.md``), the answer from the ``joined`` reply. The tokens
are issued with :func:`sfu.auth.issue_token` and the server's secret.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import json
import os
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

#: The sfu source tree serve.py runs, whose ``sfu.auth`` issues the tokens.
TREE = os.environ.get("SFU_TREE") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LOOPBACK = "127.0.0.1"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
#: What a deflated message lacks at its end (RFC 7692 7.2.2).
DEFLATE_TAIL = b"\x00\x00\xff\xff"
#: Larger messages (inflated) or handshake replies close the connection.
MAX_MESSAGE = 16 << 20
MAX_HANDSHAKE = 16 << 10
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer ``key`` with."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``key`` (RFC 6455 5.3), as one big integer."""
    size = len(payload)
    if not size:
        return payload
    repeated = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        size, "little"
    )


def frame(first: int, payload: bytes, key: bytes | None = None) -> bytes:
    """One frame: ``first`` is FIN, RSV1 and the opcode; masked when ``key`` is given."""
    size = len(payload)
    bit = 0x80 if key is not None else 0
    if size < 126:
        header = bytes((first, bit | size))
    elif size < 1 << 16:
        header = bytes((first, bit | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, bit | 127)) + size.to_bytes(8, "big")
    if key is None:
        return header + payload
    return header + key + mask(payload, key)


def deflate_parameters(header: str) -> dict[str, int | None]:
    """The parameters of a ``permessage-deflate`` extension header (RFC 7692 7.1)."""
    name, *parameters = (part.strip() for part in header.split(";"))
    if name.lower() != "permessage-deflate" or "," in header:
        raise ConnectionError(f"unexpected WebSocket extension {header[:80]!r}")
    result: dict[str, int | None] = {}
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        result[key.strip().lower()] = int(value.strip().strip('"')) if value else None
    return result


class WebSocketClient(asyncio.Protocol):
    """One client WebSocket (see the module doc); :meth:`open` returns it upgraded."""

    def __init__(self, host: str, port: int, path: str, deflate: bool) -> None:
        self.host, self.port, self.path = host, port, path
        self.offered_deflate = deflate
        self.deflate = False  # agreed by the server
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.transport: asyncio.Transport | None = None
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._fragments: list[bytes] | None = None
        self._fragments_wire = 0
        self._compressed = False
        self._inflater = zlib.decompressobj(-15)
        self._deflater: Any = None
        self._reset_inflater = self._reset_deflater = False
        self._client_window = 15
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 1
        self.close_sent = False
        #: The server's close code (1005: none given) once it sent a close frame.
        self.close_code: int | None = None
        self.closed_by_server = False
        self.failure = ""
        # What arrived after the handshake.
        self.frames = 0
        self.wire_bytes = 0
        self.message_bytes = 0  # inflated
        self.types: collections.Counter[str] = collections.Counter()
        #: The last reply to a request: its size inflated and on the wire.
        self.reply_bytes = self.reply_wire_bytes = 0

    @classmethod
    async def open(
        cls,
        port: int,
        path: str = "/ws",
        *,
        host: str = LOOPBACK,
        deflate: bool = True,
        timeout: float = 10.0,
    ) -> WebSocketClient:
        loop = asyncio.get_running_loop()
        _, client = await asyncio.wait_for(
            loop.create_connection(lambda: cls(host, port, path, deflate), host, port), timeout
        )
        try:
            await asyncio.wait_for(asyncio.shield(client.upgraded), timeout)
        except BaseException:
            client.abort()
            raise
        return client

    @property
    def closed(self) -> bool:
        return self.lost.done()

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport
        origin = f"{self.host}:{self.port}"
        extension = (
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            if self.offered_deflate
            else ""
        )
        self.transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {origin}\r\nOrigin: http://{origin}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {self.key}\r\nSec-WebSocket-Version: 13\r\n"
                f"{extension}\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self.upgraded.done():
            if not self._handshake():
                return
        else:
            self.wire_bytes += len(data)
        self._read_frames()

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self.failure or f"WebSocket closed ({self.close_code or exc or 'no close frame'})"
        for future in (self.upgraded, *self._pending.values()):
            if not future.done():
                future.set_exception(ConnectionError(reason))
        if self.upgraded.done() and not self.upgraded.cancelled():
            self.upgraded.exception()  # retrieved: nobody may await it any more
        self._pending.clear()
        if not self.lost.done():
            self.lost.set_result(None)

    # -- reading ------------------------------------------------------------------

    def _handshake(self) -> bool:
        """Check the server's reply to the Upgrade; True once upgraded."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HANDSHAKE:
                self._fail("handshake reply too large")
            return False
        lines = self._buffer[:end].decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        self.wire_bytes += len(self._buffer)  # frames that came with the reply
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if not lines[0].startswith("HTTP/1.1 101"):
            self._fail(f"upgrade refused: {lines[0][:80]!r}")
        elif headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in (
            headers.get("connection", "").lower()
        ):
            self._fail("the reply does not upgrade to websocket")
        elif headers.get("sec-websocket-accept") != accept_key(self.key):
            self._fail("wrong Sec-WebSocket-Accept")
        elif "sec-websocket-extensions" in headers and not self._agree(
            headers["sec-websocket-extensions"]
        ):
            pass  # _agree failed the connection
        else:
            self.upgraded.set_result(None)
            return True
        return False

    def _agree(self, header: str) -> bool:
        """Take the server's ``permessage-deflate`` parameters; False (failed) if wrong."""
        if not self.offered_deflate:
            self._fail(f"extension agreed that was not offered: {header[:80]!r}")
            return False
        try:
            parameters = deflate_parameters(header)
        except (ConnectionError, ValueError) as exc:
            self._fail(str(exc))
            return False
        self._client_window = parameters.get("client_max_window_bits") or 15
        if not 9 <= self._client_window <= 15:
            self._fail(f"client_max_window_bits {self._client_window} out of range")
            return False
        self._reset_inflater = "server_no_context_takeover" in parameters
        self._reset_deflater = "client_no_context_takeover" in parameters
        self._deflater = self._new_deflater()
        self.deflate = True
        return True

    def _new_deflater(self) -> Any:
        return zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self._client_window)

    def _read_frames(self) -> None:
        buffer = self._buffer
        position = 0
        while not self.failure and not self.closed and len(buffer) - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            if second & 0x80:
                self._fail("a server frame is masked")
                return
            size, header = second & 0x7F, 2
            if size == 126:
                if len(buffer) - position < 4:
                    break
                size, header = int.from_bytes(buffer[position + 2 : position + 4], "big"), 4
            elif size == 127:
                if len(buffer) - position < 10:
                    break
                size, header = int.from_bytes(buffer[position + 2 : position + 10], "big"), 10
            if size > MAX_MESSAGE:
                self._fail(f"frame of {size} bytes")
                return
            end = position + header + size
            if len(buffer) < end:
                break
            payload = bytes(buffer[position + header : end])
            position = end
            self.frames += 1
            self._frame(first, payload, header + size)
        del buffer[:position]

    def _frame(self, first: int, payload: bytes, wire: int) -> None:
        opcode, final = first & 0x0F, bool(first & 0x80)
        if first & 0x30 or (first & 0x40 and (opcode not in (TEXT, BINARY) or not self.deflate)):
            self._fail("unexpected RSV bits")
        elif opcode >= CLOSE:
            self._control(opcode, final, payload)
        elif opcode in (TEXT, BINARY):
            if self._fragments is not None:
                self._fail("a new message inside a fragmented one")
                return
            self._compressed = bool(first & 0x40)  # text and binary alike: counted
            self._fragments, self._fragments_wire = [payload], wire
        elif opcode == 0 and self._fragments is not None:
            self._fragments.append(payload)
            self._fragments_wire += wire
        else:
            self._fail(f"unexpected opcode {opcode}")
        if opcode >= CLOSE or not final or self._fragments is None or self.failure:
            return
        data = b"".join(self._fragments)
        self._fragments = None
        if self._compressed:
            data = self._inflater.decompress(data + DEFLATE_TAIL, MAX_MESSAGE)
            if self._inflater.unconsumed_tail:
                self._fail("an inflated message over the limit")
                return
            if self._reset_inflater:
                self._inflater = zlib.decompressobj(-15)
        self._message(data, self._fragments_wire)

    def _control(self, opcode: int, final: bool, payload: bytes) -> None:
        if not final or len(payload) > 125:
            self._fail("a fragmented or long control frame")
        elif opcode == PING:
            self._write(frame(0x80 | PONG, payload, os.urandom(4)))
        elif opcode == CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.closed_by_server = not self.close_sent
            if not self.close_sent:  # echo it (RFC 6455 5.5.1); the server then ends TCP
                self.close_sent = True
                self._write(frame(0x80 | CLOSE, payload[:2], os.urandom(4)))
        elif opcode != PONG:
            self._fail(f"unknown control opcode {opcode}")

    def _message(self, data: bytes, wire: int) -> None:
        self.message_bytes += len(data)
        # Server frames start {"type":"...": counted by type without parsing.
        kind = "?"
        if data.startswith(b'{"type":"'):
            kind = data[9 : data.find(b'"', 9)].decode("ascii", "replace")
        self.types[kind] += 1
        if not self._pending:
            return
        try:
            message = json.loads(data)
        except ValueError:
            return
        future = self._pending.pop(message.get("id"), None) if isinstance(message, dict) else None
        if future is not None and not future.done():
            self.reply_bytes, self.reply_wire_bytes = len(data), wire
            future.set_result(message)

    def _fail(self, reason: str) -> None:
        self.failure = self.failure or reason
        self.abort()

    # -- writing ------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send_text(self, text: str) -> None:
        """One text message (compressed when deflate was agreed)."""
        data, first = text.encode(), 0x80 | TEXT
        if self._deflater is not None:
            data = self._deflater.compress(data) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
            if data.endswith(DEFLATE_TAIL):
                data = data[:-4]
            first |= 0x40
            if self._reset_deflater:
                self._deflater = self._new_deflater()
        self._write(frame(first, data, os.urandom(4)))

    def send_request(self, message: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Send ``message`` with a new ``id``, now; the future of the reply with that id."""
        if self.closed or self.close_sent or self.failure:
            raise ConnectionError(self.failure or "WebSocket closed")
        request_id = self._next_id
        self._next_id += 1
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        self.send_text(json.dumps({**message, "id": request_id}, separators=(",", ":")))
        return reply

    # -- closing --------------------------------------------------------------------

    async def close(self, code: int = 1000, timeout: float = 5.0) -> None:
        """Send a close frame and wait (bounded) for the server's, which ends TCP."""
        if not self.closed and not self.close_sent:
            self.close_sent = True
            self._write(frame(0x80 | CLOSE, code.to_bytes(2, "big"), os.urandom(4)))
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), timeout)
        except asyncio.TimeoutError:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def token_issuer() -> Callable[..., str]:
    """:func:`sfu.auth.issue_token`, of the tree serve.py runs unless sfu is imported already.

    Imported only when listeners join over the signaling: the other
    benchmarks' load generator does without the package.
    """
    if "sfu" not in sys.modules and TREE not in sys.path:
        sys.path.insert(0, TREE)
    from sfu.auth import issue_token

    return issue_token


class SignalingConnections:
    """WebSockets to the server's signaling, opened ahead; listeners join over them."""

    def __init__(
        self,
        port: int,
        token_secret: str,
        *,
        path: str = "/ws",
        deflate: bool = True,
        host: str = LOOPBACK,
    ) -> None:
        self.port, self.path, self.host = port, path, host
        self.token_secret = token_secret
        self.issue_token = token_issuer()
        self.deflate = deflate
        self.ready: list[WebSocketClient] = []
        self.every: list[WebSocketClient] = []

    async def _open_one(self, timeout: float) -> WebSocketClient:
        client = await WebSocketClient.open(
            self.port, self.path, host=self.host, deflate=self.deflate, timeout=timeout
        )
        self.every.append(client)
        return client

    async def open(self, count: int, *, concurrency: int = 64, timeout: float = 10.0) -> float:
        """Open ``count`` connections, ``concurrency`` at a time; the seconds it took."""
        start = time.monotonic()
        gate = asyncio.Semaphore(concurrency)

        async def one() -> WebSocketClient:
            async with gate:
                return await self._open_one(timeout)

        self.ready += await asyncio.gather(*(one() for _ in range(count)))
        return time.monotonic() - start

    async def join(self, peer: Any, room: str, timeout: float) -> str:
        """Join ``peer`` (a ``loadgen.Peer``) as a listener; the answer SDP.

        ``peer.offer_ns`` is when the join frame is written: the connection
        was opened before, as a browser's page opens its own before it has
        an offer (one without a connection opened ahead opens one first,
        untimed). ``peer.answer_ns``: when the ``joined`` reply was read
        whole (and inflated). ``peer.signaling`` keeps the connection: it
        stays open for the listener's life (closing it leaves the room).
        """
        client = self.ready.pop() if self.ready else await self._open_one(timeout)
        peer.signaling = client
        # A backend issues it before the page joins: not part of the join's time.
        token = self.issue_token(self.token_secret, room=room, identity=peer.identity, ttl=3600)
        peer.offer_ns = time.time_ns()
        reply = client.send_request(
            {"type": "join", "room": room, "token": token, "offer": peer.offer, "role": "listener"}
        )
        message = await asyncio.wait_for(reply, timeout)
        if message.get("type") != "joined":
            raise ConnectionError(
                f"join refused: {message.get('code')}: {str(message.get('message'))[:120]}"
            )
        peer.answer_ns = time.time_ns()
        return str(message["answer"])

    async def close(self, timeout: float = 5.0) -> None:
        """Close every connection (their members leave), waiting at most ``timeout``."""
        await asyncio.gather(*(client.close(timeout=timeout) for client in self.every))
        self.ready = []


def spread(values: list[int]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "max": None}
    return {
        "mean": round(float(np.mean(values)), 1),
        "p50": float(np.percentile(values, 50)),
        "max": float(max(values)),
    }


def received_summary(clients: list[WebSocketClient]) -> dict[str, Any]:
    """What the listeners' connections received, per listener (``frames``,
    ``wire_bytes`` on TCP after the handshake, ``message_bytes`` inflated),
    the ``joined`` replies' sizes, messages by type (mean per listener), and
    how many the server closed."""
    types: collections.Counter[str] = collections.Counter()
    for client in clients:
        types.update(client.types)
    count = len(clients) or 1
    return {
        "connections": len(clients),
        "deflate": sum(client.deflate for client in clients),
        "frames_per_listener": spread([client.frames for client in clients]),
        "wire_bytes_per_listener": spread([client.wire_bytes for client in clients]),
        "message_bytes_per_listener": spread([client.message_bytes for client in clients]),
        "joined_reply_bytes": spread([client.reply_bytes for client in clients]),
        "joined_reply_wire_bytes": spread([client.reply_wire_bytes for client in clients]),
        "messages_per_listener_by_type": {
            kind: round(total / count, 2) for kind, total in sorted(types.items())
        },
        "closed_by_server": sum(client.closed_by_server for client in clients),
        "close_codes": dict(
            collections.Counter(str(c.close_code) for c in clients if c.closed_by_server)
        ),
        "failures": sorted({client.failure for client in clients if client.failure})[:5],
    }
