"""The server side of a DTLS handshake, this tree against another, interleaved.

On this shared machine the speed of a minute moves a handshake's cost by up
to 2x, more than most changes to it; runs of two trees one after the other
cannot tell them apart. This loads the other tree's ``sfu`` package under
another name (a temporary copy with its imports renamed) beside this one and
alternates the two, handshake by handshake, in one process, so both see the
same machine. The client is the load generator's (``loadgen``); the time is
the server's thread CPU for ``DtlsServer(...)`` and every ``feed``.

Run::

    mkdir /tmp/sfu-base && git archive <commit> | tar -x -C /tmp/sfu-base
    python bench/ab_handshake.py --base /tmp/sfu-base [--count 4000]

The other tree needs no built extensions (the DTLS path is pure Python).
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import harness
import loadgen
from join_cost import client_step
from OpenSSL import SSL

sys.path.insert(0, str(harness.ROOT))


def load_renamed(tree: Path, name: str, scratch: Path) -> ModuleType:
    """``tree``'s ``sfu.transport.dtls``, imported as ``<name>.transport.dtls``."""
    package = scratch / name
    shutil.copytree(tree / "sfu", package, ignore=shutil.ignore_patterns("*.so", "build"))
    for path in package.rglob("*.py"):
        text = path.read_text()
        text = re.sub(r"\bfrom sfu([ .])", rf"from {name}\1", text)
        text = re.sub(r"^import sfu$", f"import {name} as sfu", text, flags=re.MULTILINE)
        path.write_text(text)
    sys.path.insert(0, str(scratch))
    return importlib.import_module(f"{name}.transport.dtls")


def handshake_ns(dtls: Any, certificate: Any, client: loadgen.ClientCertificate) -> int:
    peer = SSL.Connection(client.context, None)
    peer.set_connect_state()
    peer.set_ciphertext_mtu(loadgen.MTU)
    flight = client_step(peer, [])
    sent: list[bytes] = []
    start = time.thread_time_ns()
    server = dtls.DtlsServer(certificate, [("sha-256", client.fingerprint)], sent.append)
    spent = time.thread_time_ns() - start
    for _flight in range(6):
        start = time.thread_time_ns()
        for datagram in flight:
            server.feed(datagram, 0.0)
        spent += time.thread_time_ns() - start
        answer, sent[:] = sent[:], []
        if not answer:
            break
        flight = client_step(peer, answer)
    if server.state != "connected":
        raise RuntimeError(f"handshake did not complete: {server.state} {server.failure}")
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, type=Path, help="the other tree (an export)")
    parser.add_argument("--count", type=int, default=4000, help="handshakes per tree")
    args = parser.parse_args()
    from sfu.transport import dtls as this

    with tempfile.TemporaryDirectory() as scratch:
        base = load_renamed(args.base.resolve(), "sfu_base", Path(scratch))
        client = loadgen.ClientCertificate()
        trees = {
            "base": (base, base.Certificate.generate()),
            "this": (this, this.Certificate.generate()),
        }
        spent: dict[str, list[int]] = {"base": [], "this": []}
        for number in range(args.count):
            for name in ("base", "this") if number % 2 else ("this", "base"):
                spent[name].append(handshake_ns(*trees[name], client))
    result: dict[str, Any] = {"base": str(args.base), "count": args.count}
    for name, values in spent.items():
        kept = sorted(values[len(values) // 20 :])  # the first 5 %: warming up
        result[f"{name}_median_us"] = round(statistics.median(kept) / 1e3, 1)
        result[f"{name}_p25_us"] = round(kept[len(kept) // 4] / 1e3, 1)
    result["this_over_base"] = round(result["this_median_us"] / result["base_median_us"], 3)
    print(
        f"server side of a handshake, median (p25): base {result['base_median_us']} "
        f"({result['base_p25_us']}) us, this tree {result['this_median_us']} "
        f"({result['this_p25_us']}) us: {result['this_over_base']}x"
    )
    print(f"wrote {harness.write_result('ab_handshake', result)}")


if __name__ == "__main__":
    main()
