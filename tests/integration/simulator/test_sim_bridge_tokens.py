"""The simulator's own media client against the real bridge: the per-call token decides.

The carrier opens the `<Stream>` URL the voice webhook gave it; the bridge must refuse a stream
whose token is missing, expired or minted for another call before any audio flows (the simulator
records the refused handshake, reports stream-error and drops the call), and accept the right one."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from conftest import API_KEY, FakeApp, Req, place_call, wait_for

from bridge.engines.fake import FakeEngine
from bridge.server import BridgeServer
from bridge.testing import MemoryStore, loopback_bridge
from leadqual.campaign import Campaign
from leadqual.models import Lead
from leadqual.signing import make_bridge_token

pytestmark = pytest.mark.integration

SECRET = "bridge-token-secret"
LEAD = "+254712000001"
SILENT = {"numbers": {LEAD: {"says": []}}}


@pytest.fixture
async def bridge(example_campaign: Campaign) -> AsyncIterator[tuple[BridgeServer, MemoryStore]]:
    store = MemoryStore()
    server = await loopback_bridge(
        example_campaign, lambda: FakeEngine(ms_per_word=10, min_reply_ms=100), store, secret=SECRET
    )
    yield server, store
    await server.drain(deadline_s=1)


def stream_to(
    bridge: tuple[BridgeServer, MemoryStore], token_for: Callable[[str], str | None]
) -> Callable[[Req], tuple[int, str, str]]:
    """The voice webhook's answer: a <Stream> to the bridge carrying `token_for(session id)`; the
    call is on record for the bridge, as the dialer and the voice function would have put it."""
    server, store = bridge

    def reply(request: Req) -> tuple[int, str, str]:
        session = request.data["sessionId"]
        store.add_call(Lead(lead_id="L1", phone=LEAD, name="Wanjiku Kamau", opt_in=True), session)
        query = {"session": session, **({"token": token} if (token := token_for(session)) else {})}
        url = f"{server.url}/stream?{urlencode(query)}".replace("&", "&amp;")
        doc = (
            f'<Response><Stream url="{url}" connect="true" track="inbound_track" '
            'outputSamplingRate="16000" bidirectionalSamplingRate="16000"/></Response>'
        )
        return 200, "application/xml", doc

    return reply


async def place(sim: Any) -> str:
    return str((await place_call(sim, LEAD, "lq-tok-1"))["session_id"])


@pytest.mark.parametrize(
    ("case", "token_for", "status"),
    [
        ("missing", lambda sid: None, 401),
        ("expired", lambda sid: make_bridge_token(SECRET, sid, ttl_s=60, now=time.time() - 3600), 403),
        ("another call's", lambda sid: make_bridge_token(SECRET, "HD_0000deadbeef"), 403),
        ("forged", lambda sid: make_bridge_token("not-the-secret", sid), 403),
    ],
)
async def test_the_bridge_refuses_a_stream_without_this_calls_valid_token(
    make_sim: Any,
    fake_app: FakeApp,
    bridge: tuple[BridgeServer, MemoryStore],
    case: str,
    token_for: Callable[[str], str | None],
    status: int,
) -> None:
    server, _ = bridge
    sim = await make_sim(SILENT)
    fake_app.voice_reply = stream_to(bridge, token_for)
    session = await place(sim)
    view = await sim.wait_ended(session, 10)
    [violation] = view["violations"]
    assert violation["reason"] == "stream_connect_failed", case
    assert f"HTTP {status}" in violation["detail"]
    assert view["call"]["hangup_cause"] == "stream_error"
    assert server.active_sessions == 0
    assert bridge[1].outcomes == {}  # no conversation ran, so nothing was decided


async def test_the_bridge_accepts_the_stream_with_this_calls_token(
    make_sim: Any, fake_app: FakeApp, bridge: tuple[BridgeServer, MemoryStore]
) -> None:
    server, _ = bridge
    sim = await make_sim(SILENT)
    fake_app.voice_reply = stream_to(bridge, lambda sid: make_bridge_token(SECRET, sid))
    session = await place(sim)
    await wait_for(lambda: server.active_sessions == 1)
    await rest_hangup(sim, session)  # the lead is silent: end the call rather than wait it out
    view = await sim.wait_ended(session, 10)
    assert view["violations"] == []
    assert [e["kind"] for e in view["timeline"] if e["kind"] == "stream_open"] == ["stream_open"]


async def rest_hangup(sim: Any, session: str) -> None:
    async with httpx.AsyncClient(trust_env=False) as c:
        r = await c.post(
            f"{sim.url}/v1/calls/{session}/hangup", headers={"Authorization": f"Bearer {API_KEY}"}
        )
    assert r.status_code == 200
