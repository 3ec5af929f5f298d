"""Datagrams whose parsing would hold the event loop every room shares.

A UDP datagram may be 64 KB, and the STUN and DTLS parsers walk one in
Python, an attribute or a record at a time: ~4 ms for a 64 KB datagram of
empty ones (measured in the twenty-fifth session), where a real check or
flight has fewer than ten. STUN is parsed before anything is authenticated
(from any address), DTLS after the handshake from the address a session
checked (its client's, or anyone forging it). So a message of more than 32
attributes, or a datagram of more than 32 records, is malformed, and a
datagram's first forged record ends it (one AES-GCM attempt each). These
tests count what the server did with such datagrams, which the caps change;
the CPU they saved is in the session's note.
"""

from __future__ import annotations

import asyncio
import os
import socket

import sfu
from sfu.transport.dtls import MAX_RECORDS

from ..clients import wait_for
from ..test_room_lifecycle import UFRAG
from .test_dtls import Client as DtlsClient
from .test_ice import signed_request
from .test_nat_rebinding import connected_over, listener_session, two_loopback_sockets
from .test_server import datagrams, server_addr

#: The largest UDP datagram over IPv4.
BIGGEST = 65507


async def sent_and_taken(server: sfu.Server, sock: socket.socket, datagram: bytes) -> None:
    taken = server.packets_in + 1
    sock.sendto(datagram, server_addr(server))
    await wait_for(lambda: server.packets_in >= taken, 5, "the datagram taken")
    await asyncio.sleep(0.05)  # any answer on its way back


def empty_records(count: int) -> bytes:
    """``count`` empty epoch-0 handshake records in one datagram."""
    return (bytes([22, 0xFE, 0xFD]) + bytes(10)) * count  # epoch, sequence, length 0


def forged_alerts(count: int) -> bytes:
    """``count`` epoch-1 alert records (AES-GCM-sized: nonce, 2 bytes, tag)
    under keys nobody has: each fails authentication."""
    record = b""
    for sequence in range(count):
        fragment = os.urandom(8 + 2 + 16)
        record += bytes([21, 0xFE, 0xFD, 0, 1]) + (sequence + 1).to_bytes(6, "big")
        record += len(fragment).to_bytes(2, "big") + fragment
    return record


async def test_a_check_of_more_than_32_attributes_is_malformed_even_signed() -> None:
    async with sfu.Server(host="127.0.0.1") as server:
        client = DtlsClient()
        _session, server_ufrag, pwd = await listener_session(server, client)
        username = f"{server_ufrag}:{UFRAG}"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            # Comprehension-optional attributes (0x8000-), which a check may carry.
            few = [(0x8100 + i, b"") for i in range(29)]  # with USERNAME: 30, and MI
            await sent_and_taken(server, sock, signed_request(*few, username=username, pwd=pwd))
            assert [d[:2] for d in datagrams(sock)][:1] == [b"\x01\x01"]  # answered
            many = [(0x8100 + i, b"") for i in range(32)]
            await sent_and_taken(server, sock, signed_request(*many, username=username, pwd=pwd))
            assert datagrams(sock) == []
            assert server.drops["stun malformed"] == 1
            # The 64 KB of empty attributes such a cap is for: one drop, the same.
            count = (BIGGEST - 20) // 4
            body = (0x8000).to_bytes(2, "big") + bytes(2)
            flood = (
                bytes.fromhex("0001")
                + (4 * count).to_bytes(2, "big")
                + bytes.fromhex("2112a442")
                + bytes(12)
                + body * count
            )
            await sent_and_taken(server, sock, flood)
            assert server.drops["stun malformed"] == 2


async def test_a_datagram_of_more_than_32_records_after_the_handshake_is_dropped_whole() -> None:
    async with sfu.Server(host="127.0.0.1") as server:
        with two_loopback_sockets() as (sock, _):
            session, _, _ = await connected_over(sock, server)
            dropped = session.dtls.dropped
            # Empty epoch-0 handshake records are skipped one by one, uncounted...
            await sent_and_taken(server, sock, empty_records(MAX_RECORDS))
            assert session.dtls.dropped == dropped
            # ...but one record more, or 64 KB of them, is not a flight: dropped whole.
            await sent_and_taken(server, sock, empty_records(MAX_RECORDS + 1))
            await sent_and_taken(server, sock, empty_records(BIGGEST // 13))
            assert session.dtls.dropped == dropped + 2
            # Forged alerts: the first ends the datagram (one decryption, not 32).
            await sent_and_taken(server, sock, forged_alerts(MAX_RECORDS))
            assert session.dtls.dropped == dropped + 3
            assert session.state == "connected"
