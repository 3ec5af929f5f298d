"""The Router's per-packet decisions, seen at its hand-over to the fan-out.

A recording stand-in takes the fan-out's place: these tests are about which
packets the router forwards and with what sequence numbers, not about SRTP
or sockets (the e2e tests cover those with real clients).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from sfu.media.router import MAX_SLOT_STEP, Publisher, Router
from sfu.relay import MAX_PAYLOAD

from ..test_relay import Turns


class RecordingFanOut:
    def __init__(self) -> None:
        self.forwarded: list[tuple[int, int]] = []  # (slot, out sequence)
        self.timestamps: list[int] = []  # the out timestamp of each
        self.markers: list[bool] = []  # the marker bit of each
        self.csrcs: list[int] = []  # the CSRC of each
        self.sent = self.dropped = 0
        #: What forward() says it delivered (the receivers a real fan-out reached).
        self.delivers = 1

    def forward(
        self,
        slot: int,
        packet: bytes,
        offset: int,
        ssrc: int,
        sequence: int,
        timestamp: int,
        marker: bool,
        *rest: Any,
    ) -> int:
        self.forwarded.append((slot, sequence))
        self.timestamps.append(timestamp)
        self.markers.append(marker)
        self.csrcs.append(rest[0])
        return self.delivers

    def __len__(self) -> int:
        return 0

    def close(self) -> None:
        pass


def packet(
    sequence: int, timestamp: int, ssrc: int = 0x1234, level: int = 30, payload: bytes = b"opus"
) -> bytes:
    """Opus RTP with a one-byte audio-level extension (id 1, V=1: speech)."""
    header = struct.pack("!BBHII", 0x90, 111, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
    extension = bytes([0xBE, 0xDE, 0, 1, 0x10, 0x80 | level, 0, 0])
    return header + extension + payload


Routed = tuple[Router, RecordingFanOut, Publisher]


@pytest.fixture
def router() -> Iterator[Routed]:
    """A router, what it hands to the fan-out, and one speaker (levels in extension id 1)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    router = Router(sock, 3)
    fanout = RecordingFanOut()
    router.fanout = fanout  # type: ignore[assignment]
    speaker = Publisher(number=1, payload_type=111, audio_level_id=1)
    router.add_publisher(speaker)
    yield router, fanout, speaker
    router.close()
    sock.close()


def talk(router: Routed, first_sequence: int, count: int) -> None:
    """``count`` 20 ms packets of the speaker, sequence numbers from ``first_sequence``."""
    route, _, speaker = router
    for index in range(count):
        route.forward(speaker, packet(first_sequence + index, index * 960), index * 0.02)


def test_a_long_turn_is_forwarded_past_the_sequence_wrap(router: Routed) -> None:
    """70,000 packets (23 minutes) of one speaker: every one forwarded, gap-free."""
    _, fanout, _ = router
    talk(router, 1000, 70_000)
    assert len(fanout.forwarded) == 70_000
    sequences = [sequence for _, sequence in fanout.forwarded]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(sequences, sequences[1:]))


def test_a_packet_from_before_a_switch_is_not_forwarded(router: Routed) -> None:
    route, fanout, first = router
    talk(router, 500, 10)
    assert len(fanout.forwarded) == 10
    # A late packet of the same stream from before the slot's switch point.
    route.forward(first, packet(499, 0), 0.3)
    assert len(fanout.forwarded) == 10


def test_a_bad_padding_count_drops_the_packet_and_nothing_else(
    router: Routed,
) -> None:
    route, fanout, speaker = router
    route.forward(speaker, packet(100, 0), 0.0)
    good = packet(101, 960)
    hostile = bytes([good[0] | 0x20]) + good[1:-1] + bytes([0x40])  # pads past the payload
    route.forward(speaker, hostile, 0.02)
    assert route.packets_dropped == 1 and len(fanout.forwarded) == 1
    padded = bytes([good[0] | 0x20]) + good[1:] + bytes([0, 0, 3])  # a valid 3-byte padding
    route.forward(speaker, padded, 0.04)
    assert len(fanout.forwarded) == 2
    (_, first), (_, second) = fanout.forwarded
    assert (second - first) & 0xFFFF == 1, "the dropped packet took no sequence number"


def test_a_packet_of_another_payload_type_is_dropped_and_takes_no_sequence_number(
    router: Routed,
) -> None:
    """Only the Opus the speaker negotiated is forwarded: a receiver would
    decode anything else (PCMU, comfort noise, a DTMF event) as Opus."""
    route, fanout, speaker = router
    route.forward(speaker, packet(100, 0), 0.0)
    good = packet(101, 960)
    for payload_type in (0, 13, 101, 110, 112):
        route.forward(speaker, good[:1] + bytes([payload_type]) + good[2:], 0.02)
    assert route.packets_dropped == 5 and len(fanout.forwarded) == 1
    route.forward(speaker, good, 0.04)
    (_, first), (_, second) = fanout.forwarded
    assert (second - first) & 0xFFFF == 1, "a dropped packet took a sequence number"


def test_a_failing_tap_never_stops_the_listeners_audio(
    router: Routed,
) -> None:
    route, fanout, speaker = router
    seen: list[int] = []

    def broken(*args: Any) -> None:
        raise OSError("no space left on device")

    def recording(
        publisher: Publisher, packet: bytes, offset: int, sequence: int, *rest: Any
    ) -> None:
        seen.append(sequence)

    route.taps.extend([broken, recording])
    for index in range(3):
        route.forward(speaker, packet(200 + index, index * 960), index * 0.02)
    assert len(fanout.forwarded) == 3, "every packet still reaches the fan-out"
    assert route.taps == [recording] and seen == [200, 201, 202]


def packet_without_level(sequence: int, timestamp: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 111, sequence & 0xFFFF, timestamp, 0x1234) + payload


@pytest.mark.parametrize("jump", [40_000, -5_000, 3_000], ids=["ahead", "back", "edge"])
@pytest.mark.parametrize("turn", [500, 10], ids=["long-turn", "just-switched"])
def test_a_restarted_numbering_reanchors_the_slot(router: Routed, jump: int, turn: int) -> None:
    """A sender that restarts its sequence numbers under the same SSRC: copied
    through, the jump would put the slot's SRTP index behind itself (or a
    half-turn ahead), and every listener's libsrtp would drop its packets for
    minutes. Two packets in a row at the new place re-anchor the slot like a
    new speaker: gap-free, with the marker."""
    route, fanout, speaker = router
    talk(router, 1000, turn)
    restart = 1000 + turn + jump
    for index in range(100):
        route.forward(speaker, packet(restart + index, (turn + index) * 960), (turn + index) * 0.02)
    sequences = [sequence for _, sequence in fanout.forwarded]
    assert len(sequences) == turn + 99, "only the first packet at the new place is held back"
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(sequences, sequences[1:]))
    assert fanout.markers[turn], "the re-anchored stream starts with the marker"
    assert route.packets_dropped == 1


def test_a_stray_packet_far_from_the_numbering_changes_nothing(router: Routed) -> None:
    route, fanout, speaker = router
    talk(router, 1000, 50)
    route.forward(speaker, packet(30_000, 0), 1.0)  # a stray: dropped
    for index in range(50, 60):
        route.forward(speaker, packet(1000 + index, index * 960), index * 0.02)
    sequences = [sequence for _, sequence in fanout.forwarded]
    assert len(sequences) == 60 and route.packets_dropped == 1
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(sequences, sequences[1:]))
    assert fanout.markers.count(True) == 1  # the speaker's first packet only


def test_the_marker_waits_for_a_packet_someone_got(router: Routed) -> None:
    """The new speaker's first packet dropped by the fan-out (too large, SRTP
    refused it): the marker goes on the first one that was delivered."""
    route, fanout, speaker = router
    fanout.delivers = 0
    route.forward(speaker, packet(1000, 0), 0.0)
    fanout.delivers = 1
    route.forward(speaker, packet(1001, 960), 0.02)
    route.forward(speaker, packet(1002, 1920), 0.04)
    assert fanout.markers == [True, True, False]


def test_a_speaker_that_negotiated_levels_but_sends_none_is_heard(router: Routed) -> None:
    """Its client put the level extension in its SDP but sends packets without
    it: after MISSING_LEVEL_PACKETS its level is decoded, and it takes a slot."""
    from sfu.media.router import MISSING_LEVEL_PACKETS

    from .mixing import opus_tone

    route, fanout, speaker = router
    frames = opus_tone(440.0, 100)
    for index, payload in enumerate(frames):
        route.forward(
            speaker, packet_without_level(500 + index, index * 960, payload), index * 0.02
        )
    assert speaker.meter is not None
    assert MISSING_LEVEL_PACKETS <= 100 - len(fanout.forwarded) <= MISSING_LEVEL_PACKETS + 5
    assert len(fanout.forwarded) > 50


def test_a_late_packet_of_a_speakers_previous_ssrc_is_dropped(router: Routed) -> None:
    """A sender that changed SSRC: a packet of the old one arriving late does
    not flip the slot back (two switches, two markers) and back again."""
    route, fanout, speaker = router
    talk(router, 1000, 10)
    for index in range(10, 20):
        route.forward(speaker, packet(5000 + index, index * 960, ssrc=0x9999), index * 0.02)
        if index == 12:
            route.forward(speaker, packet(1010, 10 * 960), index * 0.02)  # late, old SSRC
    sequences = [sequence for _, sequence in fanout.forwarded]
    # The new SSRC's first packet waits for a second in a row (dropped), and
    # the late one is dropped.
    assert len(sequences) == 19 and route.packets_dropped == 2
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(sequences, sequences[1:]))
    assert fanout.markers.count(True) == 2  # the first packet, and the SSRC change
    assert speaker.ssrc == 0x9999
    # Long after the change, the old SSRC is a change like any other: two
    # packets of it in a row (one alone is a stray, below).
    route.forward(speaker, packet(1011, 11 * 960), 5.0)
    route.forward(speaker, packet(1012, 12 * 960), 5.02)
    assert speaker.ssrc == 0x1234 and len(fanout.forwarded) == 20


def test_one_stray_packet_of_another_ssrc_changes_nothing(router: Routed) -> None:
    """A packet of an SSRC the speaker left seconds ago (held up in the
    network) is dropped, and the live SSRC goes on being heard."""
    route, fanout, speaker = router
    talk(router, 1000, 10)
    for index in range(10, 200):
        route.forward(speaker, packet(5000 + index, index * 960, ssrc=0x9999), index * 0.02)
    forwarded = len(fanout.forwarded)
    route.forward(speaker, packet(1010, 10 * 960), 4.0)  # the old SSRC, 4 s late
    for index in range(200, 250):
        route.forward(speaker, packet(5000 + index, index * 960, ssrc=0x9999), index * 0.02)
    assert speaker.ssrc == 0x9999
    assert len(fanout.forwarded) == forwarded + 50


def test_a_packet_reordered_from_before_a_switch_never_lands_in_the_old_range(
    router: Routed,
) -> None:
    """A packet sent before the slot switched to this speaker and arriving
    up to MAX_MISORDER packets late is dropped: forwarded, it would reuse a
    sequence number the slot already sent for the previous speaker."""
    from sfu.media.router import MAX_MISORDER

    route, fanout, first = router
    second = Publisher(number=2, payload_type=111, audio_level_id=1)
    route.add_publisher(second)
    talk(router, 100, 20)  # the first speaker holds slot 0
    route.detector.remove(first.number)  # it leaves the stage: the slot is free
    held = packet(5005, 5 * 960, ssrc=0xB, level=10)  # sent before the switch, held up
    # Past the old guard (64 packets), and the held one less than MAX_MISORDER behind.
    for index in range(11, 11 + MAX_MISORDER - 25):
        route.forward(second, packet(5000 + index, index * 960, ssrc=0xB, level=10), index * 0.02)
    slot = fanout.forwarded[-1][0]
    sent = {sequence for used_slot, sequence in fanout.forwarded if used_slot == slot}
    before = len(fanout.forwarded)
    route.forward(second, held, 3.0)
    assert len(fanout.forwarded) == before or fanout.forwarded[-1][1] not in sent


def test_the_holders_keep_in_step_silence_counts_as_payload_sent(router: Routed) -> None:
    """A holder is sent a silence frame on its own slot every KEEP_IN_STEP
    packets; its payload is counted like any other packet's."""
    from sfu.media.opus import SILENCE_MONO
    from sfu.media.router import KEEP_IN_STEP

    route, fanout, speaker = router
    speaker.receiver_id = 7  # the speaker also receives the slots
    talk(router, 1000, KEEP_IN_STEP + 10)
    silences = len(fanout.forwarded) - (KEEP_IN_STEP + 10)
    assert silences == 1
    assert route.payload_bytes_out == (KEEP_IN_STEP + 10) * len(b"opus") + len(SILENCE_MONO)


def test_a_holder_that_takes_no_slot_packets_is_not_tried_at_every_packet(
    router: Routed,
) -> None:
    """A holder the fan-out sends nothing on this slot (a send-only publisher,
    a mixed speaker: forward() reaches nobody and drops nothing) gets its
    silence frame tried once every KEEP_IN_STEP packets, not again at each
    packet (an extra pass over every receiver per packet)."""
    from sfu.media.router import KEEP_IN_STEP

    route, fanout, speaker = router
    speaker.receiver_id = 7
    fanout.delivers = 0  # nobody receives; nothing is dropped either
    count = 3 * KEEP_IN_STEP + 10
    talk(router, 1000, count)
    silences = len(fanout.forwarded) - count
    assert silences == 3


def test_a_receiver_registered_again_keeps_its_counts() -> None:
    """A renegotiation re-registers a receiver on the same slot SSRCs: what
    was sent to it stays counted, in its stats and its sender reports (RFC
    3550: an SR's counts only go up on one SSRC)."""
    import pylibsrtp
    from aiortc.rtp import RtcpPacket, RtcpSrPacket

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    route = Router(sock, 3)
    key = bytes(30)
    tx = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    speaker = Publisher(number=1, payload_type=111, audio_level_id=1)
    route.add_publisher(speaker)
    options = dict(payload_type=111, audio_level_id=1, now=0.0)
    try:
        route.add_receiver(9, sink.getsockname(), tx, slot_count=2, **options)  # type: ignore[arg-type]
        for sequence in range(10):
            route.forward(speaker, packet(100 + sequence, sequence * 960), sequence * 0.02)
        route.remove_receiver(9, keep_counts=True)
        route.add_receiver(9, sink.getsockname(), tx, slot_count=3, **options)  # type: ignore[arg-type]
        for sequence in range(10, 15):
            route.forward(speaker, packet(100 + sequence, sequence * 960), sequence * 0.02)
        assert route.receiver_counters(9)[0] == (15, 15 * len(b"opus"))
        report = route.sender_reports(9, 1.0, 1.0)
        assert report is not None
        first = RtcpPacket.parse(report)[0]
        assert isinstance(first, RtcpSrPacket) and first.sender_info.packet_count == 15
        route.remove_receiver(9)  # for good: nothing kept
        assert route._kept == {}
    finally:
        route.close()
        sock.close()
        sink.close()


def test_an_idle_slot_reports_a_running_clock_that_its_first_packet_keeps() -> None:
    """RFC 3550 6.4.1: an SR maps its NTP time to the stream's RTP clock. A
    slot that has not carried audio yet still runs that clock in its
    reports, and its first packet is stamped on it, as a receiver expects."""
    import pylibsrtp
    from aiortc.rtp import RtcpPacket, RtcpSrPacket

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(1.0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    route = Router(sock, 1)
    tx = pylibsrtp.Session(
        pylibsrtp.Policy(key=bytes(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    )
    options: dict[str, Any] = dict(payload_type=111, audio_level_id=1, slot_count=1, now=0.0)
    try:
        route.add_receiver(9, sink.getsockname(), tx, **options)

        def reported_at(now: float) -> int:
            report, _ = RtcpPacket.parse(route.sender_reports(9, now, 1e9 + now) or b"")  # SR, SDES
            assert isinstance(report, RtcpSrPacket)
            return int(report.sender_info.rtp_timestamp)

        first = reported_at(0.0)
        assert (reported_at(30.0) - first) & 0xFFFFFFFF == 30 * 48000
        speaker = Publisher(number=1, payload_type=111, audio_level_id=1)
        route.add_publisher(speaker)
        route.forward(speaker, packet(5, 123456), 60.0)
        stamped = struct.unpack("!I", sink.recv(2048)[4:8])[0]  # the SRTP header is clear
        assert (stamped - first) & 0xFFFFFFFF == 60 * 48000
    finally:
        route.close()
        sock.close()
        sink.close()


def test_speakers_sending_with_one_ssrc_are_each_forwarded_under_their_own_csrc(
    router: Routed,
) -> None:
    """Receivers name a slot's voice by its CSRC, which the room gives each
    member: two clients sending with the same SSRC (OBS 30.0's WHIP output
    always used 5002), or one sending with another's, are both forwarded,
    each under its own name."""
    route, fanout, alice = router
    alice.csrc = route.new_csrc()
    mallory = Publisher(number=2, payload_type=111, audio_level_id=1, csrc=route.new_csrc())
    route.add_publisher(mallory)
    assert alice.csrc != mallory.csrc
    for index in range(50):  # both talking at once, one SSRC
        now = index * 0.02
        route.forward(alice, packet(index, index * 960, ssrc=5002), now)
        route.forward(mallory, packet(40_000 + index, index * 960, ssrc=5002), now + 0.001)
    by_slot: dict[int, set[int]] = {}
    for (slot, _), csrc in zip(fanout.forwarded, fanout.csrcs, strict=True):
        by_slot.setdefault(slot, set()).add(csrc)
    assert sorted(map(sorted, by_slot.values())) == sorted([[alice.csrc], [mallory.csrc]])
    assert fanout.csrcs.count(alice.csrc) >= 40 and fanout.csrcs.count(mallory.csrc) >= 40
    assert route.packets_dropped == 0


def test_a_members_csrc_is_unique_in_the_room_and_not_one_of_its_own_ssrcs(
    router: Routed, monkeypatch: pytest.MonkeyPatch
) -> None:
    route, _, _ = router
    taken = route.new_csrc()
    drawn = iter([0, route.slots[1].ssrc, route.report_ssrc, taken, 0x5EED])
    monkeypatch.setattr("sfu.media.router.secrets.randbits", lambda bits: next(drawn))
    assert route.new_csrc() == 0x5EED  # 0 (the mix's "nobody"), the room's SSRCs and taken skipped
    route.release_csrc(taken)
    drawn = iter([0x5EED, taken])
    assert route.new_csrc() == taken  # free again once its member left


def test_a_payload_no_receiver_would_get_moves_no_slot(router: Routed) -> None:
    """Packets over MAX_PAYLOAD (no Opus packet is that large; the fan-out
    sends none) are dropped before the slot's numbering moves: each stepping
    a slot on unseen would put its SRTP index out of the receivers' reach."""
    route, fanout, speaker = router
    talk(router, 1000, 10)
    oversized = packet(0, 0)[:-4] + bytes(MAX_PAYLOAD + 1)
    for index in range(12):
        jumped = 1010 + 2999 * (index + 1)
        data = struct.pack("!H", jumped & 0xFFFF)
        route.forward(speaker, oversized[:2] + data + oversized[4:], 0.2 + index * 0.02)
    assert len(fanout.forwarded) == 10 and route.packets_dropped == 12
    route.forward(speaker, packet(1010, 10 * 960), 0.5)
    sequences = [sequence for _, sequence in fanout.forwarded]
    assert (sequences[-1] - sequences[-2]) & 0xFFFF == 1


def test_a_packet_without_an_opus_byte_is_not_forwarded(router: Routed) -> None:
    """A header alone, or padding alone, holds no Opus packet (RFC 6716 3.1:
    at least its TOC byte): dropped and counted, not sent on to every
    receiver as an empty packet, nor moving the slot (fuzzing review)."""
    route, fanout, speaker = router
    talk(router, 1000, 10)
    header_only = packet(1010, 10 * 960, payload=b"")
    padding_only = bytearray(packet(1011, 11 * 960, payload=bytes([0, 0, 3])))
    padding_only[0] |= 0x20
    route.forward(speaker, header_only, 0.3)
    route.forward(speaker, bytes(padding_only), 0.32)
    assert len(fanout.forwarded) == 10 and route.packets_dropped == 2
    route.forward(speaker, packet(1012, 12 * 960), 0.34)
    sequences = [sequence for _, sequence in fanout.forwarded]
    assert (sequences[-1] - sequences[-2]) & 0xFFFF == 3, "receivers see two lost, as sent"


def test_a_jump_ahead_moves_a_slot_by_one_step_at_most(router: Routed) -> None:
    """A speaker jumping its numbering ahead by up to MAX_DROPOUT a packet:
    each jump is carried as a step of MAX_SLOT_STEP, so that a receiver that
    missed a few such packets is not 2**15 behind the slot."""
    route, fanout, speaker = router
    talk(router, 1000, 10)
    sequence = 1009
    for index in range(11):
        sequence += 2999
        route.forward(speaker, packet(sequence, (10 + index) * 960), 0.2 + index * 0.02)
    route.forward(speaker, packet(sequence + 1, 21 * 960), 0.42)
    steps = [(b - a) & 0xFFFF for (_, a), (_, b) in zip(fanout.forwarded, fanout.forwarded[1:])]
    assert len(fanout.forwarded) == 22
    assert steps[9:] == [MAX_SLOT_STEP] * 11 + [1]
    assert route.packets_dropped == 0


def test_a_slot_given_back_never_takes_its_timestamps_back() -> None:
    """A receiver that gets a slot back after a while (it renegotiated fewer
    lines, then more) is first sent silence frames to bring its SRTP index up
    to the slot. The slot's timestamps only go forward, also for a speaker
    sending 10 ms packets (the answer's minptime=10 allows them): those frames
    must not be stamped further back than what the receiver last got."""
    import pylibsrtp

    class SecondSlot:
        def observe(self, number: int, level: int, now: float) -> int:
            return 1

        def add(self, number: int) -> None:
            pass

        def remove(self, number: int) -> None:
            pass

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sink.setblocking(False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    route = Router(sock, 2)
    route.detector = SecondSlot()  # type: ignore[assignment]
    tx = pylibsrtp.Session(
        pylibsrtp.Policy(key=bytes(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    )
    speaker = Publisher(number=1, payload_type=111, audio_level_id=1)
    route.add_publisher(speaker)
    options: dict[str, Any] = dict(payload_type=111, audio_level_id=1)
    received: list[tuple[int, int]] = []

    def drain() -> None:
        while True:
            try:
                data = sink.recv(2048)
            except BlockingIOError:
                return
            sequence, timestamp, ssrc = struct.unpack("!HII", data[2:12])
            if ssrc == route.slots[1].ssrc:
                received.append((sequence, timestamp))

    def talk_10ms(first: int, count: int) -> None:
        for index in range(first, first + count):
            route.forward(speaker, packet(1000 + index, index * 480), index * 0.01)
            if index % 200 == 0:
                drain()

    try:
        route.add_receiver(9, sink.getsockname(), tx, slot_count=2, now=0.0, **options)
        talk_10ms(0, 10)
        route.remove_receiver(9, keep_counts=True)
        route.add_receiver(9, sink.getsockname(), tx, slot_count=1, now=0.1, **options)
        talk_10ms(10, 3 * 4096)  # two minutes without slot 1
        route.remove_receiver(9, keep_counts=True)
        route.add_receiver(9, sink.getsockname(), tx, slot_count=2, now=200.0, **options)
        talk_10ms(10 + 3 * 4096, 5)
        drain()
        assert len(received) > 15, "the silence frames and the packets after them arrived"
        for (sequence, timestamp), (after, stamped) in zip(received, received[1:]):
            assert 0 < (after - sequence) & 0xFFFF < 1 << 15
            assert 0 < (stamped - timestamp) & 0xFFFFFFFF < 1 << 31, (
                f"timestamp went back from {timestamp} (sequence {sequence}) "
                f"to {stamped} (sequence {after})"
            )
    finally:
        route.close()
        sock.close()
        sink.close()


@pytest.mark.parametrize("samples", [1920, 2880])
def test_a_new_speaker_in_a_slot_starts_after_the_last_frame_of_the_one_before(
    samples: int,
) -> None:
    """A speaker sending 40 or 60 ms packets (RFC 7587 allows them; WHIP
    encoders send them) hands the slot over, and the next speaker's first
    packet comes 20 ms after its last one. That first packet must be stamped
    past the end of the last one's frame: a receiver's jitter buffer drops a
    packet stamped inside audio it already played, and the new speaker's
    first words (the packet with the marker) would be cut."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    route = Router(sock, 1)
    fanout = RecordingFanOut()
    route.fanout = fanout  # type: ignore[assignment]
    detector = Turns()
    detector.holder = 1
    route.detector = detector  # type: ignore[assignment]
    first = Publisher(number=1, payload_type=111, audio_level_id=1)
    second = Publisher(number=2, payload_type=111, audio_level_id=1)
    route.add_publisher(first)
    route.add_publisher(second)
    # Opus TOC: config 10 is SILK WB 40 ms, 11 is 60 ms; one frame a packet.
    long_frames = bytes([(10 if samples == 1920 else 11) << 3]) + b"silk"
    try:
        period = samples / 48_000
        for index in range(10):
            route.forward(
                first,
                packet(100 + index, 5000 + index * samples, ssrc=0xA, payload=long_frames),
                index * period,
            )
        detector.holder = 2
        route.forward(second, packet(900, 123, ssrc=0xB), 9 * period + 0.020)
        assert (
            fanout.markers[-1] and (fanout.forwarded[-1][1] - fanout.forwarded[-2][1]) & 0xFFFF == 1
        )
        step = (fanout.timestamps[-1] - fanout.timestamps[-2]) & 0xFFFFFFFF
        assert step >= samples, f"stamped {step} samples after a packet that lasts {samples}"
    finally:
        route.close()
        sock.close()
