"""What a join costs the signaling as the room fills, measured in this process.

N members join one room through :class:`sfu.signaling.SignalingSession` (the
protocol of ``docs/signaling.md`` without a socket: each session's frames
are counted, not sent), all at once as in a join storm, and each then
stays; the process's CPU per join is reported for each N. It covers what
the signaling adds to a join: the ``join`` frame and its token, the room's
admission and answer, the ``joined`` reply with the room's roster, the
roster batches every member is told of, and the events each member's
relay is offered. No DTLS: the members never connect (``join_storm.py
--signaling websocket`` is the whole of it, over real sockets).

Work per join that grows with the room makes the CPU per join grow with N:
``ratio_to_first`` (each N's CPU per join over the smallest N's, same run)
shows it. Run: ``python bench/signaling_cost.py [--members 250 500 1000
2000]``; writes ``bench/results/signaling_cost-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
from typing import Any

import harness

#: The sfu source tree measured: this checkout, or SFU_TREE (e.g. an exported commit).
TREE = os.environ.get("SFU_TREE") or harness.ROOT
sys.path.insert(0, TREE)  # its package, and its tests' offer builder
import sfu  # noqa: E402
from sfu import auth  # noqa: E402
from sfu.signaling.protocol import SignalingSession  # noqa: E402
from tests.test_room_lifecycle import offer  # noqa: E402

SECRET = "bench-signaling-cost-secret-0123456789"
OFFER = offer("recvonly")
#: After the last join: the roster batches still under way go out.
SETTLE_SECONDS = 1.2


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def storm(members: int, room_settings: dict[str, Any]) -> dict[str, Any]:
    """``members`` joins at once into one room; the CPU per join and what was sent."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall", **room_settings)
        frames = [
            json.dumps(
                {
                    "type": "join",
                    "room": "hall",
                    "token": auth.issue_token(
                        SECRET, room="hall", identity=f"fan-{i}", role="listener"
                    ),
                    "offer": OFFER,
                }
            )
            for i in range(members)
        ]
        sent = {"frames": 0, "bytes": 0, "closed": 0}

        async def send(text: str) -> None:
            sent["frames"] += 1
            sent["bytes"] += len(text)

        async def close(code: int, reason: str) -> None:
            sent["closed"] += 1

        sessions = [SignalingSession(server, send, close) for _ in range(members)]
        before = cpu_seconds()
        await asyncio.gather(*(s.handle(f) for s, f in zip(sessions, frames)))
        await asyncio.sleep(SETTLE_SECONDS)
        used = cpu_seconds() - before
        joined, closed = len(room.participants), sent["closed"]
        for session in sessions:
            await session.close()
    if joined != members or closed:
        raise RuntimeError(f"{joined} of {members} joined, {closed} sessions ended by the server")
    return {
        "members": members,
        "cpu_s": round(used, 3),
        "us_per_join": round(used * 1e6 / members, 1),
        "frames_per_member": round(sent["frames"] / members, 2),
        "bytes_per_member": round(sent["bytes"] / members),
    }


async def main(args: argparse.Namespace) -> None:
    harness.pin_loadgen(harness.SERVER_CPU, nice=0)  # one core, as the server's
    settings: dict[str, Any] = {}
    if args.roster_listeners is not None:  # (a tree from before roster_listeners takes none)
        listeners = args.roster_listeners
        settings["roster_listeners"] = None if listeners == "all" else int(listeners)
    rows = [await storm(members, settings) for members in args.members]
    first = rows[0]["us_per_join"]
    for row in rows:
        row["ratio_to_first"] = round(row["us_per_join"] / first, 2)
        print(
            f"N = {row['members']:5}: {row['us_per_join']:7.1f} us CPU per join "
            f"({row['ratio_to_first']}x N = {rows[0]['members']}), "
            f"{row['frames_per_member']} frames and {row['bytes_per_member']} bytes per member"
        )
    print(f"wrote {harness.write_result('signaling_cost', {'args': vars(args), 'rows': rows})}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--members", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument(
        "--roster-listeners",
        default=None,
        help="the room's roster_listeners: a number, or 'all' to name every member "
        "(default: the library's, 100)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    harness.run(main(parse_args()), 600)
