"""Where a join's server CPU goes, piece by piece, measured in this process.

The join storm (``join_storm.py``) is CPU-bound on the server's core, and
its p99 follows the machine's speed of the moment. This benchmark takes a
join apart and times each piece alone, so a change to one of them can be
judged without a storm's noise (ratios within one run):

* ``parse_offer``: the load generator's offer, and a captured Chromium one;
* ``room.add_listener``: the whole answer path in an ``sfu.Server``
  (parse, negotiate, answer, session and DTLS object, registration);
* the DTLS handshake, server side (``DtlsServer.feed`` for every client
  flight), and the part of it inside ``SSL_do_handshake`` (OpenSSL with the
  certificate callback); the client is the load generator's;
* the handshake's cryptographic floor, with ``cryptography``'s OpenSSL: one
  X25519 key exchange, one ECDSA P-256 signature (ServerKeyExchange) and one
  verification (the client's CertificateVerify);
* one HTTP POST of an offer-sized body to an aiohttp server in another
  process, pinned to another CPU: its CPU per request on a new TCP
  connection, and on one opened beforehand.

Run: ``python bench/join_cost.py [--count 1000]``; writes
``bench/results/join_cost-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import sys
import time
from typing import Any

import harness
import loadgen
from OpenSSL import SSL

sys.path.insert(0, os.environ.get("SFU_TREE") or harness.ROOT)

import sfu
from sfu.transport.dtls import Certificate, DtlsServer
from sfu.transport.openssl_session import OpenSslSession
from sfu.transport.sdp import parse_offer

CHROMIUM_OFFER = os.path.join(harness.ROOT, "tests", "data", "offers", "chromium-listener.sdp")


def us_per(seconds: float, count: int) -> float:
    return round(seconds / count * 1e6, 1)


def offers(count: int, certificate: loadgen.ClientCertificate) -> list[str]:
    return [
        loadgen.offer_sdp(
            *loadgen.ice_credentials(), certificate.fingerprint, 20000 + i % 40000, receive=3
        )
        for i in range(count)
    ]


def time_parse(texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        parse_offer(text)
    return us_per(time.perf_counter() - start, len(texts))


async def time_add_listener(texts: list[str]) -> float:
    async with sfu.Server(host="127.0.0.1", port=0) as server:
        room = server.room("cost")
        start = time.perf_counter()
        for number, text in enumerate(texts):
            await room.add_listener(text, identity=f"listener-{number}")
        return us_per(time.perf_counter() - start, len(texts))


def client_step(peer: SSL.Connection, datagrams: list[bytes]) -> list[bytes]:
    """The load generator's client in memory: take the server's datagrams, return its next flight."""
    for datagram in datagrams:
        peer.bio_write(datagram)
    try:
        peer.do_handshake()
    except SSL.WantReadError:
        pass
    out = []
    while True:
        try:
            out.append(peer.bio_read(65536))
        except SSL.WantReadError:
            return out


def time_handshakes(count: int, client: loadgen.ClientCertificate) -> dict[str, float]:
    """Server-side DTLS handshakes against the load generator's client, in memory."""
    certificate = Certificate.generate()
    inside = 0.0
    original = OpenSslSession.do_handshake

    def timed_do_handshake(session: OpenSslSession) -> int:
        nonlocal inside
        start = time.perf_counter()
        try:
            return original(session)
        finally:
            inside += time.perf_counter() - start

    total = 0.0
    for _ in range(count):
        sent: list[bytes] = []
        start = time.perf_counter()
        server = DtlsServer(certificate, [("sha-256", client.fingerprint)], sent.append)
        total += time.perf_counter() - start
        peer = SSL.Connection(client.context, None)
        peer.set_connect_state()
        peer.set_ciphertext_mtu(loadgen.MTU)
        flight = client_step(peer, [])
        for _flight in range(6):  # a DTLS 1.2 handshake takes 3 client flights
            OpenSslSession.do_handshake = timed_do_handshake  # type: ignore[method-assign, assignment]
            start = time.perf_counter()
            try:
                for datagram in flight:
                    server.feed(datagram, 0.0)
            finally:
                total += time.perf_counter() - start
                OpenSslSession.do_handshake = original  # type: ignore[method-assign]
            answer, sent[:] = sent[:], []
            if not answer:
                break
            flight = client_step(peer, answer)
        if server.state != "connected":
            raise RuntimeError(f"handshake did not complete: {server.state} {server.failure}")
    return {
        "server_handshake_us": us_per(total, count),
        "inside_do_handshake_us": us_per(inside, count),
    }


def _http_server(port_queue: Any, cpu: int | None) -> None:
    """A child process: aiohttp answering POST /offer with an answer-sized reply."""
    from aiohttp import web

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})

    async def offer(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"answer": "a" * len(body.get("offer", ""))})

    async def cpu_seconds(request: web.Request) -> web.Response:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return web.json_response({"cpu": usage.ru_utime + usage.ru_stime})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/offer", offer)
        app.router.add_get("/cpu", cpu_seconds)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, loadgen.LOOPBACK, 0, backlog=1024)
        await site.start()
        port_queue.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.sleep(120)  # the parent kills it long before

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


async def time_http(count: int, offer: str) -> tuple[float, float]:
    """Server CPU per POST of ``offer``, ``count`` at once: on new connections,
    and on connections already open."""
    context = multiprocessing.get_context("spawn")
    ports = context.Queue()
    cpus = sorted(os.sched_getaffinity(0))
    child = context.Process(
        target=_http_server, args=(ports, harness.SERVER_CPU if len(cpus) > 1 else None)
    )
    child.start()
    try:
        port = await asyncio.get_running_loop().run_in_executor(None, ports.get, True, 30)
        body = json.dumps({"offer": offer}).encode()

        async def server_cpu() -> float:
            reply = await loadgen.http_json(loadgen.LOOPBACK, port, "/cpu")
            return float(reply["cpu"])

        await asyncio.gather(
            *(loadgen.http_json(loadgen.LOOPBACK, port, "/offer", body) for _ in range(50))
        )
        before = await server_cpu()
        await asyncio.gather(
            *(loadgen.http_json(loadgen.LOOPBACK, port, "/offer", body) for _ in range(count))
        )
        after = await server_cpu()
        # The same requests on connections opened beforehand (a client whose
        # signaling connection is already up when it joins).
        opened = await asyncio.gather(
            *(loadgen.ControlConnection.open(loadgen.LOOPBACK, port) for _ in range(count)),
            return_exceptions=True,
        )
        connections = [c for c in opened if isinstance(c, loadgen.ControlConnection)]
        try:
            if len(connections) < count:
                failure = next(c for c in opened if isinstance(c, BaseException))
                raise RuntimeError(f"could not open {count} connections: {failure}")
            start = await server_cpu()
            await asyncio.gather(*(c.request("/offer", body) for c in connections))
            end = await server_cpu()
        finally:
            for connection in connections:
                connection.close()
        return us_per(after - before, count), us_per(end - start, count)
    finally:
        child.kill()
        child.join(10)


async def main(count: int) -> dict[str, Any]:
    client = loadgen.ClientCertificate(loadgen.SRTP_PROFILES)
    texts = offers(count, client)
    with open(CHROMIUM_OFFER) as file:
        chromium = file.read()
    result: dict[str, Any] = {
        "count": count,
        "parse_offer_loadgen_us": time_parse(texts),
        "parse_offer_chromium_us": time_parse([chromium] * count),
        "add_listener_us": await time_add_listener(texts),
        **time_handshakes(count, client),
        **harness.handshake_crypto(count),
    }
    (
        result["http_post_new_connection_us"],
        result["http_post_open_connection_us"],
    ) = await time_http(count, texts[0])
    result["handshake_over_floor"] = round(
        result["server_handshake_us"] / result["handshake_floor_us"], 2
    )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="joins (or handshakes) timed")
    args = parser.parse_args()
    harness.pin_loadgen()  # the HTTP server's child gets the other CPU
    figures = harness.run(main(args.count), 600)
    for name, value in figures.items():
        print(f"{name:34s} {value}")
    print(f"wrote {harness.write_result('join_cost', {'args': vars(args), **figures})}")
