"""The simulator: configuration, shared state (numbers, wallet, calls), and the server's life.

    sim = Simulator(Directory.load("local/data/directory.yaml"), api_key="sk_test",
                    webhook_secret="whsec", numbers=[{"id": "num_1", "e164": "+254700000100",
                    "routing_url": "http://127.0.0.1:9000/voice", "events_url": "http://…/events"}],
                    data_dir=Path("sim-data"))
    await sim.start(); sim.url  # http://127.0.0.1:<port>
    ...
    await sim.stop()

`SimulatorThread` runs the same thing on its own event loop in a thread, for sync tests and the
local stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from aiohttp import web

from local.sautikit.billing import CURRENCY, DEFAULT_RATE_PER_MINUTE_MINOR
from local.sautikit.call import Call, first_lines
from local.sautikit.directory import Answer, Directory
from local.sautikit.stt import AgentTranscriber
from local.sautikit.tts import Voices
from local.sautikit.webhooks import WebhookSender

log = logging.getLogger("local.sautikit")


def uuid7() -> str:
    """A UUIDv7 (time-ordered), the shape Sautikit number ids have."""
    ms = int(time.time() * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | ((rand >> 64) & 0xFFF) << 64 | 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


@dataclass
class SimConfig:
    api_key: str
    webhook_secret: str
    rate_per_minute_minor: int = DEFAULT_RATE_PER_MINUTE_MINOR
    verbs_after_stream: bool = True
    ring_seconds: float = 1.0
    no_answer_after_rings: int = 6
    duplicate_callbacks: bool = False
    duplicate_delay_s: float = 0.2
    event_shapes: Literal["both", "envelope", "switch"] = "both"
    callback_encoding: Literal["form", "json"] = "form"
    webhook_timeout_s: float = 10.0
    event_retry_attempts: int = 5
    event_retry_base_s: float = 0.5
    late_completed_s: float = 0.0
    early_completed: bool = False
    omit_call_id: bool = False
    recording_delay_s: float = 3.0
    max_call_s: float = 600.0
    supervision_ring_timeout_s: float = 30.0
    currency: str = CURRENCY
    low_balance_threshold_minor: int = 5_000
    workspace_id: str = "ws_local_0001"
    ws_ssl_context: ssl.SSLContext | None = None
    transcribe_agent: bool = False


class Simulator:
    def __init__(
        self,
        directory: Directory,
        *,
        api_key: str,
        webhook_secret: str,
        numbers: list[dict[str, Any]],
        wallet_minor: int = 100_000,
        rate_per_minute_minor: int = DEFAULT_RATE_PER_MINUTE_MINOR,
        verbs_after_stream: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: Path | str | None = None,
        ring_seconds: float = 1.0,
        no_answer_after_rings: int = 6,
        duplicate_callbacks: bool = False,
        duplicate_delay_s: float = 0.2,
        event_shapes: Literal["both", "envelope", "switch"] = "both",
        callback_encoding: Literal["form", "json"] = "form",
        webhook_timeout_s: float = 10.0,
        event_retry_attempts: int = 5,
        event_retry_base_s: float = 0.5,
        late_completed_s: float = 0.0,
        early_completed: bool = False,
        omit_call_id: bool = False,
        recording_delay_s: float = 3.0,
        max_call_s: float = 600.0,
        supervision_ring_timeout_s: float = 30.0,
        low_balance_threshold_minor: int = 5_000,
        ws_ssl_context: ssl.SSLContext | None = None,
        tts_cache_dir: Path | str | None = None,
        warm_up: bool = True,
        warm_directory: bool = False,
        transcribe_agent: bool = False,
        transcribe_model: Path | str | None = None,
    ) -> None:
        self.directory = directory
        self.config = SimConfig(
            api_key=api_key,
            webhook_secret=webhook_secret,
            rate_per_minute_minor=rate_per_minute_minor,
            verbs_after_stream=verbs_after_stream,
            ring_seconds=ring_seconds,
            no_answer_after_rings=no_answer_after_rings,
            duplicate_callbacks=duplicate_callbacks,
            duplicate_delay_s=duplicate_delay_s,
            event_shapes=event_shapes,
            callback_encoding=callback_encoding,
            webhook_timeout_s=webhook_timeout_s,
            event_retry_attempts=event_retry_attempts,
            event_retry_base_s=event_retry_base_s,
            late_completed_s=late_completed_s,
            early_completed=early_completed,
            omit_call_id=omit_call_id,
            recording_delay_s=recording_delay_s,
            max_call_s=max_call_s,
            supervision_ring_timeout_s=supervision_ring_timeout_s,
            low_balance_threshold_minor=low_balance_threshold_minor,
            ws_ssl_context=ws_ssl_context,
            transcribe_agent=transcribe_agent,
        )
        self.host, self.port = host, port
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="sautikit-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.wallet_minor = wallet_minor
        self.numbers: dict[str, dict[str, Any]] = {}
        for n in numbers:
            self.add_number(**n)
        self.voices = Voices(Path(tts_cache_dir) if tts_cache_dir else None)
        self._warm_up = warm_up
        self._warm_directory = warm_directory
        # Off by default: ~0.15 s of a core per agent turn, which a suite of tone-speaking fakes does not need.
        self.transcriber = AgentTranscriber(transcribe_model) if transcribe_agent else None
        self.calls_by_id: dict[str, Call] = {}
        self.calls_by_session: dict[str, Call] = {}
        # Idempotency-Key → (body fingerprint, first response, session id of the call it answered for)
        self.idempotency: dict[str, tuple[str, dict[str, Any], str]] = {}
        self.labels: dict[str, dict[str, Any]] = {}
        self.supervision_keys: dict[str, dict[str, Any]] = {}
        self._violations: list[dict[str, Any]] = []
        self._deliveries: list[dict[str, Any]] = []
        self._debits: list[dict[str, Any]] = []
        self._errors: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        # Both exist from start() on and calls only run after it, hence the ignores.
        self.http: httpx.AsyncClient = None  # type: ignore[assignment]
        self.sender: WebhookSender = None  # type: ignore[assignment]
        self.url = ""

    # -- numbers and wallet ----------------------------------------------------------------------------
    def add_number(
        self,
        e164: str,
        id: str | None = None,
        routing_url: str | None = None,
        events_url: str | None = None,
        status: str = "active",
        voice_callback_url: str | None = None,
    ) -> dict[str, Any]:
        number: dict[str, Any] = {
            "id": id or uuid7(),
            "e164": e164,
            "status": status,
            "routing_url": routing_url or voice_callback_url,
            "voice_callback_url": routing_url or voice_callback_url,
            "events_url": events_url,
            "capabilities": ["voice"],
            "country": "KE" if e164.startswith("+254") else None,
        }
        self.numbers[number["id"]] = number
        return number

    def number_by_e164(self, e164: str) -> dict[str, Any] | None:
        return next((n for n in self.numbers.values() if n["e164"] == e164), None)

    def set_routing(
        self, number_id: str, routing_url: str | None = None, events_url: str | None = None
    ) -> None:
        number = self.numbers[number_id]
        if routing_url is not None:
            number["routing_url"] = number["voice_callback_url"] = routing_url
        if events_url is not None:
            number["events_url"] = events_url

    def set_wallet(self, balance_minor: int) -> None:
        self.wallet_minor = balance_minor

    def debit(self, amount_minor: int, call: Call) -> None:
        self.wallet_minor -= amount_minor
        self._debits.append(
            {
                "call_id": call.id,
                "amount_minor": amount_minor,
                "balance_minor": self.wallet_minor,
                "at": time.time(),
            }
        )

    def debits(self) -> list[dict[str, Any]]:
        return list(self._debits)

    # -- recording of app behaviour --------------------------------------------------------------------
    def record_violation(self, v: dict[str, Any]) -> None:
        self._violations.append(v)

    def _record_delivery(self, d: dict[str, Any]) -> None:
        self._deliveries.append(d)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("simulator task %s failed", task.get_name(), exc_info=exc)
        self._errors.append(
            {"task": task.get_name(), "error": f"{type(exc).__name__}: {exc}", "at": time.time()}
        )

    def record_error(self, error: str) -> None:
        log.error("simulator error: %s", error)
        self._errors.append({"task": None, "error": error, "at": time.time()})

    def errors(self) -> list[dict[str, Any]]:
        """Bugs in the simulator itself (a background task that raised); tests assert there are none."""
        return list(self._errors)

    # -- inspection ------------------------------------------------------------------------------------
    def find_call(self, call_or_session_id: str) -> Call | None:
        return self.calls_by_id.get(call_or_session_id) or self.calls_by_session.get(call_or_session_id)

    def calls(self) -> list[dict[str, Any]]:
        """Every call: its §1 record plus timeline, verbs run, streams and violations."""
        return [c.sim_view() for c in self.calls_by_id.values()]

    def call(self, call_or_session_id: str) -> dict[str, Any]:
        c = self.find_call(call_or_session_id)
        if c is None:
            raise KeyError(call_or_session_id)
        return c.sim_view()

    def call_object(self, call_or_session_id: str) -> Call:
        c = self.find_call(call_or_session_id)
        if c is None:
            raise KeyError(call_or_session_id)
        return c

    def violations(self, call_id: str | None = None, reason: str | None = None) -> list[dict[str, Any]]:
        out = self._violations
        if call_id is not None:
            out = [v for v in out if call_id in (v["call_id"], v["session_id"])]
        if reason is not None:
            out = [v for v in out if v["reason"] == reason]
        return list(out)

    def deliveries(self, session_id: str | None = None, purpose: str | None = None) -> list[dict[str, Any]]:
        out = self._deliveries
        if session_id is not None:
            out = [d for d in out if d["session_id"] == session_id]
        if purpose is not None:
            out = [d for d in out if d["purpose"] == purpose]
        return list(out)

    async def wait_ended(self, call_or_session_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait until the call is final and its record, WAV and timeline are written."""
        call = self.call_object(call_or_session_id)
        await asyncio.wait_for(call.finalized.wait(), timeout_s)
        return call.sim_view()

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait for background deliveries (events, late callbacks) to finish."""
        deadline = time.monotonic() + timeout_s
        while True:
            pending = {t for t in self._tasks if not t.done()}
            if not pending:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(pending)} simulator tasks still running")
            await asyncio.wait(pending, timeout=left)

    # -- calls ---------------------------------------------------------------------------------------
    def place_call(
        self,
        *,
        number: dict[str, Any],
        to: list[str],
        label: str | None,
        voice_callback_url: str | None,
        caller_id: str | None,
    ) -> Call:
        call = Call(
            self,
            number=number,
            to=to,
            label=label,
            voice_callback_url=voice_callback_url,
            caller_id=caller_id,
        )
        self.calls_by_id[call.id] = call
        self.calls_by_session[call.session_id] = call
        self.spawn(call.run(), name=f"call-{call.session_id}")
        return call

    # -- life ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        from local.sautikit.api import build_app

        self.http = httpx.AsyncClient(
            trust_env=False, limits=httpx.Limits(max_connections=200, max_keepalive_connections=50)
        )
        cfg = self.config
        if self.transcriber is not None:
            # Importing and loading Whisper hold the GIL in ~0.1 s stretches: done before the server
            # takes calls (~1 s the first time in a process), never under a live call's media clock.
            await self.transcriber.warm_up()
        self.sender = WebhookSender(
            self.http,
            cfg.webhook_secret,
            timeout_s=cfg.webhook_timeout_s,
            retry_attempts=cfg.event_retry_attempts,
            retry_base_s=cfg.event_retry_base_s,
            record=self._record_delivery,
        )
        self._runner = web.AppRunner(build_app(self), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server: Any = site._server  # aiohttp keeps the listening asyncio.Server here
        assert server is not None
        assert server.sockets
        host, port = server.sockets[0].getsockname()[:2]
        self.port = port
        self.url = f"http://{host}:{port}"
        if self._warm_up:
            self.spawn(self.voices.warm_up(), name="tts-warm-up")
        if self._warm_directory:
            self.spawn(self._warm_people(), name="tts-warm-directory")

    async def _warm_people(self) -> None:
        """Synthesise every person's lines at the lowest priority, first lines first, so a demo's
        first calls rarely wait for a voice (live calls' own needs always go ahead)."""
        people = list(self.directory.numbers.values())
        firsts = [t for p in people for t in first_lines(p)]
        await self.voices.prefetch(list(dict.fromkeys(firsts)), priority=2)
        rest = [t for p in people if p.answer is not Answer.VOICEMAIL for t in p.says]
        rest += [line for r in self.directory.reps.values() for line in r.says]
        await self.voices.prefetch([t for t in dict.fromkeys(rest) if t not in firsts], priority=3)

    async def stop(self) -> None:
        for call in list(self.calls_by_id.values()):
            if call.live:
                call.hangup("switch", "simulator_stopped")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(c.finalized.wait() for c in self.calls_by_id.values())), timeout=5
            )
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            # In-flight deliveries (late Completed, events) get a moment to land before the cut.
            await asyncio.wait(pending, timeout=1.0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.http is not None:
            await self.http.aclose()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class SimulatorThread:
    """The simulator on its own event loop in a daemon thread (sync tests, the local stack).

    Inspection goes through the loop so it never races a running call:
    `calls()`, `call(id)`, `violations(...)`, `deliveries(...)`, `wait_ended(id)`, `set_wallet(n)`.
    """

    def __init__(self, directory: Directory, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._directory = directory
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sautikit-sim", daemon=True)
        self.sim: Simulator | None = None

    def start(self) -> SimulatorThread:
        self._thread.start()

        async def make() -> Simulator:
            sim = Simulator(self._directory, **self._kwargs)
            await sim.start()
            return sim

        self.sim = asyncio.run_coroutine_threadsafe(make(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        if self.sim is not None:
            asyncio.run_coroutine_threadsafe(self.sim.stop(), self._loop).result(timeout=30)
            self.sim = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.sim is not None, "start() first"
        return self.sim.url

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        async def run() -> Any:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    def calls(self) -> list[dict[str, Any]]:
        assert self.sim is not None
        return self._call(self.sim.calls)  # type: ignore[no-any-return] - _call returns what fn does

    def call(self, call_or_session_id: str) -> dict[str, Any]:
        assert self.sim is not None
        return self._call(self.sim.call, call_or_session_id)  # type: ignore[no-any-return] - _call returns what fn does

    def violations(self, call_id: str | None = None, reason: str | None = None) -> list[dict[str, Any]]:
        assert self.sim is not None
        return self._call(self.sim.violations, call_id, reason)  # type: ignore[no-any-return] - _call returns what fn does

    def deliveries(self, session_id: str | None = None, purpose: str | None = None) -> list[dict[str, Any]]:
        assert self.sim is not None
        return self._call(self.sim.deliveries, session_id, purpose)  # type: ignore[no-any-return] - _call returns what fn does

    def set_wallet(self, balance_minor: int) -> None:
        assert self.sim is not None
        self._call(self.sim.set_wallet, balance_minor)

    def wait_ended(self, call_or_session_id: str, timeout: float = 60.0) -> dict[str, Any]:
        assert self.sim is not None
        fut = asyncio.run_coroutine_threadsafe(self.sim.wait_ended(call_or_session_id, timeout), self._loop)
        return fut.result(timeout=timeout + 5)

    def drain(self, timeout: float = 10.0) -> None:
        assert self.sim is not None
        asyncio.run_coroutine_threadsafe(self.sim.drain(timeout), self._loop).result(timeout=timeout + 5)


def new_api_key() -> str:
    return f"sk_test_{secrets.token_hex(12)}"
