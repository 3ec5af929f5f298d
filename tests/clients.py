"""aiortc reference clients for tests: speakers and listeners that record the wire.

A client records every RTP packet its sender hands to SRTP (``sent``) and
every RTP packet each of its receivers gets after SRTP (``received``, by
transceiver index), so tests can compare payloads byte for byte.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aioice.ice import ICE_COMPLETED
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack
from av import AudioFrame

from sfu import Participant, Room

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms


class ToneTrack(AudioStreamTrack):
    """A paced 48 kHz track: a sine tone while ``loud`` is True, silence otherwise."""

    def __init__(self, frequency: float = 440.0, loud: bool = True) -> None:
        super().__init__()
        self.frequency = frequency
        self.loud = loud
        self._samples_sent = 0
        self._started: float | None = None

    async def recv(self) -> AudioFrame:
        if self._started is None:
            self._started = time.time()
        else:
            wait = self._started + self._samples_sent / SAMPLE_RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        if self.loud:
            t = (np.arange(FRAME_SAMPLES) + self._samples_sent) / SAMPLE_RATE
            samples = (0.3 * 32767 * np.sin(2 * math.pi * self.frequency * t)).astype("<i2")
        else:
            samples = np.zeros(FRAME_SAMPLES, dtype="<i2")
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(samples.tobytes())
        frame.pts = self._samples_sent
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._samples_sent += FRAME_SAMPLES
        return frame


@dataclass
class ReceivedPacket:
    sequence: int
    timestamp: int
    ssrc: int
    csrc: tuple[int, ...]
    marker: bool
    payload: bytes
    audio_level: Any
    arrival: float


@dataclass
class Client:
    pc: RTCPeerConnection
    identity: str
    track: ToneTrack | None = None
    participant: Participant | None = None
    sent: list[tuple[int, int, int, bytes]] = field(
        default_factory=list
    )  # (ssrc, seq, ts, payload)
    received: dict[int, list[ReceivedPacket]] = field(default_factory=dict)

    @property
    def sent_payloads(self) -> list[bytes]:
        return [payload for _, _, _, payload in self.sent]

    @property
    def sent_ssrc(self) -> int | None:
        return self.sent[0][0] if self.sent else None

    @property
    def csrc(self) -> int:
        """The CSRC the room names this member's voice with (Participant.csrc)."""
        assert self.participant is not None and self.participant.csrc
        return self.participant.csrc

    def packets(self, slot: int = 0) -> list[ReceivedPacket]:
        return self.received.get(slot, [])

    def total_received(self) -> int:
        return sum(len(v) for v in self.received.values())

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until this client's own ICE and DTLS are up.

        The server may see the handshake finish a moment before the client has
        processed the server's last flight; a test that sends through the
        client's transport must wait for the client's side.
        """
        deadline = time.monotonic() + timeout
        while self.pc.connectionState != "connected":
            if self.pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
                raise AssertionError(
                    f"client {self.identity} not connected: {self.pc.connectionState}"
                )
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        await close_peer(self.pc)


async def close_peer(pc: RTCPeerConnection) -> None:
    """``pc.close()``, and stop the ICE consent task and the receivers' RTCP
    tasks that close() can miss.

    aioice starts its consent task when ``connect()`` resumes after ICE
    completes; a close() that runs in between finds no task to stop, and
    the task starts afterwards and outlives the peer. Let ``connect()``
    resume, then stop it.
    """
    connections = [
        transceiver.sender.transport.transport._connection
        for transceiver in pc.getTransceivers()
        if transceiver.sender.transport is not None
    ]
    # Its connect task, if one runs: a DTLS handshake that completed just
    # before the close lets it go on to start a receiver (and its RTCP task)
    # after the close stopped them all.
    connecting = [
        task
        for task in asyncio.all_tasks()
        if not task.done()
        and getattr(task.get_coro(), "__qualname__", "") == "RTCPeerConnection.__connect"
        and getattr(getattr(task.get_coro(), "cr_frame", None), "f_locals", {}).get("self") is pc
    ]
    await pc.close()
    if connecting:
        await asyncio.wait(connecting, timeout=2.0)
    for transceiver in pc.getTransceivers():
        await _cancel(getattr(transceiver.receiver, "_RTCRtpReceiver__rtcp_task", None))
    # ICE may have completed just before the close while connect() was still in
    # its 20 ms check loop: it then takes ICE_COMPLETED from its queue later and
    # starts the consent task. Wait (bounded) until it has taken it.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2.0
    while loop.time() < deadline and any(
        ICE_COMPLETED in getattr(connection._check_list_state, "_queue", ())
        for connection in connections
    ):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0)
    for connection in connections:
        # Newer aioice names it _query_consent_task.
        await _cancel(
            getattr(connection, "_query_consent_task", None)
            or getattr(connection, "_query_consent_handle", None)
        )


async def _cancel(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` if it still runs, and wait for it to end."""
    if task is not None and not task.done():
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


def _record_sent(client: Client) -> None:
    transport = client.pc.getTransceivers()[0].sender.transport
    original = transport._send_rtp

    async def send_rtp(data: bytes) -> None:
        if not 64 <= (data[1] & 0x7F) <= 95:  # RTP, not RTCP
            first = data[0]
            offset = 12 + 4 * (first & 0x0F)
            if first & 0x10:
                offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
            ssrc = struct.unpack_from("!I", data, 8)[0]
            seq, ts = struct.unpack_from("!HI", data, 2)
            client.sent.append((ssrc, seq, ts, data[offset:]))
        await original(data)

    transport._send_rtp = send_rtp  # type: ignore[method-assign]


def _record_received(client: Client) -> None:
    for index, transceiver in enumerate(client.pc.getTransceivers()):
        receiver = transceiver.receiver
        original = receiver._handle_rtp_packet
        packets = client.received.setdefault(index, [])

        def make(
            original: Callable[..., Awaitable[None]], packets: list[ReceivedPacket]
        ) -> Callable[..., Awaitable[None]]:
            async def handle(packet: Any, arrival_time_ms: int) -> None:
                packets.append(
                    ReceivedPacket(
                        sequence=packet.sequence_number,
                        timestamp=packet.timestamp,
                        ssrc=packet.ssrc,
                        csrc=tuple(packet.csrc),
                        marker=bool(packet.marker),
                        payload=bytes(packet.payload),
                        audio_level=packet.extensions.audio_level,
                        arrival=time.monotonic(),
                    )
                )
                await original(packet, arrival_time_ms)

            return handle

        receiver._handle_rtp_packet = make(original, packets)  # type: ignore[method-assign,assignment]


async def make_offer(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


async def join(
    room: Room,
    identity: str,
    *,
    speaker: bool,
    slots: int = 3,
    frequency: float = 440.0,
    loud: bool = True,
    mixed: bool | None = None,
    ssrc: int | None = None,
) -> Client:
    """Create an aiortc client, offer, let the room answer, apply the answer.

    ``slots``: its receiving lines; ``mixed`` as in :meth:`sfu.Room.join`;
    ``ssrc``: a speaker's fixed SSRC (as some clients have), in its offer and
    its packets, instead of aiortc's random one."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client = Client(pc=pc, identity=identity)
    if speaker:
        client.track = ToneTrack(frequency, loud)
        sending = pc.addTransceiver(client.track, direction="sendrecv" if slots else "sendonly")
        if ssrc is not None:
            sending.sender._ssrc = ssrc
        for _ in range(max(0, slots - 1)):
            pc.addTransceiver("audio", direction="recvonly")
    else:
        for _ in range(slots):
            pc.addTransceiver("audio", direction="recvonly")
    offer = await make_offer(pc)
    try:
        if speaker:
            client.participant = await room.add_speaker(offer, identity=identity, mixed=mixed)
        else:
            client.participant = await room.add_listener(offer, identity=identity, mixed=mixed)
    except BaseException:
        await pc.close()
        raise
    _record_received(client)
    await pc.setRemoteDescription(RTCSessionDescription(client.participant.answer, "answer"))
    if speaker:
        _record_sent(client)
    return client


async def wait_for(
    predicate: Callable[[], bool], timeout: float, message: str = "condition"
) -> None:
    """Poll ``predicate`` every 20 ms; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        await asyncio.sleep(0.02)


async def start_speaking(client: Client, frequency: float = 660.0) -> str:
    """Renegotiate a promoted listener: its first line starts sending a tone.

    Returns the new answer. ICE and DTLS are those of the first offer.
    """
    assert client.participant is not None
    transceiver = client.pc.getTransceivers()[0]
    client.track = ToneTrack(frequency)
    transceiver.direction = "sendrecv"
    transceiver.sender.replaceTrack(client.track)
    offer = await make_offer(client.pc)
    answer = await client.participant.renegotiate(offer)
    await client.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    if not client.sent:
        _record_sent(client)
    return answer
