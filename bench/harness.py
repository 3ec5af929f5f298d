"""Shared plumbing of the benchmarks: the server process, the floor, results.

* :class:`ServerProcess` starts ``bench/serve.py`` pinned to one CPU (with
  ``SFU_NO_EXTENSIONS=1`` for the pure-Python path) and stops it.
* :func:`run_floor` runs the C floor (``srtp_protect`` + ``sendto`` per
  datagram, :func:`bench._sink.floor_protect_sendto`) in its own process
  pinned to the server's CPU, sending from the server's media socket (lent
  by ``bench/serve.py``), and returns its CPU per datagram.
* :func:`write_result` writes ``bench/results/<name>-<date>.json``.
* :func:`run` runs a benchmark's coroutine on uvloop when it is installed
  (as the server does): the load generator then spends less of its one CPU
  on its own event loop, so it sets the pace less often.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
#: Where results are written (a test points it at a temporary directory).
RESULTS = os.environ.get("SFU_BENCH_RESULTS") or os.path.join(HERE, "results")
SERVER_CPU = 0
LOADGEN_CPU = 1
#: Priority of the server and the load generator: ahead of whatever else runs
#: on a shared machine (root only; otherwise ignored).
NICE = int(os.environ.get("SFU_BENCH_NICE", "-15"))


def run(main: Coroutine[Any, Any, T], timeout: float) -> T:
    """Run ``main`` (bounded by ``timeout`` seconds) on uvloop if installed."""
    bounded = asyncio.wait_for(main, timeout)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(bounded)
    return uvloop.run(bounded)


def pin_loadgen(cpu: int | None = LOADGEN_CPU, nice: int = NICE) -> list[int]:
    """Pin this process (the load generator) to ``cpu`` when the machine has it."""
    if cpu is not None and cpu < (os.cpu_count() or 1) and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})
    if nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError:
            pass  # not root: default priority
    return sorted(os.sched_getaffinity(0))


class ServerProcess:
    """``bench/serve.py`` in a child process; an async context manager."""

    def __init__(
        self,
        *,
        cpu: int | None = SERVER_CPU,
        no_extensions: bool = False,
        lag_interval: float = 0.01,
        max_seconds: float = 600.0,
        nice: int = NICE,
        extra: list[str] | None = None,
    ) -> None:
        self.cpu = cpu
        self.no_extensions = no_extensions
        self.args = [
            sys.executable,
            os.path.join(HERE, "serve.py"),
            "--lag-interval",
            str(lag_interval),
            "--max-seconds",
            str(max_seconds),
            "--nice",
            str(nice),
            *(extra or []),
        ]
        if cpu is not None and 1 < (os.cpu_count() or 1) and cpu < (os.cpu_count() or 1):
            self.args += ["--cpu", str(cpu)]
        self.process: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}

    async def __aenter__(self) -> ServerProcess:
        env = dict(os.environ)
        env.pop("SFU_NO_EXTENSIONS", None)
        if self.no_extensions:
            env["SFU_NO_EXTENSIONS"] = "1"
        tree = env.get("SFU_TREE") or ROOT
        env["PYTHONPATH"] = tree + os.pathsep + env.get("PYTHONPATH", "")
        self.process = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE, env=env, cwd=ROOT
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 30)
        if not line:
            raise RuntimeError("bench/serve.py exited before it was ready")
        self.info = json.loads(line)
        if self.info["extension"] == self.no_extensions:
            raise RuntimeError(
                f"server fan-out extension={self.info['extension']}, wanted {not self.no_extensions}"
            )
        return self

    @property
    def control(self) -> int:
        return int(self.info["control"])

    async def __aexit__(self, *exc: object) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 20)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()


FLOOR_SCRIPT = r"""
import json, os, resource, socket, sys, time
sys.path.insert(0, sys.argv[1])
import pylibsrtp, _sink
spec = json.load(sys.stdin)
if spec["cpu"] is not None:
    os.sched_setaffinity(0, {spec["cpu"]})
try:
    os.setpriority(os.PRIO_PROCESS, 0, spec["nice"])
except OSError:
    pass
profile = getattr(pylibsrtp.Policy, spec["profile"])
sessions = [pylibsrtp.Session(pylibsrtp.Policy(key=os.urandom(spec["key_length"]),
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
            for _ in spec["ports"]]
addresses = [("127.0.0.1", port) for port in spec["ports"]]
n = len(addresses)
packet = bytes.fromhex(spec["packet"])
if spec.get("fd") is not None:
    # The server's own media socket, lent by bench/serve.py: the listeners'
    # sockets are connected to its address, so only datagrams from it arrive.
    sock = socket.socket(fileno=spec["fd"])
else:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        sock.setsockopt(socket.SOL_SOCKET, 32, 4 << 20)  # SO_SNDBUFFORCE, as the server
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
send = _sink.floor_protect_sendmmsg if spec["mode"] == "sendmmsg" else _sink.floor_protect_sendto
sequence = 0
def bursts(count):
    # The server's pattern: one datagram to every receiver each 20 ms.
    global sequence
    sent = 0
    due = time.monotonic()
    for _ in range(count):
        sent += send(sock, sessions, addresses, packet, n, sequence)
        sequence += 1
        due += spec["interval"]
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return sent
bursts(5)  # warm up
runs = []
for _ in range(spec["repeat"]):
    before = resource.getrusage(resource.RUSAGE_SELF)
    count = spec["count"]
    sent = bursts(count)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    runs.append({"sent": sent, "attempted": count * n, "cpu_s": cpu, "us_per_packet": cpu / max(sent, 1) * 1e6})
best = min(runs, key=lambda run: run["us_per_packet"])
values = sorted(run["us_per_packet"] for run in runs)
print(json.dumps({**best, "median_us_per_packet": values[len(values) // 2], "runs_us": values}))
"""

#: libsrtp profile constant name and master key length, per OpenSSL profile name.
FLOOR_PROFILES = {
    "SRTP_AEAD_AES_128_GCM": ("SRTP_PROFILE_AEAD_AES_128_GCM", 28),
    "SRTP_AES128_CM_SHA1_80": ("SRTP_PROFILE_AES128_CM_SHA1_80", 30),
}


def handshake_crypto(count: int) -> dict[str, float]:
    """CPU µs per operation of a DTLS handshake's crypto on the server's side,
    through ``cryptography``'s OpenSSL: one X25519 key exchange, one ECDSA
    P-256 signature (ServerKeyExchange), one verification (the client's
    CertificateVerify); ``handshake_floor_us`` is their sum."""
    import time

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, x25519

    signing_key = ec.generate_private_key(ec.SECP256R1())
    public_key = signing_key.public_key()
    transcript = os.urandom(200)
    signature = signing_key.sign(transcript, ec.ECDSA(hashes.SHA256()))
    peer_public = x25519.X25519PrivateKey.generate().public_key()
    operations = {
        "x25519_keygen_and_exchange_us": lambda: x25519.X25519PrivateKey.generate().exchange(
            peer_public
        ),
        "ecdsa_p256_sign_us": lambda: signing_key.sign(transcript, ec.ECDSA(hashes.SHA256())),
        "ecdsa_p256_verify_us": lambda: public_key.verify(
            signature, transcript, ec.ECDSA(hashes.SHA256())
        ),
    }
    timings = {}
    for name, operation in operations.items():
        start = time.process_time()
        for _ in range(count):
            operation()
        timings[name] = round((time.process_time() - start) / count * 1e6, 1)
    timings["handshake_floor_us"] = round(sum(timings.values()), 1)
    return timings


CRYPTO_PROBE = r"""
import json, os, sys
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["here"])
import harness
if spec["cpu"] is not None:
    os.sched_setaffinity(0, {spec["cpu"]})
runs = [harness.handshake_crypto(spec["count"]) for _ in range(spec["repeat"])]
print(json.dumps({"us": min(run["handshake_floor_us"] for run in runs)}))
"""


SPEED_PROBE = r"""
import json, os, sys, time
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["here"])
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, x25519
if spec["cpu"] is not None:
    os.sched_setaffinity(0, {spec["cpu"]})
key = ec.generate_private_key(ec.SECP256R1())
public, transcript = key.public_key(), os.urandom(200)
signature = key.sign(transcript, ec.ECDSA(hashes.SHA256()))
peer = x25519.X25519PrivateKey.generate().public_key()
samples = []
print("ready", flush=True)
deadline = time.monotonic() + spec["limit"]
def one_set():
    x25519.X25519PrivateKey.generate().exchange(peer)
    key.sign(transcript, ec.ECDSA(hashes.SHA256()))
    public.verify(signature, transcript, ec.ECDSA(hashes.SHA256()))
while time.monotonic() < deadline and not os.path.exists(spec["stop"]):
    one_set()  # untimed: after the sleep the caches are cold
    start = time.thread_time()
    for _ in range(spec["batch"]):
        one_set()
    samples.append((time.monotonic(), (time.thread_time() - start) / spec["batch"] * 1e6))
    time.sleep(spec["interval"])
print(json.dumps(samples))
"""


class SpeedProbe:
    """How fast the shared machine runs *during* a run: a process pinned to
    ``cpu`` that, every ``interval`` seconds, times (in its own CPU time, so
    waiting for the CPU does not count) ``batch`` sets of a DTLS handshake's
    crypto (X25519, ECDSA P-256 sign and verify) after one untimed set,
    about 2 % of that core. Sampled in short bursts after sleeps, it reads
    above :func:`run_crypto_probe`'s tight loop on a quiet machine; compare
    it with itself (the same probe in the seconds before a storm).

    The probes run after a storm (``run_crypto_probe``, ``run_floor``) see
    the machine a few seconds later, and its speed moves within seconds;
    this one samples the storm's own seconds. It runs on the load
    generator's core, so it does not take CPU from the server; the two
    vCPUs slow down together when the host is busy (the load generator's
    CPU for the same work moves with the server's). An async context
    manager; :meth:`median_us` gives the median over a time window.
    """

    def __init__(
        self,
        cpu: int | None = LOADGEN_CPU,
        *,
        interval: float = 0.050,
        batch: int = 3,
        limit: float = 300.0,
    ) -> None:
        if cpu is not None and (cpu >= (os.cpu_count() or 1) or (os.cpu_count() or 1) < 2):
            cpu = None
        self._spec = {"cpu": cpu, "interval": interval, "batch": batch, "limit": limit}
        self._process: asyncio.subprocess.Process | None = None
        self._stop = ""
        self.samples: list[tuple[float, float]] = []

    async def __aenter__(self) -> SpeedProbe:
        import tempfile

        handle, self._stop = tempfile.mkstemp(prefix="sfu-speed-probe-")
        os.close(handle)
        os.unlink(self._stop)  # the probe stops when this path exists
        spec = json.dumps({**self._spec, "here": HERE, "stop": self._stop})
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SPEED_PROBE, spec, stdout=asyncio.subprocess.PIPE
        )
        assert self._process.stdout is not None
        try:
            ready = await asyncio.wait_for(self._process.stdout.readline(), 60)
            if ready.strip() != b"ready":
                raise RuntimeError("speed probe did not start")
        except BaseException:
            self._process.kill()
            await self._process.wait()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        process = self._process
        if process is None:
            return
        open(self._stop, "w").close()
        try:
            out, _ = await asyncio.wait_for(process.communicate(), 30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            os.unlink(self._stop)
        if process.returncode == 0 and out.strip():
            self.samples = [(float(t), float(us)) for t, us in json.loads(out)]

    def median_us(self, start: float, end: float) -> float | None:
        """The median sample taken between monotonic times ``start`` and ``end``."""
        inside = sorted(us for t, us in self.samples if start <= t <= end)
        return round(inside[len(inside) // 2], 1) if inside else None


async def run_crypto_probe(
    count: int = 200, *, cpu: int | None = SERVER_CPU, repeat: int = 3
) -> float:
    """CPU µs of a DTLS handshake's crypto (X25519, ECDSA P-256 sign and
    verify), best of ``repeat`` in a process pinned to ``cpu``: how fast the
    (shared) machine runs a join's heaviest code right now."""
    if cpu is not None and (cpu >= (os.cpu_count() or 1) or (os.cpu_count() or 1) < 2):
        cpu = None
    spec = json.dumps({"count": count, "cpu": cpu, "repeat": repeat, "here": HERE})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRYPTO_PROBE, spec, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    if process.returncode != 0:
        raise RuntimeError(f"crypto probe failed with exit code {process.returncode}")
    return float(json.loads(out)["us"])


async def run_floor(
    ports: list[int],
    packet: bytes,
    count: int,
    profile: str,
    *,
    control: int | None = None,
    sink: Any = None,
    cpu: int | None = SERVER_CPU,
    repeat: int = 3,
    interval: float = 0.020,
    mode: str = "sendto",
) -> dict[str, Any]:
    """CPU µs per datagram of the C floor, in a process pinned to ``cpu``.

    In bursts like the server's fan-out: every ``interval`` one datagram to
    each of ``ports`` on 127.0.0.1 (the listeners' sockets), each receiver
    with its own SRTP session of ``profile``; ``count`` bursts per
    measurement, best and median of ``repeat``. (A flat-out loop would
    overrun the sink and measure EAGAIN and receive-buffer drops instead of
    deliveries.) ``mode``: ``"sendto"``, one syscall per datagram (the
    issue's floor), or ``"sendmmsg"``, batches of 64 (what the server's
    fan-out does). ``packet`` must carry ``_sink.FLOOR_SSRC``.

    ``control``: the control port of a ``bench/serve.py``, which then runs the
    floor process with its media socket, so the datagrams leave from the
    server's address and the listeners' connected sockets take them, as they
    take the server's. Without it the floor sends from a port of its own,
    and a listener socket connected to the server drops every datagram: the
    receive side is then not paid and the floor reads low. ``sink``: the
    load generator's :class:`_sink.Sink`, to count what arrived
    (``delivered``; it must be draining while the floor runs).
    """
    name, key_length = FLOOR_PROFILES[profile]
    if cpu is not None and cpu >= (os.cpu_count() or 1):
        cpu = None
    spec = {
        "ports": ports,
        "packet": packet.hex(),
        "count": count,
        "profile": name,
        "key_length": key_length,
        "cpu": cpu if (os.cpu_count() or 1) > 1 else None,
        "repeat": repeat,
        "nice": NICE,
        "interval": interval,
        "mode": mode,
    }
    arrived_before = int(sink.floor.sum()) if sink is not None else 0
    if control is not None:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{control}/floor",
                json=spec,
                timeout=aiohttp.ClientTimeout(total=120),
            ) as response:
                result: dict[str, Any] = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"serve.py could not run the floor: {result}")
    else:
        result = json.loads(await floor_process(spec))
    result["profile"] = profile
    result["mode"] = mode
    result["source"] = "server socket" if control is not None else "own socket"
    result["receivers"] = len(ports)
    result["packet_bytes"] = len(packet)
    if sink is not None:
        await asyncio.sleep(0.2)  # the last burst's datagrams reach the sink
        result["delivered"] = int(sink.floor.sum()) - arrived_before
    return result


async def floor_process(spec: dict[str, Any], lend_fd: int | None = None) -> bytes:
    """Run :data:`FLOOR_SCRIPT` with ``spec``; ``lend_fd``: a socket it sends
    from (inherited, the caller's stays open). Its JSON line, as bytes."""
    if lend_fd is not None:
        spec = {**spec, "fd": lend_fd}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FLOOR_SCRIPT,
        HERE,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        pass_fds=(lend_fd,) if lend_fd is not None else (),
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(json.dumps(spec).encode()), 120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"the floor process failed (exit {process.returncode})")
    return out


def parser(
    doc: str | None, *, listeners: int | None = 1000, concurrency: int = 64
) -> argparse.ArgumentParser:
    """The options every benchmark against a server process shares: ``--listeners``
    (unless None), ``--concurrency`` (joins in flight) and ``--no-extensions``."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    if listeners is not None:
        parser.add_argument("--listeners", type=int, default=listeners)
    parser.add_argument(
        "--concurrency", type=int, default=concurrency, help="joins in flight at once"
    )
    parser.add_argument(
        "--no-extensions", action="store_true", help="server with SFU_NO_EXTENSIONS=1"
    )
    return parser


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as info:
            model = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                "",
            )
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def steal_seconds() -> float:
    """CPU time the hypervisor gave to others while this VM wanted it, all CPUs,
    since boot (``/proc/stat``; 0 where the kernel does not report it)."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return 0.0
    if len(fields) < 9 or fields[0] != "cpu":
        return 0.0
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


def commit(tree: str) -> str | None:
    """The commit of ``tree``: ``git rev-parse HEAD``, or a ``.commit`` file beside an export."""
    try:
        return subprocess.run(
            ["git", "-C", tree, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open(tree.rstrip("/") + ".commit") as f:
            return f.read().strip() or None
    except OSError:
        return None


def write_result(name: str, data: dict[str, Any]) -> str:
    """Write ``bench/results/<name>-<date>.json``; return its path."""
    os.makedirs(RESULTS, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(RESULTS, f"{name}-{stamp}.json")
    tree = os.environ.get("SFU_TREE") or ROOT
    data = {
        "benchmark": name,
        "date": stamp,
        "machine": machine(),
        "sfu_tree": tree,
        "sfu_commit": commit(tree),
        **data,
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=2, default=float)
        f.write("\n")
    return path


def percentile(values: Any, q: float) -> float | None:
    import numpy as np

    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return None
    return float(np.percentile(array, q))
