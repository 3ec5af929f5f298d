"""Consent that a replayed check cannot keep, and address proofs the port
cannot be turned into an amplifier with (raw STUN against a real server)."""

from __future__ import annotations

import asyncio
import socket

import pytest

import sfu
from sfu.transport import server as server_module
from sfu.transport import session as session_module

from ..clients import wait_for
from ..test_room_lifecycle import UFRAG
from .test_dtls import Client as DtlsClient
from .test_nat_rebinding import (
    client_flight,
    connected_over,
    listener_session,
    proofs_to,
    two_loopback_sockets,
)
from .test_server import binding_request, datagrams, proof_answer, server_addr

CONSENT = 1.5  # consent_timeout: a check alone renews it for CONSENT / 3 = 0.5 s
#: A DTLS 1.2 record in plaintext (epoch 0): a fatal handshake_failure alert.
FATAL_ALERT = bytes([21, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 5, 0, 2, 2, 40])
COPIED = "stun check copied from another address"


async def proof_sent_to(sock: socket.socket, what: str) -> bytes:
    """The first proof (the server's own binding request) ``sock`` receives."""
    proofs: list[bytes] = []

    def sent() -> bool:
        proofs.extend(proofs_to(sock))
        return bool(proofs)

    await wait_for(sent, 5, what)
    return proofs[0]


async def test_a_replayed_check_does_not_keep_consent() -> None:
    """The client is gone; someone replays one of its checks, byte for byte,
    from its address. STUN has no freshness, so past a third of the consent
    timeout without SRTP/SRTCP the server asks the address itself (a proof
    with a fresh transaction): nobody answers, and consent runs out."""
    async with sfu.Server(consent_timeout=CONSENT) as server:
        with two_loopback_sockets() as (selected, _):
            session, server_ufrag, pwd = await connected_over(selected, server)
            captured = binding_request(server_ufrag, UFRAG, pwd, use_candidate=False)
            proofs: list[bytes] = []
            for _ in range(int(3 * CONSENT / 0.25)):
                selected.sendto(captured, server_addr(server))
                await asyncio.sleep(0.25)
                proofs += proofs_to(selected)
                if session.state == "closed":
                    break
            assert session.state == "closed", "replays kept consent past 3x its timeout"
            assert session.close_reason is not None and "consent" in session.close_reason
            assert proofs, "the server asked the address itself"


async def test_a_client_that_answers_the_servers_checks_keeps_consent_without_media() -> None:
    """A client that sends no SRTP or SRTCP (rare: every WebRTC stack sends
    RTCP) but checks and answers the server's proofs, as any ICE agent does."""
    async with sfu.Server(consent_timeout=CONSENT) as server:
        with two_loopback_sockets() as (selected, _):
            session, server_ufrag, pwd = await connected_over(selected, server)
            answered = 0
            for _ in range(int(3 * CONSENT / 0.25)):
                check = binding_request(server_ufrag, UFRAG, pwd, use_candidate=False)
                selected.sendto(check, server_addr(server))
                await asyncio.sleep(0.25)
                for proof in proofs_to(selected):
                    selected.sendto(proof_answer(proof, session.remote_pwd), server_addr(server))
                    answered += 1
            assert session.state == "connected", session.close_reason
            assert answered, "its checks alone no longer renewed consent: it was asked"


async def test_a_forged_check_sends_a_victim_at_most_three_datagrams() -> None:
    """A client's checks naming other addresses (its own credentials, a forged
    source): each gets its response, and the proof sent there goes once more
    at most; nothing else reaches those addresses."""
    async with sfu.Server() as server:
        with two_loopback_sockets() as (selected, _):
            session, server_ufrag, pwd = await connected_over(selected, server)
            victims = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
            try:
                for victim in victims:
                    victim.bind(("127.0.0.1", 0))
                checks = 0
                for _ in range(2):
                    for victim in victims:
                        forged = binding_request(server_ufrag, UFRAG, pwd, use_candidate=True)
                        victim.sendto(forged, server_addr(server))
                        checks += 1
                    await asyncio.sleep(session_module.PROOF_TIMEOUT + 0.5)
                received = [d for victim in victims for d in datagrams(victim)]
                proofs = [d for d in received if d[:2] == b"\x00\x01"]
                assert 0 < len(proofs) <= 2 * checks
                assert len(received) <= 3 * checks
                assert session.address == selected.getsockname(), "moved on nobody's answer"
            finally:
                for victim in victims:
                    victim.close()


async def test_a_proofs_answer_counts_only_from_the_address_it_asked() -> None:
    """A proof asks one address: the client's answer to it sent from another
    port (the client holds the password) proves neither, and that port is not
    let in (its DTLS or SRTP would be taken as the session's)."""
    async with sfu.Server() as server:
        with two_loopback_sockets() as (selected, asked), two_loopback_sockets() as (answering, _):
            session, server_ufrag, pwd = await connected_over(selected, server)
            unexpected = server.drops["stun response unexpected"]
            nominate = binding_request(server_ufrag, UFRAG, pwd, use_candidate=True)
            asked.sendto(nominate, server_addr(server))
            proof = await proof_sent_to(asked, "the move's proof")
            answering.sendto(proof_answer(proof, session.remote_pwd), server_addr(server))
            await wait_for(
                lambda: server.drops["stun response unexpected"] > unexpected, 5, "answer dropped"
            )
            assert session.address == selected.getsockname()
            assert set(session.checked_addresses) == {selected.getsockname()}
            assert answering.getsockname() not in server._sessions_by_address


async def test_proofs_to_other_addresses_are_capped_server_wide(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "PROOFS_PER_SECOND", 0.0)
    monkeypatch.setattr(server_module, "PROOF_BURST", 2.0)
    async with sfu.Server() as server:
        with two_loopback_sockets() as (selected, elsewhere):
            session, server_ufrag, pwd = await connected_over(selected, server)
            over_budget = "stun address proofs over the server's budget"

            async def forge_a_check() -> None:
                """Send one; return once the server sent its proof or refused to."""
                refused = server.drops[over_budget]
                forged = binding_request(server_ufrag, UFRAG, pwd, use_candidate=True)
                elsewhere.sendto(forged, server_addr(server))
                await wait_for(
                    lambda: bool(server._proofs) or server.drops[over_budget] > refused,
                    5,
                    "the check proven or refused",
                )

            for _ in range(4):
                await forge_a_check()
                # The next check asks anew once this one's proof has timed out.
                await wait_for(
                    lambda: not server._proofs,
                    session_module.PROOF_TIMEOUT + 5,
                    "the proof under way to time out",
                )
            proofs = {d[8:20] for d in proofs_to(elsewhere)}
            assert len(proofs) == 2, "two proofs' worth of budget: two transactions"
            await wait_for(
                lambda: server.drops["stun address proofs over the server's budget"] >= 2,
                2,
                "the refused proofs counted",
            )
            assert session.address == selected.getsockname()


async def test_one_member_answering_its_own_proofs_leaves_the_servers_to_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mallory nominates one new source port after another and answers every
    proof, which frees her MAX_PROOFS at once: her own share
    (SESSION_PROOFS_PER_SECOND) stops her, not the server's budget, so
    another member's move is still proven. (The server's budget does not
    refill here: what Mallory spends of it is gone.)"""
    monkeypatch.setattr(server_module, "PROOFS_PER_SECOND", 0.0)
    monkeypatch.setattr(server_module, "PROOF_BURST", 20.0)
    async with sfu.Server() as server:
        with two_loopback_sockets() as (mallorys, victims):
            session, server_ufrag, pwd = await connected_over(mallorys, server, "mallory")
            victim, victim_ufrag, victim_pwd = await connected_over(victims, server, "victim")
            loop = asyncio.get_running_loop()
            started = loop.time()
            proven = 0
            while loop.time() - started < 1.0:
                with two_loopback_sockets() as ports:
                    for port in ports:
                        nominate = binding_request(server_ufrag, UFRAG, pwd, use_candidate=True)
                        port.sendto(nominate, server_addr(server))
                    await asyncio.sleep(0.005)
                    for port in ports:
                        for proof in proofs_to(port):
                            answer = proof_answer(proof, session.remote_pwd)
                            port.sendto(answer, server_addr(server))
                            proven += 1
                    await asyncio.sleep(0.005)
            elapsed = loop.time() - started
            allowed = (
                session_module.SESSION_PROOF_BURST
                + session_module.SESSION_PROOFS_PER_SECOND * elapsed
            )
            assert proven <= allowed, f"mallory drew {proven} proofs in {elapsed:.2f} s"
            assert server.drops["stun address proofs over the session's rate"] > 0
            with two_loopback_sockets() as (moved, _):
                nominate = binding_request(victim_ufrag, UFRAG, victim_pwd, use_candidate=True)
                moved.sendto(nominate, server_addr(server))
                await asyncio.sleep(0.1)
                proofs = proofs_to(moved)
                assert proofs, "the victim's move was not proven: the server's proofs were spent"
                moved.sendto(proof_answer(proofs[-1], victim.remote_pwd), server_addr(server))
                await wait_for(lambda: victim.address == moved.getsockname(), 2, "victim moved")


async def test_checks_copied_from_another_address_before_the_handshake_are_not_taken() -> None:
    """Someone who sees a client's checks go by sends them again from its own
    address while the DTLS handshake is under way. STUN has no freshness, but
    a copy carries its original's transaction ID (MESSAGE-INTEGRITY covers
    it): no answer, and its address is not let in, so its plaintext fatal
    alert does not end the handshake and a copied nomination does not move
    the handshake there. A retransmission from the client's own address is
    answered as before, and the client connects."""
    async with sfu.Server() as server:
        with two_loopback_sockets() as (client_socket, copier):
            client = DtlsClient()
            session, server_ufrag, pwd = await listener_session(server, client)
            here = client_socket.getsockname()
            for use_candidate in (False, True):
                check = binding_request(server_ufrag, UFRAG, pwd, use_candidate=use_candidate)
                for sock in (client_socket, copier, client_socket):  # the copy, a retransmission
                    sock.sendto(check, server_addr(server))
                    await asyncio.sleep(0.05)
            assert [d[:2] for d in datagrams(client_socket)] == [b"\x01\x01"] * 4
            assert datagrams(copier) == [], "a copy was answered"
            assert server.drops[COPIED] == 2
            assert list(session.checked_addresses) == [here] and session.address == here
            copier.sendto(FATAL_ALERT, server_addr(server))
            deadline = asyncio.get_running_loop().time() + 5
            flight = await client_flight(client_socket, server, client, deadline)
            # Copied again now that the server's flight went out: still not taken.
            copier.sendto(check, server_addr(server))
            for datagram in flight:
                client_socket.sendto(datagram, server_addr(server))
            await wait_for(lambda: session.state == "connected", 3, session.close_reason or "")
            assert session.address == here and copier.getsockname() not in session.checked_addresses


async def test_past_the_checks_remembered_a_new_address_needs_a_proof(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that sent more checks than the session remembers before it
    connected: an old check's copy would no longer be told apart, so a check
    from an address not checked yet is taken only once a proof sent there is
    answered, which a copier cannot do and the client's other candidate does."""
    monkeypatch.setattr(session_module, "MAX_CHECKS_REMEMBERED", 3)
    async with sfu.Server() as server:
        with (
            two_loopback_sockets() as (client_socket, copier),
            two_loopback_sockets() as (
                second,
                _,
            ),
        ):
            client = DtlsClient()
            session, server_ufrag, pwd = await listener_session(server, client)
            first = binding_request(server_ufrag, UFRAG, pwd, use_candidate=True)
            client_socket.sendto(first, server_addr(server))
            for _ in range(3):  # more than the session keeps
                check = binding_request(server_ufrag, UFRAG, pwd, use_candidate=False)
                client_socket.sendto(check, server_addr(server))
            await asyncio.sleep(0.1)
            copier.sendto(first, server_addr(server))  # its ID was kept: dropped
            copier.sendto(check, server_addr(server))  # its ID was not: a proof first
            other = binding_request(server_ufrag, UFRAG, pwd, use_candidate=False)
            second.sendto(other, server_addr(server))
            proof = await proof_sent_to(second, "a proof to the second candidate")
            second.sendto(proof_answer(proof, session.remote_pwd), server_addr(server))
            here = client_socket.getsockname()
            await wait_for(lambda: second.getsockname() in session.checked_addresses, 5, "proven")
            await asyncio.sleep(session_module.PROOF_TIMEOUT + 0.5)  # the copier's proof lapses
            assert server.drops[COPIED] == 1
            assert proofs_to(copier), "the copier was asked, and could not answer"
            assert set(session.checked_addresses) == {here, second.getsockname()}
            assert session.address == here
            copier.sendto(FATAL_ALERT, server_addr(server))
            deadline = asyncio.get_running_loop().time() + 5
            for datagram in await client_flight(client_socket, server, client, deadline):
                client_socket.sendto(datagram, server_addr(server))
            await wait_for(lambda: session.state == "connected", 3, session.close_reason or "")


async def test_a_client_silent_after_its_check_is_a_handshake_that_timed_out() -> None:
    """A client checks, then nothing (its DTLS never comes): closed at
    consent's timeout when that is shorter than the handshake's, counted in
    handshakes_timed_out and told so, as one that never checked is (second
    review: "consent expired", uncounted)."""
    async with sfu.Server(consent_timeout=CONSENT, handshake_timeout=30.0) as server:
        with two_loopback_sockets() as (sock, _):
            client = DtlsClient()
            session, server_ufrag, pwd = await listener_session(server, client)
            sock.sendto(binding_request(server_ufrag, UFRAG, pwd), server_addr(server))
            await wait_for(lambda: session.state == "checking", 3, "checked")
            await wait_for(lambda: session.state == "closed", 3 * CONSENT + 2, "closed")
            assert session.close_reason is not None
            assert session.close_reason.startswith("handshake timed out"), session.close_reason
            assert server.handshakes_timed_out == 1
