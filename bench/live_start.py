"""How soon a browser's ``<audio>`` element plays a room's live stream, and how far behind live.

One aiohttp app on 127.0.0.1 serves a page with ``<audio src=live.ogg
autoplay>`` and the room's live stream (``live_stream_handler``); an aiortc
speaker (``tests.clients.join``) plays a 440 Hz tone into the room; headless
Debian Chromium (the test flags, ``tests/e2e/browser.py``) opens the page, a
new tab per run. Measured per run:

* from navigation (``performance.timeOrigin``) to the element's
  ``loadedmetadata`` and ``playing`` events and to the first
  ``currentTime > 0`` (polled every 5 ms in the page);
* what the server had written to that client by then (bytes, Ogg pages,
  seconds of audio), counted on the server side as each write is made;
* how far behind the live edge the element plays: the audio the server had
  sent that client (seconds, from the granule positions, pre-skip excluded)
  minus the element's ``currentTime``, every 0.5 s for ``--settle`` seconds
  (the last value is reported, with the extremes). The server sends each
  page as the mixer completes it, so this is the element's lag behind the
  mix; the mix is one jitter buffer behind the speaker;
* with ``--ear``: mouth to ear. Once the element plays, the speaker's tone
  goes from 440 Hz to 880 Hz at a known wall-clock time (not a pause: the
  element's stalls would read as one); the page routes the element through
  a Web Audio ``AnalyserNode`` and stamps the first block where 880 Hz
  dominates, after one where 440 Hz did. It includes the mix's own delay
  (the jitter buffer) and Chromium's output buffering.

``--warm`` keeps another HTTP client on the stream throughout (started 6 s
before the first run), so the mixer is running when each measured client
joins: an overflow listener arriving at a room that has live listeners
already. Without it every run's client starts the stream (and the mixer).
``--silent``: the speaker sends silence (a quiet room). ``--pause S``: once
the element plays, the speaker is silent for S seconds, then speaks again.
``stops``: each ``waiting`` event once the element played (where, and for
how long): with ``--settle 16`` a run plays through three of Chromium's
32 KiB blocks.

Run: ``python bench/live_start.py [--runs 5] [--warm] [--silent] [--pause 30]
[--ear] [--burst-bytes 32768] [--min-bitrate 48000] [--bitrate 48000]
[--packets-per-page 5] [--start-silence 1.0] [--settle 3] [--label TEXT]``. ``SFU_TREE=/path`` measures
another tree (e.g. ``git archive HEAD``, as in bench/README.md's
Commands): the options the handler of that tree does not have must then
be left out. Needs /usr/bin/chromium and the playwright package. Prints a
line per run and a summary; writes ``bench/results/live_start-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TREE = os.environ.get("SFU_TREE") or str(HERE.parent)
sys.path.insert(0, TREE)
sys.path.insert(1, str(HERE))

import aiohttp  # noqa: E402
import harness  # noqa: E402
from aiohttp import web  # noqa: E402

import sfu  # noqa: E402
from sfu.media import livestream  # noqa: E402
from sfu.media.ogg import parse_opus_head, parse_pages  # noqa: E402
from sfu.signaling.aiohttp import live_stream_handler  # noqa: E402

PAGE = """<!doctype html>
<html><body>
<audio id="live" src="/rooms/hall/live.ogg?client=%(client)s" autoplay></audio>
<script>
  const audio = document.getElementById("live");
  const now = () => performance.timeOrigin + performance.now();
  window.live = {origin: performance.timeOrigin, events: {}, counts: {}, errors: [],
                 firstTime: null, armed: false, heard: null, stops: []};
  for (const name of ["loadstart", "loadedmetadata", "loadeddata", "canplay",
                      "canplaythrough", "playing", "waiting", "stalled"]) {
    audio.addEventListener(name, () => {
      if (!(name in window.live.events)) window.live.events[name] = now();
      window.live.counts[name] = (window.live.counts[name] || 0) + 1;
    });
  }
  // Stops once it played: where (currentTime), and for how long (s).
  audio.addEventListener("waiting", () => {
    if ("playing" in window.live.events) window.live.stops.push([audio.currentTime, now(), null]);
  });
  audio.addEventListener("playing", () => {
    const last = window.live.stops[window.live.stops.length - 1];
    if (last && last[2] === null) last[2] = (now() - last[1]) / 1000;
  });
  audio.addEventListener("error", () =>
    window.live.errors.push(audio.error ? audio.error.code + " " + audio.error.message : "error"));
  setInterval(() => {
    if (audio.currentTime > 0 && window.live.firstTime === null) window.live.firstTime = now();
  }, 5);
  if (%(ear)s) {
    // Mouth to ear: the element through an analyser. Once armed, wait for the
    // 440 Hz tone to dominate, then stamp the first block where 880 Hz does
    // (the speaker's tone changed; a pause would be confused with a stall).
    const context = new AudioContext();
    const analyser = context.createAnalyser();
    analyser.fftSize = 2048;
    analyser.smoothingTimeConstant = 0;
    context.createMediaElementSource(audio).connect(analyser);
    analyser.connect(context.destination);
    const spectrum = new Float32Array(analyser.frequencyBinCount);
    const bin = (hz) => Math.round(hz * analyser.fftSize / context.sampleRate);
    let low = false;
    const listen = setInterval(() => {
      if (!window.live.armed) return;
      analyser.getFloatFrequencyData(spectrum);  // dB
      const a = spectrum[bin(440)], b = spectrum[bin(880)];
      if (a > b + 20) low = true;
      else if (low && b > a + 20) { window.live.heard = now(); clearInterval(listen); }
    }, 2);
    context.resume();
  }
  audio.play().catch((e) => window.live.errors.push("play: " + e));
</script>
</body></html>
"""

# Per HTTP client (``?client=`` in the URL): [(wall time, bytes, pages, granule)] per write.
SENT: dict[str, list[tuple[float, int, int, int]]] = {}
PRE_SKIP: dict[str, int] = {}


def instrument() -> None:
    """Wrap LiveClient.headers/read: log every chunk the handler is about to write."""
    original_headers = livestream.LiveClient.headers
    original_read = livestream.LiveClient.read

    def log(client: Any, chunk: bytes) -> None:
        key = getattr(client, "bench_key", None)
        if key is None or not chunk:
            return
        pages = list(parse_pages(chunk))
        rows = SENT.setdefault(key, [])
        size, count, granule = rows[-1][1:] if rows else (0, 0, 0)
        granule = max([granule, *(page.granule for page in pages)])
        rows.append((time.time(), size + len(chunk), count + len(pages), granule))
        if pages and pages[0].sequence == 0:
            PRE_SKIP[key] = parse_opus_head(pages[0].body)[1]

    def headers(self: Any) -> bytes:
        chunk = original_headers(self)
        log(self, chunk)
        return chunk

    async def read(self: Any) -> bytes:
        chunk = await original_read(self)
        log(self, chunk)
        return chunk

    livestream.LiveClient.headers = headers  # type: ignore[method-assign]
    livestream.LiveClient.read = read  # type: ignore[method-assign]


def tag_clients(app: web.Application) -> None:
    """A middleware naming the LiveClient a request makes after its ``?client=``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        key = request.query.get("client")
        if key is None:
            return await handler(request)
        original_subscribe = livestream.LiveStream.subscribe

        def subscribe(self: Any) -> Any:
            client = original_subscribe(self)
            client.bench_key = key
            return client

        livestream.LiveStream.subscribe = subscribe  # type: ignore[method-assign]
        try:
            return await handler(request)
        finally:
            livestream.LiveStream.subscribe = original_subscribe  # type: ignore[method-assign]

    app.middlewares.append(middleware)


def sent_at(key: str, when: float) -> tuple[int, int, float]:
    """(bytes, pages, audio seconds) the server had written to ``key`` by wall time ``when``."""
    rows = [row for row in SENT.get(key, []) if row[0] <= when]
    if not rows:
        return 0, 0, 0.0
    _, size, pages, granule = rows[-1]
    return size, pages, max(0, granule - PRE_SKIP.get(key, 0)) / 48000


async def probe_lag(page: Any, key: str) -> float:
    """The audio sent to ``key`` minus the element's currentTime (seconds), now."""
    before = time.time()
    current = await page.evaluate("document.getElementById('live').currentTime")
    after = time.time()
    return sent_at(key, (before + after) / 2)[2] - float(current)


async def warm_reader(url: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        while await response.content.read(4096):
            pass


async def one_run(
    browser: Any, base: str, key: str, args: argparse.Namespace, speaker: Any
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    page = await browser.new_page()
    # Not "load": a media element delays the load event until it has data.
    await page.goto(f"{base}/run/{key}?ear={int(args.ear)}", wait_until="commit")
    deadline = loop.time() + args.timeout
    while await page.evaluate("window.live.firstTime") is None:
        if loop.time() > deadline:
            state = await page.evaluate("window.live")
            await page.close()
            return {"key": key, "failed": state}
        await asyncio.sleep(0.02)
    lag_before_pause = None
    if args.pause:
        await asyncio.sleep(1.0)
        lag_before_pause = await probe_lag(page, key)
        speaker.track.loud = False
        await asyncio.sleep(args.pause)
        speaker.track.loud = True
    tone_at = None
    if args.ear:
        await asyncio.sleep(1.0)
        await page.evaluate("window.live.armed = true")
        await asyncio.sleep(0.5)
        tone_at = time.time()
        speaker.track.frequency = 880
        ear_deadline = loop.time() + 30
        while await page.evaluate("window.live.heard") is None and loop.time() < ear_deadline:
            await asyncio.sleep(0.02)
        speaker.track.frequency = 440
    lags = []
    settle_until = loop.time() + args.settle
    while True:
        lags.append(await probe_lag(page, key))
        if loop.time() >= settle_until:
            break
        await asyncio.sleep(0.5)
    state = await page.evaluate("window.live")
    await_time = await page.evaluate("document.getElementById('live').currentTime")
    await page.close()
    origin = state["origin"] / 1000
    events = {name: stamp / 1000 - origin for name, stamp in state["events"].items()}
    first = state["firstTime"] / 1000 - origin
    playing = events.get("playing", first)
    size, pages, audio = sent_at(key, origin + playing)
    result: dict[str, Any] = {
        "key": key,
        "first_bytes": SENT[key][0][0] - origin,
        "events": events,
        "first_time": first,
        "playing": playing,
        "sent_by_playing": {"bytes": size, "pages": pages, "audio": audio},
        "lag": lags[-1],
        "lag_min": min(lags),
        "lag_max": max(lags),
        "lag_before_pause": lag_before_pause,
        "waiting": state["counts"].get("waiting", 0),
        # Once playing: [currentTime, seconds stopped] of each stop (None: not resumed).
        "stops": [
            [round(at, 3), None if held is None else round(held, 3)]
            for at, _, held in state["stops"]
        ],
        "played": round(await_time, 3),
        "errors": state["errors"],
        # The server's writes up to a second after playing:
        # (seconds since navigation, bytes, pages, seconds of audio).
        "sent": [
            (round(at - origin, 4), n, p, round(max(0, g - PRE_SKIP.get(key, 0)) / 48000, 3))
            for at, n, p, g in SENT[key]
            if at - origin <= playing + 1
        ],
    }
    if args.ear:
        result["ear"] = None if state["heard"] is None else state["heard"] / 1000 - tone_at
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    from tests.clients import join, wait_for
    from tests.e2e.browser import launch_browser

    instrument()
    options: dict[str, Any] = {}
    for name in ("packets_per_page", "burst_bytes", "min_bitrate", "start_silence"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    results = []
    async with sfu.Server() as server:
        room = server.room("hall")
        room.mixer.bitrate = args.bitrate
        speaker = await join(room, "alice", speaker=True, frequency=440, loud=not args.silent)
        app = web.Application()
        tag_clients(app)
        app.router.add_get("/rooms/{room}/live.ogg", live_stream_handler(server, **options))

        async def run_page(request: web.Request) -> web.Response:
            ear = "true" if request.query.get("ear") == "1" else "false"
            html = PAGE % {"client": request.match_info["key"], "ear": ear}
            return web.Response(text=html, content_type="text/html")

        app.router.add_get("/run/{key}", run_page)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        warm = None
        try:
            await wait_for(lambda: len(speaker.sent) > 10, 10, "the speaker to send")
            if args.warm:
                warm = asyncio.create_task(warm_reader(f"{base}/rooms/hall/live.ogg"))
                await wait_for(lambda: room.mixer.running, 5, "the mixer to start")
                await asyncio.sleep(6.0)  # more history than a burst takes
            async with async_playwright() as pw:
                browser = await launch_browser(pw, Path(TREE) / "tests" / "data" / "speech.wav")
                try:
                    for run in range(args.runs):
                        if not args.warm:
                            await wait_for(lambda: not room.mixer.running, 5, "the mixer to stop")
                        result = await one_run(browser, base, f"run{run}", args, speaker)
                        results.append(result)
                        print(summary_line(result), flush=True)
                        await asyncio.sleep(0.5)
                finally:
                    await browser.close()
        finally:
            if warm is not None:
                warm.cancel()
                await asyncio.gather(warm, return_exceptions=True)
            await speaker.close()
            await runner.cleanup()
    settings = {
        name: getattr(args, name)
        for name in (
            "label",
            "warm",
            "silent",
            "pause",
            "ear",
            "bitrate",
            "packets_per_page",
            "burst_bytes",
            "min_bitrate",
            "start_silence",
            "settle",
        )
    }
    return {"settings": settings, "chromium": CHROMIUM_VERSION, "runs": results}


CHROMIUM_VERSION: str | None = None


def summary_line(r: dict[str, Any]) -> str:
    if "failed" in r:
        return f"{r['key']}: never played: {r['failed']}"
    sent = r["sent_by_playing"]
    meta = r["events"].get("loadedmetadata")
    line = (
        f"{r['key']}: first bytes {r['first_bytes']:.3f} s, metadata "
        f"{'-' if meta is None else f'{meta:.3f}'} s, playing {r['playing']:.3f} s, "
        f"currentTime > 0 {r['first_time']:.3f} s; sent by playing: {sent['bytes']} B, "
        f"{sent['pages']} pages, {sent['audio']:.2f} s of audio; behind live {r['lag']:.2f} s "
        f"({r['lag_min']:.2f}..{r['lag_max']:.2f}); waiting {r['waiting']}"
    )
    if r["lag_before_pause"] is not None:
        line += f"; behind live before the pause {r['lag_before_pause']:.2f} s"
    if "ear" in r:
        ear = "-" if r["ear"] is None else f"{r['ear']:.3f}"
        line += f"; mouth to ear {ear} s"
    if r["errors"]:
        line += f"; errors {r['errors']}"
    return line


def summarize(report: dict[str, Any]) -> None:
    runs = [r for r in report["runs"] if "failed" not in r]
    print(f"settings: {report['settings']}; {len(runs)} of {len(report['runs'])} runs played")
    if not runs:
        return

    def stats(values: list[float]) -> str:
        return (
            f"median {statistics.median(values):.3f}, min {min(values):.3f}, max {max(values):.3f}"
        )

    print(f"  playing          s: {stats([r['playing'] for r in runs])}")
    print(f"  currentTime > 0  s: {stats([r['first_time'] for r in runs])}")
    print(f"  bytes by playing  : {stats([r['sent_by_playing']['bytes'] for r in runs])}")
    print(f"  audio by playing s: {stats([r['sent_by_playing']['audio'] for r in runs])}")
    print(f"  behind live      s: {stats([r['lag'] for r in runs])}")
    stops = [stop for r in runs for stop in r.get("stops", [])]
    played = sum(r.get("played", 0.0) for r in runs)
    print(
        f"  stops once playing: {len(stops)} in {played:.1f} s played"
        + (
            f", at {[at for at, _ in stops]} s, held {[held for _, held in stops]} s"
            if stops
            else ""
        )
    )
    ears = [r["ear"] for r in runs if r.get("ear") is not None]
    if ears:
        print(f"  mouth to ear     s: {stats(ears)}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warm", action="store_true", help="another client keeps the stream on")
    parser.add_argument("--silent", action="store_true", help="the speaker sends silence")
    parser.add_argument(
        "--pause", type=float, default=0.0, help="once playing, the speaker is silent this long"
    )
    parser.add_argument("--ear", action="store_true", help="also time a tone's onset, mouth to ear")
    parser.add_argument("--bitrate", type=int, default=48000, help="the mixer's Opus bit rate")
    parser.add_argument(
        "--packets-per-page",
        type=int,
        default=None,
        help="live_stream_handler's (default: its own)",
    )
    parser.add_argument(
        "--burst-bytes", type=int, default=None, help="live_stream_handler's (default: its own)"
    )
    parser.add_argument(
        "--min-bitrate", type=int, default=None, help="live_stream_handler's (default: its own)"
    )
    parser.add_argument(
        "--start-silence", type=float, default=None, help="live_stream_handler's (default: its own)"
    )
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds of lag probes (and of looking for stops)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for playing")
    parser.add_argument("--label", default="")
    return parser.parse_args()


if __name__ == "__main__":
    import subprocess

    from tests.e2e.browser import CHROMIUM

    CHROMIUM_VERSION = subprocess.run(
        [CHROMIUM, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    arguments = parse_args()
    report = asyncio.run(main(arguments))
    summarize(report)
    print(harness.write_result("live_start", report))
