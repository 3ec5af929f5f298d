"""Fan-out latency at N listeners (default 1,000): speaker packet in -> last copy out.

The synthetic speaker writes its send time (CLOCK_REALTIME ns) into the
padding of each Opus packet just before ``send`` on loopback, which is when
the datagram lands in the server's socket. Each listener socket has
``SO_TIMESTAMPNS``: the kernel stamps every copy when the server's
``sendmmsg`` puts it into that socket (on loopback, the moment it leaves
the server's socket). The sink keeps, per RTP sequence number, the earliest
and latest copy over all listeners and, from the packets it decrypts (one in
``--sample-every`` per listener), the send time. Same machine, same clock.

Reported, over the packets every listener received:

* first copy: send -> earliest listener arrival (the server's wake-up,
  SRTP unprotect, routing, the first protect + send);
* last copy: send -> latest listener arrival (the whole fan-out);
* spread: last - first (the fan-out loop alone);

each p50 / p99 / max, plus the per-copy distribution from the decrypted
samples.

Run: ``python bench/latency.py [--listeners 1000] [--seconds 10]``.
Writes ``bench/results/latency-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import harness
import loadgen
import numpy as np


def distribution(values_ns: np.ndarray) -> dict[str, float | None]:
    if values_ns.size == 0:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": round(float(np.percentile(values_ns, 50)) / 1e6, 3),
        "p99_ms": round(float(np.percentile(values_ns, 99)) / 1e6, 3),
        "max_ms": round(float(values_ns.max()) / 1e6, 3),
    }


async def main(args: argparse.Namespace) -> None:
    cpus = harness.pin_loadgen()
    async with harness.ServerProcess(no_extensions=args.no_extensions) as server:
        async with loadgen.LoadGen(
            server.control,
            capacity=args.listeners + 16,
            concurrency=args.concurrency,
            sample_every=args.sample_every,
        ) as gen:
            await gen.add_speaker()
            joins = await gen.add_listeners(args.listeners)
            await asyncio.sleep(1.0)
            gen.set_speaking(False)
            await asyncio.sleep(0.3)
            gen.sink.reset_latency()
            await gen.server_stats(reset_lag=True)
            window = await gen.measure(args.seconds)
            lag = (await gen.server_stats())["lag"]
            sink = gen.sink
            listeners = len(gen.listeners)
            copies = sink.seq_copies.astype(np.int64)
            sent = sink.seq_sent_ns
            complete = (copies == listeners) & (sent != 0)
            first = (sink.seq_first_ns - sent)[complete]
            last = (sink.seq_last_ns - sent)[complete]
            spread = (sink.seq_last_ns - sink.seq_first_ns)[complete]
            samples = sink.samples_ns[: sink.sample_count]
            result: dict[str, Any] = {
                "listeners": listeners,
                "joins": joins,
                "packets_with_all_copies": int(complete.sum()),
                "packets_seen": int((copies > 0).sum()),
                "packets_sent": window.speaker_sent,
                "first_copy": distribution(first),
                "last_copy": distribution(last),
                "spread": distribution(spread),
                "sampled_copies": distribution(samples),
                "samples": int(samples.size),
                "window": window.summary(),
                "server_lag": lag,
                "loadgen_cpus": cpus,
            }
    print(
        f"N={result['listeners']}: {result['packets_with_all_copies']} of "
        f"{result['packets_sent']} packets with every copy (only those are timed: a missing "
        "copy would be the latest); "
        f"first copy p50 {result['first_copy']['p50_ms']} ms p99 {result['first_copy']['p99_ms']} ms; "
        f"last copy p50 {result['last_copy']['p50_ms']} ms p99 {result['last_copy']['p99_ms']} ms "
        f"(max {result['last_copy']['max_ms']} ms); loss {result['window']['loss']:.3%}"
    )
    print(f"wrote {harness.write_result('latency', {'args': vars(args), **result})}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = harness.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--sample-every", type=int, default=64, help="decrypt 1 packet in this many (power of 2)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    harness.run(main(parse_args()), 600)
