"""A client's DTLS flight of many datagrams, all arriving at once.

uvloop reads a burst of datagrams before the event loop works on any of
them, so a whole flight waits in the handshake backlog together; a client
that sends a record per datagram with a certificate of several KB sends a
dozen or more. Dropping the tail past a session's share dropped the same
tail at every retransmission, and the handshake never completed. The burst
is delivered here as uvloop does, every datagram handed to the server
before its backlog gets a turn, whatever loop the tests run on.
"""

from __future__ import annotations

import sfu

from ..clients import wait_for
from .test_dtls import Client as DtlsClient
from .test_nat_rebinding import (
    checked_from,
    client_flight,
    listener_session,
    two_loopback_sockets,
)


async def test_a_flight_of_many_datagrams_arriving_at_once_completes_the_handshake() -> None:
    async with sfu.Server() as server:
        with two_loopback_sockets() as (sock, _):
            client = DtlsClient(host_names=400)  # an ~11 KB certificate
            session, server_ufrag, pwd = await listener_session(server, client)
            deadline = await checked_from(sock, server, server_ufrag, pwd)
            flight = await client_flight(sock, server, client, deadline)
            assert len(flight) > 8, f"a flight of {len(flight)} datagrams: not a burst to test"
            address = sock.getsockname()
            for datagram in flight:  # one burst, read before any turn
                server._datagram_received(datagram, address)
            await wait_for(lambda: session.state == "connected", 5, "connected")
            assert server.drops["dtls handshake datagrams over the session's share"] == 0
