"""The real `python -m bridge` process: settings from the environment, DynamoStore on a moto server,
the Sautikit client against a loopback stub, ENGINE=fake. SIGTERM drains: live calls go on, new
ones get 503, the process exits 0 once they end, or at DRAIN_SECONDS after hanging them up."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from websockets.exceptions import InvalidStatus

from bridge.testing import MediaClient
from leadqual.models import CallRecord, Lead, Outcome
from leadqual.store import DynamoStore
from local.lambda_runtime import moto_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
SECRET = "process-secret"
TABLE = "leadqual-bridge-process"
REGION = "eu-west-1"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}


class SautikitStub(ThreadingHTTPServer):
    """Answers the REST calls the bridge makes, and records them."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        super().__init__(("127.0.0.1", 0), _StubHandler)


class _StubHandler(BaseHTTPRequestHandler):
    server: SautikitStub

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.requests.append(("POST", self.path))
        body = json.dumps({"call_id": self.path.split("/")[3], "status": "hung_up"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def store(moto_url: str) -> DynamoStore:
    client = boto3.client("dynamodb", endpoint_url=moto_url, region_name=REGION, **_creds())
    client.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": n, "AttributeType": "S"} for n in ("PK", "SK", "GSI1PK", "GSI1SK")
        ],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "GSI1",
                "KeySchema": [
                    {"AttributeName": "GSI1PK", "KeyType": "HASH"},
                    {"AttributeName": "GSI1SK", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    return DynamoStore(TABLE, client=client)


def _creds() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture
def sautikit() -> Iterator[SautikitStub]:
    stub = SautikitStub()
    thread = threading.Thread(target=stub.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        stub.shutdown()
        stub.server_close()


def add_call(store: DynamoStore, n: int) -> str:
    lead = Lead(
        lead_id=f"P{n}", phone=f"+25471100{n:04d}", name="Otieno Ouma", company="Jua Ltd", opt_in=True
    )
    session = f"HD_{n:012x}"
    store.put_lead(lead)
    store.begin_attempt(lead.lead_id, 1)
    store.put_call(CallRecord(lead_id=lead.lead_id, attempt=1, client_request_id=f"lq-{lead.lead_id}-1"))
    store.put_session(session, lead.lead_id, 1)
    return session


class BridgeProcess:
    def __init__(self, moto_url: str, sautikit_url: str, drain_s: float) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")},
            **AWS_ENV,
            "AWS_ENDPOINT_URL": moto_url,
            "HOST": "127.0.0.1",
            "PORT": "0",
            "ENGINE": "fake",
            "TABLE_NAME": TABLE,
            "BRIDGE_TOKEN_SECRET": SECRET,
            "SAUTIKIT_BASE_URL": sautikit_url,
            "SAUTIKIT_API_KEY": "sk_test",
            "DRAIN_SECONDS": str(drain_s),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.port = self._wait_ready()

    def _wait_ready(self) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if '"bridge ready"' in line:
                threading.Thread(target=self._drain_output, daemon=True).start()
                return int(json.loads(line)["port"])
        self.proc.kill()
        raise AssertionError("bridge did not start:\n" + "".join(self.lines))

    def _drain_output(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def json_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


async def wait_exit(proc: subprocess.Popen[str], limit_s: float) -> int:
    return await asyncio.wait_for(asyncio.to_thread(proc.wait), limit_s)


async def test_sigterm_lets_live_calls_finish_refuses_new_ones_and_exits(
    moto_url: str, store: DynamoStore, sautikit: SautikitStub
) -> None:
    sessions = [add_call(store, n) for n in (1, 2)]
    bridge = BridgeProcess(moto_url, f"http://127.0.0.1:{sautikit.server_port}", drain_s=20)
    try:
        clients = [MediaClient.for_session(bridge.url, SECRET, s) for s in sessions]
        for c in clients:
            await c.connect()
        for c in clients:
            await c.wait_for(lambda c=c: c.audio_bytes() > 0, limit_s=10)  # greeted
        bridge.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        # New calls are refused with 503 while draining.
        late = MediaClient.for_session(bridge.url, SECRET, sessions[0])
        with pytest.raises(InvalidStatus) as info:
            await late.connect()
        assert info.value.response.status_code == 503
        # Live calls go on: the fake agent still answers the lead.
        for c in clients:
            heard = c.audio_bytes()
            await asyncio.sleep(0.5)
            await c.speak(300, 400)
            await c.wait_for(lambda c=c, h=heard: c.audio_bytes() > h + 6400, limit_s=10)
        assert bridge.proc.poll() is None
        # The leads hang up; the process exits on its own, well before the deadline.
        for c in clients:
            await c.close()
        assert await wait_exit(bridge.proc, 10) == 0
        assert sautikit.requests == []  # nothing needed hanging up
        ended = [r for r in bridge.json_lines() if r.get("message") == "bridge call ended"]
        assert sorted(r["session_id"] for r in ended) == sessions
        assert all(r["TimeToFirstWordMs"] < 1000 for r in ended)
        profile = store.get_lead("P1")
        assert profile is not None
        assert profile.outcome is Outcome.COLD_CLOSED  # hung up before any decision
        call = store.get_call("P1", 1)
        assert call is not None
        assert call.time_to_first_word_ms is not None
    finally:
        bridge.stop()


async def test_drain_deadline_hangs_up_remaining_calls_then_exits(
    moto_url: str, store: DynamoStore, sautikit: SautikitStub
) -> None:
    session = add_call(store, 3)
    bridge = BridgeProcess(moto_url, f"http://127.0.0.1:{sautikit.server_port}", drain_s=1)
    try:
        client = MediaClient.for_session(bridge.url, SECRET, session)
        await client.connect()
        await client.wait_for(lambda: client.audio_bytes() > 0, limit_s=10)
        started = time.monotonic()
        bridge.proc.send_signal(signal.SIGTERM)
        assert await wait_exit(bridge.proc, 20) == 0
        assert time.monotonic() - started >= 1.0
        assert sautikit.requests == [("POST", f"/v1/calls/{session}/hangup")]
        await client.wait_closed()
        profile = store.get_lead("P3")
        assert profile is not None
        assert (profile.outcome, profile.reason) == (Outcome.FAILED, "bridge shutdown")
    finally:
        bridge.stop()


def test_bad_configuration_exits_with_a_clear_message() -> None:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")} | {"ENGINE": "fake"}
    proc = subprocess.run(
        [sys.executable, "-m", "bridge"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["message"] == "bad configuration"
    assert "TABLE_NAME" in record["error"]
    assert "BRIDGE_TOKEN_SECRET" in record["error"]
