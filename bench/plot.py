"""Plot CPU µs per forwarded packet vs listeners from a cpu_per_packet result.

Run: ``python bench/plot.py [bench/results/cpu_per_packet-<date>.json]``
(default: the newest one). Writes ``bench/results/cpu_per_packet.png``.
Needs matplotlib (``pip install -r bench/requirements.txt``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("result", nargs="?", help="a cpu_per_packet result (default: the newest)")
    result = parser.parse_args().result
    paths = (
        [result]
        if result
        else sorted(glob.glob(os.path.join(HERE, "results", "cpu_per_packet-*.json")))[-1:]
    )
    if not paths:
        raise SystemExit(
            "no bench/results/cpu_per_packet-*.json: run bench/cpu_per_packet.py first"
        )
    with open(paths[0]) as f:
        data = json.load(f)
    summary = data["summary"]
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    series = [
        ("python_total_us", "pure Python fan-out (SFU_NO_EXTENSIONS=1)", "tab:red", "s-"),
        ("compiled_total_us", "compiled fan-out (sfu._relay)", "tab:blue", "o-"),
        ("compiled_marginal_us", "compiled, minus idle CPU", "tab:blue", "o--"),
        ("floor_us", "C floor: srtp_protect + sendto", "black", "^:"),
        ("batched_floor_us", "C floor: srtp_protect + sendmmsg (64)", "gray", "v:"),
    ]
    for key, label, color, style in series:
        points = [(e["listeners"], e[key]) for e in summary if e.get(key) is not None]
        if points:
            xs, ys = zip(*points)
            axes.plot(xs, ys, style, color=color, label=label)
    axes.set_xscale("log")
    axes.set_xticks([e["listeners"] for e in summary])
    axes.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes.set_xlabel("listeners (1 speaker, 50 packets/s)")
    axes.set_ylabel("server CPU µs per forwarded packet")
    axes.set_ylim(bottom=0)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title(f"sfu: CPU per forwarded packet ({data['date']}, one server core)", fontsize=10)
    figure.tight_layout()
    out = os.path.join(HERE, "results", "cpu_per_packet.png")
    figure.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
