"""The live HTTP stream of the room mix (sfu.media.livestream), read with aiohttp.

Two aiortc speakers play 440 Hz and 1000 Hz; two HTTP clients read
``/rooms/{room}/live.ogg`` and decode it with PyAV: both tones are in it
(each band >= 20 % of the energy). Slow clients skip ahead, then are dropped.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import sys
import termios
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

import sfu
from sfu.auth import issue_token
from sfu.media import livestream
from sfu.media.livestream import BURST_BYTES, LiveStream
from sfu.media.mixer import Mixer
from sfu.media.ogg import (
    CONTINUED,
    FIRST_PAGE,
    LAST_PAGE,
    packet_samples,
    padded_to,
    parse_opus_head,
    parse_pages,
    read_packets,
)
from sfu.media.router import Router
from sfu.signaling.aiohttp import add_live_stream, live_stream_handler

from ..clients import join, wait_for
from ..sites import start_site
from .mixing import assert_tones, decode_ogg, opus_tone
from .test_recorder import last_granule

SECRET = "s" * 40
SILENCE = bytes((0xF8,))  # 20 ms with nothing coded (a frame of 0 bytes), mono


def converging(silence: int) -> int:
    """Packets a client's decoder converges on before the audio compared: the
    pre-roll's 4, and after silence two more for FFmpeg's decoder (its frames
    of 0 bytes leave it as coded silence does, where libopus, which browsers
    use, conceals them and stays as it was made)."""
    return 4 + (2 if silence else 0)


def audio_of(packets: list[bytes]) -> list[bytes]:
    """A stream's packets after its headers and the silence it starts with."""
    start = 2
    while start < len(packets) and packets[start] == SILENCE:
        start += 1
    return packets[start:]


async def serve(server: sfu.Server, **settings: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/rooms/{room}/live.ogg", live_stream_handler(server, **settings))
    runner, port = await start_site(app)
    return runner, f"http://127.0.0.1:{port}"


async def read_for(session: aiohttp.ClientSession, url: str, seconds: float) -> bytes:
    data = b""
    async with session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "audio/ogg"
        assert response.headers.get("Transfer-Encoding") == "chunked"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            try:
                chunk = await asyncio.wait_for(response.content.readany(), deadline - loop.time())
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
    return data


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[sfu.Server, str]]:
    async with sfu.Server(token_secret=SECRET) as server:
        runner, base = await serve(server, public=True)  # a broadcast, but private rooms
        try:
            yield server, base
        finally:
            await runner.cleanup()


@pytest.fixture
async def mixer() -> AsyncIterator[Mixer]:
    """A room's Mixer on a router of its own (no server), closed afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    router = Router(sock, 3)
    mixer = Mixer(router)
    try:
        yield mixer
    finally:
        await mixer.close()
        router.close()
        sock.close()


async def test_two_clients_hear_both_speakers(http_server: tuple[sfu.Server, str]) -> None:
    server, base = http_server
    room = server.room("stage")
    a = await join(room, "alice", speaker=True, frequency=440)
    b = await join(room, "bob", speaker=True, frequency=1000)
    try:
        await wait_for(lambda: len(a.sent) > 25 and len(b.sent) > 25, 15, "speakers sending")
        assert not room.mixer.running
        url = f"{base}/rooms/stage/live.ogg"
        async with aiohttp.ClientSession() as session:
            first, second = await asyncio.gather(
                read_for(session, url, 3.0), read_for(session, url, 2.0)
            )
        # The handlers notice the clients are gone at their next write.
        await wait_for(lambda: not room.mixer.running, 2, "the mixer to stop without clients")
    finally:
        await asyncio.gather(a.close(), b.close())
    for data, seconds in ((first, 3.0), (second, 2.0)):
        pages = list(parse_pages(data))  # CRCs checked
        assert pages[0].header_type == FIRST_PAGE and pages[0].sequence == 0
        assert [p.sequence for p in pages] == list(range(len(pages))), "each client: its own pages"
        packets = [packet for packet, _ in read_packets(data)]
        assert packets[0].startswith(b"OpusHead") and packets[1].startswith(b"OpusTags")
        # A second of silence first (start_silence), then about `seconds` of
        # audio, sent as it is mixed (not faster, not much later).
        audio = audio_of(packets)
        assert len(packets) - 2 - len(audio) == 50
        assert seconds - 0.5 <= len(audio) * 0.02 <= seconds + 0.1
        pcm = decode_ogg(data)
        assert float(np.abs(pcm[: 48000 - 312]).max()) < 1.0, "silence"
        assert_tones(pcm[48000 + 48000 // 2 :], present=[440, 1000])


async def early_and_late(
    http_server: tuple[sfu.Server, str],
    name: str,
    early: float,
    wait: float,
    late: float,
    **settings: Any,
) -> tuple[bytes, bytes]:
    """A speaker plays a tone in room ``name``; one client reads its stream for
    ``early`` seconds, another joins ``wait`` seconds later and reads for
    ``late``: (what each read). ``settings``: the handler's, when not the defaults."""
    server, base = http_server
    speaker = await join(server.room(name), "alice", speaker=True, frequency=440)
    runner = None
    if settings:
        runner, base = await serve(server, public=True, **settings)
    url = f"{base}/rooms/{name}/live.ogg"
    try:
        await wait_for(lambda: len(speaker.sent) > 25, 15, "the speaker to send")
        async with aiohttp.ClientSession() as session:
            early_reading = asyncio.create_task(read_for(session, url, early))
            await asyncio.sleep(wait)
            late_data = await read_for(session, url, late)
            return await early_reading, late_data
    finally:
        await speaker.close()
        if runner is not None:
            await runner.cleanup()


def _first_index(packets: list[bytes], run: list[bytes]) -> int:
    """Where ``run`` starts in ``packets`` (the same encoded packets)."""
    for index in range(len(packets) - len(run) + 1):
        if packets[index : index + len(run)] == run:
            return index
    raise AssertionError("the packets are not a run of the other stream's")


@pytest.mark.parametrize("start_silence", [0, 1.0])
async def test_a_late_joiner_decodes_converged_audio_from_its_first_sample(
    http_server: tuple[sfu.Server, str], start_silence: float
) -> None:
    """A client that joins a running mix starts mid-stream: RFC 7845 section
    4.2 wants at least 3840 samples (80 ms) decoded first, so that the
    decoder has converged when the mix's audio begins: discarded (the
    pre-skip) without ``start_silence``, played after it (the decoder
    converging from silence). Decoded with FFmpeg, the first 20 ms of the
    burst match what a client there from the start decoded at the same
    place in the stream; the silence before decodes to zeros."""
    # No burst: the late client starts at the live edge, 1.5 s into the mix
    # (the tone long in it), its pre-roll the 4 packets before (a burst would
    # reach back to the mix's first packets, which the first client decoded
    # from the start too).
    early, late = await early_and_late(
        http_server, "joined-late", 3.5, 1.5, 1.5, start_silence=start_silence, burst_bytes=0
    )

    def stream(data: bytes) -> tuple[int, list[bytes], np.ndarray, int]:
        packets = [packet for packet, _ in read_packets(data)]
        pre_skip = parse_opus_head(packets[0])[1]
        pcm = decode_ogg(data)
        # FFmpeg plays what the granule positions say, minus the pre-skip.
        assert len(pcm) == last_granule(data) - pre_skip
        return pre_skip, packets[2:], pcm, len(packets) - 2

    early_skip, early_packets, early_pcm, _ = stream(early)
    late_skip, late_packets, late_pcm, late_count = stream(late)
    silence = round(start_silence / 0.02)
    assert late_packets[:silence] == [SILENCE] * silence
    assert SILENCE not in late_packets[silence:]
    if silence:
        assert late_skip == early_skip, "the pre-roll plays, after the silence"
        assert float(np.abs(late_pcm[: silence * 960 - late_skip]).max()) < 1.0, "silence"
    else:
        assert late_skip >= 3840, "RFC 7845 4.2: at least 80 ms of pre-roll mid-stream"
    # The burst's first packet comes after the silence and the 4 packets of
    # pre-roll; packet i decodes to samples from 960 * i, the pre-skip
    # discarding the first ones. Its first sample played (with the pre-roll
    # discarded, the pre-skip's encoder delay into it), in each stream's output:
    first = silence + converging(silence)
    late_start = max(0, first * 960 - late_skip)
    into = late_start + late_skip - first * 960
    start = _first_index(early_packets, late_packets[first : first + 10]) * 960
    start += into - early_skip
    expected = early_pcm[start : start + 960]
    error = late_pcm[late_start : late_start + 960] - expected
    rms = float(np.sqrt(np.mean(expected**2)))
    assert rms > 1000, "a tone to compare"
    assert float(np.sqrt(np.mean(error**2))) < 0.25 * rms, "the decoder had not converged"
    assert (late_count - silence) * 0.02 >= 1.0


async def test_room_close_ends_the_stream(http_server: tuple[sfu.Server, str]) -> None:
    server, base = http_server
    room = server.room("ending")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/rooms/ending/live.ogg") as response:
            assert response.status == 200
            await asyncio.sleep(0.5)
            await room.close()
            data = await asyncio.wait_for(response.read(), 5)  # the response ends
    pages = list(parse_pages(data))
    assert pages[-1].header_type & LAST_PAGE
    assert len(list(read_packets(data))) >= 2 + 10


async def test_add_live_stream_ends_the_open_streams_when_the_app_shuts_down() -> None:
    """Mounted with add_live_stream, a stream whose room is still open ends
    (its last page, then the response's end) when the app shuts down, and
    ``runner.cleanup()`` returns, rather than waiting for it for aiohttp's
    shutdown_timeout (60 s), twice. The room itself stays."""
    async with sfu.Server() as server:
        room = server.room("open")
        app = web.Application()
        add_live_stream(app, server)
        runner, port = await start_site(app)
        async with aiohttp.ClientSession() as session:
            response = await session.get(f"http://127.0.0.1:{port}/rooms/open/live.ogg")
            assert response.status == 200
            data = await response.content.readany()  # streaming: the headers came
            cleanup = asyncio.ensure_future(runner.cleanup())
            data += await asyncio.wait_for(response.read(), 10)
            await asyncio.wait_for(cleanup, 10)
        pages = list(parse_pages(data))
        assert pages[0].header_type & FIRST_PAGE and pages[-1].header_type & LAST_PAGE
        assert not room.closed
    with pytest.raises(sfu.InvalidSetting, match="room"):
        add_live_stream(web.Application(), server, "/live.ogg")
    add_live_stream(
        web.Application(), server, "/r/{room:[a-z]+}/live.ogg"
    )  # a {room} with a pattern
    with pytest.raises(sfu.InvalidSetting, match="max_clients"):
        add_live_stream(web.Application(), server, max_clients=0)


async def test_a_head_request_gets_headers_only(http_server: tuple[sfu.Server, str]) -> None:
    """HEAD must not subscribe (the mixer would run for it) nor send the Ogg
    stream after its headers (the next response on the connection would be
    read from it)."""
    server, base = http_server
    room = server.room("headed")
    async with aiohttp.ClientSession() as session:
        async with session.head(f"{base}/rooms/headed/live.ogg") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "audio/ogg"
        async with session.get(f"{base}/rooms/nowhere/live.ogg") as response:
            assert response.status == 403, "the connection is still in step"
    await asyncio.sleep(0.1)
    assert room._mixer is None or not room.mixer.running


async def test_a_room_s_stream_takes_max_clients_at_once() -> None:
    """Each client costs pages of its own: past max_clients a room's stream
    says 503, and takes another once one has gone."""
    async with sfu.Server() as server:
        server.room("busy")
        runner, base = await serve(server, max_clients=2)
        url = f"{base}/rooms/busy/live.ogg"
        try:
            async with aiohttp.ClientSession() as session:
                first = await session.get(url)
                second = await session.get(url)
                assert first.status == second.status == 200
                async with session.get(url) as third:
                    assert third.status == 503 and third.headers["Retry-After"]
                first.close()  # gone: noticed at its next page
                for _ in range(40):
                    async with session.get(url) as again:
                        if again.status == 200:
                            break
                    await asyncio.sleep(0.1)
                assert again.status == 200, "a place freed is taken again"
                second.close()
        finally:
            await runner.cleanup()
    with pytest.raises(sfu.InvalidSetting, match="max_clients"):
        live_stream_handler(server, max_clients=0)


async def test_unknown_and_private_rooms(http_server: tuple[sfu.Server, str]) -> None:
    server, base = http_server
    server.room("secret", private=True)
    token = issue_token(SECRET, room="secret", identity="fan", role="listener")
    elsewhere = issue_token(SECRET, room="nowhere", identity="fan", role="listener")
    async with aiohttp.ClientSession() as session:
        # Public streams, but a private room's name cannot be probed: without
        # a token for it, an unknown room answers as a private one does.
        async with session.get(f"{base}/rooms/nowhere/live.ogg") as response:
            assert response.status == 403
        async with session.get(f"{base}/rooms/nowhere/live.ogg?token={elsewhere}") as response:
            assert response.status == 404
        async with session.get(f"{base}/rooms/secret/live.ogg") as response:
            assert response.status == 403
        async with session.get(f"{base}/rooms/secret/live.ogg?token=garbage") as response:
            assert response.status == 403
        async with session.get(f"{base}/rooms/secret/live.ogg?token={token}") as response:
            assert response.status == 200
            assert (await response.content.readexactly(4)) == b"OggS"
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{base}/rooms/secret/live.ogg", headers=headers) as response:
            assert response.status == 200
        # Banned from the room: banned from its stream too, with the same token.
        await server.rooms["secret"].remove("fan", ban=True)
        async with session.get(f"{base}/rooms/secret/live.ogg", headers=headers) as response:
            assert response.status == 403


async def test_with_a_token_secret_every_room_s_stream_needs_a_token() -> None:
    """Every other way into a room of a server with a token_secret asks for
    a token (WHEP, signaling): so does its live stream, private room or not,
    unless the handler is made public."""
    async with sfu.Server(token_secret=SECRET) as server:
        server.room("stage")
        server.room("secret", private=True)
        runner, base = await serve(server)
        public_runner, public_base = await serve(server, public=True)
        token = issue_token(SECRET, room="stage", identity="fan", role="listener")
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/rooms/stage/live.ogg") as response:
                    assert response.status == 403
                # Without a token for it, a room that does not exist answers
                # as one that does: its name cannot be probed.
                async with session.get(f"{base}/rooms/nowhere/live.ogg") as response:
                    assert response.status == 403
                elsewhere = issue_token(SECRET, room="nowhere", identity="fan", role="listener")
                async with session.get(
                    f"{base}/rooms/nowhere/live.ogg?token={elsewhere}"
                ) as response:
                    assert response.status == 404
                async with session.get(f"{base}/rooms/stage/live.ogg?token={token}") as response:
                    assert response.status == 200
                    assert (await response.content.readexactly(4)) == b"OggS"
                async with session.get(f"{public_base}/rooms/stage/live.ogg") as response:
                    assert response.status == 200
                async with session.get(f"{public_base}/rooms/secret/live.ogg") as response:
                    assert response.status == 403, "public opens the rooms that are not private"
                await server.rooms["stage"].remove("fan", ban=True)
                async with session.get(f"{base}/rooms/stage/live.ogg?token={token}") as response:
                    assert response.status == 403, "banned"
        finally:
            await runner.cleanup()
            await public_runner.cleanup()
    with pytest.raises(sfu.InvalidSetting, match="public"):
        live_stream_handler(server, public=1)  # type: ignore[arg-type]


async def test_a_stream_open_when_its_listener_is_banned_ends(
    http_server: tuple[sfu.Server, str],
) -> None:
    """Removed with a ban: the live stream already open stops at its next page."""
    server, base = http_server
    room = server.room("private-stage", private=True)
    token = issue_token(SECRET, room="private-stage", identity="fan", role="listener")
    other = issue_token(SECRET, room="private-stage", identity="friend", role="listener")
    url = f"{base}/rooms/private-stage/live.ogg?token="
    async with aiohttp.ClientSession() as session:
        friend = asyncio.create_task(read_for(session, url + other, 2.0))
        async with session.get(url + token) as response:
            assert response.status == 200
            before = await response.content.readexactly(200)  # headers and a first page
            await room.remove("fan", ban=True)
            banned_at = asyncio.get_running_loop().time()
            rest = await asyncio.wait_for(response.read(), 5)  # the response ends
            ended_after = asyncio.get_running_loop().time() - banned_at
        friend_data = await friend
    data = before + rest
    pages = list(parse_pages(data))  # a well-formed stream to its end
    assert pages[-1].header_type & LAST_PAGE
    assert [p.sequence for p in pages] == list(range(len(pages))), "no page left out"
    delivered = (len(list(read_packets(data))) - 2) * 960  # 20 ms packets of the mix
    assert last_granule(data) == delivered, "the last granule counts what was sent, no more"
    # At most the page being written when the ban came, not the 2 s the friend got.
    assert ended_after < 1.0
    assert len(list(read_packets(friend_data))) - 2 >= 60
    assert len(list(read_packets(data))) - 2 < len(list(read_packets(friend_data))) - 2


def assert_continuous(data: bytes, first_sequence: int = 0, first_granule: int = 0) -> int:
    """The pages of ``data`` are whole (no packet cut across two) and in step:
    sequence numbers from ``first_sequence``, each audio page's granule that
    of the one before plus its packets' samples. Returns the last granule."""
    granule = first_granule
    for expected, page in enumerate(parse_pages(data), first_sequence):
        assert page.sequence == expected
        assert not page.header_type & CONTINUED and page.segments[-1] < 255
        if page.sequence < 2:
            continue  # OpusHead, OpusTags
        position = 0
        for lacing in page.segments:  # one segment a packet: they are all < 255 bytes
            granule += packet_samples(page.body[position : position + lacing])
            position += lacing
        assert page.granule == granule
    return granule


@pytest.mark.parametrize("start_silence", [0, 1.0])
async def test_a_late_joiner_gets_a_burst_of_the_latest_audio_at_once(
    mixer: Mixer, start_silence: float
) -> None:
    """Chromium's media cache gives its demuxer whole 32 KiB blocks, nothing
    before the first is full: at 48 kbit/s a client joining a live stream
    heard nothing for ~4.5 s. One joining a running stream now gets, in its
    first write, the latest packets whose pages fill ``burst_bytes`` with the
    headers and the silence it starts with, after the pre-roll of 4 packets
    (which its pre-skip discards when there is no silence): a valid stream
    (CRCs, page sequence, granules counting what it was sent) whose audio is
    the mix's up to the moment it joined, then the mix as it comes."""
    live = LiveStream(mixer, packets_per_page=5, start_silence=start_silence)
    silence = round(start_silence / 0.02)
    first = live.subscribe()
    first_data = first.headers()
    pages = list(parse_pages(first_data))
    assert len(pages) == (3 if silence else 2), "the stream's first client: no burst"
    assert [p for p, _ in read_packets(first_data)][2:] == [SILENCE] * silence
    tone = opus_tone(440, 420)
    floor = live.min_packet_bytes
    assert floor == 120  # 48 kbit/s over 20 ms
    mixed = [padded_to(packet, floor) for packet in tone]
    for index, packet in enumerate(tone[:400]):
        live._on_packet(packet, 960, index * 0.02)
        if index % 5 == 4:
            first_data += await first.read()
    late = live.subscribe()
    start = late.headers()
    assert BURST_BYTES - 1000 < len(start) <= BURST_BYTES == 32768
    packets = [packet for packet, _ in read_packets(start)]
    pre_skip = parse_opus_head(packets[0])[1]
    if silence:
        assert pre_skip == parse_opus_head(live.opus_head)[1], "the pre-roll plays"
    else:
        assert pre_skip == parse_opus_head(live.opus_head)[1] + 4 * 960, "4 packets of pre-roll"
    assert packets[2 : 2 + silence] == [SILENCE] * silence
    audio = audio_of(packets)
    assert len(audio) == len(packets) - 2 - silence
    assert audio == mixed[400 - len(audio) : 400], "the latest packets, in order"
    assert len(audio) * 0.02 > 3.4, "at 48 kbit/s, 32 KiB hold more than 3.4 s"
    granule = assert_continuous(start)
    assert granule == (silence + len(audio)) * 960
    # Decodable at once: FFmpeg's Ogg demuxer and libopus play all but the
    # pre-skip, and the decoder has converged at the burst's first packet
    # (after the silence and the pre-roll): the audio is what the first client heard there.
    pcm = decode_ogg(start)
    assert len(pcm) == granule - pre_skip
    early = decode_ogg(first_data)
    early_skip = parse_opus_head(next(read_packets(first_data))[0])[1]
    burst_first = silence + converging(silence)  # packet i decodes to samples from 960 * i
    played = max(0, burst_first * 960 - pre_skip)  # its first sample played
    into = played + pre_skip - burst_first * 960
    offset = (burst_first + 400 - len(audio)) * 960 + into - early_skip
    expected = early[offset : offset + 960]
    error = pcm[played : played + 960] - expected
    assert float(np.sqrt(np.mean(error**2))) < 0.25 * float(np.sqrt(np.mean(expected**2)))
    if silence:
        assert float(np.abs(pcm[: silence * 960 - pre_skip]).max()) < 1.0, "silence"
    # Then the mix as it comes, in the same stream; the queue is bounded as before.
    for index, packet in enumerate(tone[400:], 400):
        live._on_packet(packet, 960, index * 0.02)
    assert len(late.queue) == 20 <= live.max_packets
    more = await late.read()
    assert audio_of([p for p, _ in read_packets(start + more)]) == mixed[400 - len(audio) : 420]
    last = list(parse_pages(start))[-1]
    assert_continuous(more, last.sequence + 1, granule)
    for client in (first, late):
        client.close()
    await mixer.wait_stopped()


@pytest.mark.parametrize("size", [16, 19, 120])
async def test_a_burst_of_long_pages_still_fits_in_burst_bytes(
    mixer: Mixer, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Ogg page holds at most 255 packets (lacing values): with
    ``packets_per_page=255`` the pre-roll and a page's worth of packets would
    not fit in one, and the page split off would put the burst a header past
    ``burst_bytes``. The burst's pages hold fewer packets instead."""
    monkeypatch.setattr(livestream, "MAX_BURST_SECONDS", 60.0)  # 32 KiB of 16 bytes: 38 s
    live = LiveStream(mixer, packets_per_page=255, max_lag=6.0, min_bitrate=0)
    first = live.subscribe()
    packets = [bytes((0xF8, index % 256)) + bytes(size - 2) for index in range(2000)]
    for index, packet in enumerate(packets):
        live._on_packet(packet, 960, index * 0.02)
        first.queue.clear()  # (not read: it would be dropped as too slow)
    late = live.subscribe()
    start = late.headers()
    assert BURST_BYTES - 2 * size - 60 < len(start) <= BURST_BYTES
    pages = list(parse_pages(start))
    assert all(len(page.segments) <= 255 for page in pages)
    audio = audio_of([packet for packet, _ in read_packets(start)])
    assert audio == packets[len(packets) - len(audio) :]
    assert_continuous(start)
    for client in (first, late):
        client.close()
    await mixer.wait_stopped()


async def test_a_burst_of_tiny_packets_holds_at_most_max_burst_seconds(mixer: Mixer) -> None:
    """With padding off, a quiet room's 3-byte packets would fill 32 KiB with
    three minutes of silence, every joiner playing that far behind live: a
    burst stops at MAX_BURST_SECONDS of audio. A stream started again after
    its clients left bursts nothing of what went before."""
    live = LiveStream(mixer, min_bitrate=0)
    first = live.subscribe()
    silence = [bytes((0xF8, 0xFF, 0xFE))] * 3000  # 60 s of 3-byte packets
    for index, packet in enumerate(silence):
        live._on_packet(packet, 960, index * 0.02)
        first.queue.clear()
    late = live.subscribe()
    audio = audio_of([packet for packet, _ in read_packets(late.headers())])
    assert (len(audio) - 4) * 0.02 == pytest.approx(livestream.MAX_BURST_SECONDS)  # 4: pre-roll
    for client in (first, late):
        client.close()
    again = live.subscribe()
    assert audio_of([p for p, _ in read_packets(again.headers())]) == [], (
        "a new stream's first client: no burst"
    )
    again.close()
    await mixer.wait_stopped()


async def test_without_a_burst_a_late_joiner_starts_at_the_live_edge(mixer: Mixer) -> None:
    """``burst_bytes=0``: the headers and the silence alone, then the pre-roll
    on the first page of queued packets, as before bursts."""
    live = LiveStream(mixer, burst_bytes=0, min_bitrate=0)
    first = live.subscribe()
    tone = opus_tone(440, 60)
    for index, packet in enumerate(tone[:50]):
        live._on_packet(packet, 960, index * 0.02)
    late = live.subscribe()
    start = late.headers()
    assert audio_of([p for p, _ in read_packets(start)]) == [], "headers and silence alone"
    for index, packet in enumerate(tone[50:], 50):
        live._on_packet(packet, 960, index * 0.02)
    data = start + await late.read()
    assert audio_of([p for p, _ in read_packets(data)]) == tone[46:60], (
        "pre-roll, then live, unpadded"
    )
    assert_continuous(data)
    for client in (first, late):
        client.close()
    await mixer.wait_stopped()


async def test_a_late_joiner_over_http_gets_seconds_of_audio_in_its_first_second(
    http_server: tuple[sfu.Server, str],
) -> None:
    """The handler writes the burst first: a client joining a mix that has run
    for 4 s reads, within a second, more audio than a second's worth, the
    mix's latest, decodable and converged."""
    early, late = await early_and_late(http_server, "bursting", 5.5, 4.0, 1.0)
    late_packets = audio_of([packet for packet, _ in read_packets(late)])
    early_packets = audio_of([packet for packet, _ in read_packets(early)])
    assert len(late_packets) * 0.02 >= 3.0, "the burst: seconds of audio at once"
    _first_index(early_packets, late_packets[:10])  # the mix's own packets (4 s fit in 32 KiB)
    granule = assert_continuous(late)
    pre_skip = parse_opus_head(next(read_packets(late))[0])[1]
    pcm = decode_ogg(late)
    assert len(pcm) == granule - pre_skip
    assert_tones(pcm[48000 : 48000 * 3], present=[440])  # after the second of silence


async def test_silence_is_padded_to_the_mix_s_bit_rate(http_server: tuple[sfu.Server, str]) -> None:
    """Silence encodes to 3-byte packets: Chromium, which waits for 32 KiB, would
    start 70 s late and stay 70 s behind (and a playing client falls behind by
    every pause). Packets are padded to the mix's bit rate, or ``min_bitrate``."""
    server, base = http_server
    room = server.room("quiet")  # nobody speaks
    async with aiohttp.ClientSession() as session:
        data = await read_for(session, f"{base}/rooms/quiet/live.ogg", 1.0)
        # (A client joining the same stream would get its history, padded as it was.)
        await wait_for(lambda: not room.mixer.running, 2, "that stream to end")
        room.mixer.bitrate = 96000  # the floor follows the mix
        faster = await read_for(session, f"{base}/rooms/quiet/live.ogg", 1.0)
    runner, unpadded_base = await serve(server, public=True, min_bitrate=0)
    try:
        async with aiohttp.ClientSession() as session:
            unpadded = await read_for(session, f"{unpadded_base}/rooms/quiet/live.ogg", 1.0)
    finally:
        await runner.cleanup()
    for stream, size in ((data, 120), (faster, 240)):
        packets = audio_of([packet for packet, _ in read_packets(stream)])
        assert len(packets) >= 25
        assert {len(packet) for packet in packets} == {size}
        assert_continuous(stream)
        pcm = decode_ogg(stream)
        assert len(pcm) > 0.4 * 48000 and float(np.abs(pcm).max()) < 1.0, "silence"
    assert max(len(packet) for packet, _ in list(read_packets(unpadded))[2:]) < 10


async def test_slow_client_skips_ahead_then_is_dropped(mixer: Mixer) -> None:
    live = LiveStream(mixer, max_lag=0.2, packets_per_page=5, max_skips=3)
    fast, slow = live.subscribe(), live.subscribe()
    cut: list[str] = []
    slow.on_drop = lambda: cut.append("slow")  # the handler closes the connection here
    fast.on_drop = lambda: cut.append("fast")
    assert mixer.running
    fast.headers()
    for index in range(50):
        live._on_packet(bytes([0xF8, index]), 960, float(index))
        assert len(slow.queue) <= live.max_packets == 10  # bounded, whatever happens
        if index % 5 == 4:
            await fast.read()  # keeps up
    assert fast.skips == 0 and fast.sent_packets == 50
    # The slow one skipped to the live edge each time its queue was full, then was dropped.
    assert slow.skips == 3 and slow.closed and slow not in live.clients
    assert cut == ["slow"], "a dropped client's connection is cut, however blocked its writer"
    assert live.clients == [fast]
    fast.close()
    assert live.clients == []
    await mixer.wait_stopped()
    assert not mixer.running


async def test_a_client_that_is_gone_does_not_stop_the_others(
    http_server: tuple[sfu.Server, str],
) -> None:
    server, base = http_server
    room = server.room("many")
    url = f"{base}/rooms/many/live.ogg"
    async with aiohttp.ClientSession() as session:
        reader = asyncio.create_task(read_for(session, url, 1.5))
        async with session.get(url) as response:
            await response.content.readexactly(4)
        # That one disconnected; the other goes on.
        data = await reader
    assert len(list(read_packets(data))) >= 2 + 50
    await wait_for(lambda: not room.mixer.running, 2, "the mixer to stop")


async def test_an_http_1_0_client_gets_the_stream_unchunked(
    http_server: tuple[sfu.Server, str],
) -> None:
    """A proxy's default upstream protocol is HTTP/1.0, which has no chunks:
    the body is the Ogg stream itself, ended by the connection."""
    server, base = http_server
    server.room("old")
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"GET /rooms/old/live.ogg HTTP/1.0\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
        assert b"chunked" not in head.lower()
        body = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.5
        while loop.time() < deadline:
            try:
                body += await asyncio.wait_for(reader.read(65536), deadline - loop.time())
            except TimeoutError:
                break
        packets = list(read_packets(body))
        assert packets[0][0].startswith(b"OpusHead") and len(packets) >= 2 + 25
    finally:
        writer.close()


async def test_the_room_closing_while_the_response_is_prepared_ends_the_stream_cleanly() -> None:
    """An app hook that awaits in on_response_prepare lets the room close
    before the headers go out: the client still gets a whole, ended Ogg stream."""
    async with sfu.Server() as server:
        room = server.room("closing")
        prepared = asyncio.Event()

        async def slow_hook(request: web.Request, response: web.StreamResponse) -> None:
            prepared.set()
            await asyncio.sleep(0.05)  # e.g. a session store's I/O

        app = web.Application()
        app.on_response_prepare.append(slow_hook)
        app.router.add_get("/rooms/{room}/live.ogg", live_stream_handler(server))
        runner, port = await start_site(app)
        try:
            async with aiohttp.ClientSession() as session:

                async def get() -> tuple[int, bytes]:
                    async with session.get(f"http://127.0.0.1:{port}/rooms/closing/live.ogg") as r:
                        return r.status, await r.read()

                reading = asyncio.create_task(get())
                await asyncio.wait_for(prepared.wait(), 5)
                await room.close()
                status, body = await asyncio.wait_for(reading, 5)
            assert status == 200
            pages = list(parse_pages(body))
            assert pages[0].header_type & FIRST_PAGE and pages[-1].header_type & LAST_PAGE
            assert next(iter(read_packets(body)))[0].startswith(b"OpusHead")
        finally:
            await runner.cleanup()


async def test_a_dropped_client_that_stopped_reading_is_disconnected() -> None:
    """Dropped for falling behind, a client that reads nothing must lose its
    connection at once: closing it gracefully would wait for ever for the
    unsent bytes, keeping the socket and the buffer."""
    async with sfu.Server() as server:
        room = server.room("stuck")
        room.mixer.bitrate = 256000  # fills the small buffers below in seconds
        speaker = await join(room, "alice", speaker=True, frequency=440)
        transports: list[asyncio.Transport] = []

        async def small_send_buffer(request: web.Request, response: web.StreamResponse) -> None:
            transport = request.transport
            assert transport is not None
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            transports.append(transport)

        app = web.Application()
        app.on_response_prepare.append(small_send_buffer)
        app.router.add_get(
            "/rooms/{room}/live.ogg", live_stream_handler(server, max_lag=0.2, max_skips=2)
        )
        runner, port = await start_site(app)
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", port))
            client.send(b"GET /rooms/stuck/live.ogg HTTP/1.1\r\nHost: x\r\n\r\n")  # never read
            await wait_for(lambda: bool(transports) and transports[0].is_closing(), 20, "a drop")
            await wait_for(
                lambda: (
                    transports[0].get_extra_info("socket") is None
                    or transports[0].get_write_buffer_size() == 0
                ),
                2,
                "the connection gone, unsent bytes and all",
            )
        finally:
            client.close()
            await speaker.close()
            await runner.cleanup()


async def test_a_client_that_stops_reading_skips_and_is_dropped_with_the_servers_buffers() -> None:
    """With the server's socket buffers as the kernel sizes them (up to
    megabytes: minutes of a 48 kbit/s stream), a client that stops reading
    must still skip once what the server holds for it and its queue reach
    ``max_lag``, and be dropped after ``max_skips``: what the server holds
    for it stays about ``max_lag`` of audio, while a client that reads never
    skips. (The stalled client's own receive buffer is made small, so that
    the backlog reaches the server at once: what a client's system took and
    its player did not read, the server cannot see.)"""
    async with sfu.Server() as server:
        server.room("stalled")  # nobody speaks: the mix is padded silence, 48 kbit/s
        transports: list[asyncio.Transport] = []

        async def remember(request: web.Request, response: web.StreamResponse) -> None:
            assert request.transport is not None
            transports.append(request.transport)

        app = web.Application()
        app.on_response_prepare.append(remember)
        handler = live_stream_handler(server, max_lag=0.5, max_skips=3, burst_bytes=0)
        app.router.add_get("/rooms/{room}/live.ogg", handler)
        runner, port = await start_site(app)
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        stalled = socket.socket()
        stalled.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 4096
        )  # the backlog stays server-side
        stalled.setblocking(False)
        try:
            writer.write(b"GET /rooms/stalled/live.ogg HTTP/1.1\r\nHost: x\r\n\r\n")
            await wait_for(lambda: len(transports) == 1, 5, "the reading client's stream")
            reading = loop.create_task(_read_all(reader))
            await loop.sock_connect(stalled, ("127.0.0.1", port))
            stalled.send(b"GET /rooms/stalled/live.ogg HTTP/1.1\r\nHost: x\r\n\r\n")  # never read
            await wait_for(lambda: len(transports) == 2, 5, "the stalled client's stream")
            stream = livestream.live_streams(handler)[0]
            reader_client, stalled_client = stream.clients
            most_unsent = 0
            deadline = loop.time() + 15
            while not transports[1].is_closing() and loop.time() < deadline:
                most_unsent = max(most_unsent, _unsent(transports[1]))
                await asyncio.sleep(0.02)
            assert transports[1].is_closing(), (
                f"not dropped: {stalled_client.skips} skips, {_unsent(transports[1])} bytes unsent"
            )
            assert stalled_client.skips == 3 and stalled_client not in stream.clients
            # ~6 KB a second: max_lag and one page's write, not the kernel's megabytes.
            assert most_unsent < 16384, most_unsent
            assert reader_client.skips == 0 and reader_client in stream.clients
            assert not reading.done()
        finally:
            stalled.close()
            writer.close()
            await runner.cleanup()


def _unsent(transport: asyncio.Transport) -> int:
    """Bytes written to ``transport`` that its peer has not taken: the
    transport's buffer and the kernel's send queue (Linux: SIOCOUTQ)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
    return transport.get_write_buffer_size() + int.from_bytes(queued, sys.byteorder)


async def _read_all(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


@pytest.mark.parametrize("packets_per_page", [35, 41, 47, 57, 5])
async def test_a_max_lag_of_exactly_one_page_is_taken(packets_per_page: int) -> None:
    """0.7 s is 35 packets of 20 ms, though 0.02 * 35 is 0.7000000000000001."""
    async with sfu.Server() as server:
        max_lag = packets_per_page * 20 / 1000
        live_stream_handler(server, max_lag=max_lag, packets_per_page=packets_per_page)
        stream = LiveStream(
            server.room("page").mixer, max_lag=max_lag, packets_per_page=packets_per_page
        )
        assert stream.max_packets == packets_per_page


@pytest.mark.parametrize(
    "settings",
    [
        {"max_lag": 0.05},  # less than one page of 5 packets
        {"max_lag": float("nan")},
        {"max_lag": float("inf")},
        {"packets_per_page": 0},
        {"packets_per_page": True},
        {"max_lag": True},
        {"max_skips": "5"},  # else a TypeError when a client first falls behind
        {"max_skips": None},
        {"max_skips": 0},
        {"burst_bytes": -1},
        {"burst_bytes": 262145},
        {"burst_bytes": 1.5},
        {"burst_bytes": True},
        {"min_bitrate": -1},
        {"min_bitrate": 256001},
        {"min_bitrate": "48000"},
        {"min_bitrate": False},
        {"start_silence": -0.02},
        {"start_silence": 10.5},
        {"start_silence": float("nan")},
        {"start_silence": "1"},
        {"start_silence": True},
    ],
)
async def test_bad_settings_are_refused_when_the_handler_is_made(settings: dict[str, Any]) -> None:
    """Not at the first request (a 500 from a ValueError, or from a float that
    does not convert to a number of packets)."""
    async with sfu.Server() as server:
        with pytest.raises(sfu.InvalidSetting) as caught:
            live_stream_handler(server, **settings)
        assert next(iter(settings)) in str(caught.value)


def test_the_live_stream_plays_and_ends_cleanly_on_uvloop() -> None:
    """The demo and bench/ serve on uvloop when it is installed, whose TCP
    transports are not asyncio.WriteTransport subclasses: the stream's lag
    check asserted that they were, and every stream there ended after its
    headers (99 bytes, no audio). A reader gets the mix, and the body ends
    with a clean chunked EOF when the server closes."""
    uvloop = pytest.importorskip("uvloop", reason="uvloop (the 'fast' extra) is not installed")
    secret = "s" * 40

    async def stream() -> tuple[bytes, BaseException | None]:
        body = bytearray()
        error: BaseException | None = None
        server = await sfu.Server(token_secret=secret).start()
        app = web.Application()
        add_live_stream(app, server)
        runner, port = await start_site(app)
        try:
            server.room("hall")
            token = issue_token(secret, room="hall", identity="reader", role="listener")
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{port}/rooms/hall/live.ogg?token={token}"
                async with http.get(url) as live:
                    assert live.status == 200

                    async def read() -> None:
                        async for chunk in live.content.iter_any():
                            body.extend(chunk)

                    reader = asyncio.ensure_future(read())
                    await asyncio.sleep(1.5)
                    await server.close()
                    try:
                        await asyncio.wait_for(reader, 5)
                    except Exception as exc:  # the body cut short
                        error = exc
        finally:
            await server.close()
            await runner.cleanup()
        return bytes(body), error

    body, error = uvloop.run(stream())
    assert error is None, f"the stream did not end cleanly: {error!r} after {len(body)} bytes"
    assert last_granule(body) / 48_000 > 1.0, f"{len(body)} bytes: under a second of audio"
