"""The aiohttp adapters check their settings when mounted: a wrong one is
the backend's mistake, told at once with InvalidSetting, never a route
nobody can reach or a yes/no option read the other way round."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

import sfu
from sfu.signaling.aiohttp import add_signaling, add_whip_whep

SECRET = "s" * 40


@pytest.mark.parametrize("prefix", ["/api/", "api", "/", 5, None])
async def test_a_whip_whep_prefix_that_would_mount_unreachable_routes_is_refused(
    prefix: Any,
) -> None:
    async with sfu.Server(token_secret=SECRET) as server:
        app = web.Application()
        with pytest.raises(sfu.InvalidSetting, match="prefix"):
            add_whip_whep(app, server, prefix=prefix)
        assert not list(app.router.resources())


async def test_a_whip_whep_prefix_is_where_the_routes_go() -> None:
    async with sfu.Server(token_secret=SECRET) as server:
        app = web.Application()
        add_whip_whep(app, server, prefix="/api/v1")
        paths = {resource.canonical for resource in app.router.resources()}
        assert "/api/v1/rooms/{room}/whip" in paths and "/api/v1/rooms/{room}/whep" in paths


@pytest.mark.parametrize(
    ("mount", "settings"),
    [
        (add_signaling, {"create_rooms": "no"}),
        (add_signaling, {"create_rooms": None}),
        (add_signaling, {"compress": "yes"}),
        (add_signaling, {"compress": 1}),
        (add_whip_whep, {"create_rooms": "no"}),
        (add_whip_whep, {"create_rooms": 0}),
    ],
)
async def test_yes_or_no_settings_take_only_true_or_false(
    mount: Any, settings: dict[str, Any]
) -> None:
    """``create_rooms="no"`` is truthy: taken, rooms would be made on demand,
    the opposite of what was asked."""
    async with sfu.Server(token_secret=SECRET) as server:
        with pytest.raises(sfu.InvalidSetting, match=next(iter(settings))):
            mount(web.Application(), server, **settings)


@pytest.mark.parametrize("mount", [add_signaling, add_whip_whep])
async def test_an_adapter_given_no_server_says_so(mount: Any) -> None:
    with pytest.raises(sfu.InvalidSetting, match="server must be an sfu.Server"):
        mount(web.Application(), None)
