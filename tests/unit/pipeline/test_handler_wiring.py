"""The real `lambda_handler`s, wired by their own `build()` from settings (moto in-process, Sautikit
over a scripted httpx transport): decorators, adapters and the sample events fit together."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pipeline_fakes import NAIROBI, Aws, FakeContext

from functions.dialer import app as dialer_app
from functions.events import app as events_app
from functions.routing import app as routing_app
from functions.voice import app as voice_app
from leadqual.models import CallState, LeadStatus
from leadqual.settings import DialerSettings, EventsSettings, VoiceSettings
from leadqual.signing import sign_webhook
from leadqual.store import DynamoStore

EVENTS = Path(__file__).resolve().parents[3] / "events"
SECRET = "sample-webhook-secret"
API_KEY = "sk_test_wiring"


class Sautikit:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.sessions: dict[str, str] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        path = request.url.path
        if request.method == "POST" and path == "/v1/calls":
            body = json.loads(request.content)
            key = request.headers["idempotency-key"]
            session = self.sessions.setdefault(key, f"HD_{uuid.uuid4().hex[:12]}")
            return httpx.Response(
                201,
                json={
                    "call_id": str(uuid.uuid4()),
                    "session_id": session,
                    "status": "ringing",
                    "client_request_id": body["client_request_id"],
                },
            )
        if request.method == "GET" and path.startswith("/v1/calls/"):
            return httpx.Response(
                200,
                json={
                    "call": {
                        "id": path.rsplit("/", 1)[-1],
                        "status": "completed",
                        "duration_seconds": 96,
                        "cost_minor": 480,
                        "cost_currency": "KES",
                    }
                },
            )
        if path == "/v1/wallet/balance":
            return httpx.Response(200, json={"balance_minor": 123_456, "currency": "KES"})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})


@pytest.fixture
def sautikit() -> Sautikit:
    return Sautikit()


def env(aws: Aws, **extra: str) -> dict[str, str]:
    return {
        "TABLE_NAME": aws.resources.table_name,
        "IDEMPOTENCY_TABLE": aws.resources.idempotency_table_name,
        "QUEUE_URL": aws.resources.queue_url,
        "SAUTIKIT_BASE_URL": "https://api.sautikit.test",
        "SAUTIKIT_API_KEY": API_KEY,
        "FROM_NUMBER": "+254709100100",
        **extra,
    }


def sample(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))


def resign(event: dict[str, Any]) -> dict[str, Any]:
    """The samples are signed at a fixed past time; sign them for now, as the events README says."""
    raw = base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"].encode()
    event["headers"]["x-sautikit-signature"] = sign_webhook(SECRET, raw)
    return event


def test_the_call_flows_through_the_real_handlers(
    aws: Aws,
    store: DynamoStore,
    sautikit: Sautikit,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    http = httpx.Client(transport=httpx.MockTransport(sautikit))
    wednesday_10am = datetime(2025, 6, 4, 10, 0, tzinfo=NAIROBI)
    runner = dialer_app.build(
        DialerSettings.from_env(env(aws)),
        dynamodb=aws.dynamodb,
        sqs=aws.sqs,
        http=http,
        clock=lambda: wednesday_10am,
    )
    monkeypatch.setattr(dialer_app, "_runner", runner)
    # Powertools keeps unflushed metrics on the class: start from none left by earlier tests.
    dialer_app.metrics.clear_metrics()

    assert dialer_app.lambda_handler(sample("sqs_leads_batch"), FakeContext()) == {"batchItemFailures": []}
    posts = [r for r in sautikit.requests if r.method == "POST"]
    assert sorted(json.loads(r.content)["client_request_id"] for r in posts) == [
        "lq-lead-0001-1",
        "lq-lead-0002-1",
        "lq-lead-0003-1",
    ]
    assert '"CallsPlaced":[1.0,1.0,1.0]' in capsys.readouterr().out.replace(
        " ", ""
    )  # EMF, flushed by log_metrics
    session = sautikit.sessions["lq-lead-0001-1"]

    voice_deps = voice_app.build(
        VoiceSettings.from_env(
            env(
                aws,
                WEBHOOK_SECRET=SECRET,
                BRIDGE_URL="wss://bridge.example.com/stream",
                BRIDGE_TOKEN_SECRET="bt",
            )
        ),
        dynamodb=aws.dynamodb,
    )
    monkeypatch.setattr(voice_app, "_deps", voice_deps)
    answer = sample("voice_answer_form")  # its session is the sample's HD_3f9a…: point it at the placed call
    form = base64.b64decode(answer["body"]).replace(b"HD_3f9a1c2b7d4e", session.encode())
    answer["body"] = base64.b64encode(form).decode()
    response = voice_app.lambda_handler(resign(answer), FakeContext())
    assert response["statusCode"] == 200
    assert "<Stream " in response["body"]
    assert f"session={session}" in response["body"]

    events_deps = events_app.build(
        EventsSettings.from_env(env(aws, WEBHOOK_SECRET=SECRET)),
        dynamodb=aws.dynamodb,
        sqs=aws.sqs,
        http=http,
    )
    monkeypatch.setattr(events_app, "_deps", events_deps)
    done = sample("events_envelope_completed")
    body = json.loads(done["body"])
    body["data"]["session_id"] = session
    done["body"] = json.dumps(body)
    response = events_app.lambda_handler(resign(done), FakeContext())
    assert json.loads(response["body"]) == {"result": "finalized"}
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert (call.state, call.billed_seconds, call.cost_minor) == (CallState.COMPLETED, 96, 480)
    profile = store.get_lead("lead-0001")
    assert profile is not None
    assert profile.status is LeadStatus.DONE
    emf = capsys.readouterr().out.replace(" ", "")
    assert '"WalletBalanceMinor":[123456.0]' in emf
    assert '"Namespace":"Leadqual"' in emf


def test_the_routing_handler_answers_cloudformation(monkeypatch: pytest.MonkeyPatch) -> None:
    puts: list[httpx.Request] = []
    patches: list[httpx.Request] = []

    def s3(request: httpx.Request) -> httpx.Response:
        puts.append(request)
        return httpx.Response(200)

    def platform(request: httpx.Request) -> httpx.Response:
        patches.append(request)
        return httpx.Response(200, json={"id": "n1", **json.loads(request.content)})

    monkeypatch.setattr(
        routing_app,
        "_default_deps",
        lambda: routing_app.Deps(
            api=lambda: routing_app.SautikitClient(
                "https://api.sautikit.test",
                API_KEY,
                http=httpx.Client(transport=httpx.MockTransport(platform)),
            ),
            http=httpx.Client(transport=httpx.MockTransport(s3)),
        ),
    )
    routing_app.lambda_handler(sample("custom_resource_create"), FakeContext())
    assert json.loads(puts[0].content)["Status"] == "SUCCESS"
    assert patches[0].method == "PATCH"
