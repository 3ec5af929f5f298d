"""The server under test, as its own process, so its CPU is measured apart.

Runs one :class:`sfu.Server` on 127.0.0.1 and a small HTTP control endpoint
(aiohttp, 127.0.0.1 only) that the load generator drives:

``POST /offer``  ``{"room", "role": "listener"|"speaker", "identity", "offer"}``
                 -> ``{"answer"}`` (``{"error"}`` with status 400 on failure)
``GET /stats``   the process's own ``getrusage`` (utime, stime, maxrss),
                 ``/proc/self/status`` VmRSS, ``server.stats()``, per room the
                 FanOut's sent/dropped counters and connected members, and the
                 event-loop lag and cyclic-GC pauses (``?reset=1`` starts a
                 new window for both; ``?types=N``: the N commonest types of
                 the objects the cyclic GC tracks; with ``--phases``, CPU ns
                 and calls per piece of a join, see :data:`PHASES`; with
                 ``--tracemalloc``, ``?malloc=N``: the N source lines that
                 hold the most memory Python allocated since start-up;
                 ``?offers=1``: per identity answered on ``/offer``, when its
                 handler began and when its answer was made, ``time_ns``)
``POST /quit``   close the server and exit
``POST /floor``  run the C floor (``harness.run_floor``'s spec) in a process
                 of its own that sends from the server's media socket;
                 -> its result
``GET /ws``      the product's signaling WebSocket (``docs/signaling.md``,
                 mounted with :func:`sfu.signaling.aiohttp.add_signaling`, as
                 the demo does): a ``join`` needs a token signed with the
                 server's ``--token-secret``; a join naming an unknown room
                 creates it (``RoomPolicy`` defaults: 3 slots, as ``/offer``
                 without ``slots``)

Event-loop lag: a ticker sleeps 10 ms and records how late it woke up; the
worst lateness per window is what the "never blocks > 50 ms" target reads.
Each tick's lateness is also split: the time the loop's thread was ready
but waited for a CPU (its run-queue delay, ``/proc/thread-self/schedstat``,
plus the hypervisor's steal on the server's CPU, ``/proc/stat``, which
counts in 10 ms units) is taken out, and what is left is the time server
code held the loop, running or blocked in a system call ("held").

On start it prints one JSON line to stdout: ``{"control": port, "media":
port, "pid", "extension", "uvloop", "cpu", "tree", "signaling": "/ws",
"token_secret"}`` (the secret given, or one made for this run, so that the
load generator can issue join tokens). It exits on SIGTERM/SIGINT,
``POST /quit``, or after ``--max-seconds`` (every benchmark is bounded).

Run: ``python bench/serve.py --cpu 0`` (``SFU_NO_EXTENSIONS=1`` in the
environment selects the pure-Python fan-out).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import logging
import os
import resource
import secrets
import signal
import sys
import time
from typing import Any

from aiohttp import web

#: The sfu source tree to serve: this checkout, or SFU_TREE (e.g. an exported
#: commit, so a benchmark does not see files being edited in the work tree).
TREE = os.environ.get("SFU_TREE") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TREE)

import harness  # noqa: E402  (bench/, the script's own directory)

import sfu  # noqa: E402
from sfu import relay  # noqa: E402
from sfu.signaling.aiohttp import add_signaling  # noqa: E402

LOOPBACK = "127.0.0.1"
#: Where the signaling WebSocket is mounted on the control app.
SIGNALING_PATH = "/ws"
#: Upper bounds (ms) of the lag histogram buckets; the last bucket is open.
LAG_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200)


def read_vmrss() -> int:
    """Resident set size of this process in bytes (``/proc/self/status``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class ProcReader:
    """The loop thread's run-queue wait and a CPU's steal, read each tick.

    The files stay open and are read with ``pread`` (~1 and ~4 µs a read,
    against ~40 µs a tick to open and close them): the ticker is the
    measurement, and its cost lands in the server CPU it measures.
    ``/proc/thread-self`` is resolved when opened: the loop's thread, as
    the ticker only runs there.
    """

    def __init__(self) -> None:
        self._schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        self._stat = os.open("/proc/stat", os.O_RDONLY)
        self._clock_ticks = os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        os.close(self._schedstat)
        os.close(self._stat)

    def thread_run_delay(self) -> float:
        """Seconds the loop's thread has waited on a run queue, ready to run."""
        return int(os.pread(self._schedstat, 256, 0).split()[1]) / 1e9

    def cpu_steal(self, cpu: int) -> float:
        """Seconds the hypervisor ran others while ``cpu`` wanted to run (``/proc/stat``)."""
        label = f"cpu{cpu} ".encode()
        for line in os.pread(self._stat, 1 << 16, 0).splitlines():
            if line.startswith(label):
                fields = line.split()
                return int(fields[8]) / self._clock_ticks if len(fields) > 8 else 0.0
        return 0.0


def read_schedstat() -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of this process's threads.

    ``/proc/<pid>/task/*/schedstat``: the wait tells how much another process
    on the same core (a shared machine) delayed the server.
    """
    running = waiting = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/schedstat") as f:
                fields = f.read().split()
        except OSError:
            continue
        running += int(fields[0])
        waiting += int(fields[1])
    return running / 1e9, waiting / 1e9


class LagMonitor:
    """A ticker that records how late the event loop runs a 10 ms sleep."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.task: asyncio.Task[None] | None = None
        self.reset()

    def reset(self) -> None:
        self.worst = 0.0
        self.worst_at = 0.0  # wall clock (time.time()) of the worst tick
        # Lateness less the time the thread waited for a CPU: what server code
        # held the loop for (see the module docstring).
        self.worst_held = 0.0
        self.worst_held_at = 0.0
        self.over_50ms_held = 0
        self.ticks = 0
        self.total = 0.0
        self.histogram = [0] * (len(LAG_BUCKETS) + 1)
        self.since = time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        return {
            "interval_ms": self.interval * 1000,
            "window_s": time.monotonic() - self.since,
            "ticks": self.ticks,
            "worst_ms": self.worst * 1000,
            "worst_at": self.worst_at,
            "worst_held_ms": self.worst_held * 1000,
            "worst_held_at": self.worst_held_at,
            "over_50ms_held": self.over_50ms_held,
            "mean_ms": self.total / self.ticks * 1000 if self.ticks else 0.0,
            "buckets_ms": list(LAG_BUCKETS),
            "histogram": list(self.histogram),
            "over_50ms": sum(self.histogram[LAG_BUCKETS.index(50) + 1 :]),
        }

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # The hypervisor's steal is read for the one CPU the server is pinned
        # to; on more than one CPU it cannot be told whose it was.
        cpus = os.sched_getaffinity(0)
        steal_cpu = next(iter(cpus)) if len(cpus) == 1 else None
        proc = ProcReader()
        try:
            await self._tick(loop, proc, steal_cpu)
        finally:
            proc.close()

    async def _tick(
        self, loop: asyncio.AbstractEventLoop, proc: ProcReader, steal_cpu: int | None
    ) -> None:
        while True:
            start = loop.time()
            delay_start = proc.thread_run_delay()
            steal_start = proc.cpu_steal(steal_cpu) if steal_cpu is not None else 0.0
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - start - self.interval)
            self.ticks += 1
            self.total += lag
            if lag > self.worst:
                self.worst = lag
                self.worst_at = time.time()
            waited = proc.thread_run_delay() - delay_start
            if steal_cpu is not None:
                waited += proc.cpu_steal(steal_cpu) - steal_start
            held = max(0.0, lag - waited)
            if held > self.worst_held:
                self.worst_held = held
                self.worst_held_at = time.time()
            if held > 0.05:
                self.over_50ms_held += 1
            ms = lag * 1000
            bucket = 0
            while bucket < len(LAG_BUCKETS) and ms > LAG_BUCKETS[bucket]:
                bucket += 1
            self.histogram[bucket] += 1


#: ``--phases``: where a join's server CPU goes, as (label, object, attribute).
#: Nested entries run inside the one above them; what no entry covers is the
#: HTTP offer or the WebSocket (aiohttp: framing, compression), the signaling
#: session's coroutines, the event loop and the kernel's socket work.
PHASES: list[tuple[str, str, str]] = [
    ("stun binding requests", "sfu.transport.server:Server", "_stun_received"),
    ("offer: Gate.admit", "sfu.gate:Gate", "admit"),
    ("  parse_offer", "sfu.gate", "parse_offer"),
    ("  Session (and its DtlsServer)", "sfu.transport.session:Session", "__init__"),
    ("dtls handshake datagrams", "sfu.transport.session:Session", "receive_dtls"),
    ("  OpenSSL do_handshake", "sfu.transport.openssl_session:OpenSslSession", "do_handshake"),
    ("  SRTP sessions", "sfu.transport.session", "create_srtp_sessions"),
    ("  connected: the room's side", "sfu.participant:Participant", "session_connected"),
    ("media in: SRTP and fan-out", "sfu.transport.session:Session", "receive_srtp"),
    # A WebSocket join's reply: the room's roster and stage, built per join.
    ("signaling: the joined reply", "sfu.signaling.protocol", "joined_message"),
]


class PhaseTimer:
    """Diagnosis (``--phases``): thread CPU time and calls per function in :data:`PHASES`.

    Each is wrapped with a ``time.thread_time_ns`` pair (~1 µs a call), so
    the figures are a join's own pieces at the storm's speed, which runs
    2-3x slower per piece than the same code timed alone (``join_cost.py``).
    """

    def __init__(self) -> None:
        import importlib

        self.ns: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        for label, where, attribute in PHASES:
            module_name, _, class_name = where.partition(":")
            owner: Any = importlib.import_module(module_name)
            if class_name:
                owner = getattr(owner, class_name)
            setattr(owner, attribute, self._wrap(label, getattr(owner, attribute)))

    def _wrap(self, label: str, function: Any) -> Any:
        self.ns[label] = self.calls[label] = 0
        ns, calls, clock = self.ns, self.calls, time.thread_time_ns

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return function(*args, **kwargs)
            finally:
                ns[label] += clock() - start
                calls[label] += 1

        return timed

    def snapshot(self) -> dict[str, list[int]]:
        return {label: [self.ns[label], self.calls[label]] for label in self.ns}


class GcMonitor:
    """Times every cyclic-GC pass (``gc.callbacks``): per generation, how many and the worst.

    A full (generation 2) pass walks every tracked object not frozen, so
    during a join storm it is the likeliest single stall of the loop.
    """

    def __init__(self) -> None:
        self._started = 0.0
        self.reset()
        gc.callbacks.append(self._callback)

    def reset(self) -> None:
        self.count = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.worst = [0.0, 0.0, 0.0]

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        took = time.perf_counter() - self._started
        self.count[generation] += 1
        self.total[generation] += took
        # Nothing here walks the heap (gc.get_objects() took ~3 ms at 128k
        # objects): it would run in the same loop turn as the pass it times.
        if took > self.worst[generation]:
            self.worst[generation] = took

    def close(self) -> None:
        gc.callbacks.remove(self._callback)

    def snapshot(self) -> dict[str, Any]:
        return {
            "collections": list(self.count),
            "total_ms": [round(t * 1000, 2) for t in self.total],
            "worst_ms": [round(t * 1000, 2) for t in self.worst],
            "tracked_objects_now": len(gc.get_objects()),
            "frozen_objects": gc.get_freeze_count(),
        }


class Control:
    """The HTTP control endpoint around one sfu.Server."""

    def __init__(
        self,
        server: sfu.Server,
        lag: LagMonitor,
        gc_monitor: GcMonitor,
        stop: asyncio.Event,
        phases: PhaseTimer | None = None,
        room_settings: dict[str, Any] | None = None,
    ) -> None:
        self.server = server
        self.room_settings = room_settings or {}  # for rooms the offers make
        self.signaling: Any = None  # add_signaling's handler
        self.phases = phases
        self.lag = lag
        self.gc_monitor = gc_monitor
        self.stop = stop
        self.offers = 0
        self.offer_errors = 0
        # Per identity answered on /offer: (handler entered, answer made), in
        # time.time_ns(), for the storm's stage breakdown (`GET /stats?offers=1`).
        self.offer_times: dict[str, tuple[int, int]] = {}

    async def offer(self, request: web.Request) -> web.Response:
        entered = time.time_ns()
        body = await request.json()
        try:
            room = self.server.room(
                str(body["room"]), slots=int(body.get("slots", 3)), **self.room_settings
            )
            if body.get("role") == "speaker":
                participant: sfu.Participant = await room.add_speaker(
                    body["offer"], identity=str(body["identity"])
                )
            else:
                participant = await room.add_listener(body["offer"], identity=str(body["identity"]))
        except (sfu.SfuError, KeyError, ValueError) as exc:
            self.offer_errors += 1
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
        self.offers += 1
        self.offer_times[participant.identity] = (entered, time.time_ns())
        return web.json_response({"answer": participant.answer})

    async def stats(self, request: web.Request) -> web.Response:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        running, waiting = read_schedstat()
        rooms = {}
        for name, room in self.server.rooms.items():
            members = room.participants.values()
            fanout = room.router.fanout
            rooms[name] = {
                "members": len(members),
                "connected": sum(1 for p in members if p.connected),
                "speakers": len(room.speakers),
                "receivers": len(fanout),
                "fanout_sent": int(fanout.sent),
                "fanout_dropped": int(fanout.dropped),
                "router_packets_in": room.router.packets_in,
                "router_packets_dropped": room.router.packets_dropped,
            }
        result = {
            "time": time.time(),
            "monotonic": time.monotonic(),
            "utime": usage.ru_utime,
            "stime": usage.ru_stime,
            "maxrss": usage.ru_maxrss * 1024,
            "involuntary_switches": usage.ru_nivcsw,
            "sched_running": running,
            "sched_waiting": waiting,
            "loadavg": os.getloadavg()[0],
            "vmrss": read_vmrss(),
            "server": self.server.stats(),
            "rooms": rooms,
            "lag": self.lag.snapshot(),
            "gc": self.gc_monitor.snapshot(),
            "offers": self.offers,
            "offer_errors": self.offer_errors,
            # Open signaling WebSockets (joined or not).
            "signaling_sessions": len(getattr(self.signaling, "sessions", ())),
        }
        if self.phases is not None:
            result["phases"] = self.phases.snapshot()
        if request.query.get("types"):
            # Diagnosis: which objects the cyclic GC walks (not frozen), by type.
            counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
            result["gc_types"] = dict(counts.most_common(int(request.query["types"])))
        if request.query.get("malloc"):
            # Diagnosis (--tracemalloc): which lines hold the memory allocated since start-up.
            import tracemalloc

            lines = tracemalloc.take_snapshot().statistics("lineno")
            result["malloc"] = [
                [f"{s.traceback[0].filename}:{s.traceback[0].lineno}", s.size, s.count]
                for s in lines[: int(request.query["malloc"])]
            ]
            result["malloc_total"] = sum(s.size for s in lines)
        if request.query.get("offers"):
            result["offer_times"] = self.offer_times
        if request.query.get("reset"):
            self.lag.reset()
            self.gc_monitor.reset()
        return web.json_response(result)

    async def floor(self, request: web.Request) -> web.Response:
        """Run the C floor (``harness.run_floor``'s spec) with the server's own
        media socket lent to it, so its datagrams reach the listeners."""
        spec = await request.json()
        try:
            out = await harness.floor_process(spec, lend_fd=self.server.socket.fileno())
        except (RuntimeError, asyncio.TimeoutError) as exc:
            return web.json_response({"error": str(exc) or type(exc).__name__}, status=500)
        return web.json_response(json.loads(out))

    async def quit(self, request: web.Request) -> web.Response:
        self.stop.set()
        return web.json_response({"ok": True})


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    lag = LagMonitor(args.lag_interval)
    if args.slow_callback > 0:
        # Diagnosis only (costly): asyncio logs each callback that ran longer.
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        loop.set_debug(True)
        loop.slow_callback_duration = args.slow_callback / 1000
    token_secret = args.token_secret or secrets.token_urlsafe(32)
    async with sfu.Server(
        LOOPBACK, args.port, consent_timeout=args.consent_timeout, token_secret=token_secret
    ) as server:
        gc_monitor = GcMonitor()
        room_settings = {}
        if args.roster_listeners is not None:
            room_settings["roster_listeners"] = (
                None if args.roster_listeners == "all" else int(args.roster_listeners)
            )
        control = Control(
            server, lag, gc_monitor, stop, PhaseTimer() if args.phases else None, room_settings
        )
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/offer", control.offer)
        app.router.add_get("/stats", control.stats)
        app.router.add_post("/quit", control.quit)
        app.router.add_post("/floor", control.floor)
        # Joins as the demo's browsers make them; /offer joins carry no token,
        # which a room that is not private takes.
        control.signaling = add_signaling(
            app, server, SIGNALING_PATH, compress=args.signaling_compress
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        # As the demo: 1,000 offers connect at once; the default backlog of 128
        # could drop connections (1 s SYN retransmission each).
        site = web.TCPSite(runner, LOOPBACK, args.control_port, backlog=1024)
        await site.start()
        control_port = runner.addresses[0][1]
        if not args.no_gc_freeze:
            # As the README advises for a server: start-up objects (imports, the
            # app) are never scanned by the cyclic GC again, so a full collection
            # during a join storm is short (73 -> 44 ms measured here).
            gc.collect()
            gc.freeze()
        if args.lag_interval > 0:
            lag.task = loop.create_task(lag.run())
        if args.tracemalloc:
            # Diagnosis only: every allocation from here on is traced (slower, bigger).
            import tracemalloc

            tracemalloc.start()
        profiler = None
        if args.profile:
            # Diagnosis only: cProfile slows the server ~2x, the shares stay telling.
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        print(
            json.dumps(
                {
                    "control": control_port,
                    "media": server.port,
                    "pid": os.getpid(),
                    "extension": relay.EXTENSION_LOADED,
                    "uvloop": args.uvloop_used,
                    "cpu": sorted(os.sched_getaffinity(0)),
                    "tree": os.path.dirname(os.path.dirname(os.path.abspath(sfu.__file__))),
                    "signaling": SIGNALING_PATH,
                    "token_secret": token_secret,
                }
            ),
            flush=True,
        )
        try:
            await asyncio.wait_for(stop.wait(), args.max_seconds)
        except asyncio.TimeoutError:
            print("serve.py: --max-seconds reached, exiting", file=sys.stderr)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        if lag.task is not None:
            lag.task.cancel()
            try:
                await lag.task
            except asyncio.CancelledError:
                pass
        await runner.cleanup()
        gc_monitor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="UDP media port (0: any)")
    parser.add_argument("--control-port", type=int, default=0, help="HTTP control port (0: any)")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    parser.add_argument(
        "--nice", type=int, default=0, help="scheduling priority (negative: before others)"
    )
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's default loop")
    parser.add_argument(
        "--no-gc-freeze", action="store_true", help="leave start-up objects to the cyclic GC"
    )
    parser.add_argument("--lag-interval", type=float, default=0.01, help="lag ticker period (s)")
    parser.add_argument(
        "--slow-callback",
        type=float,
        default=0.0,
        help="log callbacks longer than this many ms (debug mode)",
    )
    parser.add_argument(
        "--profile", default=None, help="diagnosis: write cProfile stats of the run to this file"
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="diagnosis: trace Python's allocations from start-up; /stats?malloc=N reports them",
    )
    parser.add_argument(
        "--phases",
        action="store_true",
        help="diagnosis: time the join's pieces (see PHASES) and report them in /stats",
    )
    parser.add_argument("--consent-timeout", type=float, default=30.0)
    parser.add_argument(
        "--signaling-compress",
        action="store_true",
        help="the signaling WebSocket agrees to permessage-deflate (add_signaling(compress=True))",
    )
    parser.add_argument(
        "--roster-listeners",
        default=None,
        help="rooms' roster_listeners: a number, or 'all' (None: every member named); "
        "default: the library's",
    )
    parser.add_argument(
        "--token-secret",
        default=None,
        help="HS256 secret of the signaling's join tokens (>= 32 bytes; default: a new one)",
    )
    parser.add_argument("--max-seconds", type=float, default=900.0, help="exit after this long")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except OSError as exc:  # not root: run at the default priority
            print(f"serve.py: cannot set priority {args.nice}: {exc}", file=sys.stderr)
    try:
        import uvloop
    except ImportError:
        args.uvloop_used = False
    else:
        args.uvloop_used = not args.no_uvloop
    if args.uvloop_used:
        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
