"""The Mixer without a network: its task's life cycle, mixing, mix-minus, PLC, limits.

Packets go in through the Router's tap, the way the Router hands them over,
and frames are mixed by calling ``step()`` without awaiting in between, so
the mixer's own task (started by the first consumer) does not interleave.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import pytest

from sfu.errors import InvalidSetting, RoomClosed
from sfu.media.mixer import MAX_CATCH_UP, PTIME, Mixer
from sfu.media.opus import FRAME_SAMPLES, OpusDecoder, plc_packet
from sfu.media.router import Publisher, Router

from ..clients import wait_for
from .mixing import assert_tones, decode_payloads, opus_tone, tone


@pytest.fixture
def router() -> Iterator[Router]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    router = Router(sock, 3)
    yield router
    router.close()
    sock.close()


def publisher(number: int, level: int = 0x80 | 20) -> Publisher:
    return Publisher(
        number=number,
        payload_type=111,
        audio_level_id=1,
        ssrc=1000 + number,
        csrc=0xC5C0 + number,  # the room's name for the voice, not its SSRC
        level=level,
    )


def feed(router: Router, speaker: Publisher, payload: bytes, sequence: int, now: float) -> None:
    packet = b"\x80\x6f" + bytes(10) + payload  # a 12-byte header the taps skip
    for tap in list(router.taps):
        tap(speaker, packet, 12, sequence & 0xFFFF, sequence * 960, 0, now)


class Collector:
    def __init__(self) -> None:
        self.packets: list[bytes] = []
        self.times: list[float] = []

    def __call__(self, packet: bytes, samples: int, now: float) -> None:
        assert samples == 960
        self.packets.append(packet)
        self.times.append(now)


def run(
    mixer: Mixer,
    router: Router,
    speakers: dict[Publisher, list[bytes]],
    *,
    drop: set[tuple[int, int]] = frozenset(),  # type: ignore[assignment]
) -> None:
    """Feed one packet per speaker and mix one frame, for every packet (synchronously)."""
    frames = max(len(packets) for packets in speakers.values())
    for index in range(frames):
        now = 100.0 + index * PTIME
        for speaker, packets in speakers.items():
            if index < len(packets) and (speaker.number, index) not in drop:
                feed(router, speaker, packets[index], index, now)
        mixer.step(now)


async def test_runs_only_while_consumed_and_leaves_no_task(router: Router) -> None:
    mixer = Mixer(router, name="t")
    assert not mixer.running and router.taps == []
    first, second = Collector(), Collector()
    out1 = mixer.add_output(first)
    assert mixer.running and router.taps == [mixer._tap]
    task = mixer.task
    assert task is not None and task.get_name() == "sfu-mixer-t"
    out2 = mixer.add_output(second, exclude=7)
    await asyncio.sleep(0.2)
    assert 5 <= len(first.packets) <= 12 and len(second.packets) >= 5
    out1.close()
    out1.close()  # idempotent
    assert mixer.running
    out2.close()
    await mixer.wait_stopped()
    assert task.done() and not mixer.running and router.taps == []
    count = len(first.packets)
    await asyncio.sleep(0.05)
    assert len(first.packets) == count
    # And again: a second consumer starts a second run.
    out3 = mixer.add_output(Collector())
    assert mixer.running and mixer.starts == 2
    await mixer.close()
    assert out3.closed and not mixer.running and router.taps == []
    with pytest.raises(RoomClosed, match="its mixer takes no consumer"):
        mixer.add_output(Collector())


async def test_pacing_follows_absolute_deadlines(router: Router) -> None:
    mixer = Mixer(router)
    collector = Collector()
    mixer.add_output(collector)
    await asyncio.sleep(1.0)
    await mixer.close()
    times = np.array(collector.times)
    steps = np.diff(times)
    assert np.allclose(steps, PTIME, atol=1e-9), "frames are stamped with exact deadlines"
    # Frames produced match the wall time (minus up to a few frames of start-up/lag).
    assert 40 <= len(times) <= 51


async def test_two_tones_are_mixed_and_mix_minus_leaves_one_out(router: Router) -> None:
    mixer = Mixer(router)
    full, without_a = Collector(), Collector()
    a, b = publisher(1), publisher(2)
    mixer.add_output(full)
    mixer.add_output(without_a, exclude=a.number)
    run(mixer, router, {a: opus_tone(440, 100), b: opus_tone(1000, 100)})
    await mixer.close()
    assert len(full.packets) == len(without_a.packets) == 100
    mix = decode_payloads(full.packets)[960 * 10 :]
    assert_tones(mix, present=[440, 1000])
    minus = decode_payloads(without_a.packets)[960 * 10 :]
    assert_tones(minus, present=[1000], absent=[440])
    assert np.abs(mix).max() < 32767


async def test_loud_speakers_are_limited_not_wrapped(router: Router) -> None:
    mixer = Mixer(router)
    full = Collector()
    mixer.add_output(full)
    speakers = {publisher(n): opus_tone(440, 60, amplitude=0.95) for n in range(1, 4)}
    run(mixer, router, speakers)
    await mixer.close()
    pcm = decode_payloads(full.packets)[960 * 10 :].astype(np.int32)
    # Three in-phase full-scale tones: the limiter holds the peak below full
    # scale. A wrap would flip signs at the peaks: the sample after a
    # positive peak would be strongly negative.
    assert pcm.max() > 20000 and pcm.min() < -20000
    jumps = np.abs(np.diff(pcm))
    assert jumps.max() < 20000, "a sign flip between neighbouring samples: the sum wrapped"


async def test_only_the_loudest_max_speakers_are_mixed(router: Router) -> None:
    mixer = Mixer(router, max_speakers=2)
    full = Collector()
    mixer.add_output(full)
    speakers = {
        publisher(1, level=0x80 | 10): opus_tone(440, 60),
        publisher(2, level=0x80 | 20): opus_tone(1000, 60),
        publisher(3, level=0x80 | 60): opus_tone(2500, 60),  # the quietest by RFC 6464
    }
    run(mixer, router, speakers)
    await mixer.close()
    assert_tones(decode_payloads(full.packets)[9600:], present=[440, 1000], absent=[2500])


async def test_the_loudest_speakers_mix_minus_still_holds_max_speakers_others(
    router: Router,
) -> None:
    """With ``max_speakers=1`` the room mix is the loudest alone; the loudest
    speaker's own mix-minus is then the next loudest, not silence (review: it
    heard nobody interrupting it)."""
    mixer = Mixer(router, max_speakers=1)
    full, loudest_minus = Collector(), Collector()
    mixer.add_output(full)
    mixer.add_output(loudest_minus, exclude=1)
    speakers = {
        publisher(1, level=0x80 | 10): opus_tone(440, 60),
        publisher(2, level=0x80 | 30): opus_tone(1000, 60),
    }
    run(mixer, router, speakers)
    await mixer.close()
    assert_tones(decode_payloads(full.packets)[9600:], present=[440], absent=[1000])
    assert_tones(decode_payloads(loudest_minus.packets)[9600:], present=[1000], absent=[440])


async def test_lost_packets_are_concealed(router: Router) -> None:
    mixer = Mixer(router)
    full = Collector()
    mixer.add_output(full)
    a = publisher(1)
    lost = {(1, index) for index in range(20, 100, 7)}
    run(mixer, router, {a: opus_tone(440, 100)}, drop=lost)
    stats = mixer.stats()
    assert stats["concealed"] == len(lost)
    await mixer.close()
    pcm = decode_payloads(full.packets)[960 * 5 :]
    # PLC fills each gap: no 20 ms of the output is near silence.
    frames = pcm[: len(pcm) // 960 * 960].reshape(-1, 960).astype(np.float64)
    rms = np.sqrt((frames**2).mean(axis=1))
    assert rms.min() > 1000, rms.min()
    assert_tones(pcm, present=[440])


async def test_a_packet_libopus_rejects_is_concealed_like_a_lost_one(router: Router) -> None:
    """A payload that does not decode takes its own 20 ms, concealed: the
    speaker's next packet is not pulled in its place (played 20 ms early,
    then missing at its own turn, its successor arriving "late")."""
    payloads = opus_tone(440, 60)
    outputs = []
    for bad in (False, True):
        mixer = Mixer(router)
        collector = Collector()
        mixer.add_output(collector)
        a = publisher(1)
        packets = list(payloads)
        if bad:
            packets[30] = b"\xfb\x00"  # code 3 with no frame: libopus refuses it
        run(mixer, router, {a: packets}, drop=set() if bad else {(1, 30)})
        outputs.append((decode_payloads(collector.packets), mixer.stats()))
        await mixer.close()
    (lost, lost_stats), (rejected, rejected_stats) = outputs
    assert rejected_stats["late"] == lost_stats["late"] == 0
    assert len(rejected) == len(lost)
    # The same audio as for a lost packet (both encoders ran on the same PCM
    # up to the bad packet; after it, each frame holds the same tone frame).
    difference = np.abs(rejected.astype(np.float64) - lost.astype(np.float64))
    assert difference.max() < 200, difference.max()


async def test_jitter_counters_outlive_the_speakers_they_counted(router: Router) -> None:
    """`concealed` and `late` are counters: a speaker muted or gone keeps its
    share in them."""
    mixer = Mixer(router)
    mixer.add_output(Collector())
    a = publisher(1)
    payloads = opus_tone(440, 20)
    for index, payload in enumerate(payloads):
        if index not in (5, 6):
            feed(router, a, payload, index, 100 + index * PTIME)
        mixer.step(100 + index * PTIME)
    feed(router, a, payloads[3], 3, 101.0)  # its turn has passed
    before = mixer.stats()
    assert before["concealed"] == 2 and before["late"] == 1
    router.release(a)  # muted
    after = mixer.stats()
    assert after["speakers"] == 0
    assert (after["concealed"], after["late"]) == (2, 1)
    await mixer.close()
    assert (mixer.stats()["concealed"], mixer.stats()["late"]) == (2, 1)


async def test_a_speaker_held_back_by_a_stall_is_not_mixed_late_for_good(router: Router) -> None:
    """A speaker's packets held 200 ms by the network, then delivered at once,
    while it talks on without pauses: the jitter buffer drops the backlog past
    its depth within a trim window (counted in `trimmed`, kept after the
    speaker is gone), so the speaker is mixed in step again, not 200 ms late."""
    from sfu.media.jitter import TRIM_WINDOW

    mixer = Mixer(router)
    mixer.add_output(Collector())
    a = publisher(1)
    payloads = opus_tone(440, 60 + 10 + 2 * TRIM_WINDOW)
    for index, payload in enumerate(payloads):
        if index >= 70:
            feed(router, a, payload, index, 100 + index * PTIME)
        elif index == 69:
            for held in range(60, 70):  # the stall ends: everything at once
                feed(router, a, payloads[held], held, 100 + index * PTIME)
        elif index < 60:
            feed(router, a, payload, index, 100 + index * PTIME)
        mixer.step(100 + index * PTIME)
    stats = mixer.stats()
    assert stats["trimmed"] >= 8, stats
    speaker = mixer._mix_speakers.by_number[1]
    assert len(speaker.jitter) <= mixer.jitter_depth
    router.release(a)
    assert mixer.stats()["trimmed"] == stats["trimmed"]
    await mixer.close()


def test_plc_packet_makes_libopus_conceal() -> None:
    assert plc_packet(b"\xf8\x01\x02") == b"\xf8"
    assert plc_packet(b"\xf9\x01\x02") == b"\xf9"
    assert plc_packet(b"\xfa\x01\x02") == b"\xf9"  # code 2 needs a length: code 1
    assert plc_packet(b"\xfb\x83\x01") == b"\xfb\x03"
    decoder = OpusDecoder()
    for payload in opus_tone(440, 10):
        decoder.decode(payload)
    concealed = np.frombuffer(decoder.decode(plc_packet(payload)), dtype="<i2")
    assert len(concealed) == 960
    assert np.abs(concealed).max() > 1000, "libopus PLC continues the tone"
    # An empty packet would end the decoder (EOF) in FFmpeg: that is why the TOC-only packet.
    context = av.CodecContext.create("libopus", "r")
    context.open()
    assert context.decode(av.Packet(b"")) == []


async def test_a_failing_output_is_removed(router: Router) -> None:
    mixer = Mixer(router)

    def broken(packet: bytes, samples: int, now: float) -> None:
        raise RuntimeError("boom")

    good = Collector()
    bad = mixer.add_output(broken)
    mixer.add_output(good)
    mixer.step(1.0)
    mixer.step(1.02)
    assert bad.closed and len(good.packets) == 2
    await mixer.close()


async def test_close_calls_on_close_and_catch_up_fills_lag(router: Router) -> None:
    mixer = Mixer(router)
    closed: list[str] = []
    collector = Collector()
    mixer.add_output(collector, on_close=lambda: closed.append("x"))
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.1)
    before = len(collector.packets)
    # Block the loop for 200 ms: the task lags; catch_up() mixes what is due.
    import time

    time.sleep(0.2)
    mixer.catch_up(loop.time())
    assert len(collector.packets) >= before + 9
    await mixer.close()
    assert closed == ["x"]
    await mixer.close()  # idempotent
    assert closed == ["x"]


def test_tone_helper_is_what_it_says() -> None:
    pcm = np.frombuffer(b"".join(tone(440, 50)), dtype="<i2")
    assert_tones(pcm, present=[440], absent=[1000])


async def test_a_failing_output_is_removed_and_told(router: Router) -> None:
    """A consumer whose callback raises (a bug; a recorder pauses a file the
    disk refuses, it does not raise) is detached and its on_close runs, so
    it finishes its files instead of hanging on."""
    mixer = Mixer(router)
    told: list[str] = []

    def broken(packet: bytes, samples: int, now: float) -> None:
        raise OSError("no space left on device")

    good = Collector()
    failing = mixer.add_output(broken, on_close=lambda: told.append("closed"))
    mixer.add_output(good)
    await wait_for_packets(good, 5)
    assert failing.closed and told == ["closed"]
    assert mixer.running, "the other consumer goes on"
    await mixer.close()


async def wait_for_packets(collector: Collector, count: int, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(collector.packets) < count:
        assert loop.time() < deadline, f"only {len(collector.packets)} packets"
        await asyncio.sleep(0.02)


async def test_a_stream_made_again_goes_on_from_its_old_sequence(router: Router) -> None:
    """A mixed listener that renegotiates keeps its SRTP context: its stream,
    dropped and made again with the same SSRC, must not go back in sequence."""
    mixer = Mixer(router)
    first = Collector()
    output = mixer.add_output(first, exclude=5)
    await wait_for_packets(first, 3)
    stream = output._stream
    ssrc, last = stream.ssrc, (stream.sequence - 1) & 0xFFFF
    output.close()
    await mixer.wait_stopped()
    again = mixer.add_output(Collector(), exclude=5)
    assert again._stream.ssrc == ssrc
    assert again._stream.sequence == (last + 1) & 0xFFFF
    await mixer.close()


async def test_frames_skipped_after_a_stall_still_count_as_time(router: Router) -> None:
    """Past MAX_CATCH_UP the mixer skips ahead: the RTP timestamps move on by
    the time skipped and outputs that keep time are told how much it was."""
    import time

    mixer = Mixer(router)
    collector = Collector()
    gaps: list[int] = []
    mixer.add_output(collector, on_gap=gaps.append)
    await wait_for_packets(collector, 5)
    stream = next(iter(mixer._streams.values()))
    timestamp, delivered = stream.timestamp, len(collector.packets)
    time.sleep(MAX_CATCH_UP + 0.5)  # the loop stalls
    await wait_for_packets(collector, delivered + 5)
    skipped = sum(gaps)
    assert mixer.skipped * 960 == skipped
    assert 0.5 * 48000 <= skipped <= (MAX_CATCH_UP + 0.6) * 48000
    advance = (stream.timestamp - timestamp) & 0xFFFFFFFF
    assert advance == (len(collector.packets) - delivered) * 960 + skipped
    await mixer.close()


async def test_a_mix_minus_names_a_contributor_that_is_in_it(router: Router) -> None:
    """The one CSRC of a mixed stream is its loudest contributor: for the
    stream without Bob, never Bob, even when he is the loudest of the room."""
    mixer = Mixer(router)
    alice, bob = publisher(1, level=0x80 | 40), publisher(2, level=0x80 | 10)  # bob louder
    named: dict[int, set[int]] = {-1: set(), bob.number: set()}
    deliver = mixer._deliver

    def record(stream: object, packet: bytes, now: float, level: int, csrc: int) -> None:
        named[stream.exclude].add(csrc)  # type: ignore[attr-defined]
        deliver(stream, packet, now, level, csrc)  # type: ignore[arg-type]

    mixer._deliver = record  # type: ignore[method-assign]
    mixer.add_output(Collector())
    mixer.add_output(Collector(), exclude=bob.number)
    run(mixer, router, {alice: opus_tone(440, 30), bob: opus_tone(1000, 30)})
    await mixer.close()
    assert named[-1] >= {bob.csrc}, "the room mix names its loudest, Bob"
    assert named[bob.number] - {0} == {alice.csrc}, named


async def test_a_released_speaker_is_out_of_the_mix_at_the_next_frame(router: Router) -> None:
    """Muted, demoted or gone: not after its jitter buffer and the concealment
    that would follow (60-100 ms of it otherwise)."""
    mixer = Mixer(router, jitter_depth=3)
    full = Collector()
    mixer.add_output(full)
    a, b = publisher(1), publisher(2)
    router.add_publisher(a)
    router.add_publisher(b)
    run(mixer, router, {a: opus_tone(440, 50), b: opus_tone(1000, 50)})
    router.release(a)  # what a mute does; its packets stop reaching the taps
    later = opus_tone(1000, 80)[50:]
    for index, payload in enumerate(later, 50):
        now = 100.0 + index * PTIME
        feed(router, b, payload, index, now)
        mixer.step(now)
    await mixer.close()
    pcm = decode_payloads(full.packets)
    assert_tones(pcm[960 * 10 : 960 * 50], present=[440, 1000])
    # From the frame after the release (one frame of encoder delay aside).
    assert_tones(pcm[960 * 52 : 960 * 58], present=[1000], absent=[440])


async def test_a_mixer_task_cancelled_before_it_ran_leaves_the_router_as_it_was(
    router: Router,
) -> None:
    mixer = Mixer(router)
    mixer.add_output(Collector())
    assert router.taps and router.released
    assert mixer.task is not None
    mixer.task.cancel()  # before its first step
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert router.taps == [] and router.released == []
    await mixer.close()


async def test_a_failing_mixer_task_ends_its_outputs_and_can_start_again(
    router: Router, caplog: pytest.LogCaptureFixture
) -> None:
    """Forced at the mixer's boundary (nothing in the product fails this way
    today): the Router's tap hands it a payload that is not bytes, and the
    frame that decodes it raises. The error is logged with its traceback,
    every output is told (``on_close``: a recording finishes its file), the
    task ends without an exception nobody retrieves, and the next consumer
    starts the mixer again."""
    mixer = Mixer(router, name="t")
    told: list[str] = []
    output = mixer.add_output(Collector(), on_close=lambda: told.append("closed"))
    task = mixer.task
    assert task is not None
    bad = publisher(1)
    for sequence in range(4):
        for tap in list(router.taps):
            tap(bad, [0xF8, 0xFF, 0xFE], 0, sequence, sequence * 960, 0, 100.0)  # type: ignore[arg-type]
    await wait_for(task.done, 2, "the mixing task to end")
    assert told == ["closed"] and output.closed, "the output was not told"
    assert not task.cancelled() and task.exception() is None
    assert not mixer.running and router.taps == [] and router.released == []
    failures = [r for r in caplog.records if r.name == "sfu.media.mixer" and r.levelname == "ERROR"]
    assert failures and failures[0].exc_info, "logged with its traceback"
    assert mixer.stats()["failures"] == 1
    again = Collector()
    mixer.add_output(again)
    assert mixer.running, "a new consumer starts it again"
    run(mixer, router, {publisher(2): opus_tone(440, 10)})
    assert len(again.packets) == 10
    await mixer.close()


@pytest.mark.parametrize(
    "settings",
    [
        {"bitrate": 300000},  # libopus takes at most 256 kbit/s for a mono stream
        {"bitrate": 100},
        {"bitrate": -1},
        {"jitter_depth": 0},
        {"jitter_depth": 17},  # more than the jitter buffer holds
        {"max_speakers": 0},
    ],
)
def test_bad_settings_are_refused_when_the_mixer_is_made(
    router: Router, settings: dict[str, Any]
) -> None:
    """Not by PyAV when the first consumer comes (a recording or a live stream
    failing with an av error), nor in the media path: a jitter depth the
    jitter buffer refuses made the Router drop the mixer's tap at the first
    packet, and the mix was silent from then on."""
    with pytest.raises(InvalidSetting) as caught:
        Mixer(router, **settings)
    assert next(iter(settings)) in str(caught.value)


async def test_a_bitrate_set_later_is_checked_too(router: Router) -> None:
    mixer = Mixer(router)
    mixer.bitrate = 256000
    with pytest.raises(InvalidSetting, match="bitrate"):
        mixer.bitrate = 320000
    assert mixer.bitrate == 256000
    mixer.add_output(Collector())  # opens an encoder at the bitrate kept
    await mixer.close()


async def test_a_deeper_jitter_buffer_still_hears_its_speakers(router: Router) -> None:
    """The deepest jitter buffer allowed still mixes (the tap is not dropped)."""
    mixer = Mixer(router, jitter_depth=16)
    collector = Collector()
    mixer.add_output(collector)
    alice = publisher(1)
    run(mixer, router, {alice: opus_tone(440, 60)})
    assert router.taps == [mixer._tap]
    assert_tones(decode_payloads(collector.packets[20:]), [440])
    await mixer.close()


def test_a_stream_made_again_at_once_goes_on_without_a_gap_in_its_timestamps() -> None:
    """A mixed member re-registered by a renegotiation, alone on its stream:
    the stream is dropped and made again in one call. Its next packet follows
    the last one sent by one sequence number and one frame (review: two
    frames, a 20 ms gap for the receiver)."""
    from sfu.media.mix_stream import MixStreams

    streams = MixStreams()
    first = streams.get(-1, 48000, "cname")
    # As a frame's delivery leaves it: the next packet's numbers.
    next_sequence, next_timestamp = first.sequence, first.timestamp
    streams.drop_if_empty(first)
    again = streams.get(-1, 48000, "cname")
    assert again is not first and again.ssrc == first.ssrc
    assert again.sequence == next_sequence
    assert (again.timestamp - next_timestamp) & 0xFFFFFFFF < FRAME_SAMPLES // 2
