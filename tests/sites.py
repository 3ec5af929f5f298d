"""aiohttp apps served on 127.0.0.1 for tests."""

from __future__ import annotations

from aiohttp import web


async def start_site(
    app: web.Application, port: int = 0, *, shutdown_timeout: float = 0.5
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on 127.0.0.1:``port`` (0: a free one); return the runner
    (``await runner.cleanup()`` stops it, cutting open WebSockets after
    ``shutdown_timeout``) and the port."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, int(runner.addresses[0][1])
