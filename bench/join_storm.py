"""Join storm: N listeners (default 1,000) joining as fast as they can.

A synthetic speaker talks the whole time; the listeners' offers go out with
``--concurrency`` joins in flight (default: all at once, the control
endpoint's connection pool permitting). Reported: joins per second,
offer -> answer, offer -> DTLS connected and offer -> first RTP packet (the
kernel's receive time of the listener's first packet), p50/p99/max; whether
every listener then receives audio (an exact-count window afterwards); the
server's worst event-loop lag during the storm (its 10 ms ticker; also
less the time the loop's thread waited for a CPU, as when the hypervisor
runs another guest: what server code held the loop; a tick reads a block
short by the part of its sleep already run, so the target is checked
against the lag plus the ticker's interval) and its CPU; then how
fast the shared machine was: the C floor's cost per datagram and a DTLS
handshake's crypto (X25519, ECDSA sign and verify) on the server's CPU
after the storm, and the storm's CPU per join in units of the latter (a
rough guide: the machine's speed moves within seconds); and the same
crypto timed in the second before the storm and during it, on the load
generator's core (``harness.SpeedProbe``). Targets (issue 7): all receive
audio, p99 offer -> first packet <= 2 s, no event-loop stall > 50 ms.

How the listeners' offers reach the server (``--signaling``):

* ``http`` (the default): ``POST /offer`` to ``bench/serve.py``'s control
  endpoint, a bench-only shortcut to ``room.add_listener``; on a new TCP
  connection each, or (``--http-keepalive``) on connections opened before.
* ``websocket``: the product's own signaling (``sfu.signaling``, the
  protocol of ``docs/signaling.md``, which serve.py mounts at ``/ws``), as
  the demo's browsers join: the N WebSockets are opened first (bounded
  concurrency, before the storm, as each page opens its own before it has
  an offer), then each listener sends ``join`` with a token and its offer
  and takes the answer from the ``joined`` reply. The offer's clock starts
  when the join frame is written. What the server does per join then also
  includes the signaling's: the ``joined`` reply with the room's roster,
  the roster batches to every member, and, with ``--signaling-compress``
  (the listeners offer ``permessage-deflate`` as browsers do; the
  server agrees only then, as ``sfu.signaling``'s default declines it),
  compressing them. Also reported:
  the frames and bytes each listener received (on the wire and inflated)
  up to the end of the check window, the ``joined`` replies' sizes, the
  messages by type, and any socket the server closed. The speaker still
  joins through ``/offer``.

Run: ``python bench/join_storm.py [--listeners 1000] [--concurrency 1000]
[--signaling websocket]``. Writes ``bench/results/join_storm-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import time
from typing import Any

import harness
import loadgen
import numpy as np
import ws_client


def p99_of_all_ms(first_ns: list[int], asked: int) -> float | None:
    """The 99th percentile (nearest rank) of offer -> first packet over all
    ``asked`` listeners, those without a first packet counted as slowest;
    None when they are more than 1 %."""
    ordered = sorted(first_ns) + [-1] * (asked - len(first_ns))
    if not ordered:
        return None
    value = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
    return None if value < 0 else round(value / 1e6, 2)


def stats_ms(values_ns: list[int]) -> dict[str, float | None]:
    return {
        "p50_ms": ms(harness.percentile(values_ns, 50)),
        "p99_ms": ms(harness.percentile(values_ns, 99)),
        "max_ms": ms(max(values_ns) if values_ns else None),
    }


def stages(
    peers: list[loadgen.Peer], offer_times: dict[str, list[int]], first_ns: Any
) -> dict[str, dict[str, float | None]]:
    """Each join's path split into stages (p50/p99/max ms each): the offer sent
    until the server's /offer handler began (the load generator's connection
    and the server's loop getting to it), the handler (its admission turn and
    the answer), the answer's way back, the ICE check and DTLS handshake until
    the client is connected, and the wait for the next speaker packet. Over
    the WebSocket, or without the server's times, the first three are one."""
    spans: dict[str, list[int]] = {}

    def add(name: str, value: int) -> None:
        spans.setdefault(name, []).append(value)

    for peer in peers:
        times = offer_times.get(peer.identity)
        if times is not None:
            entered, answered = times
            add("offer_to_handler", entered - peer.offer_ns)
            add("handler", answered - entered)
            add("answer_to_client", peer.answer_ns - answered)
        else:
            add("offer_to_answer", peer.answer_ns - peer.offer_ns)
        add("answer_to_connected", peer.connected_ns - peer.answer_ns)
        if first_ns[peer.index]:
            add("connected_to_first_packet", int(first_ns[peer.index]) - peer.connected_ns)
    return {name: stats_ms(values) for name, values in spans.items()}


def ms(value_ns: float | None) -> float | None:
    return round(value_ns / 1e6, 2) if value_ns is not None else None


async def main(args: argparse.Namespace) -> None:
    cpus = harness.pin_loadgen()
    extra = (
        ["--slow-callback", str(args.slow_callback), "--no-uvloop"] if args.slow_callback else []
    )
    if args.server_profile:
        extra += ["--profile", os.path.abspath(args.server_profile)]
    if args.server_phases:
        extra += ["--phases"]
    if args.signaling_compress:
        extra += ["--signaling-compress"]
    if args.roster_listeners is not None:
        extra += ["--roster-listeners", args.roster_listeners]
    async with harness.ServerProcess(no_extensions=args.no_extensions, extra=extra) as server:
        async with loadgen.LoadGen(
            server.control,
            capacity=args.listeners + 16,
            concurrency=args.concurrency,
            join_timeout=args.join_timeout,
        ) as gen:
            await gen.add_speaker()
            gen.set_speaking(True)
            if args.http_keepalive:
                await gen.open_control_connections(args.listeners)
            signaling_open_s = None
            if args.signaling == "websocket":
                signaling_open_s = await gen.open_signaling_connections(
                    args.listeners,
                    server.info["token_secret"],
                    path=server.info["signaling"],
                    deflate=True,  # offered, as browsers do; the server decides
                    concurrency=args.open_concurrency,
                )
            async with contextlib.AsyncExitStack() as stack:
                probe = (
                    await stack.enter_async_context(harness.SpeedProbe())
                    if args.speed_probe
                    else None
                )
                await asyncio.sleep(1.0)
                before = await gen.server_stats(reset_lag=True)
                loadgen_before = resource.getrusage(resource.RUSAGE_SELF)
                steal_before = harness.steal_seconds()
                storm_start = time.monotonic()
                joins = await gen.add_listeners(args.listeners)
                storm_end = time.monotonic()
                await asyncio.sleep(0.5)  # the last joiners' first packets
                during = await gen.server_stats(reset_lag=True)
                loadgen_after = resource.getrusage(resource.RUSAGE_SELF)
                steal = harness.steal_seconds() - steal_before
            crypto_during_us = probe.median_us(storm_start, storm_end) if probe else None
            # The same probe in the second before the storm: its reading
            # during the storm over this one is how much slower the machine ran.
            crypto_before_us = probe.median_us(0.0, storm_start) if probe else None
            check = await gen.measure(args.check_seconds)
            # What the listeners' signaling sockets received until now.
            signaling = (
                ws_client.received_summary([p.signaling for p in gen.listeners])
                if args.signaling == "websocket"
                else None
            )
            # How fast the (shared) machine was just now: the C floor's cost per
            # datagram to these listeners, on the server's CPU. The storm's CPU and
            # p99 move with it from run to run; this tells a slow phase apart.
            floor = None
            if args.floor and gen.listeners:
                floor = await harness.run_floor(
                    [peer.sock.getsockname()[1] for peer in gen.listeners],
                    # An RTP header (V=2, Opus PT) and a typical Opus payload size.
                    bytes.fromhex("806f000000000000")
                    + loadgen._sink.FLOOR_SSRC.to_bytes(4, "big")
                    + bytes(100),
                    args.floor,
                    gen.listeners[0].profile.decode() or "SRTP_AES128_CM_SHA1_80",
                    control=server.control,
                    sink=gen.sink,
                )
            # The same for the join's heaviest code: a handshake's crypto on the
            # server's CPU (the storm's CPU per join is reported in units of it).
            crypto_us = await harness.run_crypto_probe() if args.crypto_probe else None
            offer_times = (await gen.server_stats(offers=True)).get("offer_times", {})
            sink = gen.sink
            peers = gen.listeners
            first = [
                int(sink.first_ns[p.index]) - p.offer_ns for p in peers if sink.first_ns[p.index]
            ]
            answer = [p.answer_ns - p.offer_ns for p in peers]
            connected = [p.connected_ns - p.offer_ns for p in peers]
            summary = check.summary()
            span_ns = (
                max(p.connected_ns for p in peers) - min(p.offer_ns for p in peers) if peers else 0
            )
            result: dict[str, Any] = {
                "listeners": args.listeners,
                "concurrency": args.concurrency,
                "signaling": args.signaling,
                "joined": joins["joined"],
                "failed": joins["failed"],
                "failures": joins["failures"],
                "seconds": joins["seconds"],
                "joins_per_second": joins["joins_per_second"],
                "first_offer_to_last_connected_s": round(span_ns / 1e9, 3),
                "offer_to_answer": stats_ms(answer),
                "offer_to_connected": stats_ms(connected),
                "offer_to_first_packet": stats_ms(first),
                # Where a join waited: each stage's own span, per listener.
                "stages": stages(peers, offer_times, sink.first_ns),
                # p99 over every listener asked for: one that failed to join or
                # never got a packet counts as slower than any (None: over 1 %).
                "offer_to_first_packet_p99_ms_of_all": p99_of_all_ms(first, args.listeners),
                # (By the end of the check window that follows the storm.)
                "listeners_with_audio_during_storm": len(first),
                "server_lag_worst_ms": round(during["lag"]["worst_ms"], 2),
                # A tick reads a block short by the part of its sleep already
                # run (up to one interval): the longest block was at most this.
                "server_block_bound_ms": round(
                    during["lag"]["worst_ms"] + during["lag"]["interval_ms"], 2
                ),
                "server_lag_over_50ms_ticks": during["lag"]["over_50ms"],
                # The same ticks less the time the loop's thread waited for a
                # CPU (run queue, hypervisor steal): what server code held it.
                "server_lag_worst_held_ms": round(during["lag"]["worst_held_ms"], 2),
                "server_lag_over_50ms_held_ticks": during["lag"]["over_50ms_held"],
                "server_lag_histogram": during["lag"],
                "server_gc": during.get("gc"),
                # When the worst stall ended, from the first offer: the accept
                # burst, the answers, or the handshakes?
                "server_lag_worst_after_first_offer_ms": round(
                    during["lag"]["worst_at"] * 1000 - min(p.offer_ns for p in peers) / 1e6, 1
                )
                if peers and during["lag"].get("worst_at")
                else None,
                "server_cpu_s": round(
                    (during["utime"] + during["stime"]) - (before["utime"] + before["stime"]), 3
                ),
                # Its split: the kernel's share (sockets, TCP) is stime.
                "server_utime_s": round(during["utime"] - before["utime"], 3),
                "server_stime_s": round(during["stime"] - before["stime"], 3),
                # The clients' side of the same storm (their DTLS handshakes, HTTP):
                # if this approaches the storm's length, the load generator, not
                # the server, set the pace.
                "loadgen_cpu_s": round(
                    (loadgen_after.ru_utime + loadgen_after.ru_stime)
                    - (loadgen_before.ru_utime + loadgen_before.ru_stime),
                    3,
                ),
                "server_rss_growth_mb": round((during["vmrss"] - before["vmrss"]) / 2**20, 1),
                "check_window": summary,
                "all_receive_audio": bool(
                    joins["failed"] == 0
                    and summary["listeners_with_nothing"] == 0
                    and len(first) == args.listeners
                    # (Sampled packets authenticated: audio, not bytes.)
                    and summary["auth_failed"] == 0
                ),
                "server_drops": during["server"].get("drops"),
                # Datagrams the server read during the storm (the speaker's
                # included), and the listeners' retransmissions: answers
                # late enough to fire a client's timer mean repeated work.
                "server_datagrams_in": during["server"]["packets_in"]
                - before["server"]["packets_in"],
                # Packets the server sent in the same window (the speaker's
                # fan-out to the listeners already in, the 0.5 s after the
                # storm included): a longer storm forwards more, so a slow
                # storm's CPU is not all joins. Priced at the floor below.
                "server_packets_out": during["server"]["packets_out"]
                - before["server"]["packets_out"],
                "client_retransmissions": sum(p.retransmissions for p in gen.listeners)
                + sum(p.retransmissions for p in gen.failed),
                # Time the hypervisor ran others while this VM's CPUs wanted to run.
                "machine_steal_s": round(steal, 2),
                "machine_floor_us_per_packet": round(floor["us_per_packet"], 3) if floor else None,
                "machine_handshake_crypto_us": round(crypto_us, 1) if crypto_us else None,
                # The same crypto timed during the storm itself, on the load
                # generator's core (harness.SpeedProbe): the machine's speed in
                # the storm's own seconds, which the probes after it miss.
                "machine_handshake_crypto_during_storm_us": crypto_during_us,
                "machine_handshake_crypto_before_storm_us": crypto_before_us,
                "loadgen_cpus": cpus,
            }
            if signaling is not None:
                result["signaling_websocket"] = {
                    "opened_before_the_storm_s": round(signaling_open_s or 0.0, 3),
                    **signaling,
                }
            if floor and result["joined"]:
                # The window's CPU less its sends priced at the floor's cost
                # per datagram: what the joins themselves cost, about.
                fan_out_s = result["server_packets_out"] * floor["us_per_packet"] / 1e6
                result["server_fan_out_at_floor_s"] = round(fan_out_s, 3)
                result["server_cpu_per_join_less_fan_out_us"] = round(
                    (result["server_cpu_s"] - fan_out_s) * 1e6 / result["joined"], 1
                )
            if crypto_us and result["joined"]:
                result["server_cpu_per_join_in_handshake_cryptos"] = round(
                    result["server_cpu_s"] * 1e6 / result["joined"] / crypto_us, 2
                )
            if crypto_during_us and result["joined"]:
                result["server_cpu_per_join_in_storm_cryptos"] = round(
                    result["server_cpu_s"] * 1e6 / result["joined"] / crypto_during_us, 2
                )
            if "phases" in during and result["joined"]:
                # Diagnosis: server CPU per join by piece (nested pieces indented).
                result["server_phases_us_per_join"] = {
                    label: round((ns - before["phases"][label][0]) / 1e3 / result["joined"], 1)
                    for label, (ns, _calls) in during["phases"].items()
                }
                result["server_phases_us_per_join"]["all (server CPU)"] = round(
                    result["server_cpu_s"] * 1e6 / result["joined"], 1
                )
            result["targets_met"] = {
                "all_receive_audio": result["all_receive_audio"],
                "p99_first_packet_le_2s": (result["offer_to_first_packet_p99_ms_of_all"] or 1e9)
                <= 2000,
                "no_lag_over_50ms": result["server_block_bound_ms"] <= 50,
                "no_hold_over_50ms": result["server_lag_worst_held_ms"]
                + during["lag"]["interval_ms"]
                <= 50,
            }
            check_loss = np.round(summary["loss"], 5)
    print(
        f"{result['joined']}/{args.listeners} joined in {result['seconds']} s "
        f"({result['joins_per_second']} joins/s, concurrency {args.concurrency}); "
        f"offer->first packet p50 {result['offer_to_first_packet']['p50_ms']} ms, "
        f"p99 {result['offer_to_first_packet']['p99_ms']} ms, max {result['offer_to_first_packet']['max_ms']} ms; "
        f"worst server loop lag {result['server_lag_worst_ms']} ms "
        f"(a block of at most {result['server_block_bound_ms']} ms) "
        f"(held by its code {result['server_lag_worst_held_ms']} ms) "
        f"(worst full GC {(result['server_gc'] or {}).get('worst_ms', [0, 0, None])[2]} ms); "
        f"all receive audio: {result['all_receive_audio']} (loss after the storm {check_loss:.3%}); "
        f"server CPU {result['server_cpu_s']} s, machine floor "
        f"{result['machine_floor_us_per_packet']} us/packet, handshake crypto "
        f"{result['machine_handshake_crypto_us']} us "
        f"(a join cost {result.get('server_cpu_per_join_in_handshake_cryptos')} of them); "
        f"the speed probe before / during the storm "
        f"{result['machine_handshake_crypto_before_storm_us']} / "
        f"{result['machine_handshake_crypto_during_storm_us']} us "
        f"(a join cost {result.get('server_cpu_per_join_in_storm_cryptos')} of the latter); "
        f"{result['server_packets_out']} packets sent in the window, "
        f"{result.get('server_fan_out_at_floor_s')} s of it at the floor, "
        f"{result.get('server_cpu_per_join_less_fan_out_us')} us a join without it"
    )
    if signaling is not None:
        print(
            f"signaling over WebSocket (compressed {args.signaling_compress}), per listener: "
            f"{signaling['frames_per_listener']['mean']} frames, "
            f"{signaling['wire_bytes_per_listener']['mean']} bytes on the wire, "
            f"{signaling['message_bytes_per_listener']['mean']} inflated (means); "
            f"joined reply p50 {signaling['joined_reply_bytes']['p50']} bytes, "
            f"max {signaling['joined_reply_bytes']['max']}; "
            f"closed by the server: {signaling['closed_by_server']}"
        )
    print(
        "stages p50/p99 ms: "
        + "; ".join(
            f"{name} {span['p50_ms']}/{span['p99_ms']}" for name, span in result["stages"].items()
        )
    )
    for label, us in (result.get("server_phases_us_per_join") or {}).items():
        print(f"  {label:<36} {us:8.1f} us per join")
    print(f"wrote {harness.write_result('join_storm', {'args': vars(args), **result})}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = harness.parser(__doc__, concurrency=1000)
    parser.add_argument("--join-timeout", type=float, default=30.0)
    parser.add_argument("--check-seconds", type=float, default=3.0)
    parser.add_argument(
        "--floor",
        type=int,
        default=20,
        help="bursts of the C floor run after the storm as a machine-speed probe (0: none)",
    )
    parser.add_argument(
        "--no-crypto-probe",
        dest="crypto_probe",
        action="store_false",
        help="skip the handshake-crypto speed probe run after the storm",
    )
    parser.add_argument(
        "--no-speed-probe",
        dest="speed_probe",
        action="store_false",
        help="skip timing the handshake crypto during the storm on the load generator's core",
    )
    parser.add_argument(
        "--slow-callback",
        type=float,
        default=0.0,
        help="diagnosis: the server logs callbacks over this many ms",
    )
    parser.add_argument(
        "--http-keepalive",
        action="store_true",
        help="offers on HTTP connections opened before the storm (as behind a reverse "
        "proxy keeping connections to the app open), not on a new connection each",
    )
    parser.add_argument(
        "--signaling",
        choices=("http", "websocket"),
        default="http",
        help="listeners join through serve.py's POST /offer (http) or the product's "
        "signaling WebSocket, opened before the storm (websocket)",
    )
    parser.add_argument(
        "--signaling-compress",
        action="store_true",
        help="websocket: the server agrees to permessage-deflate, which the listeners "
        "offer as browsers do (sfu.signaling's default declines it)",
    )
    parser.add_argument(
        "--roster-listeners",
        default=None,
        help="the room's roster_listeners: a number, or 'all' to name every member as "
        "before the twelfth session (default: the library's, 100)",
    )
    parser.add_argument(
        "--open-concurrency",
        type=int,
        default=64,
        help="websocket: connections opened at once before the storm",
    )
    parser.add_argument(
        "--server-phases",
        action="store_true",
        help="diagnosis: the server times a join's pieces (serve.py --phases, ~2%% slower)",
    )
    parser.add_argument(
        "--server-profile",
        default=None,
        help="diagnosis: the server writes cProfile stats to this file (slows it ~2x)",
    )
    args = parser.parse_args(argv)
    if args.http_keepalive and args.signaling != "http":
        parser.error("--http-keepalive is for --signaling http")
    return args


if __name__ == "__main__":
    harness.run(main(parse_args()), 600)
