"""Fixtures and helpers shared by the whole suite.

* The test process runs in its own network namespace whose only interface is
  ``lo`` (:func:`isolate_network`, from ``pytest_configure``, before any
  thread or socket exists): every client, browser and server started by a
  test, and their child processes, can reach 127.0.0.0/8 and ::1 and nothing
  else. Chromium in particular gathers candidates on every interface it sees
  (``--allow-loopback-in-peer-connection`` adds loopback to them, it does not
  replace them), and would send checks and media to the machine's own
  non-loopback address. Needs root, or unprivileged user namespaces.
  ``SFU_TEST_HOST_NETWORK=1`` turns it off; :data:`NETWORK_ISOLATION` says
  what happened, and browser tests skip when it failed.
* Every test runs with aioice pinned to loopback (autouse ``loopback_only``):
  aiortc clients made in tests gather exactly one host candidate, 127.0.0.1,
  and never touch another interface. Build client peers with
  :func:`client_configuration` (no STUN/TURN server).
* Every asyncio test is checked for tasks it leaves running (autouse
  ``no_leftover_tasks``): after the test and its function-scoped fixtures have
  finished, a task created since the test started that is still pending after
  a short grace period fails the test with the tasks' names. Mark a test
  ``@pytest.mark.allow_leftover_tasks`` to opt out, or call
  :func:`assert_no_leftover_tasks` yourself at a point of your choosing.
* Logging: records of the ``sfu`` logger at DEBUG are captured and shown for
  a failing test; chatty third-party loggers are held at INFO.
* Tests marked ``compiled_and_python_alike`` reach nothing that
  ``SFU_NO_EXTENSIONS`` selects: the ``SFU_NO_EXTENSIONS=1`` run deselects
  them (they ran in the compiled run), unless ``-m`` names the mark; wherever
  one runs, the autouse ``alike_guard`` fails it if it used what that
  variable selects (see :mod:`tests.alike`).

* ``SFU_TEST_LOOP=uvloop`` runs every asyncio test on uvloop's loop (the
  demo and ``bench/`` serve on it when it is installed, and its transports
  differ from asyncio's in ways the product must cope with); by default the
  tests run on asyncio's own loop, as an application without uvloop does.

Import the helpers as ``from tests.conftest import client_configuration``.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import logging
import os
import socket
import struct
import sys
import threading
from collections.abc import Collection, Iterator
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCConfiguration

from . import alike, twins

LOOPBACK = "127.0.0.1"

if os.environ.get("SFU_TEST_LOOP", "asyncio") not in ("asyncio", "uvloop"):
    raise pytest.UsageError(
        f"SFU_TEST_LOOP is 'asyncio' or 'uvloop', not {os.environ['SFU_TEST_LOOP']!r}"
    )

ON_UVLOOP = os.environ.get("SFU_TEST_LOOP") == "uvloop"

#: Tests that measure asyncio's own loop through its internals (its iteration
#: ``_run_once``): deselected on uvloop, whose loop has none of them.
ASYNCIO_INTERNALS = "asyncio_loop_internals"

if ON_UVLOOP:
    import uvloop

    def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
        """Every asyncio test on uvloop (pytest-asyncio's hook)."""
        return {"uvloop": uvloop.new_event_loop}


# Tasks that libraries start on their own behalf and own for longer than one
# test (Playwright's connection to its driver, pytest-asyncio's runner).
IGNORED_TASK_MODULES: tuple[str, ...] = ("playwright.", "pytest_asyncio.", "_pytest.")

# Loggers that would drown the sfu log at DEBUG (aiortc logs every RTP packet).
QUIET_LOGGERS = ("aioice", "aiortc", "asyncio", "playwright", "hpack", "websockets", "av")


def client_configuration() -> RTCConfiguration:
    """Configuration for a test's aiortc ``RTCPeerConnection``: no ICE servers.

    aiortc's default configuration would contact a public STUN server.
    """
    return RTCConfiguration(iceServers=[])


# ---------------------------------------------------------------- network namespace

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


class NetworkIsolation:
    """Outcome of :func:`isolate_network` for this test session."""

    isolated: bool = False
    reason: str = "not attempted"


NETWORK_ISOLATION = NetworkIsolation()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def isolate_network() -> None:
    """Move this process into a new network namespace with only ``lo``, up.

    unshare(2) moves only the calling thread; threads and processes started
    afterwards inherit its namespace, so call it while single-threaded. As
    root a plain CLONE_NEWNET; otherwise with a user namespace that maps our
    own uid/gid (the capabilities it grants are enough to bring ``lo`` up and
    are dropped by any exec). Raises OSError when the kernel refuses.
    """
    if sys.platform != "linux":
        raise OSError("network namespaces need Linux")
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.geteuid(), os.getegid()
    flags = _CLONE_NEWNET if uid == 0 else _CLONE_NEWNET | _CLONE_NEWUSER
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
    if uid != 0:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        _, lo_flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", lo_flags | _IFF_UP))


def _isolate_session() -> None:
    if os.environ.get("SFU_TEST_HOST_NETWORK", "") not in ("", "0"):
        NETWORK_ISOLATION.reason = "SFU_TEST_HOST_NETWORK is set"
        return
    if threading.active_count() > 1:
        # Threads already running would stay in the host namespace.
        NETWORK_ISOLATION.reason = f"{threading.active_count()} threads already running"
        return
    try:
        isolate_network()
    except OSError as exc:
        NETWORK_ISOLATION.reason = str(exc)
        return
    NETWORK_ISOLATION.isolated = True
    NETWORK_ISOLATION.reason = "own network namespace, lo only"


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = "isolated" if NETWORK_ISOLATION.isolated else "HOST NETWORK"
    lines = [f"network: {state} ({NETWORK_ISOLATION.reason})"]
    if twins.NO_EXTENSIONS and not _alike_asked(config):
        lines.append(
            f"SFU_NO_EXTENSIONS is set: tests marked {alike.MARK} are deselected "
            "(they run alike in the compiled run; see tests/alike.py)"
        )
    if ON_UVLOOP:
        lines.append(
            f"SFU_TEST_LOOP=uvloop: asyncio tests run on uvloop; tests marked "
            f"{ASYNCIO_INTERNALS} are deselected (they measure asyncio's own loop)"
        )
    return lines


def pytest_configure(config: pytest.Config) -> None:
    _isolate_session()
    config.addinivalue_line(
        "markers",
        "allow_leftover_tasks: skip the check for asyncio tasks left running by the test",
    )
    config.addinivalue_line(
        "markers",
        f"{alike.MARK}: reaches nothing SFU_NO_EXTENSIONS selects; run in the compiled "
        "run only (tests/alike.py)",
    )
    config.addinivalue_line(
        "markers",
        f"{ASYNCIO_INTERNALS}: measures asyncio's own loop through its internals; "
        "deselected when SFU_TEST_LOOP=uvloop",
    )
    logging.getLogger("sfu").setLevel(logging.DEBUG)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


# ------------------------------------------------- compiled_and_python_alike


def _alike_asked(config: pytest.Config) -> bool:
    """``-m`` names the mark: the marked tests are wanted in this run too."""
    return alike.MARK in (config.getoption("markexpr", "") or "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With SFU_NO_EXTENSIONS set, deselect the tests marked compiled_and_python_alike;
    on uvloop, those marked asyncio_loop_internals."""
    if ON_UVLOOP:
        internal = [item for item in items if item.get_closest_marker(ASYNCIO_INTERNALS)]
        if internal:
            chosen = set(internal)
            items[:] = [item for item in items if item not in chosen]
            config.hook.pytest_deselected(items=internal)
    if not twins.NO_EXTENSIONS or _alike_asked(config):
        return
    alike_items = [item for item in items if item.get_closest_marker(alike.MARK)]
    if alike_items:
        chosen = set(alike_items)
        items[:] = [item for item in items if item not in chosen]
        config.hook.pytest_deselected(items=alike_items)


@pytest.fixture(autouse=True)
def alike_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test marked compiled_and_python_alike fails if it used what
    SFU_NO_EXTENSIONS selects or started a Python process (tests/alike.py).
    ``SFU_ALIKE_REPORT=<file>``: every test is watched, none fails, and the
    file says what each used."""
    marked = request.node.get_closest_marker(alike.MARK) is not None
    if not (marked or alike.REPORT):
        yield
        return
    with alike.guard() as uses:
        yield
    if alike.REPORT:
        alike.record(request.node.nodeid, uses)
    elif (message := alike.violation(uses)) is not None:
        pytest.fail(message, pytrace=False)


def pytest_sessionfinish(session: pytest.Session) -> None:
    alike.write_report()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make aioice (so aiortc) gather host candidates on 127.0.0.1 only.

    aioice leaves loopback out and uses every other interface; its
    ``Connection.gather_candidates`` looks the function up in ``aioice.ice``'s
    globals at call time, so patching the module attribute is enough.
    """

    def get_host_addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
        return [LOOPBACK] if use_ipv4 else []

    monkeypatch.setattr(aioice.ice, "get_host_addresses", get_host_addresses)


# ----------------------------------------------------------------- leftover tasks


def _task_module(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
    if frame is not None:
        return str(frame.f_globals.get("__name__", ""))
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    return code.co_filename if code is not None else ""


def _describe(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    what = getattr(coro, "__qualname__", None) or repr(coro)
    # The creation site is only recorded in asyncio debug mode (PYTHONASYNCIODEBUG=1).
    source = getattr(task, "_source_traceback", None)
    where = f", created at {source[-1].filename}:{source[-1].lineno}" if source else ""
    return f"{task.get_name()} ({what} in {_task_module(task) or '?'}{where})"


def _pending_new_tasks(
    before: Collection[asyncio.Task[Any]], ignore: tuple[str, ...]
) -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return [
        task
        for task in asyncio.all_tasks()
        if task is not current
        and task not in before
        and not task.done()
        and not _task_module(task).startswith(ignore)
    ]


async def assert_no_leftover_tasks(
    before: Collection[asyncio.Task[Any]],
    *,
    grace: float = 1.0,
    ignore: tuple[str, ...] = IGNORED_TASK_MODULES,
) -> None:
    """Fail if a task not in ``before`` is still pending after ``grace`` seconds.

    Call it in the running loop, e.g. ``before = asyncio.all_tasks()`` at the
    start of a test and ``await assert_no_leftover_tasks(before)`` after
    closing everything. Tasks still finishing their close get ``grace``
    seconds. Leftovers are cancelled (so they do not leak into the next test)
    and reported by name: every task must belong to an object that awaits it
    on close.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    left = _pending_new_tasks(before, ignore)
    while left and loop.time() < deadline:
        # Closing may start further short-lived tasks: look again after each wait.
        await asyncio.wait(left, timeout=deadline - loop.time())
        left = _pending_new_tasks(before, ignore)
    if not left:
        return
    names = [_describe(task) for task in left]
    for task in left:
        task.cancel()
    await asyncio.wait(left, timeout=1.0)
    raise AssertionError(
        f"{len(left)} asyncio task(s) created during the test still running "
        f"{grace:g}s after it ended (now cancelled): " + "; ".join(names)
    )


def _runner_for(request: pytest.FixtureRequest) -> Any:
    """The asyncio.Runner that pytest-asyncio runs this test in, or None.

    pytest-asyncio 1.x keeps one runner fixture per loop scope, named
    ``_<scope>_scoped_runner``; the test's scope is the ``loop_scope`` of its
    closest ``asyncio`` marker or the configured default, as in the plugin.
    """
    try:
        from pytest_asyncio import is_async_test
    except ImportError:  # pragma: no cover
        return None
    item = request.node
    if not isinstance(item, pytest.Function) or not is_async_test(item):
        return None
    marker = item.get_closest_marker("asyncio")
    kwargs = marker.kwargs if marker is not None else {}
    scope = (
        kwargs.get("loop_scope")
        or kwargs.get("scope")
        or request.config.getini("asyncio_default_test_loop_scope")
        or "function"
    )
    try:
        runner = request.getfixturevalue(f"_{scope}_scoped_runner")
    except pytest.FixtureLookupError:  # pragma: no cover - plugin internals changed
        return None
    # asyncio.Runner, or its backport on Python 3.10.
    return runner if hasattr(runner, "get_loop") else None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def no_leftover_tasks(request: pytest.FixtureRequest) -> Iterator[None]:
    """After an asyncio test and its fixtures, check for tasks left running.

    Being autouse, this fixture is set up before the test's own function-scoped
    fixtures and torn down after them, but before pytest-asyncio closes the
    loop (which would silently cancel the leftovers). Skipped when the test
    itself failed: its cleanup may not have run, and the failure says more.
    """
    runner = _runner_for(request)
    if runner is None:
        yield
        return
    before = set(asyncio.all_tasks(runner.get_loop()))
    yield
    if request.node.get_closest_marker("allow_leftover_tasks"):
        return
    if request.node.stash.get(_CALL_FAILED, True):
        # Still cancel what the failed test left, without a second error.
        try:
            runner.run(assert_no_leftover_tasks(before, grace=0.2))
        except AssertionError as exc:
            logging.getLogger(__name__).warning("after failed test: %s", exc)
        return
    runner.run(assert_no_leftover_tasks(before))
