"""The WebSocket server: it accepts, authenticates and routes; conversations do the rest.

Before the upgrade (`process_request`): `/healthz`; 503 while draining or full; 400 unless the
client offers `audio.drachtio.org`; 401 without a token; 403 when the token does not verify for
the URL's session id (bad signature, other session, expired). So a refused socket never reaches a
handler, let alone opens a model session. If the URL names no session, the call is identified
from the metadata frame and the token verified against it after the upgrade (close 1008 if bad).

Lifecycle (DESIGN §6.11): `drain()` — what SIGTERM triggers — stops accepting (new upgrades get
503, `/healthz` reports `draining`), lets live calls finish until the deadline (DRAIN_SECONDS),
then aborts the rest (each hangs up or transfers as its campaign says) and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from http import HTTPStatus
from types import TracebackType
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from bridge.adapters import CampaignLoader, LogNotifier
from bridge.conversation import CallIdentity, Conversation, Services, Synthesiser
from bridge.metrics import Writer, gauge_line, stdout_writer
from bridge.ports import (
    BridgeConfig,
    CampaignSource,
    Carrier,
    EngineFactory,
    Normaliser,
    Notifier,
    Scorer,
    Store,
)
from bridge.protocol import SUBPROTOCOL, CallQuery, StreamMeta, parse_metadata, parse_query
from leadqual.signing import TokenError, verify_bridge_token

log = logging.getLogger("bridge")

HEALTH_PATH = "/healthz"
ABORT_GRACE_S = 20.0  # after the drain deadline, how long aborted calls get to hang up


def _default_normaliser() -> Normaliser:
    from leadqual.normalise import normalise_answer

    return normalise_answer


def _default_scorer() -> Scorer:
    from leadqual.scoring import score

    return score


def _offered_subprotocols(request: Request) -> list[str]:
    offered: list[str] = []
    for value in request.headers.get_all("Sec-WebSocket-Protocol"):
        offered += [p.strip() for p in value.split(",") if p.strip()]
    return offered


class BridgeServer:
    """`async with BridgeServer(settings, engine_factory, store, sautikit, notifier) as srv:`

    `srv.port` / `srv.url` once started; `await srv.drain()` for a graceful stop."""

    def __init__(
        self,
        settings: Any,
        engine_factory: EngineFactory,
        store: Store,
        sautikit: Carrier,
        notifier: Notifier | None = None,
        *,
        campaigns: CampaignSource | None = None,
        normalise: Normaliser | None = None,
        score: Scorer | None = None,
        metrics_writer: Writer | None = None,
        synthesise: Synthesiser | None = None,
        use_local_voice: bool = True,
    ) -> None:
        self.config = BridgeConfig.from_settings(settings)
        if not self.config.bridge_token_secret:
            raise ValueError("BRIDGE_TOKEN_SECRET is empty: the bridge cannot authenticate calls")
        if synthesise is None and use_local_voice:
            from bridge.speech import synthesise as local_voice

            synthesise = local_voice
        self.services = Services(
            config=self.config,
            engine_factory=engine_factory,
            store=store,
            carrier=sautikit,
            notifier=notifier or LogNotifier(),
            campaigns=campaigns or CampaignLoader(self.config.campaigns_dir),
            normalise=normalise or _default_normaliser(),
            score=score or _default_scorer(),
            write_metrics=metrics_writer or stdout_writer,
            synthesise=synthesise,
        )
        self._server: Server | None = None
        self._live: set[Conversation] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False
        self._closed = asyncio.Event()
        self._drain_task: asyncio.Task[None] | None = None
        self._gauge_task: asyncio.Task[None] | None = None
        self.refused: dict[int, int] = {}  # HTTP status -> count, for tests and the health page
        self.calls_started = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        cfg = self.config
        self._server = await serve(
            self._handler,
            cfg.host,
            cfg.port,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            compression=None,  # audio does not compress; deflate would only cost CPU (SAUTIKIT.md §5)
            process_request=self._process_request,
            ping_interval=cfg.ping_interval_s,
            ping_timeout=cfg.ping_timeout_s,
            close_timeout=cfg.close_timeout_s,
            max_size=max(cfg.max_frame_bytes * 4, 2**20),  # oversized frames are dropped by us, not fatal
            max_queue=64,
            server_header=None,
        )
        if cfg.gauge_interval_s > 0:
            self._gauge_task = asyncio.create_task(self._gauge(), name="bridge-gauge")
        log.info("bridge listening", extra={"port": self.port})

    async def __aenter__(self) -> BridgeServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.drain()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        for sock in self._server.sockets:
            return int(sock.getsockname()[1])
        raise RuntimeError("the server has no listening socket")

    @property
    def url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"  # noqa: S104 - maps a bind-all to a dialable address
        return f"ws://{host}:{self.port}"

    @property
    def active_sessions(self) -> int:
        return len(self._live)

    @property
    def draining(self) -> bool:
        return self._draining

    def health(self) -> dict[str, Any]:
        return {
            "status": "draining" if self._draining else "ok",
            "draining": self._draining,
            "active_sessions": len(self._live),
            "engine": self.config.engine,
        }

    def drain_soon(self) -> None:
        """For a signal handler: start draining in the background (idempotent)."""
        if self._drain_task is None:
            self._drain_task = asyncio.create_task(self.drain(), name="bridge-drain")

    async def drain(self, deadline_s: float | None = None) -> None:
        """Stop accepting, let live calls finish until the deadline, abort the rest, close."""
        if self._closed.is_set():
            return
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.drain_seconds if deadline_s is None else deadline_s)
        log.info("draining", extra={"active_sessions": len(self._live)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - loop.time()))
        if self._live:
            log.warning(
                "drain deadline passed; ending live calls", extra={"active_sessions": len(self._live)}
            )
            for conv in list(self._live):
                conv.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), ABORT_GRACE_S)
        if self._gauge_task is not None:
            self._gauge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gauge_task
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        self._closed.set()
        log.info("bridge closed")

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def _gauge(self) -> None:
        while True:
            self.services.write_metrics(gauge_line("BridgeActiveSessions", len(self._live)))
            await asyncio.sleep(self.config.gauge_interval_s)

    # ------------------------------------------------------------------ handshake

    def _refuse(self, connection: ServerConnection, status: HTTPStatus, reason: str) -> Response:
        self.refused[status.value] = self.refused.get(status.value, 0) + 1
        return connection.respond(status, reason + "\n")

    def _health_response(self, connection: ServerConnection) -> Response:
        body = json.dumps(self.health())
        response = connection.respond(HTTPStatus.OK, body)
        headers = Headers([(k, v) for k, v in response.headers.raw_items() if k.lower() != "content-type"])
        headers["Content-Type"] = "application/json"
        headers["Cache-Control"] = "no-store"
        return Response(response.status_code, response.reason_phrase, headers, response.body)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        query = parse_query(request.path)
        if query.path == HEALTH_PATH:
            return self._health_response(connection)
        if self._draining:
            return self._refuse(
                connection, HTTPStatus.SERVICE_UNAVAILABLE, "draining: try another bridge task"
            )
        if self.config.max_sessions and len(self._live) >= self.config.max_sessions:
            return self._refuse(connection, HTTPStatus.SERVICE_UNAVAILABLE, "at capacity")
        if SUBPROTOCOL not in _offered_subprotocols(request):
            return self._refuse(connection, HTTPStatus.BAD_REQUEST, f"subprotocol {SUBPROTOCOL} required")
        if not query.token:
            return self._refuse(connection, HTTPStatus.UNAUTHORIZED, "missing token")
        if query.session_id is not None:
            try:
                verify_bridge_token(self.config.bridge_token_secret, query.session_id, query.token)
            except TokenError as exc:
                return self._refuse(connection, HTTPStatus.FORBIDDEN, f"token rejected: {exc}")
        return None

    # ------------------------------------------------------------------ connection

    async def _read_metadata(self, ws: ServerConnection) -> StreamMeta:
        """The first frame: metadata text, or (when a stream starts without it) audio."""
        try:
            first = await asyncio.wait_for(ws.recv(), self.config.metadata_timeout_s)
        except TimeoutError:
            return StreamMeta()
        if isinstance(first, str):
            return parse_metadata(first)
        return StreamMeta()

    def _identify(self, query: CallQuery, meta: StreamMeta) -> CallIdentity | None:
        cfg = self.config
        session_id = query.session_id or meta.session_id or meta.call_id
        if session_id is None:
            return None
        if query.session_id is None:
            # Upgrade allowed on the token's presence alone; the metadata names the session.
            try:
                verify_bridge_token(cfg.bridge_token_secret, session_id, query.token)
            except TokenError:
                return None
        return CallIdentity(
            session_id=session_id,
            call_id=meta.call_id,
            in_rate=meta.sample_rate or query.in_rate or cfg.default_in_rate,
            out_rate=query.out_rate or meta.reply_rate or cfg.default_out_rate,
            channels=meta.channels,
        )

    async def _handler(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        opened = loop.time()
        query = parse_query(ws.request.path if ws.request is not None else "/")
        try:
            meta = await self._read_metadata(ws)
        except ConnectionClosed:
            return
        identity = self._identify(query, meta)
        if identity is None:
            self.refused[1008] = self.refused.get(1008, 0) + 1
            await ws.close(1008, "token does not verify for this call")
            return
        conv = Conversation(ws, identity, self.services, opened_at=opened)
        self._live.add(conv)
        self._idle.clear()
        self.calls_started += 1
        try:
            await conv.run()
        finally:
            self._live.discard(conv)
            if not self._live:
                self._idle.set()
