"""`leadqual local up`: one JSON line of endpoints, a stack other tools can drive with plain AWS and
HTTP clients, leads enqueued from outside dialed and qualified, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
import psutil
import pytest

from tests.e2e.conftest import LEADQUAL, REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

KEYS = {
    "api_url",
    "voice_url",
    "events_url",
    "bridge_url",
    "sautikit_url",
    "sautikit_api_key",
    "webhook_secret",
    "from_number",
    "queue_url",
    "table",
    "aws_endpoint_url",
}


def _first_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            return proc.stdout.readline()
        assert proc.poll() is None, f"local up exited with {proc.returncode}"
    raise AssertionError("no endpoints line in time")


def _aws(endpoint: str, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def test_local_up_prints_endpoints_qualifies_what_is_enqueued_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(
        [str(LEADQUAL), "local", "up", "--run-dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        endpoints = json.loads(_first_line(proc, 120))
        assert set(endpoints) >= KEYS
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2  # the bridge and the simulator run as processes of their own

        # Drive it like another tool would: the documented lead JSON straight onto the queue.
        sqs = _aws(endpoints["aws_endpoint_url"], "sqs")
        lead = {
            "lead_id": "ext-1",
            "phone": "+254712000006",  # Njeri: "I'm driving right now. Can you call me back…?"
            "name": "Njeri Wambui",
            "company": "Nyeri Coffee Traders",
            "opt_in": True,
            "campaign": "demo",
        }
        sqs.send_message(QueueUrl=endpoints["queue_url"], MessageBody=json.dumps(lead))

        from leadqual.store import DynamoStore

        store = DynamoStore(endpoints["table"], client=_aws(endpoints["aws_endpoint_url"], "dynamodb"))
        deadline = time.monotonic() + 120
        profile = calls = None
        while time.monotonic() < deadline:
            profile = store.get_lead("ext-1")
            calls = store.list_calls("ext-1")
            if profile is not None and profile.outcome is not None and calls and calls[-1].billed_seconds:
                break
            time.sleep(0.5)
        assert profile is not None
        assert profile.outcome == "callback_requested", profile
        assert [a.value for a in store.get_answers("ext-1")] == [False]
        assert calls
        # The simulator (its API key from the endpoints line) billed what the store recorded.
        sim = httpx.get(
            f"{endpoints['sautikit_url']}/v1/calls/{calls[-1].session_id}",
            headers={"Authorization": f"Bearer {endpoints['sautikit_api_key']}"},
        ).json()["call"]
        assert sim["duration_seconds"] == calls[-1].billed_seconds
        assert sim["local_e164"] == endpoints["from_number"]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        out, err = proc.communicate(timeout=10)
        assert out.strip() == "", "stdout carries the endpoints line only"
        assert "local stack stopped" in err
        time.sleep(0.5)
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert (tmp_path / "logs" / "bridge.log").stat().st_size > 0
        assert (tmp_path / "logs" / "sautikit.log").stat().st_size > 0
        assert "call placed" in (tmp_path / "logs" / "lambda.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
