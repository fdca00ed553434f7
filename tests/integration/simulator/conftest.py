"""A tiny scripted "app" that drives the Sautikit simulator over real loopback sockets.

`FakeApp` is the app side of SAUTIKIT.md: an HTTP server for the voice webhook, events and stream
status callbacks (it checks every signature and records every request), and a WebSocket server for
the media stream (selecting `audio.drachtio.org` unless told not to). Tests script what it answers
and how it behaves on the socket, then assert on what it received and on the simulator's records.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import numpy as np
import pytest
import yaml
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from leadqual.signing import SIGNATURE_HEADER, SignatureError, verify_webhook
from local.sautikit import Directory, Simulator

SECRET = "whsec_test_secret"
API_KEY = "sk_test_key"
FROM = "+254700000100"
LIFECYCLE = {"StreamStarted", "StreamStopped", "DialCompleted", "Completed", "busy", "no-answer", "failed"}


@dataclass
class Req:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    data: dict[str, Any]
    signature_ok: bool
    t: float


@dataclass
class WsRecord:
    path: str
    subprotocol: str | None
    metadata: dict[str, Any] | None = None
    first_frame_was_text: bool | None = None
    frames: list[tuple[float, bytes]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    close_code: int | None = None
    closed_at: float | None = None
    opened_at: float = field(default_factory=time.monotonic)

    def audio(self) -> np.ndarray:
        return np.frombuffer(b"".join(f for _, f in self.frames), dtype="<i2").astype(np.int16)


WsBehaviour = Callable[[ServerConnection, WsRecord], Awaitable[None]]


async def listen_only(ws: ServerConnection, rec: WsRecord) -> None:
    """Keep the stream open and record what arrives until the switch closes it."""
    await asyncio.Future()  # cancelled when the connection closes


class FakeApp:
    def __init__(self, secret: str = SECRET, *, select_subprotocol: bool = True) -> None:
        self.secret = secret
        self.select_subprotocol = select_subprotocol
        self.requests: list[Req] = []
        self.voice_reply: Callable[[Req], tuple[int, str, str]] = lambda _r: (
            200,
            "application/xml",
            "<Response/>",
        )
        self.lifecycle_reply: Callable[[Req], tuple[int, str, str]] = lambda _r: (
            200,
            "application/xml",
            "<Response></Response>",
        )
        self.event_statuses: list[int] = []  # scripted statuses for the next event deliveries, then 200
        self.verify = True  # False: an app that accepts any signature
        self.expect_valid_signatures = True  # checked at teardown: every request the app got was signed
        self.routes: dict[str, tuple[int, str, bytes]] = {}  # scripted answers for other paths
        self.voice_delay_s = 0.0  # a slow first answer
        self.ws_behaviour: WsBehaviour = listen_only
        self.ws: list[WsRecord] = []
        self.ws_opened = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._ws_server: Any = None
        self.http_url = ""
        self.ws_url = ""

    # -- URLs ------------------------------------------------------------------------------------------
    @property
    def voice_url(self) -> str:
        return f"{self.http_url}/voice"

    @property
    def events_url(self) -> str:
        return f"{self.http_url}/events"

    @property
    def status_url(self) -> str:
        return f"{self.http_url}/stream-status"

    def stream_xml(self, *, after: str = "", **attrs: str) -> str:
        base = {
            "url": f"{self.ws_url}/media?token=abc",
            "connect": "true",
            "track": "inbound_track",
            "outputSamplingRate": "16000",
            "bidirectionalSamplingRate": "16000",
            "statusCallback": self.status_url,
        }
        base.update(attrs)
        rendered = " ".join(f'{k}="{v}"' for k, v in base.items() if v is not None)
        return f"<Response><Stream {rendered}/>{after}</Response>"

    def answer_with(self, xml: str) -> None:
        self.voice_reply = lambda _r: (200, "application/xml", xml)

    # -- what arrived ----------------------------------------------------------------------------------
    def voice(self, state: str | None = None) -> list[Req]:
        out = [r for r in self.requests if r.path == "/voice"]
        return [r for r in out if r.data.get("callSessionState") == state] if state else out

    def events(self) -> list[Req]:
        return [r for r in self.requests if r.path == "/events"]

    def stream_statuses(self) -> list[Req]:
        return [r for r in self.requests if r.path == "/stream-status"]

    # -- servers ---------------------------------------------------------------------------------------
    async def start(self) -> FakeApp:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._http)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.http_url = f"http://127.0.0.1:{port}"
        self._ws_server = await serve(
            self._ws_handler,
            "127.0.0.1",
            0,
            subprotocols=["audio.drachtio.org"] if self.select_subprotocol else None,  # type: ignore[list-item]
            compression=None,
        )
        ws_port = next(iter(self._ws_server.sockets)).getsockname()[1]
        self.ws_url = f"ws://127.0.0.1:{ws_port}"
        return self

    async def stop(self) -> None:
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _http(self, request: web.Request) -> web.Response:
        body = await request.read()
        sig_ok = True
        try:
            verify_webhook(self.secret, body, request.headers.get(SIGNATURE_HEADER))
        except SignatureError:
            sig_ok = False
        ctype = request.headers.get("Content-Type", "")
        data: dict[str, Any] = {}
        if "json" in ctype:
            data = json.loads(body or b"{}")
        elif body:
            data = dict(parse_qsl(body.decode(), keep_blank_values=True))
        req = Req(
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            body,
            data,
            sig_ok,
            time.monotonic(),
        )
        self.requests.append(req)
        if not sig_ok and self.verify and request.method == "POST":
            return web.Response(status=401, text="bad signature")
        if request.path == "/voice":
            state = data.get("callSessionState")
            lifecycle = state in LIFECYCLE and not (state == "Completed" and data.get("isActive") == "1")
            if not lifecycle and self.voice_delay_s:
                await asyncio.sleep(self.voice_delay_s)
            status, ct, text = (self.lifecycle_reply if lifecycle else self.voice_reply)(req)
            return web.Response(status=status, text=text, content_type=ct.split(";")[0])
        if request.path == "/events":
            status = self.event_statuses.pop(0) if self.event_statuses else 200
            return web.Response(status=status)
        if request.path in self.routes:
            status, ct, payload = self.routes[request.path]
            return web.Response(status=status, body=payload, content_type=ct)
        return web.Response(status=200)

    async def _ws_handler(self, ws: ServerConnection) -> None:
        rec = WsRecord(path=ws.request.path if ws.request else "", subprotocol=ws.subprotocol)
        self.ws.append(rec)
        self.ws_opened.set()
        reader = asyncio.create_task(self._read(ws, rec))
        behaviour = asyncio.create_task(self.ws_behaviour(ws, rec))
        try:
            await asyncio.wait({reader, behaviour}, return_when=asyncio.FIRST_COMPLETED)
            if behaviour.done() and behaviour.exception() is None and not reader.done():
                await reader  # the behaviour returned: keep reading until the socket closes
        finally:
            behaviour.cancel()
            reader.cancel()
            await asyncio.gather(reader, behaviour, return_exceptions=True)
        rec.close_code = ws.close_code
        rec.closed_at = time.monotonic()

    async def _read(self, ws: ServerConnection, rec: WsRecord) -> None:
        try:
            async for msg in ws:
                if isinstance(msg, str):
                    if rec.first_frame_was_text is None:
                        rec.first_frame_was_text = True
                        rec.metadata = json.loads(msg)
                    else:
                        rec.texts.append(msg)
                else:
                    if rec.first_frame_was_text is None:
                        rec.first_frame_was_text = False
                    rec.frames.append((time.monotonic(), msg))
        except ConnectionClosed:
            pass
        rec.close_code = ws.close_code


async def place_call(
    sim: Simulator, to: str, label: str | None = "lq-lead-1", **extra: Any
) -> dict[str, Any]:
    """POST /v1/calls from the workspace's number, as our dialer does; the 201's body."""
    body = {"from": FROM, "to": [to], **extra}
    if label is not None:
        body["client_request_id"] = label
    async with httpx.AsyncClient(trust_env=False) as c:
        r = await c.post(f"{sim.url}/v1/calls", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def wait_for(predicate: Callable[[], Any], limit_s: float = 10.0) -> None:
    """Poll until `predicate()` (plain or awaitable) is truthy; a fixed sleep races a loaded machine."""
    deadline = time.monotonic() + limit_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.02)


def tone16k(seconds: float, freq: float = 440.0, amp: float = 8000.0, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


async def send_audio(ws: ServerConnection, pcm: bytes, chunk: int = 640) -> None:
    """Send a whole reply at once, unpaced, in 640-byte chunks (what a production user does)."""
    for i in range(0, len(pcm), chunk):
        await ws.send(pcm[i : i + chunk])


@pytest.fixture
async def fake_app():
    app = await FakeApp().start()
    yield app
    await app.stop()
    if app.expect_valid_signatures:
        callbacks = [r for r in app.requests if r.method == "POST"]  # <Play> fetches audio with a plain GET
        assert all(r.signature_ok for r in callbacks), "a callback arrived without a valid signature"


@pytest.fixture
async def make_sim(tmp_path: Path, fake_app: FakeApp):
    """Factory: a started simulator whose number routes to `fake_app` (short rings, bounded retries)."""
    sims: list[Simulator] = []

    async def make(directory: dict[str, Any] | str | Directory | None = None, **kwargs: Any) -> Simulator:
        if isinstance(directory, Directory):
            d = directory
        elif isinstance(directory, str):
            d = Directory.from_yaml(directory)
        else:
            d = Directory.model_validate(directory or {})
        options: dict[str, Any] = {
            "api_key": API_KEY,
            "webhook_secret": SECRET,
            "numbers": [
                {
                    "id": "num_test_1",
                    "e164": FROM,
                    "routing_url": fake_app.voice_url,
                    "events_url": fake_app.events_url,
                },
                {"id": "num_test_2", "e164": "+254700000200", "status": "suspended"},
            ],
            "data_dir": tmp_path / f"sim{len(sims)}",
            "ring_seconds": 0.05,
            "no_answer_after_rings": 4,
            "event_retry_base_s": 0.05,
            "event_retry_attempts": 3,
            "recording_delay_s": 0.3,
            "duplicate_delay_s": 0.05,
        }
        options.update(kwargs)
        sim = Simulator(d, **options)
        await sim.start()
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        await sim.stop()
    for sim in sims:
        assert sim.errors() == []  # no task inside the simulator crashed


def directory_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data)
