"""Server CPU per forwarded packet vs listeners: compiled, pure Python, C floor.

One synthetic speaker, N listeners (default 100, 500, 1000, 2000) of the
load generator, against ``bench/serve.py`` pinned to CPU 0 (the load
generator on CPU 1). For each fan-out path (compiled ``sfu._relay``, and
``SFU_NO_EXTENSIONS=1``: the pure-Python twin) the room grows to each N,
then two windows are measured with exact packet counts:

* silent: the speaker connected but not sending (consent, RTCP running);
* speaking: 50 packets/s from the speaker.

Figures per N: ``total`` = server (utime + stime) in the speaking window /
packets delivered to listeners; ``marginal`` = the same minus the silent
window's CPU rate, i.e. the cost of forwarding alone. ``floor`` is the C
loop (copy + ``srtp_protect`` + ``sendto`` per datagram, same packet size,
same SRTP profile, each of the N receivers with its own session, to the
same listener sockets the sink drains, in the server's pattern: one burst
of N datagrams every 20 ms) run in its own process pinned to the server's
CPU, in the same run, best of 3; every figure is also given as a ratio to
it. The floor sends from the server's own media socket (``bench/serve.py``
lends it), so the listeners' sockets, connected to the server's address,
take its datagrams as they take the server's (``delivered``, counted by the
sink, says so). The server's run-queue wait (time it was runnable while another task
had its CPU: this machine is shared) is reported per window.

Run: ``python bench/cpu_per_packet.py`` (``--help``: N, window lengths,
paths). Writes ``bench/results/cpu_per_packet-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
from typing import Any

import harness
import loadgen


def forwarded_packet(gen: loadgen.LoadGen) -> bytes:
    """A packet shaped like what the server sends: 24-byte header + a stamped payload."""
    header = struct.pack(
        "!BBHIIIHHBBH", 0x91, 111, 0, 0, loadgen._sink.FLOOR_SSRC, 0x5EED, 0xBEDE, 1, 0x10, 0x9E, 0
    )
    sizes = sorted(len(loadgen.stamped(p, 0)) for p in gen.payloads)
    payload = bytes(sizes[len(sizes) // 2])  # the median payload size
    return header + payload


async def grow_and_measure(
    gen: loadgen.LoadGen, n: int, args: argparse.Namespace, name: str
) -> dict[str, Any]:
    """Grow the room to ``n`` listeners, then a silent and a speaking window:
    the row of one path at one N (``total`` and ``marginal`` µs per packet)."""
    joins = await gen.add_listeners(n - len(gen.listeners))
    await asyncio.sleep(args.settle)
    silent = await gen.measure(args.silent_seconds, speaking=False)
    speaking = await gen.measure(args.seconds, speaking=True)
    s = speaking.summary()
    idle_rate = silent.server_cpu / silent.seconds
    delivered = s["delivered"]
    marginal = speaking.server_cpu - idle_rate * speaking.seconds
    return {
        "path": name,
        "listeners": len(gen.listeners),
        "joins": joins,
        "silent": silent.summary(),
        "speaking": s,
        "us_per_packet_total": speaking.server_cpu / delivered * 1e6 if delivered else None,
        "us_per_packet_marginal": marginal / delivered * 1e6 if delivered else None,
        "srtp_profile": gen.listeners[0].profile.decode() if gen.listeners else None,
    }


async def run_path(
    args: argparse.Namespace, no_extensions: bool, floors: dict[int, Any], batched: dict[int, Any]
) -> list[dict[str, Any]]:
    rows = []
    name = "python" if no_extensions else "compiled"
    async with harness.ServerProcess(no_extensions=no_extensions) as server:
        async with loadgen.LoadGen(
            server.control,
            capacity=max(args.listeners) + 16,
            concurrency=args.concurrency,
            profiles=args.srtp.encode(),
        ) as gen:
            await gen.add_speaker()
            for n in sorted(args.listeners):
                row = await grow_and_measure(gen, n, args, name)
                s = row["speaking"]
                joins = row["joins"]
                if not no_extensions and args.floor and n not in floors:
                    ports = [peer.sock.getsockname()[1] for peer in gen.listeners]
                    profile = row["srtp_profile"] or "SRTP_AES128_CM_SHA1_80"
                    lend = {
                        "control": None if args.floor_own_socket else server.control,
                        "sink": gen.sink,
                    }
                    floors[n] = await harness.run_floor(
                        ports, forwarded_packet(gen), args.floor, profile, **lend
                    )
                    batched[n] = await harness.run_floor(
                        ports, forwarded_packet(gen), args.floor, profile, mode="sendmmsg", **lend
                    )
                rows.append(row)
                print(
                    f"{name:>8} N={row['listeners']:>5} total {fmt(row['us_per_packet_total'])} us/pkt, "
                    f"marginal {fmt(row['us_per_packet_marginal'])} us/pkt, loss {s['loss']:.4%}, "
                    f"server CPU {s['server_cpu_share']:.0%}, loadgen CPU {s['loadgen_cpu_share']:.0%}"
                    + f", server waited for its CPU {s['server_runqueue_wait_s']:.2f} s"
                    + (
                        f", floor sendto {floors[n]['us_per_packet']:.2f} us/pkt, "
                        f"sendmmsg {batched[n]['us_per_packet']:.2f} us/pkt"
                        if n in floors and n in batched
                        else ""
                    ),
                    flush=True,
                )
                if joins["failed"] or s["server_cpu_share"] > 0.98:
                    print(
                        f"{name:>8}: stopping at N={n} (join failures or a saturated core)",
                        flush=True,
                    )
                    break
    return rows


def fmt(value: float | None) -> str:
    return f"{value:6.2f}" if value is not None else "   n/a"


def add_path_columns(
    entry: dict[str, Any], label: str, row: dict[str, Any], floor: float | None
) -> None:
    """One server path's figures at one N, as ``<label>_...`` columns of a summary row."""
    entry[f"{label}_total_us"] = row["us_per_packet_total"]
    entry[f"{label}_marginal_us"] = row["us_per_packet_marginal"]
    entry[f"{label}_loss"] = row["speaking"]["loss"]
    entry[f"{label}_cpu_share"] = row["speaking"]["server_cpu_share"]
    entry[f"{label}_server_wait_s"] = row["speaking"]["server_runqueue_wait_s"]
    if floor and row["us_per_packet_total"]:
        entry[f"{label}_total_x_floor"] = row["us_per_packet_total"] / floor


def table(
    rows: list[dict[str, Any]], floors: dict[int, Any], batched: dict[int, Any]
) -> list[dict[str, Any]]:
    by = {(row["path"], row["listeners"]): row for row in rows}
    out = []
    for n in sorted({row["listeners"] for row in rows}):
        floor = floors.get(n, {}).get("us_per_packet")
        compiled = by.get(("compiled", n))
        python = by.get(("python", n))
        entry: dict[str, Any] = {
            "listeners": n,
            "floor_us": floor,
            "floor_median_us": floors.get(n, {}).get("median_us_per_packet"),
            "batched_floor_us": batched.get(n, {}).get("us_per_packet"),
        }
        batched_floor = entry["batched_floor_us"]
        for label, row in (("compiled", compiled), ("python", python)):
            if row is None:
                continue
            add_path_columns(entry, label, row, floor)
            if floor and row["us_per_packet_total"]:
                entry[f"{label}_marginal_x_floor"] = row["us_per_packet_marginal"] / floor
            if batched_floor and row["us_per_packet_total"]:
                entry[f"{label}_total_x_batched"] = row["us_per_packet_total"] / batched_floor
                entry[f"{label}_marginal_x_batched"] = row["us_per_packet_marginal"] / batched_floor
        if (
            compiled
            and python
            and compiled["us_per_packet_total"]
            and python["us_per_packet_total"]
        ):
            entry["python_x_compiled_total"] = (
                python["us_per_packet_total"] / compiled["us_per_packet_total"]
            )
        out.append(entry)
    return out


async def main(args: argparse.Namespace) -> None:
    cpus = harness.pin_loadgen()
    floors: dict[int, Any] = {}
    batched: dict[int, Any] = {}
    rows: list[dict[str, Any]] = []
    for path in args.paths:
        rows += await run_path(args, path == "python", floors, batched)
    summary = table(rows, floors, batched)
    # "x floor" is the ratio (the floor sends with sendto); "x batched"
    # the like-for-like one, against a floor that batches with sendmmsg as the
    # server does.
    print(
        "\n   N  floor  batched  compiled(total/marg)  x floor  x batched   "
        "python(total/marg)  x floor  py/compiled"
    )
    for e in summary:
        print(
            f"{e['listeners']:>5} {fmt(e['floor_us'])} {fmt(e['batched_floor_us'])}  "
            f"{fmt(e.get('compiled_total_us'))} {fmt(e.get('compiled_marginal_us'))}  "
            f"{fmt(e.get('compiled_total_x_floor'))}   {fmt(e.get('compiled_total_x_batched'))}     "
            f"{fmt(e.get('python_total_us'))} {fmt(e.get('python_marginal_us'))}  "
            f"{fmt(e.get('python_total_x_floor'))}  {fmt(e.get('python_x_compiled_total'))}"
        )
    # A non-default profile list gets its own result name (report.py reads the default one).
    name = "cpu_per_packet"
    if args.srtp != loadgen.SRTP_PROFILES.decode():
        name += "_" + args.srtp.replace("SRTP_", "").replace(":", "_").lower()
    if args.floor_own_socket:
        name += "_floor_own_socket"
    path = harness.write_result(
        name,
        {
            "args": vars(args),
            "loadgen_cpus": cpus,
            "summary": summary,
            "floors": floors,
            "batched_floors": batched,
            "rows": rows,
        },
    )
    print(f"wrote {path}")


def build_parser(doc: str | None = __doc__) -> argparse.ArgumentParser:
    """This benchmark's options (``janus_fanout.py`` adds its own to them)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--listeners", type=int, nargs="+", default=[100, 500, 1000, 2000])
    parser.add_argument(
        "--paths", nargs="+", choices=["compiled", "python"], default=["compiled", "python"]
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="speaking window per N")
    parser.add_argument("--silent-seconds", type=float, default=2.0, help="silent window per N")
    parser.add_argument(
        "--settle", type=float, default=1.0, help="pause after joins before measuring"
    )
    parser.add_argument(
        "--floor",
        type=int,
        default=50,
        help="floor bursts (one datagram per listener) per run; 0: no floor",
    )
    parser.add_argument(
        "--floor-own-socket",
        action="store_true",
        help="the floor sends from a port of its own, as before the fifteenth session: "
        "the listeners' connected sockets refuse its datagrams (for comparison)",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="joins in flight")
    parser.add_argument(
        "--srtp",
        default=loadgen.SRTP_PROFILES.decode(),
        help="use_srtp profiles the listeners offer, e.g. SRTP_AES128_CM_SHA1_80",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    harness.run(main(arguments), 900)
    _ = json  # results are JSON; see harness.write_result
