"""A GStreamer webrtcbin speaker, driven over stdin/stdout by a test.

Run with Debian's /usr/bin/python3 (it sees python3-gi). Protocol, one JSON
object per line: it prints ``{"offer": sdp}``, reads ``{"answer": sdp}``,
then sends 440 Hz Opus tone bursts, printing ``{"received": n}`` every
half second (n: RTP packets the server sent back so far, depacketised),
until it reads ``{"finish": true}`` or ``--seconds`` have passed; then it
prints ``{"done": true, "ice": state, "received": n}``. Errors print
``{"error": text}``.

webrtcbin offers what the server must cope with: Opus only, no header
extensions (so no RFC 6464 levels), ``a=rtcp-mux-only``, transport-cc.
"""

from __future__ import annotations

import argparse
import json
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

# --video: a small VP8 picture on a line before the audio's, as whipsink's
# audio+video pipelines offer (the server answers it inactive).
VIDEO = (
    "videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=5/1 ! "
    "vp8enc deadline=1 ! rtpvp8pay pt=97 ! "
    "application/x-rtp,media=video,encoding-name=VP8,payload=97 ! webrtc. "
)
PIPELINE = (
    "webrtcbin name=webrtc bundle-policy=max-bundle "
    # 0.68 s of 440 Hz every 1.2 s: talk and pause, as a voice would.
    "audiotestsrc is-live=true wave=ticks freq=440 volume=0.3 sine-periods-per-tick=300 "
    "tick-interval=1200000000 ! audioconvert ! audioresample ! "
    "opusenc ! rtpopuspay pt=96 ! application/x-rtp,media=audio,encoding-name=OPUS,payload=96 ! webrtc."
)


def say(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--video", action="store_true", help="a video line first")
    args = parser.parse_args()
    Gst.init(None)
    pipeline = Gst.parse_launch(
        PIPELINE.replace("bundle-policy=max-bundle ", "bundle-policy=max-bundle " + VIDEO)
        if args.video
        else PIPELINE
    )
    webrtc = pipeline.get_by_name("webrtc")
    loop = GLib.MainLoop()

    def on_offer(promise: Gst.Promise, _: object) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer")
        webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def on_negotiation_needed(element: Gst.Element) -> None:
        element.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer, None))

    def on_gathering(element: Gst.Element, _: object) -> None:
        if (
            element.get_property("ice-gathering-state")
            == GstWebRTC.WebRTCICEGatheringState.COMPLETE
        ):
            say({"offer": element.get_property("local-description").sdp.as_text()})
            line = sys.stdin.readline()
            if not line:
                loop.quit()
                return
            answer_text = json.loads(line)["answer"]
            _, sdp = GstSdp.SDPMessage.new_from_text(answer_text)
            answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
            element.emit("set-remote-description", answer, Gst.Promise.new())
            GLib.timeout_add(int(args.seconds * 1000), finish)
            GLib.timeout_add(500, report)
            GLib.io_add_watch(sys.stdin, GLib.IO_IN | GLib.IO_HUP, on_stdin)

    received = [0]

    def count_buffer(_pad: Gst.Pad, _info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        received[0] += 1
        return Gst.PadProbeReturn.OK

    def on_pad_added(_element: Gst.Element, pad: Gst.Pad) -> None:
        # What the server sends back (its one line carries the room mix):
        # consumed, as a client that plays it would, and counted.
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        sink = Gst.ElementFactory.make("fakesink")
        sink.set_property("sync", False)
        sink.set_property("async", False)
        pipeline.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))
        pad.add_probe(Gst.PadProbeType.BUFFER, count_buffer)

    finished = [False]

    def report() -> bool:
        if not finished[0]:
            say({"received": received[0]})
        return not finished[0]

    def finish() -> bool:
        if not finished[0]:
            finished[0] = True
            state = webrtc.get_property("ice-connection-state")
            say({"done": True, "ice": state.value_nick, "received": received[0]})
            loop.quit()
        return False

    def on_stdin(_source: object, _condition: object) -> bool:
        line = sys.stdin.readline()
        if not line or json.loads(line).get("finish"):
            finish()
            return False
        return True

    def on_message(_: Gst.Bus, message: Gst.Message) -> None:
        if message.type == Gst.MessageType.ERROR:
            error, _debug = message.parse_error()
            say({"error": str(error)})
            loop.quit()

    webrtc.connect("on-negotiation-needed", on_negotiation_needed)
    webrtc.connect("pad-added", on_pad_added)
    webrtc.connect("notify::ice-gathering-state", on_gathering)
    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    pipeline.set_state(Gst.State.PLAYING)
    GLib.timeout_add(int((args.seconds + 20) * 1000), loop.quit)  # hard stop
    try:
        loop.run()
    finally:
        pipeline.set_state(Gst.State.NULL)


if __name__ == "__main__":
    main()
