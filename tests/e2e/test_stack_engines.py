"""`leadqual local up --engine gemini|openai` wired to the real services' wire protocols: the fake of each
service (local/fakes) serves real TLS on loopback, the stack gets the key, model and URL through the
documented variables and trusts the fake's CA through `SSL_CERT_FILE`, as it would trust any other CA.

One call per engine: the bridge opens a session with the campaign's setup (the model named in the
environment, the record_answer/end_call tools, instructions naming the lead), the lead hears the
agent's greeting and answers, the fake hears that answer and echoes it, and the lead hears the echo
as a second agent turn — audio both ways through the whole stack. Then SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import psutil
import pytest

from local.fakes.gemini_live import Echo, FakeGeminiLive, Reply, WaitClientTurn
from local.fakes.openai_realtime import FakeOpenAIRealtime
from local.fakes.tls import make_loopback_tls
from local.stack import tail
from tests.e2e.conftest import LEADQUAL, REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(120)]

KEY = "e2e-engine-key"
GEMINI_MODEL = "gemini-e2e-fake-live"
OPENAI_MODEL = "gpt-realtime-e2e-fake"
LEAD = {
    "lead_id": "eng-1",
    "phone": "+254712000001",  # Wanjiru in the sample directory: answers after two rings
    "name": "Wanjiru Mwangi",
    "company": "Savannah Logistics",
    "opt_in": True,
    "campaign": "demo",
}
FIRST_REPLY = "Yes, now is fine."  # what she says to the agent's first turn (local/data/directory.yaml)
OPENING = (
    "Hi Wanjiru, this is Amina from Acme CRM. This call uses AI assistance and may be recorded. "
    "Is now a good time for three quick questions?"
)
TOOLS = {"record_answer", "end_call"}  # the bridge's tools for every campaign
GREETING_MS = 1500  # how long the Gemini fake speaks the opening line


@contextlib.contextmanager
def served(fake: Any) -> Iterator[Any]:
    """The fake on its own event loop in a thread: the stack is another process, and this test blocks.
    Its records are read after the loop has stopped, so never while the fake writes them."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="served-fake", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result(timeout=10)
        try:
            yield fake
        finally:
            asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(timeout=10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _first_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            return proc.stdout.readline()
        assert proc.poll() is None, f"local up exited with {proc.returncode}"
    raise AssertionError("no endpoints line in time")


def wait_for_second_agent_turn(
    sim: httpx.Client, proc: subprocess.Popen[str], run_dir: Path
) -> dict[str, Any]:
    """The simulator's view of the lead's call once she has heard the agent a second time."""
    call: dict[str, Any] | None = None
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"local up exited with {proc.returncode}"
        calls = sim.get("/_sim/calls").json()["calls"]
        call = next((c for c in calls if c["call"]["remote_e164"] == LEAD["phone"]), None)
        if call and any(e["kind"] == "agent_turn" and e.get("turn") == 2 for e in call["timeline"]):
            return call
        if call and call["call"]["ended_at"]:
            break  # over without it (an engine that failed to start, say): no use waiting
        time.sleep(0.3)
    raise AssertionError(
        f"the lead never heard a second agent turn; timeline: {call['timeline'] if call else 'no call placed'}\n"
        f"--- bridge log ---\n{tail(run_dir / 'logs' / 'bridge.log', 40)}"
    )


def one_call_through_local_up(engine: str, engine_env: dict[str, str], run_dir: Path) -> dict[str, Any]:
    """`leadqual local up --engine <engine>` with `engine_env`; one lead enqueued; returns the
    simulator's view of the call once the lead has heard a second agent turn, after a clean SIGTERM
    stop. Outer GEMINI_*/OPENAI_* variables (a developer's real keys) never reach it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GEMINI_", "OPENAI_"))}
    env.update(engine_env)
    proc = subprocess.Popen(
        [str(LEADQUAL), "local", "up", "--engine", engine, "--run-dir", str(run_dir)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,
    )
    try:
        endpoints = json.loads(_first_line(proc, 60))
        children = psutil.Process(proc.pid).children(recursive=True)
        sqs = boto3.client(
            "sqs",
            endpoint_url=endpoints["aws_endpoint_url"],
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        sqs.send_message(QueueUrl=endpoints["queue_url"], MessageBody=json.dumps(LEAD))

        with httpx.Client(base_url=endpoints["sautikit_url"], timeout=5.0, trust_env=False) as sim:
            call = wait_for_second_agent_turn(sim, proc, run_dir)
            assert sim.get("/_sim/violations").json()["violations"] == []

        proc.send_signal(signal.SIGTERM)  # the call is still live: the bridge drains it and hangs up
        assert proc.wait(30) == 0, proc.communicate(timeout=5)[1][-4000:]
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left running after SIGTERM: {alive}"
        return call
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def assert_audio_went_both_ways(call: dict[str, Any], greeting_ms: int) -> None:
    """The phone's side: the greeting arrived whole, she answered it, and the fake's answer to her
    words reached her ear as a new agent turn after she had spoken."""
    timeline = call["timeline"]
    turns = {e["turn"]: e for e in timeline if e["kind"] == "agent_turn"}
    spoke = next(e for e in timeline if e["kind"] == "lead_speaks" and e.get("turn") == 1)
    assert turns[1]["duration_s"] == pytest.approx(greeting_ms / 1000, abs=0.15)
    assert call["lead_said"][0] == FIRST_REPLY
    assert spoke["text"] == FIRST_REPLY
    assert turns[2]["t"] > spoke["t"]


def test_local_up_with_gemini_opens_a_live_session_for_the_lead_and_relays_audio_both_ways(
    tmp_path: Path,
) -> None:
    tls = make_loopback_tls(tmp_path / "tls")
    # The model speaks the opening line it is given, then answers every utterance with its echo.
    script = [WaitClientTurn(), Reply(say_client_turn=True, ms=GREETING_MS), Echo()]
    with served(FakeGeminiLive(script, tls=tls, api_key=KEY, model=GEMINI_MODEL)) as fake:
        env = {
            "GEMINI_API_KEY": KEY,
            "GEMINI_MODEL": GEMINI_MODEL,
            "GEMINI_BASE_URL": fake.base_url,
            "SSL_CERT_FILE": str(tls.ca_path),
        }
        call = one_call_through_local_up("gemini", env, tmp_path / "run")

    assert fake.violations == []
    [session] = fake.sessions  # one call, one session: no reconnects
    assert session.api_key == KEY
    setup = session.setup
    assert setup["model"] == f"models/{GEMINI_MODEL}"
    assert {d["name"] for t in setup["tools"] for d in t["functionDeclarations"]} == TOOLS
    instructions = setup["systemInstruction"]["parts"][0]["text"]
    assert "Wanjiru" in instructions
    assert "Savannah Logistics" in instructions
    assert OPENING in session.client_turns[0]
    # Lead audio in at 16 kHz, and more agent audio out than the greeting: the echo of her answer.
    assert session.audio_mime_types == {"audio/pcm;rate=16000"}
    assert session.audio_ms >= 1000
    assert session.audio_ms_sent > GREETING_MS
    assert session.close_code == 1000  # the draining bridge ended the session, not a dropped socket
    assert_audio_went_both_ways(call, GREETING_MS)


def test_local_up_with_openai_opens_a_realtime_session_for_the_lead_and_relays_audio_both_ways(
    tmp_path: Path,
) -> None:
    tls = make_loopback_tls(tmp_path / "tls")
    # Echo mode: a `say` is spoken as asked; every utterance the fake's VAD hears is answered with itself.
    fake_server = FakeOpenAIRealtime(api_key=KEY, mode="echo", ssl_context=tls.server_context)
    with served(fake_server) as fake:
        env = {
            "OPENAI_API_KEY": KEY,
            "OPENAI_MODEL": OPENAI_MODEL,
            "OPENAI_REALTIME_URL": fake.url,
            "SSL_CERT_FILE": str(tls.ca_path),
        }
        assert env["OPENAI_REALTIME_URL"].startswith("wss://")
        call = one_call_through_local_up("openai", env, tmp_path / "run")

    assert fake.violations == []
    assert fake.rejected == []
    [session] = fake.sessions  # the fake admits only `Bearer KEY`; one call, one session
    assert session.model == OPENAI_MODEL
    assert {t["name"] for t in session.config["tools"]} == TOOLS
    assert "Wanjiru" in session.instructions
    assert "Savannah Logistics" in session.instructions
    greeting, *answers = session.responses
    assert (greeting.kind, greeting.text) == ("say", OPENING)
    # Lead audio in (24 kHz), and the fake's answer to what it heard of her.
    assert session.audio_in_bytes >= 48_000
    assert [r.kind for r in answers][:1] == ["echo"]
    assert answers[0].audio_ms > 0
    assert_audio_went_both_ways(call, greeting.audio_ms)
