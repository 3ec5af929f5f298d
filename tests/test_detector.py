"""ActiveSpeakerDetector: synthetic level scripts, both twins, and the speech corpus."""

from __future__ import annotations

import importlib
import importlib.util
import math
import random
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu import _detector_py

from .twins import NO_EXTENSIONS, compiled, implementations, resolve

ROOT = Path(__file__).resolve().parent.parent

FRAME = 0.02
SILENT = 127


@pytest.fixture(params=implementations(_detector_py, "_detector"))
def twin(request: pytest.FixtureRequest) -> ModuleType:
    return resolve(request.param)


# -- synthetic level scripts ---------------------------------------------------------


def speech(start: float, end: float, level: int = 25) -> Callable[[float], int]:
    """Speech-like levels: 240 ms syllables at ``level`` then 60 ms dips, in [start, end)."""

    def at(now: float) -> int:
        if not start <= now < end:
            return SILENT
        return level if (now - start) % 0.3 < 0.24 else 70

    return at


def burst(start: float, length: float, level: int) -> Callable[[float], int]:
    return lambda now: level if start <= now < start + length else SILENT


def combine(*parts: Callable[[float], int]) -> Callable[[float], int]:
    return lambda now: min(part(now) for part in parts)


def noise(level: int, spread: int, seed: int) -> Callable[[float], int]:
    rng = random.Random(seed)
    return lambda now: level + rng.randint(-spread, spread)


def run(
    detector: Any, script: dict[int, Callable[[float], int]], start: float, end: float
) -> list[tuple[float, int]]:
    """Feed one packet per speaker per 20 ms; the dominant speaker's change points."""
    changes: list[tuple[float, int]] = []
    frame = round(start / FRAME)
    while frame * FRAME < end:
        for speaker, levels in script.items():
            now = frame * FRAME + 0.001 * speaker
            detector.level(speaker, levels(frame * FRAME), now)
            detector.update(now)
            if not changes or changes[-1][1] != detector.dominant:
                changes.append((now, detector.dominant))
        frame += 1
    return changes


def detector_with(twin: ModuleType, speakers: list[int], slots: int = 3, **kwargs: Any) -> Any:
    detector = twin.ActiveSpeakerDetector(slots, **kwargs)
    for speaker in speakers:
        detector.add(speaker)
    return detector


def test_first_level_is_the_first_noise_floor(twin: ModuleType) -> None:
    # As in Jitsi: the first level a speaker sends is its first floor, so it
    # is not talking until a quieter frame (any pause) or silence came first.
    # A free slot is taken all the same, so a lone speaker is always heard.
    detector = detector_with(twin, [1])
    detector.level(1, 25, 0.0)
    detector.update(0.0)
    assert detector.slot_of(1) == 0
    detector.update(0.5)
    assert detector.dominant == -1


def test_a_quiet_holder_of_a_free_slot_gives_it_up_at_once(twin: ModuleType) -> None:
    detector = twin.ActiveSpeakerDetector(1)
    for speaker in (1, 2):
        detector.add(speaker)
    detector.level(1, 127, 0.0)  # silent, but the only slot is free
    detector.update(0.0)
    assert detector.holders() == [1]
    detector.level(2, 127, 0.02)
    detector.update(0.02)
    assert detector.holders() == [1], "a silent newcomer never takes an occupied slot"
    detector.level(2, 20, 0.04)  # 2 starts talking
    detector.update(0.04)
    assert detector.holders() == [2], "1 never talked: no hold time protects it"


def test_first_speaker_becomes_dominant_quickly(twin: ModuleType) -> None:
    detector = detector_with(twin, [1, 2, 3])
    changes = run(detector, {1: speech(0.5, 3.0), 2: speech(9, 9), 3: speech(9, 9)}, 0.0, 3.0)
    assert changes[0][1] == -1  # nobody talks yet
    onset = next(time for time, speaker in changes if speaker == 1)
    assert 0.5 <= onset <= 0.5 + 0.4
    assert detector.dominant == 1
    assert [speaker for _, speaker in changes] == [-1, 1]


def test_next_speaker_takes_over_after_a_pause(twin: ModuleType) -> None:
    detector = detector_with(twin, [1, 2])
    script = {1: speech(0.0, 4.0), 2: speech(4.3, 8.0)}
    changes = run(detector, script, 0.0, 8.0)
    switch = next(time for time, speaker in changes if speaker == 2)
    assert 4.3 <= switch <= 4.3 + 0.4, changes
    assert [speaker for _, speaker in changes] == [-1, 1, 2]


def test_overlapping_turn_switches_when_the_first_speaker_stops(twin: ModuleType) -> None:
    detector = detector_with(twin, [1, 2])
    script = {1: speech(0.0, 4.0), 2: speech(3.6, 8.0)}  # 0.4 s of overlap
    changes = run(detector, script, 0.0, 8.0)
    switch = next(time for time, speaker in changes if speaker == 2)
    assert 3.6 <= switch <= 3.6 + 0.8, changes


def test_interjection_and_cough_do_not_switch(twin: ModuleType) -> None:
    detector = detector_with(twin, [1, 2, 3])
    script = {
        1: speech(0.0, 8.0),
        2: burst(2.05, 0.2, 20),  # "mm-hm", louder than the speaker
        3: burst(4.1, 0.15, 8),  # a cough: very loud, short
    }
    changes = run(detector, script, 0.0, 8.0)
    assert [speaker for _, speaker in changes] == [-1, 1]
    # Interjections arriving in the speaker's 60 ms dips must not switch either.
    detector = detector_with(twin, [1, 2])
    script = {1: speech(0.0, 8.0), 2: combine(burst(2.22, 0.26, 15), burst(5.0, 0.28, 15))}
    changes = run(detector, script, 0.0, 8.0)
    assert [speaker for _, speaker in changes] == [-1, 1]


def test_monologue_not_interrupted_by_a_noisy_speaker(twin: ModuleType) -> None:
    detector = detector_with(twin, [1, 2, 3])
    script = {
        1: speech(0.5, 20.0, level=30),
        2: noise(42, 6, seed=3),  # constant background noise, -36..-48 dBov
        3: lambda now: SILENT,  # connected, unmuted, silent
    }
    changes = run(detector, script, 0.0, 20.0)
    assert [speaker for _, speaker in changes] == [-1, 1]
    ranked = [speaker for speaker, _ in detector.ranking()]
    assert ranked[0] == 1 and 3 not in ranked


def test_noisy_channel_speaker_still_wins_when_talking(twin: ModuleType) -> None:
    detector = detector_with(twin, [1, 2])
    noisy = noise(45, 5, seed=4)
    script = {1: speech(0.0, 5.0), 2: combine(noisy, speech(5.3, 10.0, level=24))}
    changes = run(detector, script, 0.0, 10.0)
    assert [speaker for _, speaker in changes] == [-1, 1, 2]
    switch = next(time for time, speaker in changes if speaker == 2)
    assert switch <= 5.3 + 0.4


def test_silent_room_has_no_dominant(twin: ModuleType) -> None:
    detector = detector_with(twin, [1, 2])
    changes = run(detector, {1: lambda now: SILENT, 2: lambda now: 90}, 0.0, 3.0)
    assert [speaker for _, speaker in changes] == [-1]
    assert detector.ranking() == []


def test_speaker_that_stops_sending_loses_the_stage(twin: ModuleType) -> None:
    detector = detector_with(twin, [1, 2])
    run(detector, {1: speech(0.0, 3.0)}, 0.0, 3.0)  # 2 sends nothing at all
    assert detector.dominant == 1
    # 1 stops sending packets entirely (client-side mute, DTX): it is fed silence.
    changes = run(detector, {2: speech(3.5, 6.0)}, 3.0, 6.0)
    switch = next(time for time, speaker in changes if speaker == 2)
    assert switch <= 3.5 + 0.4


def test_remove_drops_at_once(twin: ModuleType) -> None:
    detector = detector_with(twin, [1, 2])
    run(detector, {1: speech(0.0, 2.0), 2: speech(0.0, 2.0, level=40)}, 0.0, 2.0)
    assert detector.dominant == 1
    assert detector.slot_of(1) >= 0
    assert 1 in [speaker for speaker, _ in detector.ranking()]
    detector.remove(1)
    assert detector.dominant == -1
    assert detector.slot_of(1) == -1
    assert 1 not in detector.holders()
    assert 1 not in [speaker for speaker, _ in detector.ranking()]
    assert detector.update(2.0) is True  # the change is reported once
    assert detector.update(2.0) is False
    detector.level(1, 10, 2.01)  # no longer tracked: ignored
    detector.update(2.5)
    assert detector.dominant == 2
    detector.remove(1)  # idempotent
    detector.remove(99)


def test_slot_hysteresis(twin: ModuleType) -> None:
    detector = detector_with(twin, [1, 2, 3], slots=2, hold=1.0)
    script = {1: speech(0.1, 2.0), 2: speech(0.3, 3.0, level=35), 3: speech(3.2, 6.0)}
    slots_seen: dict[int, set[int]] = {1: set(), 2: set(), 3: set()}
    frame = 0
    while frame * FRAME < 6.0:
        now = frame * FRAME
        for speaker, levels in script.items():
            detector.level(speaker, levels(now), now)
            detector.update(now)
        for speaker in script:
            slot = detector.slot_of(speaker)
            if slot >= 0:
                slots_seen[speaker].add(slot)
        if 1.0 <= now < 3.0:
            assert detector.holders() == [1, 2]  # both keep their slots
        if 3.2 <= now < 3.3:
            # 3 talks: 1 has been quiet for more than `hold`, 2 for less.
            assert detector.slot_of(3) == 0
            assert detector.slot_of(2) == 1
        frame += 1
    # Nobody moved between slots while holding one.
    assert slots_seen == {1: {0}, 2: {1}, 3: {0}}
    assert detector.dominant == 3


def test_dominant_always_has_a_slot(twin: ModuleType) -> None:
    detector = detector_with(twin, [1, 2], slots=1, hold=5.0)
    run(detector, {1: speech(0.0, 3.0), 2: speech(3.3, 6.0)}, 0.0, 6.0)
    # 1 spoke less than `hold` ago, but the dominant speaker takes the slot.
    assert detector.dominant == 2
    assert detector.holders() == [2]


def test_newcomer_takes_a_free_slot_on_its_first_packet(twin: ModuleType) -> None:
    detector = detector_with(twin, [1, 2], slots=2)
    detector.level(2, SILENT, 0.0)
    assert detector.update(0.0) is True  # a free slot is taken even in silence
    assert detector.slot_of(2) == 0
    detector.level(2, 0x80 | 30, 0.02)  # V bit set: same level
    detector.update(0.02)
    assert detector.slot_of(2) == 0  # holders never move
    detector.level(1, 90, 0.03)
    assert detector.observe(1, 30, 0.04) == 1
    assert detector.holders() == [2, 1]
    detector.add(3)
    detector.level(3, SILENT, 0.05)
    assert detector.update(0.05) is False
    assert detector.slot_of(3) == -1  # silence never takes an occupied slot


def test_ranking_order_and_scores(twin: ModuleType) -> None:
    detector = detector_with(twin, [1, 2, 3, 4], slots=3)
    script = {
        1: speech(0.1, 3.0, 25),
        2: burst(2.5, 0.3, 45),  # short remarks while 1 talks: ranked, not dominant
        3: burst(2.5, 0.3, 35),
        4: lambda now: SILENT,
    }
    run(detector, script, 0.0, 2.9)
    ranking = detector.ranking()
    assert [speaker for speaker, _ in ranking] == [1, 3, 2]
    assert all(0.0 < score <= 1.0 for _, score in ranking)
    assert ranking[0][1] > ranking[1][1] > ranking[2][1]
    detector = detector_with(twin, [1, 2, 3, 4], slots=2)
    run(detector, script, 0.0, 2.9)
    assert [speaker for speaker, _ in detector.ranking()] == [1, 3]


def test_ignores_bad_input(twin: ModuleType) -> None:
    detector = detector_with(twin, [1])
    detector.level(7, 10, 0.0)  # unknown speaker
    detector.level(1, -1, 0.0)  # packet without a level
    detector.update(0.0)
    assert detector.holders() == [-1, -1, -1]
    detector.level(1, SILENT, 0.9)  # the first level is the first noise floor
    detector.level(1, 20, 1.0)
    detector.level(1, 20, 0.5)  # older than the last one: ignored
    detector.update(1.0)
    assert detector.slot_of(1) == 0
    with pytest.raises((ValueError, OverflowError)):
        detector.add(-1)
    # A negative id is nobody: not the holder of a free slot, not in the table
    # (the compiled table marks its free buckets -1).
    for nobody in (-1, -2):
        detector.level(nobody, 20, 1.1)
        detector.remove(nobody)
        assert detector.slot_of(nobody) == -1
        assert detector.observe(nobody, 20, 1.2) == -1
    assert detector.slot_of(1) == 0 and detector.holders() == [1, -1, -1]


def test_a_clock_gone_back_feeds_no_silence_in_either_twin(twin: ModuleType) -> None:
    """A level stamped later than the next update's time (a caller's clock
    going back): no frames are due. The compiled twin's conversion of that
    negative span to a frame count was undefined and filled the history
    with silence, ranking the speaker 0.0 while the Python twin did not."""
    rankings = []
    for module in (_detector_py, twin):
        detector = module.ActiveSpeakerDetector(3)
        detector.add(1)
        now = 100.0
        for step in range(40):
            detector.level(1, SILENT if step < 5 else 10, now)
            now += FRAME
            detector.update(now)
        detector.level(1, 10, 1e20)  # from a clock far ahead
        detector.update(now + 0.2)
        rankings.append(detector.ranking())
    reference, ranked = rankings
    assert ranked == reference
    assert ranked and ranked[0][0] == 1 and ranked[0][1] > 0


def test_a_compiled_detector_whose_init_never_ran_refuses_instead_of_crashing() -> None:
    module = compiled("_detector")
    detector = module.ActiveSpeakerDetector.__new__(module.ActiveSpeakerDetector)
    with pytest.raises(RuntimeError, match="__init__ was not called"):
        detector.add(1)  # was a segmentation fault (no hash table yet)
    detector.level(1, 20, 0.0)  # unknown speaker: ignored
    assert detector.slot_of(1) == -1


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0,), {}, "slots"),
        ((17,), {}, "slots"),
        ((3,), {"interval": 0.0}, "interval"),
        ((3,), {"c1": math.nan}, "c1"),
        ((3,), {"c3": math.inf}, "c3"),
        ((3,), {"hold": -1.0}, "hold"),
        ((3,), {"n1": 1}, "n1"),
        ((3,), {"n2": 16, "n3": 16}, "n2 and n3"),
        ((3,), {"n2": 0}, "n2 and n3"),
        ((3,), {"medium_threshold": 12}, "medium_threshold"),
        ((3,), {"long_threshold": 3}, "long_threshold"),
        ((3,), {"margin": 128}, "margin"),
        ((3,), {"floor_window": 0.0}, "floor_window"),
    ],
)
def test_validates_settings(
    twin: ModuleType, args: tuple[int], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        twin.ActiveSpeakerDetector(*args, **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((2.5,), {}, "slots"),
        ((3,), {"n1": 13.5}, "n1"),
        ((3,), {"n2": 3.0}, "n2"),
        ((3,), {"n3": 8.9}, "n3"),
        ((3,), {"medium_threshold": 7.5}, "medium_threshold"),
        ((3,), {"long_threshold": 2.5}, "long_threshold"),
        ((3,), {"margin": 15.5}, "margin"),
    ],
)
def test_counts_must_be_integers(
    twin: ModuleType, args: tuple[float], kwargs: dict[str, Any], message: str
) -> None:
    """The compiled twin truncated them (2.5 slots made 2), the Python one
    failed with a TypeError from deep inside (or took them)."""
    with pytest.raises(ValueError, match=message):
        twin.ActiveSpeakerDetector(*args, **kwargs)


@pytest.mark.parametrize("speaker", [1.5, 1.0, "1", 1 << 63])
def test_a_speaker_id_must_be_an_integer_in_range(twin: ModuleType, speaker: object) -> None:
    """1.5 was tracked as 1.5 by the Python twin and as 1 by the compiled one;
    2**63 was an OverflowError in one and a ValueError in the other."""
    detector = twin.ActiveSpeakerDetector()
    with pytest.raises(ValueError, match="speaker"):
        detector.add(speaker)
    detector.remove(speaker)  # nobody tracked by that id: nothing to do, in both
    assert detector.holders() == [-1, -1, -1]


def test_selector_exports_detector() -> None:
    from sfu import detector

    expected = _detector_py if NO_EXTENSIONS else compiled("_detector")
    assert detector.ActiveSpeakerDetector is expected.ActiveSpeakerDetector


# -- the twins agree ---------------------------------------------------------------------

OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["level", "level", "level", "level", "add", "remove"]),
        st.integers(0, 6),
        st.one_of(st.integers(-1, 255), st.integers(15, 50), st.just(127)),
        st.sampled_from([0.0, 0.001, 0.02, 0.02, 0.05, 0.12, 0.5, 2.0]),
    ),
    max_size=400,
)


@pytest.mark.skipif(
    NO_EXTENSIONS, reason="compares with the compiled module; SFU_NO_EXTENSIONS is set"
)
@settings(max_examples=150, deadline=None)
@given(
    operations=OPERATIONS,
    slots=st.integers(1, 4),
    interval=st.sampled_from([0.02, 0.1, 0.3]),
    hold=st.sampled_from([0.0, 0.3, 1.0]),
    c3=st.sampled_from([0.0, -1.0]),
)
def test_twins_agree(
    operations: list[tuple[str, int, int, float]],
    slots: int,
    interval: float,
    hold: float,
    c3: float,
) -> None:
    fast = compiled("_detector")
    kwargs: dict[str, Any] = {"interval": interval, "hold": hold, "c3": c3, "floor_window": 0.5}
    fast = fast.ActiveSpeakerDetector(slots, **kwargs)
    reference = _detector_py.ActiveSpeakerDetector(slots, **kwargs)
    for speaker in range(4):
        fast.add(speaker)
        reference.add(speaker)
    now = 0.0
    for operation, speaker, level, step in operations:
        now += step
        if operation == "add":
            fast.add(speaker)
            reference.add(speaker)
        elif operation == "remove":
            fast.remove(speaker)
            reference.remove(speaker)
        else:
            fast.level(speaker, level, now)
            reference.level(speaker, level, now)
            assert fast.update(now) == reference.update(now)
        assert fast.dominant == reference.dominant
        assert fast.ranking() == reference.ranking()
        assert fast.holders() == reference.holders()
        assert fast.slot_of(speaker) == reference.slot_of(speaker)


# Every speaker sends a level each 20 ms, as in a room, drawn from a few
# values: ties, a loudness exactly at the floor plus the margin and the
# floor's windows are reached, where random levels seldom get.
TALK = st.lists(
    st.lists(st.sampled_from([-1, 20, 25, 35, 96, 112, 113, 127]), min_size=3, max_size=3),
    min_size=20,
    max_size=300,
)


@pytest.mark.skipif(
    NO_EXTENSIONS, reason="compares with the compiled module; SFU_NO_EXTENSIONS is set"
)
@settings(max_examples=150, deadline=None)
@given(
    frames=TALK,
    slots=st.integers(1, 3),
    hold=st.sampled_from([0.0, 0.3]),
    margin=st.sampled_from([10, 15]),
)
def test_twins_agree_on_talk(frames: list[list[int]], slots: int, hold: float, margin: int) -> None:
    kwargs: dict[str, Any] = {"hold": hold, "margin": margin, "floor_window": 0.2}
    fast = compiled("_detector").ActiveSpeakerDetector(slots, **kwargs)
    reference = _detector_py.ActiveSpeakerDetector(slots, **kwargs)
    for speaker in range(3):
        fast.add(speaker)
        reference.add(speaker)
    for frame, levels in enumerate(frames):
        now = frame * FRAME
        for speaker, level in enumerate(levels):
            fast.level(speaker, level, now)
            reference.level(speaker, level, now)
        assert fast.update(now) == reference.update(now)
        assert fast.dominant == reference.dominant
        assert fast.ranking() == reference.ranking()
        assert fast.holders() == reference.holders()


@pytest.mark.skipif(
    NO_EXTENSIONS, reason="compares with the compiled module; SFU_NO_EXTENSIONS is set"
)
def test_twins_agree_with_many_speakers() -> None:
    """Past the compiled detector's first allocation (8 speakers), with joins and leaves."""
    randomness = random.Random(3)
    fast = compiled("_detector").ActiveSpeakerDetector(3)
    reference = _detector_py.ActiveSpeakerDetector(3)
    for speaker in range(100):
        fast.add(speaker)
        reference.add(speaker)
    now = 0.0
    for step in range(2000):
        now += 0.002
        speaker = randomness.randrange(120)
        level = randomness.choice([-1, 20, 25, 96, 127])
        if step % 97 == 0:
            fast.remove(speaker)
            reference.remove(speaker)
        elif step % 89 == 0:
            fast.add(speaker)
            reference.add(speaker)
        fast.level(speaker, level, now)
        reference.level(speaker, level, now)
        assert fast.update(now) == reference.update(now)
        assert fast.dominant == reference.dominant
        assert fast.ranking() == reference.ranking()
        assert fast.holders() == reference.holders()
    assert fast.dominant >= 0


# -- the speech corpus ---------------------------------------------------------------------


def _corpus_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "speaker_corpus", ROOT / "bench" / "speaker_corpus.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["speaker_corpus"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, Any]:
    module = _corpus_module()
    if not module.tools_available():
        pytest.skip("needs espeak-ng and sox (Debian: apt-get install espeak-ng sox)")
    path = tmp_path_factory.mktemp("corpus") / "corpus.json"
    built = module.build(seconds=90.0, seed=11)
    module.save(built, str(path))
    return module, module.load(str(path))


@pytest.mark.slow
def test_corpus_targets_and_baseline(twin: ModuleType, corpus: tuple[ModuleType, Any]) -> None:
    module, conversation = corpus
    results = module.compare(conversation, lambda: twin.ActiveSpeakerDetector(3))
    ours, baseline = results["detector"], results["baseline"]
    assert ours["turn_changes"] >= 8
    assert ours["missed_turns"] == 0
    assert ours["latency_median_ms"] <= 400, ours
    assert ours["latency_p95_ms"] <= 800, ours
    assert ours["false_switches_per_minute"] < 0.5, ours
    assert ours["interjection_switches"] == 0, ours
    # Clearly better than "loudest packet wins".
    assert baseline["false_switches_per_minute"] > 20 * max(ours["false_switches_per_minute"], 1)
    assert ours["wrong_speaker_seconds"] < 0.5 * baseline["wrong_speaker_seconds"], (
        ours,
        baseline,
    )
