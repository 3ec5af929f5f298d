"""The mixer's jitter buffer (sfu.media.jitter): reordering, loss, lateness, bounds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.media.jitter import EMPTY, LOST, PACKET, TRIM_WINDOW, JitterBuffer

pytestmark = pytest.mark.compiled_and_python_alike  # see tests/alike.py


def drain(buffer: JitterBuffer, pulls: int) -> list[str]:
    """What ``pulls`` pulls give: the payload as text, "lost" or "-" (empty)."""
    out = []
    for _ in range(pulls):
        outcome, payload, _ = buffer.pull()
        out.append(payload.decode() if outcome == PACKET else "lost" if outcome == LOST else "-")
    return out


def push(buffer: JitterBuffer, *sequences: int) -> None:
    for sequence in sequences:
        buffer.push(sequence, sequence * 960, str(sequence).encode())


@pytest.mark.parametrize(
    ("pushed", "expected"),
    [
        # In order: plays once `depth` (2) packets are in.
        ([1, 2, 3, 4], ["1", "2", "3", "4", "lost", "lost", "lost", "-"]),
        # Reordered within the depth: played in order.
        ([2, 1, 4, 3], ["1", "2", "3", "4", "lost", "lost", "lost", "-"]),
        # A missing packet is concealed once its turn comes.
        ([1, 2, 4, 5], ["1", "2", "lost", "4", "5", "lost", "lost", "lost"]),
        # Duplicates are dropped.
        ([1, 1, 2, 2], ["1", "2", "lost", "lost", "lost", "-", "-", "-"]),
        # Across the 16-bit wrap.
        ([65534, 65535, 0, 1], ["65534", "65535", "0", "1", "lost", "lost", "lost", "-"]),
    ],
)
def test_playout(pushed: list[int], expected: list[str]) -> None:
    buffer = JitterBuffer(depth=2, max_conceal=3)
    push(buffer, *pushed)
    assert drain(buffer, len(expected)) == expected


def test_waits_for_depth_then_starts_on_a_single_packet() -> None:
    buffer = JitterBuffer(depth=3)
    assert drain(buffer, 1) == ["-"]  # nothing at all
    push(buffer, 10)
    assert drain(buffer, 3) == ["-", "-", "10"]  # waited `depth` pulls for a second packet


def test_late_packet_is_dropped_and_counted() -> None:
    buffer = JitterBuffer(depth=1)
    push(buffer, 1, 3)
    assert drain(buffer, 2) == ["1", "lost"]
    push(buffer, 2)  # its turn is over
    assert buffer.late == 1
    assert drain(buffer, 1) == ["3"]
    assert buffer.concealed == 1 and buffer.played == 2


def test_goes_idle_after_max_conceal_and_rebuffers() -> None:
    buffer = JitterBuffer(depth=2, max_conceal=2)
    push(buffer, 1, 2)
    assert drain(buffer, 5) == ["1", "2", "lost", "lost", "-"]
    assert not buffer.playing
    push(buffer, 50, 51)  # the speaker is back (sequence numbers went on)
    assert drain(buffer, 2) == ["50", "51"]


def test_after_a_pause_a_copy_of_a_played_packet_is_late_and_the_next_one_plays() -> None:
    """Once idle, a copy of a played packet is dropped as late (not played
    again with concealment after it); a sender that paused in silence (DTX)
    numbers on from its last packet, and that packet plays."""
    buffer = JitterBuffer(depth=2, max_conceal=3)
    push(buffer, 10, 11, 12)
    assert drain(buffer, 7) == ["10", "11", "12", "lost", "lost", "lost", "-"]
    push(buffer, 11)  # a network duplicate
    assert buffer.late == 1
    assert drain(buffer, 2) == ["-", "-"]
    push(buffer, 13, 14, 15)  # the talkspurt after the pause
    assert drain(buffer, 3) == ["13", "14", "15"]
    assert buffer.late == 1


def test_a_pause_across_the_sequence_wrap() -> None:
    buffer = JitterBuffer(depth=2, max_conceal=3)
    push(buffer, 65533, 65534, 65535)
    assert drain(buffer, 7)[:3] == ["65533", "65534", "65535"]
    push(buffer, 0, 1, 2)
    assert drain(buffer, 3) == ["0", "1", "2"] and buffer.late == 0


def test_a_sender_counting_again_from_lower_while_idle_is_heard() -> None:
    """A restart of the numbering under the same SSRC, less than a new
    stream's jump below: heard at once, not dropped as late for a minute."""
    buffer = JitterBuffer(depth=2, max_conceal=3)
    push(buffer, 2000, 2001)
    assert drain(buffer, 6)[:2] == ["2000", "2001"]
    push(buffer, 500, 501, 502)
    assert drain(buffer, 3) == ["500", "501", "502"] and buffer.late == 0


def test_capacity_bounds_the_buffer_and_skips_ahead() -> None:
    buffer = JitterBuffer(depth=2, capacity=4)
    push(buffer, *range(1, 11))
    assert len(buffer) == 4 and buffer.overflow == 6
    assert drain(buffer, 4) == ["7", "8", "9", "10"]


def steady(buffer: JitterBuffer, first: int, frames: int) -> list[str]:
    """One packet pushed then one pull per frame (a sender in step with the
    mixer), from sequence ``first``: what was played."""
    played = []
    for sequence in range(first, first + frames):
        push(buffer, sequence)
        played += drain(buffer, 1)
    return played


def test_a_stall_delivered_at_once_does_not_leave_the_speaker_late() -> None:
    """A 200 ms network stall: 3 frames concealed, the buffer idle, then the
    10 held packets at once, and the sender goes on without pauses (no DTX).
    The backlog kept it 10 frames late for as long as it talked; the excess
    over ``depth`` is dropped after a trim window, once."""
    buffer = JitterBuffer(depth=2, max_conceal=3)
    before = steady(buffer, 1, 100)
    assert before[-1] == "99"  # one frame behind its sender, as `depth` 2 makes it
    assert drain(buffer, 10)[:5] == ["100", "lost", "lost", "lost", "-"]  # the stall
    push(buffer, *range(101, 111))  # held back, delivered together
    played = steady(buffer, 111, 3 * TRIM_WINDOW)
    # Playing again at once, then back near `depth` after one window.
    assert played[0] == "101" and buffer.trimmed == 10 - 1
    assert len(buffer) <= 2
    behind = [111 + i - int(p) for i, p in enumerate(played) if p.isdigit()]
    assert behind[-TRIM_WINDOW:] == [1] * TRIM_WINDOW
    assert buffer.overflow == 0 and buffer.late == 0


def test_jitter_within_the_depth_is_not_trimmed() -> None:
    """A sender in step whose packets now and then come a frame late and two
    at once: the buffer dips to one packet in every window, so nothing is
    dropped and everything plays in order."""
    buffer = JitterBuffer(depth=2)
    played = []
    sequence = 1
    for frame in range(6 * TRIM_WINDOW):
        if frame % 7 == 3:
            pass  # late: comes with the next one
        elif frame % 7 == 4:
            push(buffer, sequence, sequence + 1)
            sequence += 2
        else:
            push(buffer, sequence)
            sequence += 1
        played += drain(buffer, 1)
    assert buffer.trimmed == 0 and buffer.concealed == 0
    numbers = [int(p) for p in played if p.isdigit()]
    assert numbers == list(range(1, len(numbers) + 1))


def test_long_gap_is_skipped_not_concealed_for_its_length() -> None:
    buffer = JitterBuffer(depth=1, capacity=8)
    push(buffer, 1)
    assert drain(buffer, 1) == ["1"]
    push(buffer, 500)
    assert drain(buffer, 1) == ["500"]
    assert buffer.concealed == 498


def test_sequence_restart_resets() -> None:
    buffer = JitterBuffer(depth=1)
    push(buffer, 40000)
    assert drain(buffer, 1) == ["40000"]
    push(buffer, 7)  # a new stream, far away
    assert drain(buffer, 1) == ["7"]


def test_reset_and_bad_settings() -> None:
    buffer = JitterBuffer()
    push(buffer, 1, 2)
    buffer.reset()
    assert len(buffer) == 0 and drain(buffer, 1) == ["-"]
    with pytest.raises(ValueError):
        JitterBuffer(depth=0)
    with pytest.raises(ValueError):
        JitterBuffer(depth=5, capacity=4)
    with pytest.raises(ValueError):
        JitterBuffer(max_conceal=-1)


@given(st.permutations(list(range(12))), st.integers(0, 65535))
@settings(max_examples=100)
def test_any_order_within_capacity_plays_everything_in_order(order: list[int], base: int) -> None:
    buffer = JitterBuffer(depth=2, capacity=16)
    for offset in order:
        sequence = (base + offset) & 0xFFFF
        buffer.push(sequence, 0, str(offset).encode())
    played = drain(buffer, 12)
    assert played == [str(i) for i in range(12)]
    assert drain(buffer, 1) == ["lost"] and buffer.pull()[0] in (LOST, EMPTY)


def test_a_packet_an_underrun_concealed_is_still_played_when_it_comes() -> None:
    """One packet delayed past its turn with nothing else buffered: its frame
    is concealed, and when it comes it is played (the delay grows by a
    frame), not dropped as late."""
    buffer = JitterBuffer(depth=1, capacity=16)
    push(buffer, 100)
    assert drain(buffer, 2) == ["100", "lost"]  # 101 is late: nothing buffered
    push(buffer, 101, 102)
    assert drain(buffer, 2) == ["101", "102"]
    assert buffer.late == 0 and buffer.concealed == 1


def test_a_packet_lost_during_an_underrun_is_concealed_once() -> None:
    """The frame concealed while nothing was buffered stands for the packet
    that, as the next one to come shows, was lost: it is not concealed again."""
    buffer = JitterBuffer(depth=1, capacity=16)
    push(buffer, 100)
    assert drain(buffer, 2) == ["100", "lost"]
    push(buffer, 102, 103)  # 101 never comes
    assert drain(buffer, 2) == ["102", "103"]
    assert buffer.concealed == 1 and buffer.late == 0


@pytest.mark.parametrize("slow", [0.0005, 0.001])
def test_a_speaker_whose_clock_runs_slow_loses_about_a_frame_per_frame_of_drift(
    slow: float,
) -> None:
    """A speaker whose sound card runs 0.05 % or 0.1 % slow (clocks differ by
    that much), over a path with up to 20 ms of jitter, for two minutes, falls
    3 or 6 frames behind the mixer: about that many frames are concealed, and
    every packet that comes is played. (A buffer that skipped the packet of an
    underrun dropped it as late when it came a moment after, never grew its
    delay back, and lost packet after packet: 247 concealed at 0.05 %.)"""
    import random

    rng = random.Random(7)
    seconds = 120.0
    period = 0.020 * (1 + slow)
    buffer = JitterBuffer(depth=2, capacity=16)
    arrivals = [(i * period + rng.uniform(0, 0.020), 0, i) for i in range(int(seconds / period))]
    pulls = [(k * 0.020 + 0.0001, 1, k) for k in range(int(seconds / 0.020))]
    for _, is_pull, index in sorted(arrivals + pulls):
        if is_pull:
            buffer.pull()
        else:
            buffer.push((1000 + index) & 0xFFFF, index * 960, b"x")
    drift_frames = seconds * slow / 0.020
    assert buffer.late <= 2, f"{buffer.late} packets came and were dropped as late"
    assert buffer.concealed <= drift_frames + 5, (
        f"{buffer.concealed} frames concealed for {drift_frames:.0f} frames of drift"
    )


def test_frames_an_underrun_concealed_are_not_counted_again_by_a_long_gap() -> None:
    """Two frames concealed while nothing was buffered, then a packet past a
    gap longer than the buffer: 101..109 are the 9 packets lost, and the two
    frames already concealed stood for 101 and 102 (as they do for a short
    gap): ``concealed`` counts 9, not 11."""
    buffer = JitterBuffer(depth=1, capacity=4, max_conceal=3)
    push(buffer, 100)
    assert drain(buffer, 3) == ["100", "lost", "lost"]
    push(buffer, 110)
    assert drain(buffer, 1) == ["110"]
    assert buffer.concealed == 9, buffer.concealed
