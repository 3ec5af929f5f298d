"""CPU per packet of the ActiveSpeakerDetector: compiled vs pure Python, 10 and 50 speakers.

Each speaker sends one packet per 20 ms, as a Router sees them: a few talk in
turns (speech-like levels), one has constant background noise, the rest are
connected and silent. Per packet the Router's calls are timed:
``level(speaker, level, now)``, ``update(now)`` and ``slot_of(speaker)``
(the ``per_packet`` figure), and the same through the one-call
``observe(speaker, level, now)``. ``loop`` is the cost of the Python loop
that makes the calls with the same arguments but calls nothing: it is part
of every figure and is given so it can be subtracted.

CPU time is ``time.process_time_ns`` over the whole run (decisions included,
so the figure is amortised), best of ``--repeat`` runs, divided by packets.

Run: ``python bench/bench_detector.py`` (``--seconds``, ``--repeat``).
Writes ``bench/results/detector-cost.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import random
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from sfu import _detector_py  # noqa: E402

FRAME = 0.02


def packets(speakers: int, seconds: float, seed: int = 1) -> list[tuple[int, int, float]]:
    """(speaker, level, now) in arrival order."""
    rng = random.Random(seed)
    talkers = 4
    turn = 3.0
    events = []
    for frame in range(int(seconds / FRAME)):
        base = frame * FRAME
        current = int(base / turn) % talkers
        for speaker in range(speakers):
            if speaker < talkers:
                talking = speaker == current and (base % 0.3) < 0.24
                level = rng.randint(20, 35) if talking else rng.randint(70, 90)
            elif speaker == talkers:
                level = 42 + rng.randint(-6, 6)  # background noise
            else:
                level = 127
            events.append((speaker, level, base + 0.0003 * speaker))
    return events


def measure(module: Any, speakers: int, events: list[tuple[int, int, float]]) -> dict[str, float]:
    def fresh() -> Any:
        detector = module.ActiveSpeakerDetector(3)
        for speaker in range(speakers):
            detector.add(speaker)
        return detector

    detector = fresh()
    level, update, slot_of = detector.level, detector.update, detector.slot_of
    started = time.process_time_ns()
    for speaker, value, now in events:
        level(speaker, value, now)
        update(now)
        slot_of(speaker)
    per_packet = (time.process_time_ns() - started) / len(events)

    detector = fresh()
    observe = detector.observe
    started = time.process_time_ns()
    for speaker, value, now in events:
        observe(speaker, value, now)
    combined = (time.process_time_ns() - started) / len(events)

    def nothing(*args: Any) -> None:
        return None

    started = time.process_time_ns()
    for speaker, value, now in events:
        nothing(speaker, value, now)
    loop = (time.process_time_ns() - started) / len(events)
    return {"per_packet": per_packet, "observe": combined, "loop": loop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="simulated audio")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--out", default=os.path.join(HERE, "results", "detector-cost.json"), help="figures"
    )
    args = parser.parse_args()
    implementations: dict[str, Any] = {"python": _detector_py}
    try:
        implementations["cython"] = importlib.import_module("sfu._detector")
    except ImportError:
        print("compiled sfu._detector not built: python only", file=sys.stderr)
    rows = []
    for speakers in (10, 50):
        events = packets(speakers, args.seconds)
        for name, module in implementations.items():
            runs = [measure(module, speakers, events) for _ in range(args.repeat)]
            best = {key: round(min(run[key] for run in runs), 1) for key in runs[0]}
            rows.append({"implementation": name, "speakers": speakers, **best})
            print(
                f"{name:7} {speakers:3} speakers: level+update+slot_of {best['per_packet']:7.1f}"
                f" ns/packet, observe {best['observe']:7.1f}, loop alone {best['loop']:5.1f}"
            )
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "seconds_simulated": args.seconds,
        "repeat": args.repeat,
        "unit": "ns of CPU per packet (process_time), best of repeat",
        "rows": rows,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as file:
        json.dump(report, file, indent=1)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
