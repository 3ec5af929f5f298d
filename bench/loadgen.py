"""Load generator: hundreds to thousands of real WebRTC listeners in one process.

Each listener implements only what a listener needs on the wire:

* its own UDP socket on 127.0.0.1 and a hand-built SDP offer: three
  ``recvonly`` Opus m-lines with ``ssrc-audio-level``, BUNDLE, its own ICE
  ufrag/pwd and the ``a=fingerprint`` of ONE client ECDSA certificate that
  all listeners share;
* a STUN binding request with USE-CANDIDATE and MESSAGE-INTEGRITY
  (RFC 8445 7.1, RFC 8489; :mod:`aioice.stun` codes it), retransmitted until
  answered;
* a real DTLS 1.2 client handshake (pyOpenSSL over memory BIOs, RFC 6347)
  with ``use_srtp`` and the RFC 5764 key export, checking the server
  certificate against the answer's fingerprint;
* then its socket goes to the compiled :class:`bench._sink.Sink`, which
  counts RTP per slot SSRC, authenticates a sample with ``srtp_unprotect``
  and records arrival times, in a thread without the GIL;
* consent freshness (a STUN binding request every ~5 s, RFC 7675) and an
  RTCP receiver report every ~5 s, from Python.

A :class:`SyntheticSpeaker` has the same minimal stack (STUN, DTLS client,
SRTP *send*) and sends a canned Opus stream (a tone encoded once with
PyAV's libopus, 20 ms packets, RFC 6464 level with the negotiated id) at
50 packets/s, paced from the event loop. Each payload is made an Opus code-3
packet with 8 bytes of padding (RFC 6716 3.2.5: decoders accept any padding
value) that carry the send time, for the fan-out latency measurement.

Everything is on 127.0.0.1; every wait is bounded. Used as a library by the
benchmarks, or alone::

    python bench/serve.py --cpu 0 &      # prints {"control": PORT, ...}
    python bench/loadgen.py --control PORT --listeners 200 --speakers 1 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import fractions
import json
import math
import os
import random
import resource
import secrets
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import pylibsrtp
from aioice import stun
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _sink_is_stale() -> bool:
    """No compiled sink, or one older than ``_sink.pyx`` (an extension module
    cannot be reloaded: it must be rebuilt before the first import)."""
    import glob
    import sysconfig

    built = glob.glob(
        os.path.join(HERE, "_sink" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
    )
    source = os.path.getmtime(os.path.join(HERE, "_sink.pyx"))
    return not built or os.path.getmtime(built[0]) < source


if _sink_is_stale():  # build it on first use, again after a change (bench/setup_sink.py)
    import subprocess

    subprocess.run([sys.executable, os.path.join(HERE, "setup_sink.py")], check=True)
import _sink  # noqa: E402
import ws_client  # noqa: E402

LOOPBACK = "127.0.0.1"


async def cancel_tasks(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has ended."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass


AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
OPUS_PT = 111
LEVEL_ID = 1
MTU = 1200
RECORD_HEADER = 13
EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"  # RFC 5764 4.2
SRTP_PROFILES = b"SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80"
#: OpenSSL profile name -> (pylibsrtp profile, key bytes, salt bytes).
PROFILES = {
    b"SRTP_AEAD_AES_128_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12),
    b"SRTP_AES128_CM_SHA1_80": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14),
}
CONSENT_INTERVAL = 5.0  # seconds, randomised +-20 % per check (RFC 7675 5.1)
STUN_RETRANSMIT = 0.5
PACKET_TIME = 0.020
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value; Python lacks the name


# ------------------------------------------------------------------ credentials


class ClientCertificate:
    """ONE ECDSA P-256 certificate and DTLS client context shared by every peer."""

    def __init__(self, profiles: bytes = SRTP_PROFILES) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, secrets.token_hex(8))])
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256())
        )
        self.fingerprint = fingerprint_of(certificate)
        context = SSL.Context(SSL.DTLS_METHOD)
        context.set_min_proto_version(0xFEFD)  # DTLS 1.2
        context.set_max_proto_version(0xFEFD)
        context.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_QUERY_MTU)
        # The server's certificate is self-signed: it is pinned by the answer's
        # fingerprint after the handshake, not by a CA chain.
        context.set_verify(SSL.VERIFY_PEER, lambda *args: True)
        context.use_certificate(certificate)
        context.use_privatekey(key)
        context.set_cipher_list(b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA")
        context.set_tlsext_use_srtp(profiles)
        self.context = context


def fingerprint_of(certificate: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in certificate.fingerprint(hashes.SHA256()))


def ice_credentials() -> tuple[str, str]:
    """Random ICE ufrag (8 chars) and pwd (24): base64 of random bytes uses
    exactly the ice-char set (RFC 8839 5.4), without padding at these sizes."""
    return (
        base64.b64encode(os.urandom(6)).decode(),
        base64.b64encode(os.urandom(18)).decode(),
    )


# ------------------------------------------------------------------ SDP


def offer_sdp(
    ufrag: str, pwd: str, fingerprint: str, port: int, *, receive: int, send_ssrc: int | None = None
) -> str:
    """A minimal BUNDLEd audio offer (RFC 8829 shape): ``receive`` recvonly
    m-lines, plus a sendonly one first when ``send_ssrc`` is given."""
    directions = (["sendonly"] if send_ssrc is not None else []) + ["recvonly"] * receive
    mids = " ".join(str(i) for i in range(len(directions)))
    lines = [
        "v=0",
        f"o=- {random.getrandbits(62)} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        f"a=group:BUNDLE {mids}",
        "a=msid-semantic: WMS",
    ]
    for mid, direction in enumerate(directions):
        lines += [
            f"m=audio {port} UDP/TLS/RTP/SAVPF {OPUS_PT}",
            "c=IN IP4 127.0.0.1",
            "a=rtcp:9 IN IP4 0.0.0.0",
            f"a=candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host",
            f"a=ice-ufrag:{ufrag}",
            f"a=ice-pwd:{pwd}",
            f"a=fingerprint:sha-256 {fingerprint}",
            "a=setup:active",
            f"a=mid:{mid}",
            f"a=extmap:{LEVEL_ID} {AUDIO_LEVEL_URI}",
            f"a={direction}",
            "a=rtcp-mux",
            f"a=rtpmap:{OPUS_PT} opus/48000/2",
            f"a=fmtp:{OPUS_PT} minptime=10;useinbandfec=1",
        ]
        if direction == "sendonly" and send_ssrc is not None:
            lines.append(f"a=ssrc:{send_ssrc} cname:loadgen")
    return "\r\n".join(lines) + "\r\n"


def answer_sdp(remote_offer: str, ufrag: str, pwd: str, fingerprint: str, port: int) -> str:
    """Our answer to a server's offer (an SFU that offers to its subscribers,
    e.g. Janus VideoRoom): per offered m-line, in order and with its mid,
    Opus ``recvonly`` with the ``ssrc-audio-level`` id the offer uses (no
    other extension), our ICE credentials, fingerprint and candidate,
    ``a=setup:active`` (we are the DTLS client, as when we offer); any other
    m-line (video, data) is refused with port 0 (RFC 8843 7.3.3 / RFC 3264 6)."""
    sections: list[dict[str, Any]] = []
    for raw in remote_offer.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            fields = line[2:].split()
            sections.append({"kind": fields[0], "proto": fields[2], "pts": fields[3:], "mid": None})
        elif not sections or not line.startswith("a="):
            continue
        else:
            name, _, value = line[2:].partition(":")
            section = sections[-1]
            if name == "mid":
                section["mid"] = value
            elif name == "rtpmap" and "opus/48000" in value.lower():
                section.setdefault("opus", int(value.split()[0]))
            elif name == "extmap" and AUDIO_LEVEL_URI in value:
                section["level"] = int(value.split()[0].split("/")[0])
    accepted = [s for s in sections if s["kind"] == "audio" and "opus" in s and s["mid"]]
    if not accepted:
        raise ValueError("offer has no Opus audio m-line with a mid")
    lines = [
        "v=0",
        f"o=- {random.getrandbits(62)} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE " + " ".join(s["mid"] for s in accepted),
        "a=msid-semantic: WMS",
    ]
    for section in sections:
        if section not in accepted:
            lines += [
                f"m={section['kind']} 0 {section['proto']} {' '.join(section['pts'])}",
                "c=IN IP4 0.0.0.0",
            ]
            if section["mid"]:
                lines.append(f"a=mid:{section['mid']}")
            continue
        pt = section["opus"]
        lines += [
            f"m=audio {port} UDP/TLS/RTP/SAVPF {pt}",
            "c=IN IP4 127.0.0.1",
            "a=rtcp:9 IN IP4 0.0.0.0",
            f"a=candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host",
            "a=end-of-candidates",
            f"a=ice-ufrag:{ufrag}",
            f"a=ice-pwd:{pwd}",
            f"a=fingerprint:sha-256 {fingerprint}",
            "a=setup:active",
            f"a=mid:{section['mid']}",
        ]
        if "level" in section:
            lines.append(f"a=extmap:{section['level']} {AUDIO_LEVEL_URI}")
        lines += [
            "a=recvonly",
            "a=rtcp-mux",
            f"a=rtpmap:{pt} opus/48000/2",
            f"a=fmtp:{pt} minptime=10;useinbandfec=1",
        ]
    return "\r\n".join(lines) + "\r\n"


@dataclass
class Answer:
    ufrag: str
    pwd: str
    fingerprint: str
    host: str
    port: int
    ssrcs: list[int]
    audio_level_id: int
    payload_type: int


def parse_answer(sdp: str) -> Answer:
    """The fields of the server's answer a minimal client needs (RFC 8866 lines).

    Also reads a server's *offer* when the server offers (:meth:`Peer.answer_offer`):
    the same fields describe the remote side either way."""
    values: dict[str, str] = {}
    ssrcs: list[int] = []
    candidate: tuple[str, int] | None = None
    level_id = 0
    payload_type = OPUS_PT
    for raw in sdp.splitlines():
        line = raw.strip()
        if not line.startswith("a="):
            continue
        name, _, value = line[2:].partition(":")
        if name in ("ice-ufrag", "ice-pwd") and name not in values:
            values[name] = value
        elif name == "fingerprint" and "fingerprint" not in values:
            algorithm, _, digest = value.partition(" ")
            if algorithm.lower() == "sha-256":
                values["fingerprint"] = digest.strip().upper()
        elif name == "candidate" and candidate is None:
            fields = value.split()
            if len(fields) >= 6 and fields[2].lower() == "udp":
                candidate = (fields[4], int(fields[5]))
        elif name == "ssrc":
            ssrc = int(value.split()[0])
            if ssrc not in ssrcs:
                ssrcs.append(ssrc)
        elif name == "extmap" and AUDIO_LEVEL_URI in value and not level_id:
            level_id = int(value.split()[0].split("/")[0])
        elif name == "rtpmap" and "opus/48000" in value.lower():
            payload_type = int(value.split()[0])
    if candidate is None or "ice-ufrag" not in values or "fingerprint" not in values:
        raise ValueError("answer lacks a candidate, ICE credentials or a sha-256 fingerprint")
    if candidate[0] != LOOPBACK:
        raise ValueError(f"answer candidate {candidate[0]} is not {LOOPBACK}: refusing to send")
    return Answer(
        values["ice-ufrag"],
        values["ice-pwd"],
        values["fingerprint"],
        candidate[0],
        candidate[1],
        ssrcs,
        level_id,
        payload_type,
    )


# ------------------------------------------------------------------ RTP/RTCP


def receiver_report(ssrc: int, sources: Iterable[int]) -> bytes:
    """An RTCP RR (RFC 3550 6.4.2) with one zeroed report block per source."""
    blocks = b"".join(struct.pack("!IIIIII", source, 0, 0, 0, 0, 0) for source in sources)
    count = len(blocks) // 24
    return struct.pack("!BBHI", 0x80 | count, 201, (8 + len(blocks)) // 4 - 1, ssrc) + blocks


def stamped(payload: bytes, now_ns: int) -> bytes:
    """An Opus code-0 packet as code 3 with 8 bytes of padding carrying ``now_ns``.

    RFC 6716 3.2.5: TOC with c=3, then the frame count byte (v=0, p=1,
    M=1), the padding length (8), the frame, the padding. The padding is the
    send time (big-endian ns since the epoch): the RFC says encoders should
    zero it and decoders must accept any value.
    """
    if not payload or payload[0] & 3:
        return payload
    return bytes((payload[0] | 3, 0x41, 8)) + payload[1:] + now_ns.to_bytes(8, "big")


def encode_tone(seconds: float = 4.0, bitrate: int = 28000) -> list[bytes]:
    """Opus payloads of a 440 Hz tone, 20 ms each (PyAV's libopus, once at start)."""
    import av

    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = 48000
    codec.layout = "mono"
    codec.format = "s16"
    codec.bit_rate = bitrate
    codec.open()
    payloads: list[bytes] = []
    frames = int(seconds / PACKET_TIME)
    for i in range(frames + 5):
        t = (np.arange(960) + i * 960) / 48000
        samples = (0.3 * 32767 * np.sin(2 * math.pi * 440 * t)).astype("<i2")
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = 48000
        frame.pts = i * 960
        frame.time_base = fractions.Fraction(1, 48000)
        payloads.extend(bytes(packet) for packet in codec.encode(frame))
    return payloads[:frames]


# ------------------------------------------------------------------ one peer


class ControlConnection(asyncio.Protocol):
    """An HTTP/1.1 connection to the control endpoint, one request at a time.

    Hand-written rather than aiohttp's client because in a join storm the load
    generator shares the machine with the server, and the client library's own
    cost per request (several times this one's) made the load generator, not
    the server, set the pace. Replies must carry a Content-Length (aiohttp's
    JSON responses do).
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received = b""
        self.reply: asyncio.Future[bytes] | None = None
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> ControlConnection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(cls, host, port)
        return connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport

    def data_received(self, data: bytes) -> None:
        if self.reply is None or self.reply.done():
            return
        self.received += data
        head, separator, body = self.received.partition(b"\r\n\r\n")
        if not separator:
            return
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            self.reply.set_exception(ConnectionError("control reply without Content-Length"))
        elif len(body) >= length:
            self.reply.set_result(self.received)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(ConnectionError(f"control connection lost: {exc}"))

    async def request(self, path: str, body: bytes | None = None) -> dict[str, Any]:
        """POST ``body`` (JSON), or GET without one; the JSON reply, whatever its status."""
        if self.transport is None or self.closed or self.reply is not None:
            raise ConnectionError("control connection closed or busy")
        host, port = self.transport.get_extra_info("peername")[:2]
        if body is None:
            request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        else:
            request = (
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
        self.reply = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            raw = await self.reply
        except BaseException:
            # Cancelled or failed mid-reply: what is still on its way must not be
            # read as the answer to a later request.
            self.close()
            raise
        finally:
            self.reply, self.received = None, b""
        head, _, content = raw.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0]
        if not status_line.startswith(b"HTTP/1.1 "):
            raise ConnectionError(f"unexpected control reply {status_line[:80]!r}")
        try:
            reply = json.loads(content)
        except ValueError:
            raise ConnectionError(f"control reply is not JSON: {status_line[:80]!r}") from None
        if not isinstance(reply, dict):
            raise ConnectionError(f"control reply is not a JSON object: {status_line[:80]!r}")
        return reply

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


async def http_json(host: str, port: int, path: str, body: bytes | None = None) -> dict[str, Any]:
    """One request on a new connection, closed once the reply is in.

    That is what a fresh browser's join costs the server. Closed rather than
    kept: the benchmarks measure the server's memory per listener, and a
    thousand idle HTTP connections held open would add ~10 KB each to it.
    """
    connection = await ControlConnection.open(host, port)
    try:
        return await connection.request(path, body)
    finally:
        connection.close()


class Peer:
    """One minimal WebRTC client: STUN, DTLS client, SRTP (see the module doc)."""

    def __init__(
        self,
        index: int,
        identity: str,
        certificate: ClientCertificate,
        *,
        receive: int,
        send_ssrc: int | None,
    ) -> None:
        self.index = index
        self.identity = identity
        self.certificate = certificate
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        # Kernel receive times from the first datagram on (the sink reads them).
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind((LOOPBACK, 0))
        self.ufrag, self.pwd = ice_credentials()
        self.send_ssrc = send_ssrc
        self.offer = offer_sdp(
            self.ufrag,
            self.pwd,
            certificate.fingerprint,
            self.sock.getsockname()[1],
            receive=receive,
            send_ssrc=send_ssrc,
        )
        self.answer: Answer | None = None
        self.state = "new"  # new -> ice -> dtls -> connected | failed
        self.failure = ""
        self.offer_ns = 0  # CLOCK_REALTIME ns when the offer was posted (its join frame sent)
        self.answer_ns = 0
        self.connected_ns = 0
        #: Its signaling WebSocket (a ws_client.WebSocketClient) when it joined
        #: over one: open for its life, with what it received.
        self.signaling: Any = None
        self.ssl: SSL.Connection | None = None
        self.srtp_rx: pylibsrtp.Session | None = None
        self.srtp_tx: pylibsrtp.Session | None = None
        self.profile = b""
        self.rtcp_ssrc = random.getrandbits(32)
        self.next_consent = 0.0
        self.consent_sent = 0
        self.send_errors = 0
        #: STUN requests and DTLS flights sent again because no answer came in time.
        self.retransmissions = 0
        self._transaction = b""
        self._stun_request = b""
        self._next_stun = 0.0
        self._dtls_retransmit: float | None = None
        self._done: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- connection --------------------------------------------------------

    def start(self, answer: Answer, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        self.answer = answer
        self._loop = loop
        self.sock.connect((answer.host, answer.port))  # only the server's datagrams get in
        self._done = loop.create_future()
        loop.add_reader(self.sock.fileno(), self._readable)
        self.state = "ice"
        self._send_binding(use_candidate=True)
        return self._done

    def answer_offer(self, remote_offer: str) -> tuple[Answer, str]:
        """Answer mode, for a server that offers (Janus VideoRoom subscribers):
        the remote description read from its offer (give it to :meth:`start`
        once the server has our answer) and our answer SDP, built from this
        peer's ICE credentials, certificate and socket as the offer would be.
        Everything after (STUN as the controlling agent, DTLS client, SRTP) is
        the same as when this peer offers."""
        remote = parse_answer(remote_offer)
        local = answer_sdp(
            remote_offer,
            self.ufrag,
            self.pwd,
            self.certificate.fingerprint,
            self.sock.getsockname()[1],
        )
        return remote, local

    def _binding_request(self, use_candidate: bool) -> bytes:
        assert self.answer is not None
        message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        message.attributes["USERNAME"] = f"{self.answer.ufrag}:{self.ufrag}"
        message.attributes["PRIORITY"] = 2130706431
        message.attributes["ICE-CONTROLLING"] = random.getrandbits(64)
        if use_candidate:
            message.attributes["USE-CANDIDATE"] = None
        message.add_message_integrity(self.answer.pwd.encode())
        message.add_fingerprint()
        self._transaction = message.transaction_id
        return bytes(message)

    def _send_binding(self, *, use_candidate: bool) -> None:
        self._stun_request = self._binding_request(use_candidate)
        self._next_stun = time.monotonic() + STUN_RETRANSMIT
        self._send(self._stun_request)

    def _send(self, data: bytes) -> bool:
        try:
            self.sock.send(data)
        except (BlockingIOError, ConnectionRefusedError):
            self.send_errors += 1  # a lost datagram: the retransmission timers cover it
            return False
        return True

    def _readable(self) -> None:
        for _ in range(64):  # bounded per wakeup
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP port unreachable: the server is gone
                self._fail(f"socket error {exc}")
                return
            if not data:
                continue
            first = data[0]
            if first < 2:
                self._stun_received(data)
            elif 19 < first < 64:
                self._dtls_received(data)
            if self.state == "connected":
                return  # what follows (media) is the sink's to read and count

    def _stun_received(self, data: bytes) -> None:
        try:
            message = stun.parse_message(data)
        except ValueError:
            return
        if (
            message.message_method == stun.Method.BINDING
            and message.message_class == stun.Class.REQUEST
        ):
            self._answer_check(message)
            return
        if message.transaction_id != self._transaction or self.state != "ice":
            return
        assert self.answer is not None
        if message.message_class != stun.Class.RESPONSE or not message.check_message_integrity(
            self.answer.pwd.encode()
        ):
            self._fail("bad STUN response")
            return
        self.state = "dtls"
        ssl = SSL.Connection(self.certificate.context, None)
        ssl.set_connect_state()
        ssl.set_ciphertext_mtu(MTU)
        self.ssl = ssl
        self._handshake()

    def _answer_check(self, request: stun.Message) -> None:
        """Answer the server's own connectivity check (RFC 8445 7.3), as a full
        agent does: sfu (ICE-lite) sends none, but Janus's libnice sends them
        even in ICE-lite mode and nominates the pair only on our response.
        Checks not for our ufrag or failing MESSAGE-INTEGRITY are ignored."""
        username = request.attributes.get("USERNAME", "")
        if self.answer is None or not username.startswith(self.ufrag + ":"):
            return
        if not request.check_message_integrity(self.pwd.encode()):
            return
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = (self.answer.host, self.answer.port)
        response.add_message_integrity(self.pwd.encode())
        response.add_fingerprint()
        self._send(bytes(response))

    def _dtls_received(self, data: bytes) -> None:
        if self.ssl is None:
            return
        self.ssl.bio_write(data)
        if self.state == "dtls":
            self._handshake()

    def _handshake(self) -> None:
        ssl = self.ssl
        assert ssl is not None
        try:
            ssl.do_handshake()
        except SSL.WantReadError:
            self._flush()
            timeout = ssl.DTLSv1_get_timeout()
            self._dtls_retransmit = None if timeout is None else time.monotonic() + timeout
            return
        except SSL.Error as exc:
            self._fail(f"DTLS handshake failed: {exc}")
            return
        self._flush()
        certificate = ssl.get_peer_certificate(as_cryptography=True)
        assert self.answer is not None
        if certificate is None or fingerprint_of(certificate) != self.answer.fingerprint:
            self._fail("server certificate does not match the answer's fingerprint")
            return
        self.profile = ssl.get_selected_srtp_profile()
        profile, key, salt = PROFILES[self.profile]
        material = ssl.export_keying_material(EXPORTER_LABEL, 2 * (key + salt))
        client = material[:key] + material[2 * key : 2 * key + salt]
        server = material[key : 2 * key] + material[2 * key + salt :]
        self.srtp_rx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=server, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile
            )
        )
        self.srtp_tx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=client, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
            )
        )
        self.state = "connected"
        self.connected_ns = time.time_ns()
        self._dtls_retransmit = None
        self.next_consent = time.monotonic() + CONSENT_INTERVAL * random.uniform(0.8, 1.2)
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _flush(self) -> None:
        """Send what OpenSSL wrote: whole records, packed into datagrams <= MTU."""
        ssl = self.ssl
        assert ssl is not None
        chunks = []
        while True:
            try:
                chunks.append(ssl.bio_read(65536))
            except SSL.WantReadError:
                break
        if not chunks:
            return
        data = b"".join(chunks)
        start = pos = 0
        while pos < len(data):
            next_pos = pos + RECORD_HEADER + (data[pos + 11] << 8 | data[pos + 12])
            if next_pos - start > MTU and pos > start:
                self._send(data[start:pos])
                start = pos
            pos = next_pos
        self._send(data[start:])

    def tick(self, now: float) -> None:
        """Retransmit STUN or the DTLS flight when due (called by the load generator)."""
        if self.state == "ice" and now >= self._next_stun:
            self._next_stun = now + STUN_RETRANSMIT
            self.retransmissions += 1
            self._send(self._stun_request)
        elif self.state == "dtls" and self.ssl is not None and self._dtls_retransmit is not None:
            if now >= self._dtls_retransmit:
                self.retransmissions += 1
                try:
                    self.ssl.DTLSv1_handle_timeout()
                except SSL.Error as exc:
                    self._fail(f"DTLS retransmission failed: {exc}")
                    return
                self._flush()
                timeout = self.ssl.DTLSv1_get_timeout()
                self._dtls_retransmit = None if timeout is None else now + timeout

    def handed_over(self) -> None:
        """The sink reads the socket from now on."""
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())

    def _fail(self, reason: str) -> None:
        if self.state in ("failed", "connected"):
            return
        self.state = "failed"
        self.failure = reason
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        if self._done is not None and not self._done.done():
            self._done.set_exception(ConnectionError(reason))

    def fail(self, reason: str) -> None:
        self._fail(reason)

    # -- after connecting --------------------------------------------------

    def keepalive(self, now: float, sources: list[int]) -> None:
        """Consent check and, for receivers, an RTCP RR (both every ~5 s)."""
        self.next_consent = now + CONSENT_INTERVAL * random.uniform(0.8, 1.2)
        self._send(self._binding_request(use_candidate=False))
        self.consent_sent += 1
        if self.srtp_tx is not None and sources:
            self._send(self.srtp_tx.protect_rtcp(receiver_report(self.rtcp_ssrc, sources)))

    def close(self) -> None:
        # Always unregister before closing: the selector would otherwise keep
        # the fd number, and a new socket given that number would never be read.
        if self._loop is not None and self.sock.fileno() >= 0:
            try:
                self._loop.remove_reader(self.sock.fileno())
            except (ValueError, OSError):
                pass
        self.sock.close()


class SyntheticSpeaker(Peer):
    """A speaker: the listener's stack plus SRTP send of a canned Opus stream."""

    #: RFC 6464 levels (-dBov) cycled while talking: a speech-like envelope, so an
    #: active-speaker detector that tracks a noise floor sees speech, not a
    #: constant noise. The first :data:`QUIET_PACKETS` are digital silence (127).
    LEVELS = (24, 27, 31, 36, 29, 25, 41, 52, 33, 27, 23, 38, 46, 30, 26)
    QUIET_PACKETS = 10

    def __init__(
        self, index: int, identity: str, certificate: ClientCertificate, payloads: list[bytes]
    ) -> None:
        super().__init__(index, identity, certificate, receive=0, send_ssrc=random.getrandbits(32))
        self.payloads = payloads
        self.sequence = random.getrandbits(16)
        self.timestamp = random.getrandbits(32)
        self.sent = 0
        self.paused = True

    def send_packet(self) -> None:
        assert self.srtp_tx is not None and self.answer is not None and self.send_ssrc is not None
        payload = stamped(self.payloads[self.sent % len(self.payloads)], time.time_ns())
        level_id = self.answer.audio_level_id
        if level_id:
            sent = self.sent
            level = (
                127 if sent < self.QUIET_PACKETS else 0x80 | self.LEVELS[sent % len(self.LEVELS)]
            )
            header = struct.pack(
                "!BBHIIHHBBH",
                0x90,
                self.answer.payload_type,
                self.sequence,
                self.timestamp,
                self.send_ssrc,
                0xBEDE,
                1,
                level_id << 4,
                level,
                0,
            )
        else:
            header = struct.pack(
                "!BBHII",
                0x80,
                self.answer.payload_type,
                self.sequence,
                self.timestamp,
                self.send_ssrc,
            )
        if self._send(self.srtp_tx.protect(header + payload)):
            self.sent += 1
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + 960) & 0xFFFFFFFF

    def skip(self) -> None:
        """A 20 ms frame not sent (silence): the RTP clock still runs."""
        self.timestamp = (self.timestamp + 960) & 0xFFFFFFFF


# ------------------------------------------------------------------ the load generator


def rusage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"utime": usage.ru_utime, "stime": usage.ru_stime, "maxrss": usage.ru_maxrss * 1024}


def udp_errors() -> dict[str, int]:
    """Kernel-wide UDP counters (/proc/net/snmp): receive-buffer drops show here."""
    with open("/proc/net/snmp") as snmp:
        lines = [line.split() for line in snmp if line.startswith("Udp:")]
    return dict(zip(lines[0][1:], (int(v) for v in lines[1][1:])))


@dataclass
class Snapshot:
    """Counters at one instant (all copies)."""

    monotonic: float
    packets: np.ndarray  # (listeners, slots + 1) RTP per slot SSRC
    rtcp: np.ndarray
    auth_ok: int
    auth_failed: int
    speaker_sent: int
    loadgen: dict[str, float]
    server: dict[str, Any]
    udp: dict[str, int]


@dataclass
class Window:
    """What happened between two snapshots."""

    seconds: float
    listeners: int
    expected: int  # packets each listener should have received
    received: np.ndarray  # per listener
    server_cpu: float
    loadgen_cpu: float
    fanout_sent: int
    fanout_dropped: int
    speaker_sent: int
    auth_ok: int
    auth_failed: int
    rcvbuf_errors: int
    server_wait: float = 0.0  # seconds the server was runnable but another task had its CPU
    backlog: float = 0.0  # seconds the server needed after the speakers stopped (see measure)
    server: dict[str, Any] = field(default_factory=dict)
    server_counters: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        received = self.received.astype(np.int64)
        delivered = int(received.sum())
        expected_total = self.expected * self.listeners
        loss = (
            1 - received / self.expected if self.expected else np.zeros_like(received, dtype=float)
        )
        return {
            "seconds": round(self.seconds, 3),
            "listeners": self.listeners,
            "speaker_packets": self.speaker_sent,
            "expected_per_listener": self.expected,
            "delivered": delivered,
            "fanout_sent": self.fanout_sent,
            "fanout_dropped": self.fanout_dropped,
            "loss": 1 - delivered / expected_total if expected_total else 0.0,
            "worst_listener_loss": float(loss.max()) if len(loss) else 0.0,
            "listeners_over_0_5pct_loss": int((loss > 0.005).sum()),
            "listeners_with_nothing": int((received == 0).sum()) if self.expected else 0,
            "listeners_with_extra": int((received > self.expected).sum()),
            "server_cpu_s": round(self.server_cpu, 4),
            "server_cpu_share": round(self.server_cpu / self.seconds, 4) if self.seconds else 0.0,
            "server_us_per_delivered": round(self.server_cpu / delivered * 1e6, 3)
            if delivered
            else None,
            "server_us_per_sent": round(self.server_cpu / self.fanout_sent * 1e6, 3)
            if self.fanout_sent
            else None,
            "loadgen_cpu_s": round(self.loadgen_cpu, 4),
            "loadgen_cpu_share": round(self.loadgen_cpu / self.seconds, 4) if self.seconds else 0.0,
            "auth_ok": self.auth_ok,
            "auth_failed": self.auth_failed,
            "udp_rcvbuf_errors": self.rcvbuf_errors,
            "server_runqueue_wait_s": round(self.server_wait, 4),
            "server_backlog_s": round(self.backlog, 3),
            "loadavg": self.server.get("loadavg"),
            "server_counters": self.server_counters,
        }


class LoadGen:
    """Listeners and speakers against one ``bench/serve.py`` (see the module doc)."""

    def __init__(
        self,
        control_port: int,
        *,
        room: str = "bench",
        capacity: int = 8192,
        slots: int = 3,
        sample_every: int = 64,
        sink_pause: float = 0.001,
        concurrency: int = 64,
        join_timeout: float = 30.0,
        keepalive: bool = True,
        profiles: bytes = SRTP_PROFILES,
        per_listener_ssrcs: bool = False,
    ) -> None:
        self.base = f"http://{LOOPBACK}:{control_port}"
        self.control_port = control_port
        self.room = room
        self.capacity = capacity
        self.slots = slots
        self.sample_every = sample_every
        self.sink_pause = sink_pause
        self.concurrency = concurrency
        self.join_timeout = join_timeout
        self.keepalive_enabled = keepalive
        #: A server that gives each listener its own SSRC (Janus rewrites it per
        #: subscriber) rather than the room's slot SSRCs: the sink then has no
        #: slot SSRCs, every RTP packet is counted (its "other" column), and
        #: each listener's receiver reports cover the SSRCs of its own answer.
        self.per_listener_ssrcs = per_listener_ssrcs
        self.certificate = ClientCertificate(profiles)
        self.listeners: list[Peer] = []
        self.speakers: list[SyntheticSpeaker] = []
        self.failed: list[Peer] = []
        self.sink: Any = None
        self.slot_ssrcs: list[int] = []
        self.payloads = encode_tone()
        self._handshaking: set[Peer] = set()
        self._http: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sink_thread: threading.Thread | None = None
        self._closing = False
        self._semaphore = asyncio.Semaphore(concurrency)
        # Control connections opened ahead (open_control_connections): offers go
        # on them instead of on a new connection each.
        self._kept: list[ControlConnection] = []
        #: Listeners join over the server's signaling WebSocket instead of
        #: POST /offer once open_signaling_connections made this.
        self.signaling: ws_client.SignalingConnections | None = None
        self._sequence = 0
        self.late_ticks = 0

    async def __aenter__(self) -> LoadGen:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._ticker()), loop.create_task(self._pacer())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open_control_connections(self, count: int) -> None:
        """Open ``count`` HTTP connections to the control endpoint now, for the
        offers that follow (as a reverse proxy in front of the app keeps
        connections to it open): a join then costs the server no TCP
        connection of its own."""
        self._kept += await asyncio.gather(
            *(ControlConnection.open(LOOPBACK, self.control_port) for _ in range(count))
        )

    async def open_signaling_connections(
        self,
        count: int,
        token_secret: str,
        *,
        path: str = "/ws",
        deflate: bool = True,
        concurrency: int = 64,
    ) -> float:
        """Open ``count`` WebSockets to the server's signaling (serve.py mounts
        it on the control port), ``concurrency`` at a time, as each browser's
        page opens its own before it offers; listeners then join over them
        (a ``join`` with a token signed with ``token_secret``), not through
        ``POST /offer``. ``deflate``: offer permessage-deflate, as browsers do.
        The seconds it took."""
        if self.signaling is None:
            self.signaling = ws_client.SignalingConnections(
                self.control_port, token_secret, path=path, deflate=deflate
            )
        return await self.signaling.open(count, concurrency=concurrency, timeout=self.join_timeout)

    async def close(self) -> None:
        self._closing = True
        if self.signaling is not None:
            # First, while the server still runs: each closed socket leaves the room.
            await self.signaling.close()
        for connection in self._kept:
            connection.close()
        self._kept = []
        await cancel_tasks(self._tasks)
        if self.sink is not None:
            self.sink.stop()
        if self._sink_thread is not None:
            await asyncio.to_thread(self._sink_thread.join, 5.0)
        for peer in [*self.listeners, *self.speakers, *self.failed]:
            peer.close()
        if self._http is not None:
            await self._http.close()

    # -- control endpoint ----------------------------------------------------

    async def server_stats(self, reset_lag: bool = False, offers: bool = False) -> dict[str, Any]:
        """serve.py's ``GET /stats``; ``offers``: with its per-identity ``offer_times``."""
        assert self._http is not None
        params = {"reset": "1"} if reset_lag else {}
        if offers:
            params["offers"] = "1"
        async with self._http.get(f"{self.base}/stats", params=params) as response:
            result: dict[str, Any] = await response.json()
            return result

    async def _post_offer(self, peer: Peer, role: str) -> Answer:
        if role == "listener" and self.signaling is not None:
            return parse_answer(await self.signaling.join(peer, self.room, self.join_timeout))
        body = json.dumps(
            {
                "room": self.room,
                "role": role,
                "identity": peer.identity,
                "offer": peer.offer,
                "slots": self.slots,
            }
        ).encode()
        peer.offer_ns = time.time_ns()
        kept = self._kept.pop() if self._kept else None
        if kept is None:
            sent = http_json(LOOPBACK, self.control_port, "/offer", body)
        else:
            sent = kept.request("/offer", body)
        reply = await asyncio.wait_for(sent, self.join_timeout)
        if kept is not None and not kept.closed:
            self._kept.append(kept)
        if "answer" not in reply:
            raise ConnectionError(f"offer refused: {reply.get('error')}")
        peer.answer_ns = time.time_ns()
        return parse_answer(reply["answer"])

    # -- joining ---------------------------------------------------------------

    async def _connect(self, peer: Peer, role: str) -> bool:
        loop = asyncio.get_running_loop()
        async with self._semaphore:
            try:
                answer = await self._post_offer(peer, role)
                done = peer.start(answer, loop)
                self._handshaking.add(peer)
                try:
                    await asyncio.wait_for(done, self.join_timeout)
                except asyncio.TimeoutError:
                    raise ConnectionError(
                        f"no connection after {self.join_timeout} s (state {peer.state})"
                    ) from None
            except (
                ConnectionError,
                OSError,
                ValueError,
                asyncio.TimeoutError,
                aiohttp.ClientError,
            ) as exc:
                peer.fail(str(exc) or type(exc).__name__)
                self._handshaking.discard(peer)
                self.failed.append(peer)
                return False
        self._handshaking.discard(peer)
        return True

    async def add_listeners(self, count: int) -> dict[str, Any]:
        """Join ``count`` listeners, up to ``concurrency`` at a time; hand each to the sink."""
        start = time.monotonic()
        first_index = len(self.listeners) + len(self.failed)

        async def one(number: int) -> Peer | None:
            peer = Peer(
                first_index + number,
                f"listener-{self._next()}",
                self.certificate,
                receive=self.slots,
                send_ssrc=None,
            )
            if not await self._connect(peer, "listener"):
                return None
            self._adopt(peer)
            return peer

        results = await asyncio.gather(*(one(i) for i in range(count)))
        joined = [peer for peer in results if peer is not None]
        elapsed = time.monotonic() - start
        return {
            "requested": count,
            "joined": len(joined),
            "failed": count - len(joined),
            "seconds": round(elapsed, 3),
            "joins_per_second": round(len(joined) / elapsed, 1) if elapsed else None,
            "failures": sorted({peer.failure for peer in self.failed})[:5],
        }

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence

    def _adopt(self, peer: Peer) -> None:
        """A connected listener: its socket goes to the sink."""
        assert peer.answer is not None and peer.srtp_rx is not None
        if self.sink is None:
            if not self.per_listener_ssrcs:
                self.slot_ssrcs = peer.answer.ssrcs[: self.slots]
            self.sink = _sink.Sink(
                self.capacity,
                self.slot_ssrcs,
                latency_ssrc=self.slot_ssrcs[0] if self.slot_ssrcs else -1,
                sample_every=self.sample_every,
                authenticate_other=self.per_listener_ssrcs,
            )
            self._sink_thread = threading.Thread(target=self._drain, name="sink", daemon=True)
            self._sink_thread.start()
        peer.handed_over()
        peer.index = len(self.listeners)
        self.sink.add(peer.index, peer.sock, peer.srtp_rx)
        self.listeners.append(peer)

    def _drain(self) -> None:
        while not self._closing:
            self.sink.run(0.2, self.sink_pause)

    async def add_speaker(self, warmup: float = 1.0) -> SyntheticSpeaker:
        speaker = SyntheticSpeaker(
            len(self.speakers), f"speaker-{self._next()}", self.certificate, self.payloads
        )
        if not await self._connect(speaker, "speaker"):
            raise ConnectionError(
                f"speaker could not connect: {speaker.failure} (state {speaker.state})"
            )
        speaker.handed_over()
        # Nothing reads a speaker's socket after the handshake but the kernel
        # keeps at most its buffer: drain it now and then (RTCP RRs, STUN).
        loop = asyncio.get_running_loop()
        loop.add_reader(speaker.sock.fileno(), _discard, speaker.sock)
        self.speakers.append(speaker)
        # Talk for a moment so the server's speaker detection gives it a slot
        # before anything is measured (a slot holder keeps it while silent).
        speaker.paused = False
        await asyncio.sleep(warmup)
        speaker.paused = True
        return speaker

    # -- timers ----------------------------------------------------------------

    async def _ticker(self) -> None:
        """Handshake retransmissions (every 100 ms) and keepalives."""
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for peer in list(self._handshaking):
                peer.tick(now)
            if not self.keepalive_enabled:
                continue
            for peer in self.listeners:
                if now >= peer.next_consent:
                    peer.keepalive(now, self._sources(peer))
            for speaker in self.speakers:
                if now >= speaker.next_consent:
                    speaker.keepalive(now, [])

    async def _pacer(self) -> None:
        """Every 20 ms, one packet from each unpaused speaker (late ticks catch up, bounded)."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += PACKET_TIME
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:  # far behind: drop the backlog rather than burst
                self.late_ticks += 1
                due = loop.time()
            for speaker in self.speakers:
                if speaker.paused:
                    speaker.skip()
                else:
                    speaker.send_packet()

    def _sources(self, peer: Peer) -> list[int]:
        """The SSRCs ``peer``'s receiver reports cover."""
        if self.per_listener_ssrcs and peer.answer is not None:
            return peer.answer.ssrcs[: self.slots]
        return self.slot_ssrcs

    def set_speaking(self, speaking: bool) -> None:
        for speaker in self.speakers:
            speaker.paused = not speaking

    # -- measuring ---------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        server = await self.server_stats()
        sink = self.sink
        count = len(self.listeners)
        # Slot SSRCs only; with per-listener SSRCs, the "other" column is the count.
        columns = len(self.slot_ssrcs) + (1 if self.per_listener_ssrcs else 0)
        return Snapshot(
            monotonic=time.monotonic(),
            packets=sink.packets[:count, :columns].copy() if sink is not None else np.zeros((0, 0)),
            rtcp=sink.rtcp[:count].copy() if sink is not None else np.zeros(0),
            auth_ok=int(sink.auth_ok.sum()) if sink is not None else 0,
            auth_failed=int(sink.auth_failed.sum()) if sink is not None else 0,
            speaker_sent=sum(speaker.sent for speaker in self.speakers),
            loadgen=rusage(),
            server=server,
            udp=udp_errors(),
        )

    def window(self, before: Snapshot, after: Snapshot) -> Window:
        count = min(len(before.packets), len(after.packets))
        received = after.packets[:count].sum(axis=1) - before.packets[:count].sum(axis=1)
        room_before = before.server["rooms"].get(self.room, {})
        room_after = after.server["rooms"].get(self.room, {})
        return Window(
            seconds=after.monotonic - before.monotonic,
            listeners=count,
            expected=after.speaker_sent - before.speaker_sent,
            received=received,
            server_cpu=(after.server["utime"] + after.server["stime"])
            - (before.server["utime"] + before.server["stime"]),
            loadgen_cpu=(after.loadgen["utime"] + after.loadgen["stime"])
            - (before.loadgen["utime"] + before.loadgen["stime"]),
            fanout_sent=room_after.get("fanout_sent", 0) - room_before.get("fanout_sent", 0),
            fanout_dropped=room_after.get("fanout_dropped", 0)
            - room_before.get("fanout_dropped", 0),
            speaker_sent=after.speaker_sent - before.speaker_sent,
            auth_ok=after.auth_ok - before.auth_ok,
            auth_failed=after.auth_failed - before.auth_failed,
            rcvbuf_errors=after.udp.get("RcvbufErrors", 0) - before.udp.get("RcvbufErrors", 0),
            server=after.server,
            server_wait=after.server.get("sched_waiting", 0.0)
            - before.server.get("sched_waiting", 0.0),
            server_counters=server_deltas(before.server, after.server, self.room),
        )

    async def measure(
        self, seconds: float, *, speaking: bool = True, settle: float = 0.3
    ) -> Window:
        """A window with exact expected counts: speakers paused at both ends.

        Pause, let in-flight packets land (``settle``), snapshot, speak for
        ``seconds``, pause, settle, snapshot: every listener should then have
        exactly what the speakers sent in between.
        """
        self.set_speaking(False)
        await self.settle(settle)
        before = await self.snapshot()
        self.set_speaking(speaking)
        await asyncio.sleep(seconds)
        self.set_speaking(False)
        waited = await self.settle(settle)
        after = await self.snapshot()
        window = self.window(before, after)
        # How long the server still worked on the window's packets after the
        # speakers stopped: more than a packet time means it fell behind.
        window.backlog = max(0.0, waited - settle - 0.05)
        return window

    async def settle(self, seconds: float, limit: float = 10.0) -> float:
        """Wait ``seconds``, then until the server has routed every speaker packet
        sent so far (a starved or overloaded server works through a backlog
        after the speakers stop), at most ``limit`` seconds. Returns the wait."""
        start = time.monotonic()
        await asyncio.sleep(seconds)
        sent = sum(speaker.sent for speaker in self.speakers)
        while time.monotonic() - start < limit:
            room = (await self.server_stats())["rooms"].get(self.room, {})
            if room.get("router_packets_in", sent) >= sent:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.05)  # the last copies into the listeners' sockets
        return time.monotonic() - start


def server_deltas(before: dict[str, Any], after: dict[str, Any], room: str) -> dict[str, Any]:
    """What the server counted between two /stats replies: datagrams in, drops by reason, router."""
    result: dict[str, Any] = {}
    for key, value in after["server"].items():
        if isinstance(value, int) and isinstance(before["server"].get(key), int):
            result[key] = value - before["server"][key]
    drops_before = before["server"].get("drops", {})
    drops = {k: v - drops_before.get(k, 0) for k, v in after["server"].get("drops", {}).items()}
    result["drops"] = {k: v for k, v in drops.items() if v}
    room_before = before["rooms"].get(room, {})
    for key, value in after["rooms"].get(room, {}).items():
        if key.startswith("router_"):
            result[key] = value - room_before.get(key, 0)
    return result


def _discard(sock: socket.socket) -> None:
    for _ in range(64):
        try:
            sock.recv(4096)
        except OSError:
            return


# ------------------------------------------------------------------ CLI


async def run_cli(args: argparse.Namespace) -> dict[str, Any]:
    async with LoadGen(
        args.control, concurrency=args.concurrency, capacity=max(args.listeners, 1)
    ) as gen:
        speakers = [await gen.add_speaker() for _ in range(args.speakers)]
        joins = await gen.add_listeners(args.listeners)
        window = await gen.measure(args.seconds, speaking=bool(speakers))
        return {"joins": joins, "window": window.summary(), "speakers": len(speakers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--control", type=int, required=True, help="bench/serve.py control port")
    parser.add_argument("--listeners", type=int, default=100)
    parser.add_argument("--speakers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--cpu", type=int, default=None, help="pin the load generator to one CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    print(json.dumps(asyncio.run(asyncio.wait_for(run_cli(args), args.seconds + 300)), indent=2))


if __name__ == "__main__":
    main()
