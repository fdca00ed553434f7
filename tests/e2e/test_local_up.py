"""`leadqual local up`: one JSON line of endpoints, a stack other tools can drive with plain AWS and
HTTP clients, leads enqueued from outside dialed and qualified, and a clean stop on Ctrl-C (SIGINT to
the process group, as a terminal sends it) or SIGTERM. Also: Ctrl-C in the middle of `leadqual demo`
leaves no process behind."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


def _as_from_a_terminal() -> None:
    """preexec_fn: Ctrl-C at its default, as a shell gives a foreground command. (A test runner
    started in the background may ignore SIGINT, and children inherit that.)"""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    """Ctrl-C reaches the terminal's whole foreground process group; SIGTERM just the process."""
    if sig is signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)


def _refuses(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def _aws(endpoint: str, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_local_up_prints_endpoints_qualifies_what_is_enqueued_and_stops_cleanly(
    tmp_path: Path, sig: signal.Signals
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(
        [str(LEADQUAL), "local", "up", "--run-dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,  # its own group, as a shell job: Ctrl-C goes to it, not to pytest
        preexec_fn=_as_from_a_terminal,
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

        _stop(proc, sig)
        assert proc.wait(60) == 0
        out, err = proc.communicate(timeout=10)
        assert out.strip() == "", "stdout carries the endpoints line only"
        assert "local stack stopped" in err
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left running after {sig.name}: {alive}"
        for name in ("api_url", "sautikit_url", "bridge_url", "aws_endpoint_url"):
            assert _refuses(endpoints[name]), f"{name} still accepts connections after {sig.name}"
        assert (tmp_path / "logs" / "bridge.log").stat().st_size > 0
        assert (tmp_path / "logs" / "sautikit.log").stat().st_size > 0
        assert "call placed" in (tmp_path / "logs" / "lambda.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.timeout(180)
def test_ctrl_c_during_the_demo_stops_every_process_it_started(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(
        [str(LEADQUAL), "demo", "--no-live", "--report", str(tmp_path / "report.json")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        process_group=0,
        preexec_fn=_as_from_a_terminal,
    )
    try:
        assert proc.stdout is not None
        # Interrupt mid-call: a progress line shows a lead talking to the agent.
        seen: list[str] = []
        for line in proc.stdout:  # the test's timeout bounds a demo that goes quiet
            seen.append(line)
            if " talking" in line:
                break
        else:
            raise AssertionError(f"demo exited ({proc.wait()}) before any call:\n" + "".join(seen[-20:]))
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2  # the bridge and the simulator

        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, out[-4000:]
        assert "interrupted; everything is stopped" in out
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left running after Ctrl-C: {alive}"
        assert (tmp_path / "logs" / "bridge.log").stat().st_size > 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
