"""The longest event-loop iteration when a crowd's offers arrive at once on
kept HTTP connections, in this process.

A client process (pinned to the other CPU) opens ``--offers`` connections
to an aiohttp app in this process, which takes JSON offers on its own route
as ``bench/serve.py``'s ``POST /offer`` does (``request.json()``,
``server.room()``, ``Room.add_listener``). When every connection is open
and idle, the client writes one offer on each, all at once, as a reverse
proxy forwarding a crowd's joins does. The server measures each loop
iteration from the client's go until every offer is answered: the longest
one (what a media packet, a timer or a STUN answer could wait behind), the
handlers begun in it, and the process's CPU per offer. No DTLS: the
answered members never connect (``join_storm.py --http-keepalive`` is the
whole storm, over real peers).

It isolates one part of what holds the loop in the kept-connection
storm: aiohttp reads the requests that arrived together (several hundred
in one iteration here) and hands each to its handler, back to back,
before the handler's own work, which ends where the join waits for its
admission turn (:mod:`sfu.admission`). An aiohttp middleware that made
every handler wait a turn first, tried in the twenty-third session, left
the longest iteration as long (see ``bench/README.md``).
``most_handlers_begun_in_one_iteration`` says how many came together.

Each round is a fresh ``sfu.Server``, after a warm-up burst of 20 offers
(the first joins of a process import and compile what later ones reuse:
~75 ms once), with what the process holds before it frozen out of the
cyclic GC, as ``bench/serve.py`` and the README advise for start-up
objects (``gc.freeze()``): a full pass over earlier rounds' members took
35 ms. The loop is asyncio's own (not uvloop): the iterations are counted
with a callback that schedules itself again with ``call_soon``, which
asyncio runs in the next iteration.

Run: ``python bench/offer_burst.py [--offers 1000] [--rounds 5]``; writes
``bench/results/offer_burst-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import harness

TREE = os.environ.get("SFU_TREE") or harness.ROOT
sys.path.insert(0, TREE)
from aiohttp import web  # noqa: E402

import sfu  # noqa: E402
from tests.test_room_lifecycle import offer  # noqa: E402

OFFER = offer("recvonly", "recvonly", "recvonly")


class Iterations:
    """Each loop iteration's start and the handlers begun before it, while armed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, begun: list[int]) -> None:
        self.loop = loop
        self.begun = begun  # one element, the handlers begun so far
        self.starts: list[float] = []
        self.counts: list[int] = []
        self.armed = False

    def arm(self) -> None:
        self.armed = True
        self.loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.starts.append(time.perf_counter())
        self.counts.append(self.begun[0])
        if self.armed:
            self.loop.call_soon(self._tick)

    def most_begun(self) -> int:
        """The most handlers begun in one iteration (the crowd arrived together)."""
        return max((m - n for n, m in zip(self.counts, self.counts[1:])), default=0)

    def longest(self) -> tuple[float, int]:
        """The longest iteration (s) and the handlers begun in it."""
        gaps = [
            (b - a, m - n)
            for a, b, n, m in zip(self.starts, self.starts[1:], self.counts, self.counts[1:])
        ]
        return max(gaps, default=(0.0, 0))


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_burst(offers: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    begun = [0]
    answered = 0
    done = loop.create_future()
    async with sfu.Server(host="127.0.0.1") as server:

        async def join(request: web.Request) -> web.Response:
            nonlocal answered
            begun[0] += 1
            body = await request.json()
            room = server.room(str(body["room"]))
            member = await room.add_listener(body["offer"], identity=str(body["identity"]))
            answered += 1
            if answered == offers and not done.done():
                done.set_result(None)
            return web.json_response({"answer": member.answer})

        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/offer", join)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=offers + 64)
        await site.start()
        port = runner.addresses[0][1]
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            os.path.abspath(__file__),
            "--client",
            str(port),
            "--offers",
            str(offers),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert client.stdin is not None and client.stdout is not None
        try:
            ready = await asyncio.wait_for(client.stdout.readline(), 60)
            if ready.strip() != b"ready":
                raise RuntimeError(f"the client failed to connect: {ready!r}")
            await asyncio.sleep(0.2)  # every connection accepted and idle
            iterations = Iterations(loop, begun)
            started = cpu()
            iterations.arm()
            client.stdin.write(b"go\n")
            await client.stdin.drain()
            await asyncio.wait_for(done, 120)
            iterations.armed = False
            spent = cpu() - started
            statuses = json.loads(await asyncio.wait_for(client.stdout.readline(), 60))
            await asyncio.wait_for(client.wait(), 30)
        finally:
            if client.returncode is None:
                client.kill()
                await client.wait()
            await runner.cleanup()
    longest, begun_in_it = iterations.longest()
    return {
        "longest_iteration_ms": round(longest * 1000, 3),
        "handlers_begun_in_it": begun_in_it,
        "most_handlers_begun_in_one_iteration": iterations.most_begun(),
        "cpu_per_offer_us": round(spent / offers * 1e6, 1),
        "iterations": len(iterations.starts),
        "answered_200": statuses["200"],
    }


def client(port: int, offers: int) -> None:
    """Connect every socket, say ready, write every offer at once on "go"."""
    harness.pin_loadgen()
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(offers)]
    requests = []
    for i in range(offers):
        body = json.dumps({"room": "hall", "identity": f"fan-{i}", "offer": OFFER}).encode()
        requests.append(
            b"POST /offer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    for sock, request in zip(sockets, requests):
        sock.sendall(request)
    ok = 0
    for sock in sockets:
        sock.settimeout(60)
        if sock.recv(65536).startswith(b"HTTP/1.1 200"):
            ok += 1
        sock.close()
    print(json.dumps({"200": ok}), flush=True)


async def main(args: argparse.Namespace) -> None:
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {harness.SERVER_CPU})
    await one_burst(20)  # warm-up, not recorded
    runs: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        # What earlier rounds left is not this round's to walk.
        gc.collect()
        gc.freeze()
        run = await one_burst(args.offers)
        runs.append(run)
        print(
            f"longest iteration {run['longest_iteration_ms']:.1f} ms, "
            f"{run['handlers_begun_in_it']} handlers begun in it "
            f"(at most {run['most_handlers_begun_in_one_iteration']} in one), "
            f"{run['cpu_per_offer_us']:.0f} us CPU an offer, "
            f"{run['answered_200']}/{args.offers} answered",
            flush=True,
        )
    result = {
        "offers": args.offers,
        "rounds": args.rounds,
        "runs": runs,
        "median_longest_iteration_ms": statistics.median(r["longest_iteration_ms"] for r in runs),
        "median_cpu_per_offer_us": statistics.median(r["cpu_per_offer_us"] for r in runs),
    }
    print(f"median longest iteration {result['median_longest_iteration_ms']:.1f} ms")
    print(f"wrote {harness.write_result('offer_burst', {'args': vars(args), **result})}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offers", type=int, default=1000, help="offers written at once")
    parser.add_argument("--rounds", type=int, default=5, help="bursts, each a fresh server")
    parser.add_argument("--client", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.client is not None:
        client(arguments.client, arguments.offers)
    else:
        asyncio.run(asyncio.wait_for(main(arguments), 600))
