"""Janus VideoRoom (audio only) under the CPU benchmark's load: the optional column.

The issue's optional column for ``cpu_per_packet.py``: the same load against
Janus (Debian's ``janus`` package, which is NOT a dependency of this
project: without ``janus`` on PATH this prints why it skipped and exits 0).

In one run, at each N (default 100 and 500):

* sfu's compiled path and the C floor, exactly as ``cpu_per_packet.py``
  measures them (its code; ``bench/serve.py`` pinned to CPU 0);
* Janus, started from a configuration this script writes to a temporary
  directory, pinned to the same CPU (every thread: the affinity is set
  before ``exec``) at the same priority, with the load generator on CPU 1.

Janus's load is the same kind: one synthetic speaker publishing Opus at 50
packets/s (``loadgen.SyntheticSpeaker``: STUN, DTLS client, SRTP) and N of
the load generator's listeners, each a VideoRoom subscriber on a handle of
its own. Janus offers to subscribers: each listener answers
(``loadgen.Peer.answer_offer``) with its own ICE credentials, the shared
client certificate's fingerprint and ``a=setup:active``, then does the same
STUN, DTLS handshake and SRTP as against sfu, and its socket goes to the same
compiled sink. Janus rewrites the SSRC per subscriber, so the sink counts
every RTP packet of each listener (``LoadGen(per_listener_ssrcs=True)``)
and each listener's receiver reports name its own SSRC. Signalling is
Janus's HTTP API on 127.0.0.1 (one session; attach, create the room,
``joinandconfigure`` as publisher with the speaker's offer, ``join`` as
subscriber, ``start`` with the answer; events by long poll).

Janus's libnice sends its own connectivity checks even in ICE-lite mode and
nominates the pair only when they are answered, so the load generator's
peers answer checks (sfu, ICE-lite, sends none).

Janus's CPU is its process's utime + stime (``/proc/<pid>/stat``, every
thread) over the speaking window / packets the sink counted, the same as
sfu's (``total``; ``marginal`` subtracts the silent window's rate). Janus's
run-queue wait is the sum over its threads' ``schedstat``: with a thread per
handle on one CPU it counts its threads waiting for one another, so unlike
sfu's (one thread) it does not say another process took the CPU. Windows have
exact counts as for sfu: Janus has no "routed so far" counter, so after the
speaker pauses the window ends once the sink's counts stop moving.

Loopback only. Janus never gathers a candidate on a loopback interface
(``janus_ice_setup_local`` skips ``IFF_LOOPBACK``; with nothing left,
libnice falls back to the machine's other interfaces, e.g. eth0's address).
So the script re-runs itself in a private network namespace (``unshare
--net``, root) holding only ``lo`` and ``janusbench0``, an ifb device with no
link to anything and no IPv6 address, which holds 127.0.0.1/32; Janus's
``ice_enforce_list`` names it, so Janus's one candidate is 127.0.0.1 and
datagrams to it are delivered locally like any loopback datagram. There is
no route out of the namespace at all, and sfu, the C floor and the load
generator run in it too (everything is 127.0.0.1). Janus's configuration
besides: the HTTP transport bound to 127.0.0.1, every other transport and
plugin, the admin API, event handlers and loggers disabled, no STUN/TURN
server, no IPv6, mDNS candidates ignored, ICE-lite (the listeners are
full-ICE controlling agents, as against sfu), ``interface = 127.0.0.1``;
the load generator refuses a candidate that is not 127.0.0.1 before
sending anything. Checked in every run: Janus's UDP sockets (``ss -uapn``),
the namespace's interface counters (``ip -s addr``), and, when tcpdump is
installed, ``tcpdump -i any not host 127.0.0.1`` over the whole run, which
must see nothing.

Janus's threading matters: by default every handle gets its own GLib event
loop and thread (so N+1 threads for N listeners); ``--event-loops K``
shares K static loops instead (Janus's ``event_loops`` setting). Both are
recorded in the result.

Run (root: the network namespace; the janus package is optional)::

    apt-get install janus           # Debian 12: Janus 1.1.2
    python bench/janus_fanout.py --listeners 100 500

Writes ``bench/results/janus_fanout-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import aiohttp
import cpu_per_packet
import harness
import loadgen

#: Set in the re-executed process that runs inside its own network namespace.
NETNS_ENV = "SFU_BENCH_JANUS_NETNS"
#: The interface holding 127.0.0.1 that Janus gathers its candidate on (see the module doc).
INTERFACE = "janusbench0"
#: What this benchmark loads; every other plugin, transport, logger and event handler is disabled.
PLUGIN = "libjanus_videoroom.so"
TRANSPORT = "libjanus_http.so"
LIBRARY_GLOBS = (
    "/usr/lib/*/janus",
    "/usr/lib/janus",
    "/usr/local/lib/janus",
    "/opt/janus/lib/janus",
)


def janus_binary() -> str | None:
    return shutil.which("janus")


def library_folder() -> str | None:
    """Where the installed Janus keeps plugins/ and transports/ (Debian: /usr/lib/<triplet>/janus)."""
    for pattern in LIBRARY_GLOBS:
        for folder in sorted(glob.glob(pattern)):
            if os.path.exists(os.path.join(folder, "plugins", PLUGIN)):
                return folder
    return None


def janus_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    for line in out.stdout.splitlines():
        if line.startswith("Janus version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def enter_network_namespace(argv: list[str]) -> str | None:
    """Re-run this script in a new network namespace (``unshare --net``); returns
    why not when that is impossible (not root, no ``unshare``/``ip``), else never returns."""
    if os.geteuid() != 0:
        return "needs root (a private network namespace for Janus's 127.0.0.1 candidate)"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs util-linux's unshare and iproute2's ip"
    env = {**os.environ, NETNS_ENV: "1"}
    os.execvpe("unshare", ["unshare", "--net", "--", sys.executable, *argv], env)
    return None  # not reached


def set_up_network() -> None:
    """Inside the private namespace: ``lo`` up, and ``INTERFACE`` (an ifb device,
    no link to anything, no IPv6 address) holding 127.0.0.1/32. Janus never
    gathers on a loopback interface (``janus_ice_setup_local`` skips
    ``IFF_LOOPBACK``), so this is the one it gathers on; datagrams to
    127.0.0.1 are delivered locally whichever interface holds the address."""
    for command in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "add", INTERFACE, "type", "ifb"],
        ["ip", "link", "set", INTERFACE, "addrgenmode", "none"],
        ["ip", "addr", "add", f"{loadgen.LOOPBACK}/32", "dev", INTERFACE],
        ["ip", "link", "set", INTERFACE, "up"],
    ):
        subprocess.run(command, check=True, timeout=10, capture_output=True)


def network_report() -> dict[str, Any]:
    """The namespace's interfaces, addresses and packet counters (``ip -j -s addr``)."""
    out = subprocess.run(
        ["ip", "-j", "-s", "addr"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    report = {}
    for link in json.loads(out):
        report[link["ifname"]] = {
            "addresses": [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])],
            "tx_packets": link.get("stats64", {}).get("tx", {}).get("packets"),
            "rx_packets": link.get("stats64", {}).get("rx", {}).get("packets"),
        }
    return report


def udp_sockets(pid: int) -> list[str]:
    """Local and peer addresses of ``pid``'s UDP sockets (``ss -uapn``)."""
    out = subprocess.run(
        ["ss", "-H", "-uapn"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return [" ".join(line.split()[3:5]) for line in out.splitlines() if f"pid={pid}," in line]


class Capture:
    """``tcpdump -i any not host 127.0.0.1`` for the whole run, when installed:
    every datagram that is not from and to 127.0.0.1, counted (there should be none)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.path = ""

    def start(self) -> None:
        binary = shutil.which("tcpdump")
        if binary is None:
            return
        self.path = tempfile.mkstemp(prefix="janus-bench-capture-", suffix=".txt")[1]
        with open(self.path, "wb") as out:
            self.process = subprocess.Popen(
                [binary, "-i", "any", "-n", "-l", "-q", "not", "host", loadgen.LOOPBACK],
                stdout=out,
                stderr=subprocess.DEVNULL,
            )

    def stop(self) -> dict[str, Any]:
        if self.process is None:
            return {"tcpdump": "not installed"}
        time.sleep(0.5)
        self.process.terminate()
        self.process.wait(10)
        with open(self.path, errors="replace") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
        os.unlink(self.path)
        return {
            "tcpdump": "-i any -n not host 127.0.0.1",
            "packets": len(lines),
            "first": lines[:10],
        }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((loadgen.LOOPBACK, 0))
        return int(probe.getsockname()[1])


def others(folder: str, keep: str | None) -> str:
    """Comma-separated names of every ``.so`` in ``folder`` but ``keep``: Janus's ``disable``."""
    names = sorted(
        os.path.basename(path)
        for path in glob.glob(os.path.join(folder, "*.so"))
        if os.path.basename(path) != keep
    )
    return ",".join(names)


def write_config(
    folder: str, lib: str, http_port: int, event_loops: int, debug_level: int = 4
) -> str:
    """Janus's configuration, loopback only (see the module doc); returns janus.jcfg's path."""
    loops = f"\tevent_loops = {event_loops}\n" if event_loops else ""
    main = f"""general: {{
\tconfigs_folder = "{folder}"
\tplugins_folder = "{lib}/plugins"
\ttransports_folder = "{lib}/transports"
\tevents_folder = "{lib}/events"
\tloggers_folder = "{lib}/loggers"
\tdebug_level = {debug_level}
\tinterface = "{loadgen.LOOPBACK}"
\tsession_timeout = 120
{loops}}}
certificates: {{
}}
media: {{
\tipv6 = false
\tipv6_linklocal = false
}}
nat: {{
\tnice_debug = {"true" if debug_level > 6 else "false"}
\tice_lite = true
\tice_tcp = false
\tfull_trickle = false
\tignore_mdns = true
\tice_enforce_list = "{INTERFACE}"
}}
plugins: {{
\tdisable = "{others(os.path.join(lib, "plugins"), PLUGIN)}"
}}
transports: {{
\tdisable = "{others(os.path.join(lib, "transports"), TRANSPORT)}"
}}
loggers: {{
\tdisable = "{others(os.path.join(lib, "loggers"), None)}"
}}
events: {{
\tbroadcast = false
\tdisable = "{others(os.path.join(lib, "events"), None)}"
}}
"""
    http = f"""general: {{
\tjson = "compact"
\tbase_path = "/janus"
\thttp = true
\tport = {http_port}
\tip = "{loadgen.LOOPBACK}"
\thttps = false
}}
admin: {{
\tadmin_http = false
\tadmin_https = false
}}
"""
    videoroom = "general: {\n}\n"  # no static rooms: the benchmark creates its own
    path = os.path.join(folder, "janus.jcfg")
    for name, text in (
        ("janus.jcfg", main),
        ("janus.transport.http.jcfg", http),
        ("janus.plugin.videoroom.jcfg", videoroom),
    ):
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    return path


class JanusProcess:
    """Janus in a child process pinned to ``cpu``, config in a temp dir; an async context manager."""

    def __init__(
        self,
        binary: str,
        lib: str,
        *,
        cpu: int | None = harness.SERVER_CPU,
        nice: int = harness.NICE,
        event_loops: int = 0,
    ) -> None:
        self.binary = binary
        self.lib = lib
        self.cpu = cpu if cpu is not None and cpu < (os.cpu_count() or 1) else None
        self.nice = nice
        self.event_loops = event_loops
        self.folder = ""
        self.http_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = ""

    def _child_setup(self) -> None:  # runs in the child before exec
        if self.cpu is not None:
            os.sched_setaffinity(0, {self.cpu})
        if self.nice:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, self.nice)
            except OSError:
                pass

    async def __aenter__(self) -> JanusProcess:
        self.folder = tempfile.mkdtemp(prefix="janus-bench-")
        self.http_port = free_port()
        config = write_config(
            self.folder,
            self.lib,
            self.http_port,
            self.event_loops,
            int(os.environ.get("SFU_BENCH_JANUS_DEBUG", "4")),
        )
        self.log_path = os.path.join(self.folder, "janus.log")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [self.binary, "-F", self.folder, "-C", config, "-o", "-N", "-L", self.log_path],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                preexec_fn=self._child_setup,
            )
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"janus exited with {self.process.returncode}: {self.tail()}"
                    )
                try:
                    async with http.get(f"{self.base}/info") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"janus HTTP API not up after 20 s: {self.tail()}")
                await asyncio.sleep(0.2)
        return self

    @property
    def base(self) -> str:
        return f"http://{loadgen.LOOPBACK}:{self.http_port}/janus"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stats(self) -> dict[str, Any]:
        """The process's CPU, run-queue wait, threads and memory, shaped like serve.py's /stats."""
        ticks = os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # Fields 14 and 15 of stat(5), counted from 1; fields[0] is field 3.
        utime, stime = int(fields[11]) / ticks, int(fields[12]) / ticks
        waiting = 0.0
        threads = 0
        for task in glob.glob(f"/proc/{self.pid}/task/*/schedstat"):
            try:
                with open(task) as f:
                    waiting += int(f.read().split()[1]) / 1e9
                threads += 1
            except (OSError, IndexError, ValueError):
                pass
        busy = steal = 0
        with open("/proc/stat") as f:
            for line in f:
                if self.cpu is not None and line.startswith(f"cpu{self.cpu} "):
                    ticks_of = [int(value) for value in line.split()[1:9]]
                    # user nice system idle iowait irq softirq steal
                    busy = sum(ticks_of[:3]) + ticks_of[5] + ticks_of[6]
                    steal = ticks_of[7]
        rss = 0
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
        return {
            "utime": utime,
            "stime": stime,
            "sched_waiting": waiting,
            "threads": threads,
            "vmrss": rss,
            "loadavg": os.getloadavg(),
            "rooms": {},
            # Integer counters: the load generator's window turns them into deltas
            # (server_counters). Janus's CPU's busy ticks less Janus's own are what
            # other processes (and interrupts) took of it.
            "server": {
                "cpu_busy_ticks": busy,
                "cpu_steal_ticks": steal,
                "janus_ticks": int(fields[11]) + int(fields[12]),
            },
        }

    async def __aexit__(self, *exc: object) -> None:
        process = self.process
        if exc and exc[0] is not None and self.log_path:
            kept = os.path.join(tempfile.gettempdir(), "janus_fanout-failed.log")
            shutil.copyfile(self.log_path, kept)
            print(f"janus log (last lines; all in {kept}):\n{self.tail(30)}", file=sys.stderr)
        try:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)  # Janus's clean shutdown
                try:
                    await asyncio.to_thread(process.wait, 15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    await asyncio.to_thread(process.wait, 10)
        finally:
            if self.folder:
                shutil.rmtree(self.folder, ignore_errors=True)


class JanusAPI:
    """Janus's HTTP API (its JSON protocol over plain HTTP) on 127.0.0.1: one
    session, requests with a transaction each, asynchronous events by long poll.
    JSEPs carry ``"trickle": false``: the SDPs hold the only candidate, and
    Janus otherwise waits for trickled ones and declares ICE failed."""

    def __init__(self, base: str, concurrency: int) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency + 2),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        self.session = 0
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.hangups: list[dict[str, Any]] = []
        self.events = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def request(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": _transaction()}
        async with self.http.post(self.base + path, json=body) as response:
            reply: dict[str, Any] = await response.json(content_type=None)
        if reply.get("janus") == "error":
            raise ConnectionError(f"janus error: {reply.get('error')}")
        return reply

    async def start(self) -> None:
        reply = await self.request("", {"janus": "create"})
        self.session = int(reply["data"]["id"])
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._poll()), loop.create_task(self._keepalive())]

    async def attach(self) -> int:
        reply = await self.request(
            f"/{self.session}", {"janus": "attach", "plugin": "janus.plugin.videoroom"}
        )
        return int(reply["data"]["id"])

    async def message(
        self,
        handle: int,
        body: dict[str, Any],
        jsep: dict[str, Any] | None = None,
        *,
        timeout: float = 30.0,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """A plugin request; returns the plugin's reply data and any JSEP, sync or async."""
        transaction = _transaction()
        message: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            message["jsep"] = jsep
        future = asyncio.get_running_loop().create_future()
        self.pending[transaction] = future
        try:
            async with self.http.post(f"{self.base}/{self.session}/{handle}", json=message) as r:
                reply: dict[str, Any] = await r.json(content_type=None)
            if reply.get("janus") == "error":
                raise ConnectionError(f"janus error: {reply.get('error')}")
            if reply.get("janus") != "ack":  # a synchronous reply
                event = reply
            else:
                event = await asyncio.wait_for(future, timeout)
        finally:
            self.pending.pop(transaction, None)
        data = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise ConnectionError(f"videoroom error {data.get('error_code')}: {data['error']}")
        return data, event.get("jsep")

    async def _poll(self) -> None:
        while True:
            try:
                async with self.http.get(
                    f"{self.base}/{self.session}",
                    params={"maxev": "100"},
                    timeout=aiohttp.ClientTimeout(total=45),
                ) as response:
                    reply = await response.json(content_type=None)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                await asyncio.sleep(0.2)
                continue
            for event in reply if isinstance(reply, list) else [reply]:
                self.events += 1
                kind = event.get("janus")
                transaction = event.get("transaction")
                if kind == "event" and transaction in self.pending:
                    future = self.pending[transaction]
                    if not future.done():
                        future.set_result(event)
                elif kind == "hangup":
                    self.hangups.append(event)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(20)
            try:
                await self.request(f"/{self.session}", {"janus": "keepalive"})
            except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError):
                pass

    async def close(self) -> None:
        await loadgen.cancel_tasks(self._tasks)
        if self.session:
            try:
                await asyncio.wait_for(self.request(f"/{self.session}", {"janus": "destroy"}), 10)
            except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError):
                pass
        await self.http.close()


def _transaction() -> str:
    return f"{random.getrandbits(64):016x}"


class JanusLoadGen(loadgen.LoadGen):
    """The load generator against Janus VideoRoom: same peers, sink and windows,
    Janus's signalling and Janus's process counters instead of serve.py's."""

    def __init__(self, janus: JanusProcess, api: JanusAPI, **kwargs: Any) -> None:
        super().__init__(0, per_listener_ssrcs=True, **kwargs)
        self.janus = janus
        self.api = api
        self.room_id = random.randrange(1, 1 << 31)
        self.publisher_id = 0

    async def server_stats(self, reset_lag: bool = False) -> dict[str, Any]:
        return self.janus.stats()

    async def _post_offer(self, peer: loadgen.Peer, role: str) -> loadgen.Answer:
        handle = await self.api.attach()
        peer.offer_ns = time.time_ns()
        if role == "speaker":
            await self.api.message(
                handle,
                {
                    "request": "create",
                    "room": self.room_id,
                    "publishers": 1,
                    "audiocodec": "opus",
                    "audiolevel_ext": True,
                    "audiolevel_event": False,
                    "notify_joining": False,
                },
            )
            data, jsep = await self.api.message(
                handle,
                {
                    "request": "joinandconfigure",
                    "ptype": "publisher",
                    "room": self.room_id,
                    "display": peer.identity,
                    "audio": True,
                    "video": False,
                },
                {"type": "offer", "sdp": peer.offer, "trickle": False},
            )
            if jsep is None or jsep.get("type") != "answer":
                raise ConnectionError(f"publisher join without an answer: {data}")
            self.publisher_id = int(data["id"])
            peer.answer_ns = time.time_ns()
            return loadgen.parse_answer(jsep["sdp"])
        data, jsep = await self.api.message(
            handle,
            {
                "request": "join",
                "ptype": "subscriber",
                "room": self.room_id,
                "streams": [{"feed": self.publisher_id}],
            },
        )
        if jsep is None or jsep.get("type") != "offer":
            raise ConnectionError(f"subscriber join without an offer: {data}")
        remote, local = peer.answer_offer(jsep["sdp"])
        peer.offer = local  # what this peer sent (here an answer)
        await self.api.message(
            handle,
            {"request": "start", "room": self.room_id},
            {"type": "answer", "sdp": local, "trickle": False},
        )
        peer.answer_ns = time.time_ns()
        return remote

    async def settle(self, seconds: float, limit: float = 10.0) -> float:
        """Wait ``seconds``, then until the sink's counts stop moving (Janus has
        no "routed so far" counter to wait for), at most ``limit`` seconds."""
        start = time.monotonic()
        await asyncio.sleep(seconds)
        last = -1
        while time.monotonic() - start < limit:
            total = int(self.sink.packets.sum()) if self.sink is not None else 0
            if total == last:
                break
            last = total
            await asyncio.sleep(0.1)
        return time.monotonic() - start


async def run_janus(args: argparse.Namespace, binary: str, lib: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"version": janus_version(binary), "event_loops": args.event_loops}
    async with JanusProcess(binary, lib, event_loops=args.event_loops) as janus:
        api = JanusAPI(janus.base, args.concurrency)
        try:
            await api.start()
            async with JanusLoadGen(
                janus,
                api,
                capacity=max(args.listeners) + 16,
                concurrency=args.concurrency,
                profiles=args.srtp.encode(),
            ) as gen:
                await gen.add_speaker()
                for n in sorted(args.listeners):
                    late = gen.late_ticks
                    send_errors = sum(speaker.send_errors for speaker in gen.speakers)
                    row = await cpu_per_packet.grow_and_measure(gen, n, args, "janus")
                    row["loadgen_late_ticks"] = gen.late_ticks - late
                    ticks = os.sysconf("SC_CLK_TCK")
                    for window in ("silent", "speaking"):
                        counters = row[window]["server_counters"]
                        row[window]["server_cpu_others_s"] = (
                            counters.get("cpu_busy_ticks", 0) - counters.get("janus_ticks", 0)
                        ) / ticks
                        row[window]["server_cpu_steal_s"] = (
                            counters.get("cpu_steal_ticks", 0) / ticks
                        )
                    row["speaker_send_errors"] = (
                        sum(speaker.send_errors for speaker in gen.speakers) - send_errors
                    )
                    after = janus.stats()
                    row["janus_threads"] = after["threads"]
                    row["janus_vmrss"] = after["vmrss"]
                    row["janus_hangups"] = len(api.hangups)
                    rows.append(row)
                    s = row["speaking"]
                    print(
                        f"   janus N={row['listeners']:>5} total "
                        f"{cpu_per_packet.fmt(row['us_per_packet_total'])} us/pkt, marginal "
                        f"{cpu_per_packet.fmt(row['us_per_packet_marginal'])} us/pkt, loss "
                        f"{s['loss']:.4%}, janus CPU {s['server_cpu_share']:.0%}, loadgen CPU "
                        f"{s['loadgen_cpu_share']:.0%}, others on its CPU "
                        f"{s['server_cpu_others_s']:.2f} s (steal {s['server_cpu_steal_s']:.2f} s), "
                        f"{after['threads']} threads, "
                        f"joins failed {row['joins']['failed']} {row['joins']['failures']}, speaker sent "
                        f"{s['speaker_packets']} in {s['seconds']} s (late ticks "
                        f"{row['loadgen_late_ticks']}, send errors {row['speaker_send_errors']})",
                        flush=True,
                    )
                    if row["joins"]["failed"] or s["server_cpu_share"] > 0.98:
                        print(f"   janus: stopping at N={n} (join failures or a saturated core)")
                        break
                sockets = udp_sockets(janus.pid)
                info["udp_sockets"] = len(sockets)
                info["udp_local_addresses"] = sorted(
                    {entry.split()[0].rsplit(":", 1)[0] for entry in sockets}
                )
                info["udp_peer_addresses"] = sorted(
                    {entry.split()[1].rsplit(":", 1)[0] for entry in sockets}
                )
        finally:
            info["log_tail"] = janus.tail(40)
            info["events"] = api.events
            await api.close()
    info["rows"] = rows
    return info


def table(
    rows: list[dict[str, Any]], floors: dict[int, Any], batched: dict[int, Any]
) -> list[dict[str, Any]]:
    by = {(row["path"], row["listeners"]): row for row in rows}
    out = []
    for n in sorted({row["listeners"] for row in rows}):
        entry: dict[str, Any] = {
            "listeners": n,
            "floor_us": floors.get(n, {}).get("us_per_packet"),
            "batched_floor_us": batched.get(n, {}).get("us_per_packet"),
        }
        for label in ("compiled", "janus"):
            row = by.get((label, n))
            if row is None:
                continue
            cpu_per_packet.add_path_columns(entry, label, row, entry["floor_us"])
            entry[f"{label}_worst_listener_loss"] = row["speaking"]["worst_listener_loss"]
        compiled, janus = by.get(("compiled", n)), by.get(("janus", n))
        if compiled and janus and compiled["us_per_packet_total"] and janus["us_per_packet_total"]:
            entry["janus_x_compiled_total"] = (
                janus["us_per_packet_total"] / compiled["us_per_packet_total"]
            )
        out.append(entry)
    return out


def skipped_because() -> str | None:
    """Why this benchmark cannot run here (Janus is optional), or None."""
    if janus_binary() is None:
        return "no `janus` on PATH (optional: Debian's janus package, `apt-get install janus`)"
    if library_folder() is None:
        return f"no Janus plugins folder with {PLUGIN}"
    return None


async def main(args: argparse.Namespace) -> int:
    binary, lib = janus_binary(), library_folder()
    assert binary is not None and lib is not None
    harness.RESULTS = args.results_dir
    cpus = harness.pin_loadgen()
    floors: dict[int, Any] = {}
    batched: dict[int, Any] = {}
    rows: list[dict[str, Any]] = []
    if not args.janus_only:
        rows += await cpu_per_packet.run_path(args, False, floors, batched)
    janus = await run_janus(args, binary, lib)
    janus["network"] = network_report()
    rows += janus.pop("rows")
    summary = table(rows, floors, batched)
    print("\n    N  floor  compiled  x floor   janus(total/marg)  x floor  janus/compiled  loss")
    fmt = cpu_per_packet.fmt
    for e in summary:
        print(
            f"{e['listeners']:>5} {fmt(e['floor_us'])}  {fmt(e.get('compiled_total_us'))}  "
            f"{fmt(e.get('compiled_total_x_floor'))}   {fmt(e.get('janus_total_us'))} "
            f"{fmt(e.get('janus_marginal_us'))}  {fmt(e.get('janus_total_x_floor'))}  "
            f"{fmt(e.get('janus_x_compiled_total'))}        {e.get('janus_loss', 0):.4%}"
        )
    path = harness.write_result(
        "janus_fanout",
        {
            "args": vars(args),
            "loadgen_cpus": cpus,
            "janus": janus,
            "summary": summary,
            "floors": floors,
            "batched_floors": batched,
            "rows": rows,
        },
    )
    print(f"wrote {path}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cpu_per_packet.build_parser(__doc__)
    parser.set_defaults(listeners=[100, 500], paths=["compiled"])
    parser.add_argument(
        "--event-loops",
        type=int,
        default=0,
        help="Janus's event_loops: K shared static loops; 0 (Janus's default): a loop and "
        "thread per handle",
    )
    parser.add_argument(
        "--janus-only", action="store_true", help="skip sfu and the C floor (a quick check)"
    )
    parser.add_argument("--results-dir", default=harness.RESULTS, help="where the JSON result goes")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    reason = skipped_because()
    if reason is None and os.environ.get(NETNS_ENV) != "1":
        reason = enter_network_namespace([os.path.abspath(__file__), *sys.argv[1:]])
    if reason is not None:
        print(f"janus_fanout: skipped: {reason}")
        sys.exit(0)
    set_up_network()
    capture = Capture()
    capture.start()
    try:
        code = harness.run(main(arguments), 1800)
    finally:
        print("capture:", json.dumps(capture.stop()))
    sys.exit(code)
