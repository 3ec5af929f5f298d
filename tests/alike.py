"""Tests that run alike whichever implementation ``SFU_NO_EXTENSIONS`` picks.

``make test`` runs the suite twice: with the compiled extensions, then with
``SFU_NO_EXTENSIONS=1`` (the pure-Python twins, see :mod:`tests.twins`).
A test marked :data:`MARK` (``compiled_and_python_alike``) reaches nothing
that variable selects, so the second run would only repeat the first: the
``SFU_NO_EXTENSIONS=1`` run deselects it (``tests/conftest.py``; pytest
counts it "deselected", it is not skipped), and it runs in the compiled run
only. ``-m compiled_and_python_alike`` runs the marked tests in either run.

**What SFU_NO_EXTENSIONS selects** (:func:`selected`): what the selector
modules :mod:`sfu.relay`, :mod:`sfu.mix`, :mod:`sfu.detector` and
:mod:`sfu.audio_level` export (``FanOut``, ``mix_add``,
``ActiveSpeakerDetector``, ``read_audio_level``, their constants,
``EXTENSION_LOADED``, the chosen module), and every module's
``NO_EXTENSIONS`` flag (``sfu._extensions``, :mod:`tests.twins`...). Almost
everything that carries audio goes through them (a room's router and
fan-out, the mixer, a room's settings check); a test that names a twin
(``sfu._relay_py``) or a compiled module (``sfu._relay``) itself gets that
same one in both runs.

**The rule's premise is checked** whenever a marked test runs
(:func:`guard`, an autouse fixture in ``tests/conftest.py``): for the
test's duration, every reference that a module of this repository holds to
a selected object is replaced by a stand-in that records its use and then
behaves as the object; a recorded use fails the test, naming the object.
So does starting a Python process (it would import sfu with the run's
``SFU_NO_EXTENSIONS``, out of the guard's sight). Not seen: an object made
before the test by a module- or session-scoped fixture (a marked test uses
none that reaches sfu's media path), and code that saved a selected object
somewhere other than a module global.

Mark a whole module (``pytestmark = pytest.mark.compiled_and_python_alike``)
or one test. ``SFU_ALIKE_REPORT=<file.json>`` guards every test instead,
failing none, and writes what each used: the tests it lists as using
nothing are the ones that could be marked.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

MARK = "compiled_and_python_alike"
ROOT = Path(__file__).resolve().parent.parent
#: The selector modules: what each exports is chosen by SFU_NO_EXTENSIONS.
SELECTORS = ("sfu.relay", "sfu.mix", "sfu.detector", "sfu.audio_level")
#: The modules a selector chooses between: naming them is choosing oneself.
IMPLEMENTATIONS = frozenset(
    f"sfu._{name.rsplit('.', 1)[1]}{suffix}" for name in SELECTORS for suffix in ("", "_py")
)
#: A global of this name, in any module, says which implementation is in use.
FLAG = "NO_EXTENSIONS"
REPORT = os.environ.get("SFU_ALIKE_REPORT", "")


def selected() -> dict[str, object]:
    """What SFU_NO_EXTENSIONS selects: ``"sfu.relay.FanOut"`` -> the object in use."""
    found: dict[str, object] = {}
    for name in SELECTORS:
        module = importlib.import_module(name)
        for attribute in (*module.__all__, "_module"):
            found[f"{name}.{attribute}"] = getattr(module, attribute)
    return found


class Uses:
    """What a guarded stretch of code used: selected objects and Python processes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.found: list[str] = []

    def add(self, what: str) -> None:
        with self.lock:
            if what not in self.found:
                self.found.append(what)


# ------------------------------------------------------------------ stand-ins


def _forward(method: str) -> Callable[..., Any]:
    def forwarded(self: StandIn, *args: Any, **kwargs: Any) -> Any:
        target = self._alike_used()
        return getattr(target, method)(*args, **kwargs)

    forwarded.__name__ = method
    return forwarded


class StandIn:
    """Behaves as ``target`` (a class, function, module or constant) and
    records, on each use, that ``name`` was used."""

    __slots__ = ("_alike_name", "_alike_target", "_alike_uses")

    def __init__(self, name: str, target: object, uses: Uses) -> None:
        object.__setattr__(self, "_alike_name", name)
        object.__setattr__(self, "_alike_target", target)
        object.__setattr__(self, "_alike_uses", uses)

    def _alike_used(self) -> Any:
        self._alike_uses.add(self._alike_name)
        return self._alike_target

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._alike_used(), attribute)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._alike_used()(*args, **kwargs)

    def __instancecheck__(self, instance: object) -> bool:
        return isinstance(instance, self._alike_used())

    def __subclasscheck__(self, subclass: type) -> bool:
        return issubclass(subclass, self._alike_used())

    def __bool__(self) -> bool:
        return bool(self._alike_used())

    def __hash__(self) -> int:
        return hash(self._alike_used())

    def __repr__(self) -> str:  # not a use: pytest shows globals in reports
        return repr(self._alike_target)


for _method in (
    "__eq__ __ne__ __lt__ __le__ __gt__ __ge__ __int__ __index__ __float__ __neg__ "
    "__add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ __truediv__ __rtruediv__ "
    "__floordiv__ __rfloordiv__ __mod__ __and__ __rand__ __or__ __ror__ __xor__ "
    "__lshift__ __rshift__ __len__ __iter__ __contains__ __getitem__"
).split():
    setattr(StandIn, _method, _forward(_method))


_ours: dict[str, bool] = {}


def _repository_modules() -> list[ModuleType]:
    """Loaded modules of this repository (sfu, tests, examples, bench), but the implementations."""
    modules = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if module is None or path is None or name in IMPLEMENTATIONS:
            continue
        ours = _ours.get(path)
        if ours is None:
            resolved = Path(path).resolve()
            ours = _ours[path] = resolved.is_relative_to(ROOT) and ".venv" not in resolved.parts
        if ours:
            modules.append(module)
    return modules


@contextmanager
def _stand_ins(uses: Uses) -> Iterator[None]:
    """Replace every module global holding a selected object (or a FLAG) by a StandIn."""
    objects = selected()
    by_identity = {id(target): name for name, target in objects.items()}
    # One stand-in per object, whatever holds it: a guard within a guard
    # (SFU_ALIKE_REPORT around tests/test_alike.py) finds them all again.
    made: dict[tuple[int, str], StandIn] = {}
    replaced: list[tuple[dict[str, Any], str, object]] = []
    for module in _repository_modules():
        namespace = vars(module)
        for key, value in list(namespace.items()):
            what = by_identity.get(id(value))
            if key == FLAG:
                what = f"{module.__name__}.{FLAG}"
            elif what is None:
                continue
            elif isinstance(value, ModuleType):
                # A twin or compiled module named by a test that uses it on
                # purpose is not "the one in use": only the selector's own.
                if module.__name__ not in SELECTORS:
                    continue
            elif isinstance(value, (int, float)) and not what.endswith(f".{key}"):
                continue  # small ints are shared objects: a constant by its name only
            replaced.append((namespace, key, value))
            stand_in = made.get((id(value), what))
            if stand_in is None:
                stand_in = made[(id(value), what)] = StandIn(what, value, uses)
            namespace[key] = stand_in
    try:
        yield
    finally:
        for namespace, key, value in reversed(replaced):
            namespace[key] = value


# --------------------------------------------------------- Python processes


_guarded: list[Uses] = []


def _is_python(program: object) -> bool:
    if not isinstance(program, (str, bytes, os.PathLike)):
        return False
    program = os.fsdecode(program)
    found = shutil.which(program) or program
    resolved = os.path.realpath(found)
    if resolved == os.path.realpath(sys.executable):
        return True
    return os.path.basename(resolved).startswith("python")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _guarded:
        return
    if event == "subprocess.Popen":
        executable, argv = args[0], args[1]
        if executable is None:
            argv = [argv] if isinstance(argv, (str, bytes, os.PathLike)) else list(argv)
            executable = argv[0] if argv else None
        started = executable
    elif event in ("os.posix_spawn", "os.exec", "os.spawn"):
        started = args[0]
    elif event == "os.system":
        command = os.fsdecode(args[0])
        started = "python" if "python" in command else None
    else:
        return
    if started is not None and _is_python(started):
        _guarded[-1].add(f"a Python process ({os.fsdecode(started)})")


sys.addaudithook(_audit)


@contextmanager
def guard() -> Iterator[Uses]:
    """Record, in the ``Uses`` yielded, every selected object used and Python process started."""
    uses = Uses()
    _guarded.append(uses)
    try:
        with _stand_ins(uses):
            yield uses
    finally:
        _guarded.remove(uses)


def violation(uses: Uses) -> str | None:
    """The failure message for a marked test that used ``uses``, or None."""
    if not uses.found:
        return None
    return (
        f"marked {MARK}, but it reached what SFU_NO_EXTENSIONS selects: "
        + ", ".join(uses.found)
        + " (the SFU_NO_EXTENSIONS=1 run would run it differently: remove the mark;"
        " see tests/alike.py)"
    )


_report: dict[str, list[str]] = {}


def record(nodeid: str, uses: Uses) -> None:
    """``SFU_ALIKE_REPORT``: keep what ``nodeid`` used."""
    _report[nodeid] = list(uses.found)


def write_report() -> None:
    if REPORT:
        Path(REPORT).write_text(json.dumps(_report, indent=1, sort_keys=True) + "\n")
