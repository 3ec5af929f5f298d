"""Batteries for signaling: a JSON-over-WebSocket protocol, WHIP/WHEP, metrics.

:class:`SignalingSession` is framework-independent; :mod:`sfu.signaling.aiohttp`
mounts it (and WHIP/WHEP and ``/metrics``) in an aiohttp app. The protocol
is documented in ``docs/signaling.md``; the browser client is ``static/sfu.js``.
"""

from __future__ import annotations

from pathlib import Path

from .protocol import MAX_MESSAGE, SignalingSession

STATIC_DIR = Path(__file__).with_name("static")

__all__ = ["MAX_MESSAGE", "STATIC_DIR", "SignalingSession"]
