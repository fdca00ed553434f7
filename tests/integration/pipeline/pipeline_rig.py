"""Helpers for the pipeline's integration tests: constants, the simulated phones, a stand-in audio
bridge, recorders and the `Rig` that holds the running pieces together."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from leadqual.dialing import Dialer
from leadqual.models import LeadStatus
from leadqual.signing import TokenError, verify_bridge_token
from leadqual.store import DynamoStore
from local.lambda_runtime import ApiGatewayEmulator, SqsPoller
from local.resources import LocalResources
from local.sautikit import SimulatorThread

REGION = "eu-west-1"
API_KEY = "sk_test_pipeline"
SECRET = "whsec_pipeline"
BRIDGE_SECRET = "bridge-secret"
FROM = "+254709100100"
NUMBER_ID = "01973400-0f1e-7a2b-8c3d-4e5f6a7b8c9d"
NAIROBI = ZoneInfo("Africa/Nairobi")
SUBPROTOCOL = "audio.drachtio.org"

# One simulated phone per scenario; nobody speaks (the stand-in bridge only listens).
DIRECTORY = """
numbers:
  "+254712000101": {answer: after_rings, rings: 1, says: []}
  "+254712000102": {answer: after_rings, rings: 1, says: [], duplicate_callbacks: true}
  "+254712000103": {answer: after_rings, rings: 1, says: []}
  "+254712000104": {answer: after_rings, rings: 1, says: []}
  "+254712000105": {answer: after_rings, rings: 1, says: []}
  "+254712000106": {answer: busy}
  "+254712000107": {answer: after_rings, rings: 1, says: []}
  "+254712000109": {answer: after_rings, rings: 1, says: []}
  "+254712000110": {answer: no_answer}
"""


class Clock:
    """The dialer's clock: Wednesday 10:00 in Nairobi unless a test moves it."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.now = datetime(2025, 6, 4, 10, 0, tzinfo=NAIROBI).astimezone(UTC)

    def set(self, when: datetime) -> None:
        self.now = when.astimezone(UTC)

    def __call__(self) -> datetime:
        return self.now


class Sink:
    """A MetricsSink that remembers what was emitted (thread-safe: handlers run in server threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.emitted: list[tuple[str, float, str]] = []

    def add(self, name: str, value: float = 1, unit: str = "Count") -> None:
        with self._lock:
            self.emitted.append((name, value, unit))

    def total(self, name: str) -> float:
        with self._lock:
            return sum(v for n, v, _ in self.emitted if n == name)

    def clear(self) -> None:
        with self._lock:
            self.emitted.clear()


class Recorder:
    """Calls a handler and keeps (event, result) pairs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[dict[str, Any], Any]] = []

    def call(self, fn: Callable[..., Any], event: dict[str, Any], context: Any, **kwargs: Any) -> Any:
        result = fn(event, context, **kwargs)
        with self._lock:
            self.calls.append((event, result))
        return result

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()

    def bodies(self, session_id: str) -> list[tuple[str, int, str]]:
        """(request body, response status, response body) for the requests that mention a session."""
        import base64

        out = []
        with self._lock:
            calls = list(self.calls)
        for event, result in calls:
            raw = (
                base64.b64decode(event["body"]).decode()
                if event.get("isBase64Encoded")
                else event.get("body", "")
            )
            if session_id in raw:
                out.append((raw, int(result["statusCode"]), str(result.get("body", ""))))
        return out


@dataclass
class BridgeSession:
    path: str
    session_id: str | None = None
    token_ok: bool = False
    metadata: dict[str, Any] | None = None
    frames: int = 0
    hung_up: bool = False


class StandInBridge:
    """Stands in for the real bridge: accepts the media socket (selecting audio.drachtio.org),
    checks the per-call token against the session in its URL, reads the metadata and ~`listen_s`
    of audio, then ends the call the way a cold close does: REST hangup, never just closing."""

    def __init__(self, secret: str, sim_url: str, api_key: str, listen_s: float = 1.0) -> None:
        self.secret, self.sim_url, self.api_key, self.listen_s = secret, sim_url, api_key, listen_s
        self.sessions: list[BridgeSession] = []
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main()), name="stand-in-bridge", daemon=True
        )

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    def start(self) -> StandInBridge:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("stand-in bridge did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(
            self._handle, "127.0.0.1", 0, subprotocols=[SUBPROTOCOL], compression=None
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else "/"
        rec = BridgeSession(path=path)
        self.sessions.append(rec)
        query = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
        rec.session_id = query.get("session")
        try:
            verify_bridge_token(self.secret, rec.session_id or "", query.get("token"))
        except TokenError:
            await ws.close(1008, "bad token")
            return
        rec.token_ok = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.listen_s
        try:
            while (left := deadline - loop.time()) > 0:
                try:
                    message = await asyncio.wait_for(ws.recv(), timeout=left)
                except TimeoutError:
                    break
                if isinstance(message, bytes):
                    rec.frames += 1
                elif rec.metadata is None:
                    rec.metadata = json.loads(message)
        except ConnectionClosed:
            return
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
            response = await http.post(
                f"{self.sim_url}/v1/calls/{rec.session_id}/hangup",
                headers={"Authorization": f"Bearer {self.api_key}"},
            )
        rec.hung_up = response.status_code < 300
        try:
            await asyncio.wait_for(ws.wait_closed(), 5)
        except TimeoutError:
            await ws.close()


@dataclass
class Rig:
    endpoint: str
    campaigns_dir: Path
    dynamodb: Any
    sqs: Any
    resources: LocalResources
    api: ApiGatewayEmulator
    sim: SimulatorThread
    bridge: StandInBridge
    store: DynamoStore
    dialer: Dialer
    poller: SqsPoller
    clock: Clock
    sink: Sink
    voice_log: Recorder
    events_log: Recorder
    dialer_log: Recorder
    redelivered: list[str] = field(default_factory=list)

    def reset(self) -> None:
        """Between tests: nothing left on the queue (a test's deferred lead must not surface in the next)."""
        while got := self.sqs.receive_message(
            QueueUrl=self.resources.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", []):
            for m in got:
                self.sqs.delete_message(QueueUrl=self.resources.queue_url, ReceiptHandle=m["ReceiptHandle"])
        self.clock.reset()
        self.sink.clear()
        for log in (self.voice_log, self.events_log, self.dialer_log):
            log.clear()

    # -- queue ---------------------------------------------------------------------------------
    def send(self, body: str | dict[str, Any]) -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        self.sqs.send_message(QueueUrl=self.resources.queue_url, MessageBody=text)

    def poll(self, *, redeliver_failures: bool = False) -> int:
        """One receive + invoke + delete-what-succeeded cycle, as Lambda's event source mapping.
        `redeliver_failures` makes failed messages visible again at once (instead of after the
        queue's 360 s visibility timeout), as a later SQS redelivery would."""
        before = len(self.dialer_log.calls)
        received = self.poller.poll_once()
        if redeliver_failures:
            for event, result in self.dialer_log.calls[before:]:
                failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
                for record in event["Records"]:
                    if record["messageId"] in failed:
                        self.redelivered.append(record["messageId"])
                        self.sqs.change_message_visibility(
                            QueueUrl=self.resources.queue_url,
                            ReceiptHandle=record["receiptHandle"],
                            VisibilityTimeout=0,
                        )
        return received

    def failures(self) -> list[str]:
        return [
            f["itemIdentifier"]
            for _, r in self.dialer_log.calls
            for f in (r or {}).get("batchItemFailures", [])
        ]

    # -- carrier -------------------------------------------------------------------------------
    def calls_to(self, number: str) -> list[dict[str, Any]]:
        return [c for c in self.sim.calls() if number in c["to"]]

    def table_items(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for page in self.dynamodb.get_paginator("scan").paginate(TableName=self.resources.table_name):
            items.extend(page["Items"])
        return sorted(items, key=lambda i: (i["PK"]["S"], i["SK"]["S"]))


def finished(rig: Rig, lead_id: str, attempt: int = 1) -> bool:
    """The attempt is billed and the lead is done: accounting has run to the end."""
    call = rig.store.get_call(lead_id, attempt)
    profile = rig.store.get_lead(lead_id)
    return bool(call and call.billed_seconds is not None and profile and profile.status is LeadStatus.DONE)


def lead(lead_id: str, phone: str, **extra: Any) -> dict[str, Any]:
    return {
        "lead_id": lead_id,
        "phone": phone,
        "name": "Amani Test",
        "company": "Acme",
        "opt_in": True,
        **extra,
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
