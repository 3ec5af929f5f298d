"""Idle cost: server CPU and memory per connected listener when nobody speaks.

A speaker is connected but silent; N listeners (default 1,000) are
connected and keep doing what a browser does while listening: a STUN
consent check and an RTCP receiver report every ~5 s each, while the server
sends its sender reports and runs its timers. Measured over a window of
``--seconds`` (at least two consent periods) after the joins settled:

* server CPU (utime + stime) per listener per second, raw and net of the
  same server's CPU rate with no listener (the baseline window before the
  joins: the lag ticker and housekeeping of an empty room);
* server memory per listener: VmRSS growth from the baseline / N.

Targets (issue 7): <= 50 us of CPU per listener per second, <= 20 KB per
listener.

``--signaling websocket``: each listener also holds the product's
signaling WebSocket (``sfu.signaling``, opened after the baseline window,
then joined through it, as the demo's browsers do), so the figures are a
member's whole cost: its aiohttp connection, signaling session and relay,
and the WebSocket heartbeat (a ping every 20 s: give it ``--seconds 25``
or more so that every member's falls in the window).

Run: ``python bench/idle_cost.py [--listeners 1000] [--seconds 15]
[--signaling websocket]``. Writes ``bench/results/idle_cost-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
from typing import Any

import harness
import loadgen


async def idle_window(gen: loadgen.LoadGen, seconds: float) -> dict[str, Any]:
    before = await gen.snapshot()
    await asyncio.sleep(seconds)
    after = await gen.snapshot()
    window = gen.window(before, after)
    return {
        "seconds": window.seconds,
        "server_cpu_s": window.server_cpu,
        "server_cpu_rate": window.server_cpu / window.seconds,
        "loadgen_cpu_rate": window.loadgen_cpu / window.seconds,
        "rss": after.server["vmrss"],
        "server_packets_in": after.server["server"]["packets_in"]
        - before.server["server"]["packets_in"],
        "listener_rtcp_received": int(
            (after.rtcp.sum() if after.rtcp.size else 0)
            - (before.rtcp.sum() if before.rtcp.size else 0)
        ),
        "lag": after.server["lag"],
        "signaling_sessions": after.server["signaling_sessions"],
    }


async def main(args: argparse.Namespace) -> None:
    cpus = harness.pin_loadgen()
    async with harness.ServerProcess(
        no_extensions=args.no_extensions, lag_interval=args.lag_interval
    ) as server:
        async with loadgen.LoadGen(
            server.control, capacity=args.listeners + 16, concurrency=args.concurrency
        ) as gen:
            await gen.add_speaker()
            gen.set_speaking(False)
            await asyncio.sleep(1.0)
            baseline = await idle_window(gen, args.baseline_seconds)
            if args.signaling == "websocket":
                await gen.open_signaling_connections(
                    args.listeners,
                    server.info["token_secret"],
                    path=server.info["signaling"],
                    deflate=True,  # offered, as browsers do; the server decides
                    concurrency=args.open_concurrency,
                )
            joins = await gen.add_listeners(args.listeners)
            gc.collect()
            # Let the joins' work and first keepalives pass: every listener's
            # consent and RR timers are spread over 4-6 s after its join.
            await asyncio.sleep(args.settle)
            loaded = await idle_window(gen, args.seconds)
            n = len(gen.listeners)
    raw = loaded["server_cpu_rate"] / n * 1e6 if n else None
    net = (loaded["server_cpu_rate"] - baseline["server_cpu_rate"]) / n * 1e6 if n else None
    memory = (loaded["rss"] - baseline["rss"]) / n if n else None
    result = {
        "signaling": args.signaling,
        "listeners": n,
        "joins": joins,
        "baseline": baseline,
        "loaded": loaded,
        "us_per_listener_second_raw": raw,
        "us_per_listener_second_net": net,
        "bytes_per_listener": memory,
        "targets_met": {
            "cpu_le_50us": net is not None and net <= 50,
            "memory_le_20kb": memory is not None and memory <= 20 * 1024,
        },
        "loadgen_cpus": cpus,
    }
    if net is None or raw is None or memory is None:
        raise SystemExit(f"no listener joined: {joins}")
    print(
        f"N={n} ({args.signaling}): server CPU {loaded['server_cpu_rate']:.2%} of a core idle "
        f"(baseline {baseline['server_cpu_rate']:.2%}) -> {net:.1f} us per listener per second net "
        f"({raw:.1f} raw); memory {memory / 1024:.1f} KB per listener "
        f"(RSS {baseline['rss'] / 2**20:.1f} -> {loaded['rss'] / 2**20:.1f} MB)"
    )
    print(f"wrote {harness.write_result('idle_cost', {'args': vars(args), **result})}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = harness.parser(__doc__)
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="idle window with the listeners"
    )
    parser.add_argument(
        "--baseline-seconds", type=float, default=5.0, help="idle window before joins"
    )
    parser.add_argument("--settle", type=float, default=6.0, help="wait after the joins")
    parser.add_argument(
        "--lag-interval", type=float, default=0.01, help="server lag ticker period (0: off)"
    )
    parser.add_argument(
        "--signaling",
        choices=("http", "websocket"),
        default="http",
        help="listeners join through serve.py's POST /offer (http) or each over its own "
        "signaling WebSocket, kept open as a browser keeps it (websocket)",
    )
    parser.add_argument(
        "--open-concurrency",
        type=int,
        default=64,
        help="websocket: connections opened at once",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    harness.run(main(parse_args()), 600)
