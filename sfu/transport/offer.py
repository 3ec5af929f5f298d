"""An SDP offer as the server reads it, and which of its m-lines carry the transport.

:func:`sfu.transport.sdp.parse_offer` makes an :class:`Offer` of the text;
:func:`check_transport` checks the ICE credentials (RFC 8839), DTLS
fingerprints (RFC 8122) and role (RFC 8842) of the m-line the transport
is on, and :func:`transport_group` picks the audio m-lines that share it
(RFC 8843 BUNDLE). Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sfu.errors import InvalidOffer

__all__ = [
    "AUDIO_LEVEL_URI",
    "DIRECTIONS",
    "RECEIVING",
    "SENDING",
    "Codec",
    "MediaSection",
    "Offer",
    "check_transport",
    "excerpt",
    "transport_group",
]

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"

DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
SENDING = frozenset({"sendrecv", "sendonly"})  # offerer sends: we may receive
RECEIVING = frozenset({"sendrecv", "recvonly"})  # offerer receives: we may send
# DTLS-SRTP profiles an answerer must accept (RFC 8829 section 5.1.3).
SRTP_PROTOCOLS = frozenset(
    {
        "UDP/TLS/RTP/SAVPF",
        "UDP/TLS/RTP/SAVP",
        "TCP/DTLS/RTP/SAVPF",
        "TCP/DTLS/RTP/SAVP",
        "RTP/SAVPF",
        "RTP/SAVP",
    }
)
# Digest length in bytes of each fingerprint hash we can verify (RFC 8122).
FINGERPRINT_SIZES = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}
SETUP_VALUES = frozenset({"actpass", "active", "passive", "holdconn"})

_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")  # RFC 8839 section 5.4 ice-char
_FINGERPRINT = re.compile(r"[0-9A-F]{2}(?::[0-9A-F]{2})*")


@dataclass(frozen=True)
class Codec:
    """One ``a=rtpmap`` entry with its ``a=fmtp`` and ``a=rtcp-fb`` lines."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int
    fmtp: str | None
    rtcp_feedback: tuple[str, ...]


@dataclass(frozen=True)
class MediaSection:
    """One ``m=`` line of the offer and its attributes (offerer's view)."""

    index: int
    kind: str
    port: int
    protocol: str
    mid: str | None
    direction: str
    opus: Codec | None
    extensions: dict[str, int]
    ssrcs: tuple[int, ...]
    rtcp_mux: bool
    ice_ufrag: str | None
    ice_pwd: str | None
    fingerprints: tuple[tuple[str, str], ...]
    setup: str | None
    formats: tuple[str, ...] = ()
    bundle_only: bool = False
    #: The first format's ``a=rtpmap`` encoding (``VP8/90000``), if it has one:
    #: an answer that keeps the line unused repeats it.
    first_rtpmap: str | None = None


@dataclass(frozen=True)
class Offer:
    """A parsed offer; the ICE/DTLS fields are those of the transport we use."""

    sections: tuple[MediaSection, ...]
    bundle: tuple[str, ...]
    ice_ufrag: str
    ice_pwd: str
    fingerprints: tuple[tuple[str, str], ...]
    setup: str


def excerpt(text: str, limit: int = 40) -> str:
    """Offer text quoted in an error message, cut short (offers can be 64 KiB)."""
    return text if len(text) <= limit else text[:limit] + "..."


def check_transport(
    section: MediaSection,
) -> tuple[str, str, tuple[tuple[str, str], ...], str]:
    """Validate the ICE and DTLS parameters of the transport m-line."""
    where = f"m-line {section.index}"
    ufrag, pwd = section.ice_ufrag, section.ice_pwd
    # RFC 8839 section 5.4: ufrag 4..256 ice-chars, pwd 22..256 ice-chars.
    if ufrag is None:
        raise InvalidOffer(f"{where}: offer has no a=ice-ufrag")
    if not (4 <= len(ufrag) <= 256 and _ICE_CHARS.fullmatch(ufrag)):
        raise InvalidOffer(f"{where}: a=ice-ufrag must be 4..256 characters of [A-Za-z0-9+/]")
    if pwd is None:
        raise InvalidOffer(f"{where}: offer has no a=ice-pwd")
    if not (22 <= len(pwd) <= 256 and _ICE_CHARS.fullmatch(pwd)):
        raise InvalidOffer(f"{where}: a=ice-pwd must be 22..256 characters of [A-Za-z0-9+/]")

    if not section.fingerprints:
        raise InvalidOffer(f"{where}: offer has no a=fingerprint (DTLS-SRTP needs one)")
    supported = []
    for algorithm, value in section.fingerprints:
        size = FINGERPRINT_SIZES.get(algorithm)
        if size is None:
            continue
        if not _FINGERPRINT.fullmatch(value) or (len(value) + 1) // 3 != size:
            raise InvalidOffer(f"{where}: a=fingerprint:{algorithm} value is malformed")
        supported.append((algorithm, value))
    if not supported:
        offered = ", ".join(sorted({a or "?" for a, _ in section.fingerprints}))
        raise InvalidOffer(
            f"{where}: a=fingerprint uses only unsupported hash algorithms ({excerpt(offered)}); "
            f"use one of {', '.join(FINGERPRINT_SIZES)}"
        )

    # RFC 4145 section 4: no a=setup means "active".
    setup = section.setup if section.setup is not None else "active"
    if setup == "passive":
        raise InvalidOffer(
            f"{where}: a=setup:passive asks the server to be the DTLS client, but the "
            "server is always the DTLS server; offer a=setup:actpass or active "
            "(ffmpeg's WHIP muxer: -whip_flags dtls_active)"
        )
    if setup not in ("actpass", "active"):
        what = "cannot be used" if setup in SETUP_VALUES else "is unknown"
        raise InvalidOffer(f"{where}: a=setup:{excerpt(setup)} {what}; offer actpass or active")
    return ufrag, pwd, tuple(supported), setup


def _unusable(section: MediaSection, bundle: tuple[str, ...]) -> str | None:
    """Why an audio m-line cannot carry audio for us, or None if it can."""
    where = f"audio m-line {section.index}"
    in_bundle = section.mid is not None and section.mid in bundle
    if section.port == 0 and not (section.bundle_only and in_bundle):
        return f"{where} is disabled (port 0)"
    if section.protocol.upper() not in SRTP_PROTOCOLS:
        return (
            f"{where} uses protocol {section.protocol}; the server needs DTLS-SRTP "
            "(UDP/TLS/RTP/SAVPF)"
        )
    if section.opus is None:
        return f"{where} does not offer opus/48000/2 (the server only forwards Opus)"
    if not section.rtcp_mux:
        return f"{where} has no a=rtcp-mux: the server requires rtcp-mux"
    return None


def transport_group(
    sections: Sequence[MediaSection], bundle: tuple[str, ...]
) -> list[MediaSection]:
    """The audio m-lines that share the transport, the first one first.

    With BUNDLE (RFC 8843) every usable audio m-line of the group shares its
    transport (whose ICE and DTLS attributes the parse reads from the
    offerer-tagged m-line when that has them, else from the first of these);
    those whose Opus payload type or audio-level id differ from the first's
    are left out, since one transport carries one mapping. Without BUNDLE
    only the first usable audio m-line can be used.
    """
    audio = [s for s in sections if s.kind == "audio"]
    if not audio:
        raise InvalidOffer("offer has no audio m-line")
    reasons = {s.index: _unusable(s, bundle) for s in audio}
    usable = [s for s in audio if reasons[s.index] is None]
    if not usable:
        raise InvalidOffer(
            "offer has no usable audio m-line: "
            + "; ".join(reason for reason in reasons.values() if reason)
        )
    bundled = [s for s in usable if s.mid is not None and s.mid in bundle]
    if not bundled:
        return usable[:1]
    first = bundled[0]
    assert first.opus is not None  # checked by _unusable
    level_id = first.extensions.get(AUDIO_LEVEL_URI, 0)
    return [
        s
        for s in bundled
        if s.opus is not None
        and s.opus.payload_type == first.opus.payload_type
        and s.extensions.get(AUDIO_LEVEL_URI, 0) == level_id
    ]
