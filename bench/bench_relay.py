"""CPU per forwarded packet of the fan-out kernel, against the C floor.

For R receivers (default 100 and 1000), forwards N speaker packets through
``FanOut.forward`` (compiled and pure Python) and prints the process CPU time
(``time.process_time``: user + system, so the kernel's UDP work counts) per
datagram sent, beside the floor: a C loop doing only ``srtp_protect`` +
``sendto`` per datagram (``sfu._relay._floor_protect_sendto``), no batching.

Every receiver has its own SRTP session (AES128_CM_SHA1_80, as WebRTC
negotiates by default). Receivers share a few sink sockets on 127.0.0.1
that nobody reads: once their buffers are full the kernel drops on receive,
the same for the three contenders. Nothing leaves loopback.

Run: ``python bench/bench_relay.py`` (needs the built extension for the
Cython and floor rows; ``--help`` for options).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import pylibsrtp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sfu import _relay_py

try:
    from sfu import _relay  # type: ignore[attr-defined]
except ImportError as exc:  # pragma: no cover - depends on the build
    _relay = None
    IMPORT_ERROR = repr(exc)

PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
HEADER = bytes([0x90, 111]) + bytes(10) + bytes([0xBE, 0xDE, 0, 1, 0x10, 0x9E, 0, 0])


def outbound_session(index: int) -> pylibsrtp.Session:
    key = bytes((index * 31 + i) & 0xFF for i in range(30))
    policy = pylibsrtp.Policy(
        key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILE
    )
    return pylibsrtp.Session(policy)


def sink_sockets(count: int) -> list[socket.socket]:
    sinks = []
    for _ in range(count):
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        sinks.append(sink)
    return sinks


def measure(run: Callable[[], int]) -> tuple[float, int]:
    """(CPU seconds, datagrams sent) of run()."""
    start = time.process_time()
    sent = run()
    return time.process_time() - start, sent


def bench_fanout(
    module: Any,
    sender: socket.socket,
    sinks: list[socket.socket],
    receivers: int,
    packets: int,
    payload: bytes,
    batch_size: int,
) -> tuple[float, int, int]:
    fan = module.FanOut(sender, batch_size=batch_size)
    for index in range(receivers):
        fan.add_receiver(
            index,
            sinks[index % len(sinks)].getsockname(),
            outbound_session(index),
            payload_type=111,
            audio_level_id=1,
            slot_count=3,
        )
    packet = HEADER + payload
    offset = len(HEADER)
    forward = fan.forward

    def run() -> int:
        sent = 0
        for n in range(packets):
            sent += forward(
                n % 3,
                packet,
                offset,
                0x1000 + n % 3,
                n & 0xFFFF,
                960 * n & 0xFFFFFFFF,
                False,
                0xC0FFEE,
                0x9E,
                -1,
            )
        return sent

    cpu, sent = measure(run)
    dropped = fan.dropped
    fan.close()
    return cpu, sent, dropped


def bench_floor(
    sender: socket.socket, sinks: list[socket.socket], datagrams: int, payload: bytes
) -> tuple[float, int]:
    assert _relay is not None
    session = outbound_session(0)
    # The same 24-byte header (CSRC + level extension) as the FanOut sends.
    packet = bytes([0x91, 111]) + bytes(14) + bytes([0xBE, 0xDE, 0, 1, 0x10, 0x9E, 0, 0]) + payload
    address = sinks[0].getsockname()
    return measure(
        lambda: int(_relay._floor_protect_sendto(sender, session, address, packet, datagrams))
    )


def best_fanout(
    module: Any,
    sender: socket.socket,
    sinks: list[socket.socket],
    receivers: int,
    packets: int,
    payload: bytes,
    args: argparse.Namespace,
) -> tuple[int, int, float]:
    """(sent, dropped, CPU us per datagram) of the best of args.repeat runs."""
    best = None
    for _ in range(args.repeat):
        cpu, sent, dropped = bench_fanout(
            module, sender, sinks, receivers, packets, payload, args.batch
        )
        row = (sent, dropped, cpu / max(sent, 1) * 1e6)
        if best is None or row[2] < best[2]:
            best = row
    assert best is not None
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receivers", type=int, nargs="+", default=[100, 1000])
    parser.add_argument(
        "--datagrams",
        type=int,
        default=200_000,
        help="datagrams per compiled/floor measurement (packets = this / receivers)",
    )
    parser.add_argument(
        "--python-share",
        type=int,
        default=10,
        help="the pure-Python twin sends 1/this of the datagrams",
    )
    parser.add_argument("--payload", type=int, default=80, help="Opus payload bytes")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sinks", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()

    payload = bytes(range(256))[: args.payload] if args.payload <= 256 else bytes(args.payload)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    sender.setblocking(False)
    sinks = sink_sockets(args.sinks)
    print(
        f"payload {args.payload} B + 24 B header + 10 B SRTP tag, AES128_CM_SHA1_80, "
        f"batch {args.batch}, {args.sinks} sinks, CPU = time.process_time"
    )
    if _relay is None:
        print(f"compiled sfu._relay unavailable ({IMPORT_ERROR}): Python row only")
    print(
        f"{'receivers':>9} {'impl':>8} {'datagrams':>10} {'dropped':>8} "
        f"{'CPU us/pkt':>11} {'x floor':>8}"
    )
    if _relay is not None:
        bench_floor(sender, sinks, args.datagrams // 10, payload)  # warm up caches and clocks
    for receivers in args.receivers:
        rows: list[tuple[str, int, int, float]] = []
        floor_us = None
        if _relay is not None:
            runs = [bench_floor(sender, sinks, args.datagrams, payload) for _ in range(args.repeat)]
            cpu, sent = min(runs, key=lambda run: run[0] / max(run[1], 1))
            floor_us = cpu / max(sent, 1) * 1e6
            rows.append(("C floor", sent, args.datagrams - sent, floor_us))
            packets = max(1, args.datagrams // receivers)
            rows.append(
                ("cython", *best_fanout(_relay, sender, sinks, receivers, packets, payload, args))
            )
        packets = max(1, args.datagrams // args.python_share // receivers)
        rows.append(
            ("python", *best_fanout(_relay_py, sender, sinks, receivers, packets, payload, args))
        )
        for name, sent, dropped, us in rows:
            ratio = f"{us / floor_us:8.2f}" if floor_us else f"{'-':>8}"
            print(f"{receivers:>9} {name:>8} {sent:>10} {dropped:>8} {us:>11.2f} {ratio}")
    sender.close()
    for sink in sinks:
        sink.close()


if __name__ == "__main__":
    main()
