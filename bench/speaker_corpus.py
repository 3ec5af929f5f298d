"""A scripted speech-turn corpus and the evaluation of the active-speaker detector.

The corpus is synthesised, so its ground truth is exact:

* four talking speakers, each with its own ``espeak-ng`` voice and level
  (``en+m3``, ``en+f2``, ``en-us``, ``de``), resampled to 48 kHz by ``sox``;
* turns of a few seconds to a 20 s monologue, separated by pauses or
  overlapping the end of the previous turn;
* short interjections (< 300 ms: "mm-hm", "yeah", a cough, a noise burst)
  by someone other than the current speaker, in the middle of a turn;
* constant background noise (-42 dBov brown noise) on one speaker's channel,
  a faint microphone hiss (-80 dBov) on the others';
* a fifth speaker that is connected and unmuted but never talks (-66 dBov hiss).

Each channel's level per 20 ms frame is the RFC 6464 value a browser would
send: :func:`sfu.media.levels.audio_level` (RFC 6465 Appendix A). Packets
are timed every 20 ms per speaker with a little seeded jitter and fed, in
arrival order, to the detector (``level`` + ``update`` per packet) and, in
the same run, to a naive baseline: the loudest packet of each 20 ms frame is
dominant (ties and all-silent frames keep the previous one).

Figures (per detector): switch latency from each turn's onset to that
speaker becoming dominant (median, p95; a turn never reached counts with
its whole length), false switches per minute (to anyone but the current
speaker; the interjection-driven ones are also counted apart), and the
seconds during which the dominant speaker is not the current one.

Run ``python bench/speaker_corpus.py`` (``--help``): five 150 s
conversations (seeds 1-5), figures pooled over them and per conversation,
written to ``bench/results/detector-corpus.json``. ``--tune`` also sweeps
the parameters and writes ``bench/results/detector-tuning.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from sfu.media.levels import audio_level  # noqa: E402

RATE = 48000
FRAME = 0.02
FRAME_SAMPLES = 960

#: speaker -> (espeak-ng voice, words per minute, speech RMS in dBov)
VOICES: dict[int, tuple[str, int, float]] = {
    0: ("en+m3", 165, -22.0),
    1: ("en+f2", 175, -26.0),
    2: ("en-us", 160, -24.0),  # the one with background noise
    3: ("de", 150, -28.0),
}
SILENT_SPEAKER = 4
NOISY_SPEAKER = 2
NOISE_DBOV = -42.0
HISS_DBOV = -80.0
SILENT_HISS_DBOV = -66.0

SENTENCES = {
    "en": [
        "Well, I think the main problem with the proposal is the timing.",
        "We tried that last year and it did not work out the way we hoped.",
        "Can I add something here? The numbers from the second quarter look different.",
        "I agree with most of it, but the budget part worries me a little.",
        "Let me explain how the new system handles the load during the evening peak.",
        "That is a fair point, and honestly I had not thought about it that way.",
        "So the question is whether we wait for the results or start right now.",
        "My experience is that people stay in a room when the conversation flows.",
        "Right, and the other thing is that nobody reads the long documents anyway.",
        "I would keep it simple: three speakers on stage and everybody else listens.",
        "The latency budget is tight, but it is possible if we do not decode the audio.",
        "We should also ask the listeners what they think before we decide.",
    ],
    "de": [
        "Ich glaube, das Problem ist eigentlich ganz einfach zu lösen.",
        "Wir haben das letzte Woche schon einmal besprochen, oder nicht?",
        "Das sehe ich anders, aber lasst uns die Zahlen zuerst anschauen.",
        "Meiner Meinung nach brauchen wir mehr Zeit für die Planung.",
        "Genau, und deshalb sollten wir mit einem kleinen Test anfangen.",
    ],
}
INTERJECTIONS = ["mm-hm", "yeah", "okay", "right"]
MONOLOGUE = (
    "Let me tell you the whole story from the beginning, because it matters. "
    "When we started, the plan was to run everything on one machine. "
    "Then the first large event came, with thousands of listeners, and the machine "
    "simply could not keep up. We spent a week measuring where the time went. "
    "It turned out that most of it was spent copying packets, not encrypting them."
)


@dataclass
class Turn:
    speaker: int
    onset: float
    end: float
    text: str


@dataclass
class Interjection:
    speaker: int
    onset: float
    end: float
    kind: str  # "speech" or "cough"


@dataclass
class Corpus:
    seconds: float
    turns: list[Turn]
    interjections: list[Interjection]
    #: speaker -> RFC 6464 level (-dBov) per 20 ms frame
    levels: dict[int, list[int]] = field(default_factory=dict)


def tools_available() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def _db(dbov: float) -> float:
    return float(10.0 ** (dbov / 20.0))


def synthesise(text: str, voice: str, speed: int) -> npt.NDArray[np.float64]:
    """``espeak-ng`` speech at 48 kHz (via ``sox``), trimmed of leading/trailing silence."""
    speech = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    raw = subprocess.run(
        ["sox", "-t", "wav", "-", "-r", str(RATE), "-c", "1", "-b", "16"]
        + ["-e", "signed-integer", "-t", "raw", "-"],
        input=speech,
        check=True,
        capture_output=True,
    ).stdout
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32767.0
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    if loud.size == 0:
        return samples[:0]
    return samples[loud[0] : loud[-1] + 1]


def _scaled(samples: npt.NDArray[np.float64], dbov: float) -> npt.NDArray[np.float64]:
    """Scale so the RMS of the voiced frames is ``dbov``."""
    frames = samples[: len(samples) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    voiced = rms[rms > 0.3 * rms.max()] if rms.size else rms
    reference = float(np.sqrt(np.mean(voiced**2))) if voiced.size else 1.0
    return samples * (_db(dbov) / max(reference, 1e-9))


def _noise(rng: np.random.Generator, count: int, dbov: float, brown: bool) -> npt.NDArray[Any]:
    white = rng.standard_normal(count)
    if brown:  # 1/f^2 spectrum above 20 Hz: a rumbling, fan-like noise
        spectrum = np.fft.rfft(white)
        frequencies = np.fft.rfftfreq(count, 1.0 / RATE)
        spectrum /= np.maximum(frequencies, 20.0)
        white = np.fft.irfft(spectrum, count)
    white -= white.mean()
    return white * (_db(dbov) / float(np.sqrt(np.mean(white**2))))


def script(seconds: float, seed: int) -> tuple[list[tuple[int, str, float]], list[tuple[str, int]]]:
    """The conversation: (speaker, text, gap before: negative = overlap) and interjections."""
    rng = random.Random(seed)
    turns: list[tuple[int, str, float]] = []
    speaker = 0
    estimated = 0.0
    monologue_done = seconds < 60
    while estimated < seconds - 4:
        choices = [s for s in VOICES if s != speaker]
        speaker = rng.choice(choices)
        if not monologue_done and estimated > seconds * 0.4:
            speaker, text = 0, MONOLOGUE
            monologue_done = True
        else:
            pool = SENTENCES["de" if VOICES[speaker][0] == "de" else "en"]
            text = rng.choice(pool)
            if rng.random() < 0.4:
                text += " " + rng.choice(pool)
        roll = rng.random()
        gap = rng.uniform(-0.7, -0.25) if roll < 0.25 else rng.uniform(0.15, 0.9)
        turns.append((speaker, text, gap if turns else 0.5))
        estimated += len(text) * 0.07 + gap
    interjections = [("cough", -1), ("speech", -1)] * max(2, int(seconds // 25))
    return turns, interjections


def build(seconds: float = 150.0, seed: int = 1) -> Corpus:
    """Synthesise the conversation and the per-frame levels of every channel."""
    turns_script, interjection_script = script(seconds, seed)
    rng = random.Random(seed + 1)
    noise_rng = np.random.default_rng(seed)
    clips = []
    time_cursor = 0.0
    turns: list[Turn] = []
    for speaker, text, gap in turns_script:
        voice, speed, dbov = VOICES[speaker]
        audio = _scaled(synthesise(text, voice, speed), dbov)
        onset = max(time_cursor + gap, turns[-1].onset + 1.0 if turns else 0.0)
        end = onset + len(audio) / RATE
        turns.append(Turn(speaker, round(onset, 3), round(end, 3), text))
        clips.append((speaker, onset, audio))
        time_cursor = max(time_cursor, end)
    total = time_cursor + 1.0

    # Interjections in the middle of turns longer than 3 s, by someone else.
    interjections: list[Interjection] = []
    long_turns = [turn for turn in turns if turn.end - turn.onset > 3.0]
    rng.shuffle(long_turns)
    for (kind, _), turn in zip(interjection_script, long_turns, strict=False):
        others = [s for s in VOICES if s != turn.speaker]
        speaker = rng.choice(others)
        onset = rng.uniform(turn.onset + 1.0, turn.end - 1.5)
        if kind == "cough":
            length = rng.uniform(0.12, 0.2)
            count = int(length * RATE)
            envelope = np.exp(-np.arange(count) / (0.35 * count))
            audio = _noise(noise_rng, count, -14.0, False) * envelope
        else:
            voice, speed, dbov = VOICES[speaker]
            word = rng.choice(INTERJECTIONS)
            audio = _scaled(synthesise(word, voice, speed + 80), dbov + 2)
            limit = int(rng.uniform(0.18, 0.28) * RATE)
            if len(audio) > limit:
                audio = audio[:limit].copy()
                fade = min(960, limit)
                audio[-fade:] *= np.linspace(1.0, 0.0, fade)
        clips.append((speaker, onset, audio))
        interjections.append(
            Interjection(speaker, round(onset, 3), round(onset + len(audio) / RATE, 3), kind)
        )
    interjections.sort(key=lambda item: item.onset)

    count = int(total / FRAME) * FRAME_SAMPLES
    channels: dict[int, npt.NDArray[Any]] = {}
    for speaker in [*VOICES, SILENT_SPEAKER]:
        if speaker == NOISY_SPEAKER:
            channels[speaker] = _noise(noise_rng, count, NOISE_DBOV, True)
        elif speaker == SILENT_SPEAKER:
            channels[speaker] = _noise(noise_rng, count, SILENT_HISS_DBOV, False)
        else:
            channels[speaker] = _noise(noise_rng, count, HISS_DBOV, False)
    for speaker, onset, audio in clips:
        start = int(onset * RATE)
        stop = min(start + len(audio), count)
        channels[speaker][start:stop] += audio[: stop - start]

    corpus = Corpus(round(total, 3), turns, interjections)
    for speaker, samples in channels.items():
        frames = np.clip(samples, -1.0, 1.0).reshape(-1, FRAME_SAMPLES)
        corpus.levels[speaker] = [audio_level(frame) for frame in frames]
    return corpus


def save(corpus: Corpus, path: str) -> None:
    with open(path, "w") as file:
        json.dump(asdict(corpus), file)


def load(path: str) -> Corpus:
    with open(path) as file:
        data = json.load(file)
    return Corpus(
        data["seconds"],
        [Turn(**turn) for turn in data["turns"]],
        [Interjection(**item) for item in data["interjections"]],
        {int(speaker): levels for speaker, levels in data["levels"].items()},
    )


# -- evaluation --------------------------------------------------------------------------


class Detector(Protocol):
    dominant: int

    def add(self, speaker: int) -> None: ...
    def level(self, speaker: int, level: int, now: float) -> None: ...
    def update(self, now: float) -> bool: ...


def packets(corpus: Corpus, seed: int = 7) -> list[tuple[float, int, int]]:
    """(arrival time, speaker, level) of every packet, in arrival order."""
    rng = random.Random(seed)
    events = []
    for speaker, levels in corpus.levels.items():
        offset = 0.003 * speaker
        for frame, level in enumerate(levels):
            # Sent at the end of its frame; up to 8 ms of network jitter.
            arrival = (frame + 1) * FRAME + offset + rng.uniform(0.0, 0.008)
            events.append((arrival, speaker, level))
    events.sort()
    # Jitter must not reorder one speaker's packets: keep each speaker monotonic.
    last: dict[int, float] = {}
    ordered = []
    for arrival, speaker, level in events:
        arrival = max(arrival, last.get(speaker, 0.0))
        last[speaker] = arrival
        ordered.append((arrival, speaker, level))
    return ordered


def run_detector(
    factory: Callable[[], Detector], corpus: Corpus, events: Iterable[tuple[float, int, int]]
) -> list[tuple[float, int]]:
    """Feed every packet; the dominant speaker's change points ``(time, speaker)``."""
    detector = factory()
    for speaker in corpus.levels:
        detector.add(speaker)
    changes = [(0.0, -1)]
    for now, speaker, level in events:
        detector.level(speaker, level, now)
        detector.update(now)
        if detector.dominant != changes[-1][1]:
            changes.append((now, detector.dominant))
    return changes


def run_baseline(corpus: Corpus) -> list[tuple[float, int]]:
    """Loudest packet wins, frame by frame (its packets arrive at the frame's end)."""
    speakers = sorted(corpus.levels)
    frames = len(corpus.levels[speakers[0]])
    changes = [(0.0, -1)]
    for frame in range(frames):
        loudest = min(corpus.levels[s][frame] & 0x7F for s in speakers)
        if loudest >= 127:
            continue
        current = changes[-1][1]
        tied = [s for s in speakers if corpus.levels[s][frame] & 0x7F == loudest]
        if current in tied:
            continue
        changes.append(((frame + 1) * FRAME, tied[0]))
    return changes


def _dominant_at(changes: list[tuple[float, int]], now: float) -> int:
    dominant = -1
    for time_, speaker in changes:
        if time_ > now:
            break
        dominant = speaker
    return dominant


def evaluate(corpus: Corpus, changes: list[tuple[float, int]]) -> dict[str, Any]:
    """Switch latency, false switches and wrong-speaker time against the script."""
    turns = corpus.turns
    onsets = [turn.onset for turn in turns]

    def truth(now: float) -> int:
        current = -1
        for turn in turns:
            if turn.onset > now:
                break
            current = turn.speaker
        return current

    latencies = []
    missed = 0
    previous = -1
    for index, turn in enumerate(turns):
        limit = onsets[index + 1] if index + 1 < len(turns) else corpus.seconds
        if turn.speaker == previous:
            continue
        previous = turn.speaker
        reached = None
        if _dominant_at(changes, turn.onset) == turn.speaker:
            reached = turn.onset
        else:
            for time_, speaker in changes:
                if turn.onset < time_ < limit and speaker == turn.speaker:
                    reached = time_
                    break
        if reached is None:
            missed += 1
            latencies.append(limit - turn.onset)
        else:
            latencies.append(reached - turn.onset)

    false_switches = []
    interjection_switches = 0
    for time_, speaker in changes[1:]:
        if speaker >= 0 and speaker != truth(time_):
            false_switches.append((round(time_, 3), speaker))
            if any(
                item.speaker == speaker and item.onset <= time_ <= item.end + 1.0
                for item in corpus.interjections
            ):
                interjection_switches += 1

    # Wrong-speaker time, on a 10 ms grid from the first onset to the end.
    step = 0.01
    wrong = 0.0
    points = [*changes, (math.inf, -1)]
    position = 0
    now = onsets[0]
    while now < corpus.seconds:
        while points[position + 1][0] <= now:
            position += 1
        if points[position][1] != truth(now):
            wrong += step
        now += step
    minutes = (corpus.seconds - onsets[0]) / 60.0
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {
        "switches": len(changes) - 1,
        "turn_changes": len(latencies),
        "missed_turns": missed,
        "latency_median_ms": round(1000 * statistics.median(latencies), 1),
        "latency_p95_ms": round(1000 * p95, 1),
        "false_switches": len(false_switches),
        "false_switches_per_minute": round(len(false_switches) / minutes, 3),
        "interjection_switches": interjection_switches,
        "wrong_speaker_seconds": round(wrong, 2),
        "wrong_speaker_fraction": round(wrong / (corpus.seconds - onsets[0]), 4),
        "first_false_switches": false_switches[:10],
        "latencies_ms": [round(1000 * latency) for latency in latencies],
    }


def compare(
    corpus: Corpus, factory: Callable[[], Detector], seed: int = 7
) -> dict[str, dict[str, Any]]:
    """Ours and the baseline on the same packets, in one run."""
    events = packets(corpus, seed)
    return {
        "detector": evaluate(corpus, run_detector(factory, corpus, events)),
        "baseline": evaluate(corpus, run_baseline(corpus)),
    }


def pooled(figures: list[dict[str, Any]], corpora: list[Corpus]) -> dict[str, Any]:
    """One detector's figures over several conversations: latencies pooled, rates summed."""
    latencies = sorted(value for item in figures for value in item["latencies_ms"])
    minutes = sum((corpus.seconds - corpus.turns[0].onset) / 60.0 for corpus in corpora)
    false_switches = sum(item["false_switches"] for item in figures)
    return {
        "conversations": len(corpora),
        "minutes": round(minutes, 2),
        "turn_changes": len(latencies),
        "missed_turns": sum(item["missed_turns"] for item in figures),
        "latency_median_ms": statistics.median(latencies),
        "latency_p95_ms": latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)],
        "false_switches": false_switches,
        "false_switches_per_minute": round(false_switches / minutes, 3),
        "interjection_switches": sum(item["interjection_switches"] for item in figures),
        "wrong_speaker_seconds": round(sum(item["wrong_speaker_seconds"] for item in figures), 2),
    }


def _factory(**settings: Any) -> Callable[[], Detector]:
    from sfu.detector import ActiveSpeakerDetector

    return lambda: ActiveSpeakerDetector(3, **settings)


def tune(corpora: list[Corpus]) -> list[dict[str, Any]]:
    """Sweep the main knobs; every row is one setting's pooled figures, best first."""
    rows = []
    events = [packets(corpus) for corpus in corpora]
    grid = [
        {"interval": 0.3, "n2": 5, "n3": 10, "long_threshold": 4, "margin": 10},  # published
        {"interval": 0.3, "n2": 5, "n3": 10, "long_threshold": 4, "margin": 15},
    ] + [
        {
            "interval": interval,
            "c3": c3,
            "n2": n2,
            "n3": n3,
            "long_threshold": n2 - 1,
            "margin": margin,
        }
        for interval in (0.05, 0.1, 0.2, 0.3)
        for c3 in (0.0, -1.0)
        for n2, n3 in ((5, 10), (5, 6), (3, 8), (3, 10))
        for margin in (10, 15, 18)
    ]
    for settings in grid:
        figures = [
            evaluate(corpus, run_detector(_factory(**settings), corpus, stream))
            for corpus, stream in zip(corpora, events, strict=True)
        ]
        rows.append({"settings": settings, **pooled(figures, corpora)})
    rows.sort(
        key=lambda row: (
            row["false_switches_per_minute"] >= 0.5,
            row["latency_p95_ms"],
            row["latency_median_ms"],
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="conversation length")
    parser.add_argument(
        "--seeds", default="1,2,3,4,5", help="one conversation per seed (comma-separated)"
    )
    parser.add_argument("--cache", help="keep the corpora (JSON levels) in this folder")
    parser.add_argument(
        "--out", default=os.path.join(HERE, "results", "detector-corpus.json"), help="figures"
    )
    parser.add_argument("--tune", action="store_true", help="also sweep the parameters")
    args = parser.parse_args()
    if not tools_available():
        sys.exit("needs espeak-ng and sox (Debian: apt-get install espeak-ng sox)")
    from sfu.detector import EXTENSION_LOADED, ActiveSpeakerDetector

    started = time.perf_counter()
    corpora = []
    for seed in [int(value) for value in args.seeds.split(",")]:
        path = (
            os.path.join(args.cache, f"corpus-{args.seconds:g}s-{seed}.json") if args.cache else ""
        )
        if path and os.path.exists(path):
            corpora.append(load(path))
            continue
        corpora.append(build(args.seconds, seed))
        if path:
            os.makedirs(args.cache, exist_ok=True)
            save(corpora[-1], path)
    built = time.perf_counter() - started

    reference = ActiveSpeakerDetector(3)
    names = "slots interval c1 c2 c3 hold n1 n2 n3 medium_threshold long_threshold"
    settings = {name: getattr(reference, name) for name in (names + " floor_window margin").split()}
    per_seed = [compare(corpus, lambda: ActiveSpeakerDetector(3)) for corpus in corpora]
    results = {
        name: pooled([item[name] for item in per_seed], corpora)
        for name in ("detector", "baseline")
    }
    report: dict[str, Any] = {
        "corpus": {
            "seconds": [corpus.seconds for corpus in corpora],
            "seeds": args.seeds,
            "turns": sum(len(corpus.turns) for corpus in corpora),
            "interjections": sum(len(corpus.interjections) for corpus in corpora),
            "speakers": len(corpora[0].levels),
            "build_seconds": round(built, 1),
        },
        "compiled": EXTENSION_LOADED,
        "settings": settings,
        **results,
        "per_conversation": per_seed,
    }
    if args.tune:
        rows = tune(corpora)
        tuning_path = os.path.join(os.path.dirname(args.out), "detector-tuning.json")
        with open(tuning_path, "w") as file:
            json.dump({"corpus": report["corpus"], "rows": rows}, file, indent=1)
        print(f"tuning: {len(rows)} settings -> {tuning_path}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as file:
        json.dump(report, file, indent=1)
    for name in ("detector", "baseline"):
        figures = results[name]
        print(
            f"{name:9} latency median {figures['latency_median_ms']:6.0f} ms"
            f"  p95 {figures['latency_p95_ms']:6.0f} ms"
            f"  false/min {figures['false_switches_per_minute']:6.2f}"
            f"  wrong {figures['wrong_speaker_seconds']:6.1f} s of {figures['minutes']:.1f} min"
            f"  missed {figures['missed_turns']}/{figures['turn_changes']}"
        )
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
