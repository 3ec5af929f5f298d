"""Join time and server CPU per forwarded packet with real aiortc clients.

The server is ``examples/aiohttp_app.py`` in its own process (so its CPU is
measured apart from the clients'); one aiortc speaker and N aiortc
listeners join it over HTTP on 127.0.0.1. Reported:

* join time: from POSTing a listener's offer to its first RTP packet;
* server CPU per forwarded packet: server (utime + stime) over a steady
  window / packets the listeners received in that window.

Usage::

    python bench/aiortc_fanout.py --listeners 100 --seconds 10 [--no-extensions]

aiortc clients are expensive (each runs an ICE agent, DTLS and a decoder
thread); for thousands of listeners use the load generator in ``bench/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import aioice.ice

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.clients import Client, ToneTrack  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def join(
    session: aiohttp.ClientSession, base: str, identity: str, speaker: bool, slots: int = 3
) -> tuple[Client, float]:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from tests.clients import _record_received

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client = Client(pc=pc, identity=identity)
    if speaker:
        client.track = ToneTrack(440)
        pc.addTransceiver(client.track, direction="sendonly")
    else:
        for _ in range(slots):
            pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    started = time.monotonic()
    role = "speaker" if speaker else "listener"
    async with session.post(
        f"{base}/rooms/bench/{role}", json={"identity": identity, "sdp": pc.localDescription.sdp}
    ) as response:
        response.raise_for_status()
        answer = (await response.json())["sdp"]
    _record_received(client)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return client, started


async def run(args: argparse.Namespace) -> dict[str, object]:
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]
    env = dict(os.environ)
    env.pop("SFU_NO_EXTENSIONS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if args.no_extensions:
        env["SFU_NO_EXTENSIONS"] = "1"
    port = args.http_port
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "aiohttp_app.py"), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    clients: list[Client] = []
    try:
        assert server.stdout is not None
        if not server.stdout.readline():  # "open http://..." once it listens
            raise RuntimeError("the server process did not start")
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            speaker, _ = await join(session, base, "speaker", True)
            clients.append(speaker)
            joined = await asyncio.gather(
                *(join(session, base, f"l{i}", False) for i in range(args.listeners))
            )
            listeners = [client for client, _ in joined]
            clients.extend(listeners)
            deadline = time.monotonic() + 30
            while any(not c.packets(0) for c in listeners) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            join_times = sorted(
                c.packets(0)[0].arrival - started for c, started in joined if c.packets(0)
            )
            await asyncio.sleep(1.0)  # settle
            packets_before = sum(c.total_received() for c in listeners)
            cpu_before, wall_before = process_cpu(server.pid), time.monotonic()
            await asyncio.sleep(args.seconds)
            cpu_after, wall_after = process_cpu(server.pid), time.monotonic()
            packets = sum(c.total_received() for c in listeners) - packets_before
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        server.terminate()
        server.wait(10)
    cpu = cpu_after - cpu_before
    return {
        "listeners": args.listeners,
        "extensions": not args.no_extensions,
        "listeners_receiving": len(join_times),
        "join_p50_ms": round(1000 * statistics.median(join_times), 1) if join_times else None,
        "join_max_ms": round(1000 * join_times[-1], 1) if join_times else None,
        "window_s": round(wall_after - wall_before, 2),
        "packets_delivered": packets,
        "server_cpu_s": round(cpu, 3),
        "server_cpu_share": round(cpu / (wall_after - wall_before), 3),
        "server_us_per_packet": round(1e6 * cpu / packets, 2) if packets else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listeners", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--http-port", type=int, default=8765)
    parser.add_argument(
        "--no-extensions", action="store_true", help="run the server with SFU_NO_EXTENSIONS=1"
    )
    args = parser.parse_args()
    if not 1 <= args.listeners <= 500 or not 1 <= args.seconds <= 120:
        parser.error("listeners must be 1..500 and seconds 1..120")
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
