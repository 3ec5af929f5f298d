"""Drive Debian's headless Chromium from tests, through Playwright's async API.

Only ``/usr/bin/chromium`` is used (``playwright install`` is never run), with
the flags of /work/shared/TESTING.md (:func:`chromium_args`): no sandbox (root),
fake microphone playing a WAV file, loopback candidates allowed, no mDNS,
every host name but 127.0.0.1 and ::1 unresolvable, no background networking.
Pages ask for reduced motion (:func:`open_page`).

Pages get a small JS library, ``window.sfuTest`` (:data:`PEER_JS`), and
:class:`BrowserPeer` wraps it, so the offer/answer exchange goes through
Python (``page.evaluate``) and a test needs no HTTP server::

    page = await open_page(browser)
    peer = await BrowserPeer.create(page, speak=True, receive=3)
    offer = await peer.offer()            # non-trickle: candidates included
    await peer.apply_answer(answer_from_the_server(offer))
    await peer.wait_connected()
    inbound = await peer.wait_for_audio() # packets and decoded level > 0

Each remote track is attached to a playing ``<audio>`` element as soon as it
arrives: without that, Chromium counts packets but ``audioLevel`` and
``totalAudioEnergy`` stay 0.

Offers and answers handed out by :class:`BrowserPeer` keep only 127.0.0.1
candidates (:func:`loopback_only_sdp`). ``--allow-loopback-in-peer-connection``
makes Chromium gather on loopback *and* on the machine's other interfaces, so
the far end never learns a non-loopback address and never sends to one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page, Playwright, Route

log = logging.getLogger(__name__)

CHROMIUM = os.environ.get("SFU_TEST_CHROMIUM", "/usr/bin/chromium")


def chromium_args(fake_audio: Path | str) -> list[str]:
    """Chromium's command-line flags for a test browser whose microphone plays ``fake_audio``."""
    return [
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",  # grants the microphone, no prompt
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={Path(fake_audio).resolve()}",  # looped
        "--allow-loopback-in-peer-connection",  # else no 127.0.0.1 candidate
        "--autoplay-policy=no-user-gesture-required",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE ::1",
        "--disable-features=WebRtcHideLocalIpsWithMdns",  # no .local candidates, no mDNS
    ]


async def launch_browser(playwright: Playwright, fake_audio: Path | str) -> Browser:
    """Start a headless Debian Chromium; its fake microphone loops ``fake_audio``.

    One browser has one fake microphone file; launch a second browser for a
    second voice.
    """
    return await playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=chromium_args(fake_audio)
    )


# window.sfuTest: peer connections by id, created and driven from Python.
PEER_JS = r"""
(() => {
  if (window.sfuTest) return;
  const peers = new Map();
  let nextId = 1;

  function get(id) {
    const peer = peers.get(id);
    if (!peer) throw new Error(`no peer ${id}`);
    return peer;
  }

  function gathered(pc, timeoutMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error("ICE gathering did not complete")), timeoutMs);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
  }

  // Keep the remote track playing: Chromium only computes inbound-rtp
  // audioLevel / totalAudioEnergy for audio that is played out.
  function attach(peer, event) {
    const audio = document.createElement("audio");
    audio.autoplay = true;
    audio.dataset.mid = event.transceiver.mid || "";
    audio.srcObject = new MediaStream([event.track]);
    document.body.appendChild(audio);
    peer.audios.push(audio);
    audio.play().catch((e) => console.warn(`audio.play(): ${e}`));
  }

  window.sfuTest = {
    // a: a peer that may speak (microphone track) and/or receive on N recvonly transceivers.
    async create({speak = false, receive = 0} = {}) {
      const pc = new RTCPeerConnection({iceServers: []});
      const peer = {pc, audios: [], stream: null};
      const id = nextId++;
      peers.set(id, peer);
      pc.addEventListener("track", (event) => attach(peer, event));
      if (speak) {
        peer.stream = await navigator.mediaDevices.getUserMedia({audio: true, video: false});
        for (const track of peer.stream.getAudioTracks()) pc.addTrack(track, peer.stream);
      }
      for (let i = 0; i < receive; i++) pc.addTransceiver("audio", {direction: "recvonly"});
      return id;
    },
    async offer(id, timeoutMs = 10000) {
      const {pc} = get(id);
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc, timeoutMs);
      return pc.localDescription.sdp;
    },
    // The answering side, for browser-to-browser calls.
    async answer(id, sdp, timeoutMs = 10000) {
      const {pc} = get(id);
      await pc.setRemoteDescription({type: "offer", sdp});
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc, timeoutMs);
      return pc.localDescription.sdp;
    },
    // b
    async applyAnswer(id, sdp) {
      await get(id).pc.setRemoteDescription({type: "answer", sdp});
    },
    state(id) {
      const {pc} = get(id);
      return {connection: pc.connectionState, ice: pc.iceConnectionState,
              signaling: pc.signalingState};
    },
    // d: one entry per inbound audio stream, with its receiver's sources.
    async stats(id) {
      const {pc, audios} = get(id);
      const report = await pc.getStats();
      const byTrack = new Map();
      for (const r of pc.getReceivers()) byTrack.set(r.track.id, r);
      const out = [];
      report.forEach((s) => {
        if (s.type !== "inbound-rtp" || s.kind !== "audio") return;
        const receiver = byTrack.get(s.trackIdentifier);
        const audio = audios.find((a) => a.dataset.mid === String(s.mid));
        out.push({
          mid: s.mid === undefined ? null : String(s.mid),
          ssrc: s.ssrc,
          trackIdentifier: s.trackIdentifier || null,
          packetsReceived: s.packetsReceived || 0,
          packetsLost: s.packetsLost || 0,
          bytesReceived: s.bytesReceived || 0,
          audioLevel: s.audioLevel || 0,
          totalAudioEnergy: s.totalAudioEnergy || 0,
          totalSamplesReceived: s.totalSamplesReceived || 0,
          concealedSamples: s.concealedSamples || 0,
          jitter: s.jitter || 0,
          playing: audio ? !audio.paused : false,
          contributingSources: receiver ? receiver.getContributingSources().map(
            (c) => ({source: c.source, audioLevel: c.audioLevel ?? null,
                     timestamp: c.timestamp})) : [],
          synchronizationSources: receiver ? receiver.getSynchronizationSources().map(
            (c) => ({source: c.source, audioLevel: c.audioLevel ?? null,
                     timestamp: c.timestamp})) : [],
        });
      });
      out.sort((a, b) => String(a.mid).localeCompare(String(b.mid)));
      return out;
    },
    // Every ICE candidate pair with the addresses it used, for asserting
    // that no check went anywhere but loopback.
    async candidatePairs(id) {
      const report = await get(id).pc.getStats();
      const out = [];
      report.forEach((s) => {
        if (s.type !== "candidate-pair") return;
        const local = report.get(s.localCandidateId) || {};
        const remote = report.get(s.remoteCandidateId) || {};
        out.push({state: s.state, nominated: !!s.nominated,
                  local: local.address || local.ip || null, localType: local.candidateType || null,
                  localProtocol: local.protocol || null,
                  remote: remote.address || remote.ip || null, remoteType: remote.candidateType || null,
                  requestsSent: s.requestsSent || 0, responsesSent: s.responsesSent || 0,
                  requestsReceived: s.requestsReceived || 0,
                  bytesSent: s.bytesSent || 0, bytesReceived: s.bytesReceived || 0});
      });
      return out;
    },
    async outbound(id) {
      const report = await get(id).pc.getStats();
      const out = [];
      report.forEach((s) => {
        if (s.type === "outbound-rtp" && s.kind === "audio")
          out.push({ssrc: s.ssrc, mid: s.mid ?? null, packetsSent: s.packetsSent || 0});
      });
      return out;
    },
    close(id) {
      const peer = peers.get(id);
      if (!peer) return;
      peers.delete(id);
      if (peer.stream) for (const t of peer.stream.getTracks()) t.stop();
      for (const a of peer.audios) { a.srcObject = null; a.remove(); }
      peer.pc.close();
    },
  };
})();
"""

# Served by Playwright's request interception, never fetched (port 9: discard).
LOCAL_PAGE_URL = "http://127.0.0.1:9/sfu-test.html"
_BLANK = "<!doctype html><html><head><meta charset='utf-8'><title>sfu test</title></head><body></body></html>"


async def open_page(target: Browser | BrowserContext, url_or_html: str | None = None) -> Page:
    """Open a page with :data:`PEER_JS` loaded and its console in the test log.

    ``url_or_html``: an ``http(s)://`` URL (use ``127.0.0.1``, never
    ``localhost``), or an HTML document (None: an empty one), which is served
    as :data:`LOCAL_PAGE_URL` (a secure context, so getUserMedia works) by
    Playwright itself, without any HTTP server. A
    :class:`Browser` gives each page its own context (cookies, storage),
    which asks for reduced motion: the demo's speaking ring then stays still
    instead of pulsing, a repaint every frame that cost each tab ~15 % of a
    core in software, more than its call (a context given keeps its own setting).
    """
    from playwright.async_api import Browser

    if isinstance(target, Browser):
        page = await target.new_page(reduced_motion="reduce")
    else:
        page = await target.new_page()
    page.on("console", lambda msg: log.debug("page console %s: %s", msg.type, msg.text))
    page.on("pageerror", lambda exc: log.warning("page error: %s", exc))
    await page.add_init_script(PEER_JS)
    if url_or_html is not None and re.match(r"https?://", url_or_html):
        await page.goto(url_or_html)
        return page
    # getUserMedia needs a secure context, which about:blank/set_content is
    # not; http://127.0.0.1 is. Playwright answers the request itself.
    html = url_or_html or _BLANK

    async def fulfill(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/html; charset=utf-8", body=html)

    await page.route(LOCAL_PAGE_URL, fulfill)
    await page.goto(LOCAL_PAGE_URL)
    return page


_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) ")


def sdp_candidate_addresses(sdp: str) -> list[str]:
    """The connection addresses of every ``a=candidate`` line (RFC 8839 section 5.1)."""
    return [m.group(1) for line in sdp.splitlines() if (m := _CANDIDATE.match(line))]


def loopback_only_sdp(sdp: str) -> str:
    """``sdp`` without the ICE candidates whose address is not in 127.0.0.0/8."""
    lines = [
        line
        for line in sdp.split("\r\n")
        if not (m := _CANDIDATE.match(line)) or m.group(1).startswith("127.")
    ]
    return "\r\n".join(lines)


@dataclass(frozen=True)
class InboundAudio:
    """One ``inbound-rtp`` audio stream of a browser peer, as ``getStats()`` reports it."""

    mid: str | None
    ssrc: int
    track_identifier: str | None
    packets_received: int
    packets_lost: int
    bytes_received: int
    audio_level: float  # decoded, 0..1
    total_audio_energy: float
    total_samples_received: int
    concealed_samples: int
    jitter: float
    playing: bool
    # RTCRtpReceiver.getContributingSources() / getSynchronizationSources():
    # {"source": int, "audioLevel": float | None, "timestamp": float}
    contributing_sources: list[dict[str, Any]] = field(default_factory=list)
    synchronization_sources: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_js(cls, raw: dict[str, Any]) -> InboundAudio:
        return cls(
            mid=raw["mid"],
            ssrc=int(raw["ssrc"]),
            track_identifier=raw["trackIdentifier"],
            packets_received=int(raw["packetsReceived"]),
            packets_lost=int(raw["packetsLost"]),
            bytes_received=int(raw["bytesReceived"]),
            audio_level=float(raw["audioLevel"]),
            total_audio_energy=float(raw["totalAudioEnergy"]),
            total_samples_received=int(raw["totalSamplesReceived"]),
            concealed_samples=int(raw["concealedSamples"]),
            jitter=float(raw["jitter"]),
            playing=bool(raw["playing"]),
            contributing_sources=list(raw["contributingSources"]),
            synchronization_sources=list(raw["synchronizationSources"]),
        )

    @property
    def hearing(self) -> bool:
        """Audio arrives and is not silent (decoded energy above zero)."""
        return self.packets_received > 0 and self.total_audio_energy > 0


class BrowserPeer:
    """One ``RTCPeerConnection`` in a page, driven from Python."""

    def __init__(self, page: Page, pc_id: int) -> None:
        self.page = page
        self.id = pc_id

    @classmethod
    async def create(cls, page: Page, *, speak: bool = False, receive: int = 0) -> BrowserPeer:
        """A peer with the fake microphone as a track if ``speak``, and
        ``receive`` recvonly audio transceivers. No ICE servers."""
        pc_id = await page.evaluate(
            "(o) => window.sfuTest.create(o)", {"speak": speak, "receive": receive}
        )
        return cls(page, int(pc_id))

    async def offer(self, *, loopback_only: bool = True) -> str:
        """createOffer + setLocalDescription, after ICE gathering completed."""
        sdp = str(await self.page.evaluate("(id) => window.sfuTest.offer(id)", self.id))
        return loopback_only_sdp(sdp) if loopback_only else sdp

    async def answer(self, offer: str, *, loopback_only: bool = True) -> str:
        """Answer a remote offer (browser-to-browser calls), after gathering completed."""
        sdp = str(
            await self.page.evaluate(
                "([id, sdp]) => window.sfuTest.answer(id, sdp)", [self.id, offer]
            )
        )
        return loopback_only_sdp(sdp) if loopback_only else sdp

    async def apply_answer(self, answer: str) -> None:
        await self.page.evaluate(
            "([id, sdp]) => window.sfuTest.applyAnswer(id, sdp)", [self.id, answer]
        )

    async def state(self) -> dict[str, str]:
        """``{"connection": ..., "ice": ..., "signaling": ...}``."""
        return dict(await self.page.evaluate("(id) => window.sfuTest.state(id)", self.id))

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait for ``connectionState == "connected"`` (ICE and DTLS done)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            state = await self.state()
            if state["connection"] == "connected":
                return
            if state["connection"] in ("failed", "closed") or loop.time() > deadline:
                raise AssertionError(f"browser peer {self.id} did not connect: {state}")
            await asyncio.sleep(0.05)

    async def stats(self) -> list[InboundAudio]:
        """Inbound audio streams (sorted by mid), with CSRC/SSRC sources."""
        raw = await self.page.evaluate("(id) => window.sfuTest.stats(id)", self.id)
        return [InboundAudio.from_js(r) for r in raw]

    async def candidate_pairs(self) -> list[dict[str, Any]]:
        """Every ICE candidate pair in ``getStats()``: ``local``/``remote``
        addresses and types, ``state``, request/response/byte counters."""
        return list(await self.page.evaluate("(id) => window.sfuTest.candidatePairs(id)", self.id))

    async def packets_sent(self) -> int:
        raw = await self.page.evaluate("(id) => window.sfuTest.outbound(id)", self.id)
        return sum(int(r["packetsSent"]) for r in raw)

    async def wait_for_audio(
        self, *, count: int = 1, timeout: float = 10.0, min_packets: int = 50
    ) -> list[InboundAudio]:
        """Wait until ``count`` inbound streams each got ``min_packets`` packets
        of audio that is not silent; returns the last stats."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            streams = await self.stats()
            heard = [
                s for s in streams if s.packets_received >= min_packets and s.total_audio_energy > 0
            ]
            if len(heard) >= count:
                return streams
            if loop.time() > deadline:
                raise AssertionError(
                    f"browser peer {self.id}: {len(heard)} of {count} streams audible "
                    f"after {timeout:g}s: {streams}"
                )
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        await self.page.evaluate("(id) => window.sfuTest.close(id)", self.id)


def assert_loopback_candidates(sdps: Sequence[str]) -> None:
    """Every candidate in every SDP is in 127.0.0.0/8, and there is at least one."""
    for sdp in sdps:
        addresses = sdp_candidate_addresses(sdp)
        assert addresses, f"no ICE candidate in SDP:\n{sdp}"
        bad = [a for a in addresses if not a.startswith("127.")]
        assert not bad, f"non-loopback candidates {bad} in SDP:\n{sdp}"
