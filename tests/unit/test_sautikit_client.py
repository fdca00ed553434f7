"""SautikitClient against a scripted fake transport: request shapes, error envelopes, retry rules."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from leadqual.carrier import CallDetails, CreatedCall, WalletBalance, supervision_status
from leadqual.errors import SautikitError
from leadqual.models import CallState
from leadqual.sautikit import RetryPolicy, SautikitClient, parse_retry_after

BASE = "https://api.sautikit.test"
KEY = "sk_test_123"
Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


@dataclass
class Script:
    """A fake Sautikit: plays `steps` in order, one per request, and records every request."""

    steps: list[Step]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.steps:
            raise AssertionError(f"unexpected extra request {request.method} {request.url}")
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx.Response):
            return step
        return step(request)

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]


@dataclass
class Clock:
    now: float = 1_750_000_000.0
    sleeps: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_client(
    steps: list[Step], *, retry: RetryPolicy | None = None, **kwargs: Any
) -> tuple[SautikitClient, Script, Clock]:
    script = Script(list(steps))
    clock = Clock()
    client = SautikitClient(
        BASE,
        KEY,
        http=httpx.Client(transport=httpx.MockTransport(script)),
        retry=retry or RetryPolicy(max_attempts=5, base_delay_s=0.5, max_delay_s=4.0),
        sleep=clock.sleep,
        clock=lambda: clock.now,
        rand=lambda: 0.5,
        **kwargs,
    )
    return client, script, clock


CREATED = {
    "call_id": "0190-aaaa",
    "session_id": "HD_0123456789ab",
    "status": "ringing",
    "client_request_id": "lq-a-1",
}


def create(client: SautikitClient, **overrides: Any) -> CreatedCall:
    args: dict[str, Any] = {
        "from_": "+254711000001",
        "to": "+254722000002",
        "client_request_id": "lq-a-1",
        "idempotency_key": "lq-a-1",
        "voice_callback_url": "https://hooks.example/voice",
    }
    args.update(overrides)
    return client.create_call(**args)


def test_create_call_request_shape_and_result() -> None:
    client, script, _ = make_client([httpx.Response(201, json=CREATED)])
    created = create(client, caller_id="+254711000009")
    assert created == CreatedCall(**CREATED)
    (req,) = script.requests
    assert req.method == "POST"
    assert str(req.url) == f"{BASE}/v1/calls"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["accept"] == "application/json"
    assert req.headers["idempotency-key"] == "lq-a-1"
    assert req.headers["content-type"] == "application/json"
    assert json.loads(req.content) == {
        "from": "+254711000001",
        "to": ["+254722000002"],
        "client_request_id": "lq-a-1",
        "voice_callback_url": "https://hooks.example/voice",
        "caller_id": "+254711000009",
    }


def test_create_call_omits_optional_fields_and_accepts_missing_call_id() -> None:
    client, script, _ = make_client(
        [httpx.Response(201, json={"session_id": "HD_0123456789ab", "status": "ringing"})]
    )
    created = create(client, voice_callback_url=None)
    assert created.call_id is None
    assert created.session_id == "HD_0123456789ab"
    assert set(script.bodies()[0]) == {"from", "to", "client_request_id"}


def test_429_retry_after_then_503_then_timeout_then_success() -> None:
    client, script, clock = make_client(
        [
            httpx.Response(
                429,
                headers={"Retry-After": "3"},
                json={"error": {"code": "rate_limited", "message": "slow down"}},
            ),
            httpx.Response(503, json={"code": "unavailable", "reason": "maintenance"}),
            httpx.ReadTimeout("read timed out"),
            httpx.Response(201, json=CREATED),
        ]
    )
    created = create(client)
    assert created.session_id == CREATED["session_id"]
    assert len(script.requests) == 4
    # Every attempt is the same request with the same key, so the platform replays, never redials.
    assert {r.headers["idempotency-key"] for r in script.requests} == {"lq-a-1"}
    assert len({r.content for r in script.requests}) == 1
    # Retry-After honoured exactly; then full jitter (rand=0.5) of base·2^(n-1): 0.5·2=1.0·0.5, 0.5·4=2.0·0.5.
    assert clock.sleeps == [3.0, 0.5, 1.0]


def test_retry_after_as_http_date() -> None:
    client, _, clock = make_client([])
    when = datetime.fromtimestamp(clock.now + 7, tz=UTC)
    script = Script(
        [
            httpx.Response(503, headers={"Retry-After": format_datetime(when, usegmt=True)}),
            httpx.Response(200, json={"numbers": []}),
        ]
    )
    client._http = httpx.Client(transport=httpx.MockTransport(script))
    assert client.list_numbers() == []
    assert clock.sleeps == [pytest.approx(7.0, abs=1.0)]


def test_retry_after_beyond_cap_gives_up_and_reports_the_wait() -> None:
    client, script, clock = make_client(
        [httpx.Response(429, headers={"Retry-After": "120"})],
        retry=RetryPolicy(max_attempts=5, retry_after_cap_s=20),
    )
    with pytest.raises(SautikitError) as info:
        client.get_call("HD_0123456789ab")
    assert info.value.retryable is True
    assert info.value.status == 429
    assert info.value.retry_after_s == 120
    assert clock.sleeps == []
    assert len(script.requests) == 1


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after("5", 0) == 5
    assert parse_retry_after("-3", 0) == 0
    assert parse_retry_after("soon", 0) is None
    assert parse_retry_after(None, 0) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470) == 10


def test_400_is_never_retried_and_carries_the_platform_code() -> None:
    client, script, clock = make_client(
        [
            httpx.Response(
                400,
                json={"error": {"code": "calls.invalid_to", "message": "bad number", "request_id": "req_9"}},
            )
        ]
    )
    with pytest.raises(SautikitError) as info:
        create(client)
    err = info.value
    assert (err.status, err.code, err.message, err.request_id, err.retryable) == (
        400,
        "calls.invalid_to",
        "bad number",
        "req_9",
        False,
    )
    assert len(script.requests) == 1
    assert clock.sleeps == []


def test_402_wallet_is_permanent() -> None:
    client, script, _ = make_client(
        [httpx.Response(402, json={"error": {"code": "wallet.insufficient_funds", "message": "top up"}})]
    )
    with pytest.raises(SautikitError) as info:
        create(client)
    assert info.value.code == "wallet.insufficient_funds"
    assert not info.value.retryable
    assert len(script.requests) == 1


def test_bare_code_reason_envelope() -> None:
    client, _, _ = make_client(
        [httpx.Response(410, json={"code": "recording_unavailable", "reason": "lost"})]
    )
    with pytest.raises(SautikitError) as info:
        client.get_call("0190-aaaa")
    assert (info.value.status, info.value.code, info.value.message) == (410, "recording_unavailable", "lost")


def test_non_json_error_body() -> None:
    client, _, _ = make_client([httpx.Response(404, text="<html>not found</html>")])
    with pytest.raises(SautikitError) as info:
        client.get_call("0190-aaaa")
    assert info.value.status == 404
    assert info.value.code is None
    assert not info.value.retryable


def test_post_without_idempotency_key_is_not_retried() -> None:
    client, script, clock = make_client([httpx.Response(503), httpx.Response(201, json=CREATED)])
    with pytest.raises(SautikitError) as info:
        create(client, idempotency_key="")
    assert info.value.status == 503
    assert len(script.requests) == 1
    assert "idempotency-key" not in script.requests[0].headers
    assert clock.sleeps == []


def test_unkeyed_post_read_timeout_is_ambiguous_so_not_retryable() -> None:
    client, script, _ = make_client([httpx.ReadTimeout("timed out"), httpx.Response(200, json={})])
    with pytest.raises(SautikitError) as info:
        client.request("POST", "/v1/things", json={"a": 1})
    assert info.value.status is None
    assert info.value.code == "transport.timeout"
    assert info.value.retryable is False
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert len(script.requests) == 1


def test_connect_error_is_retried_even_without_a_key() -> None:
    client, script, _ = make_client([httpx.ConnectError("refused"), httpx.Response(200, json={"ok": True})])
    response = client.request("POST", "/v1/things", json={"a": 1})
    assert response.json() == {"ok": True}
    assert len(script.requests) == 2


def test_exhausted_retries_raise_the_last_error_translated_from_httpx() -> None:
    client, script, clock = make_client(
        [httpx.ConnectTimeout("t1"), httpx.ReadTimeout("t2"), httpx.ReadTimeout("t3")],
        retry=RetryPolicy(max_attempts=3, base_delay_s=1, max_delay_s=1.5),
    )
    with pytest.raises(SautikitError) as info:
        client.get_call("HD_0123456789ab")
    assert info.value.retryable
    assert info.value.code == "transport.timeout"
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert len(script.requests) == 3
    assert clock.sleeps == [0.5, 0.75]  # capped at max_delay_s before jitter


def test_non_201_success_on_create_is_a_failure() -> None:
    client, script, _ = make_client([httpx.Response(200, json=CREATED)])
    with pytest.raises(SautikitError) as info:
        create(client)
    assert info.value.status == 200
    assert info.value.code == "response.unexpected_status"
    assert not info.value.retryable
    assert len(script.requests) == 1


def test_garbled_201_is_retryable_because_the_key_replays() -> None:
    client, _, _ = make_client([httpx.Response(201, text="oops")])
    with pytest.raises(SautikitError) as info:
        create(client)
    assert info.value.retryable
    assert info.value.code == "response.invalid_json"


def test_get_call_by_session_id_tolerates_missing_and_extra_fields() -> None:
    body = {
        "call": {
            "id": "0190-aaaa",
            "session_id": "HD_0123456789ab",
            "status": "no_answer",
            "duration_seconds": None,
            "cost_minor": 0,
            "answered_at": None,
            "ended_at": "2025-06-04T07:01:02Z",
            "brand_new_field": {"x": 1},
            "events": [{"id": "e1", "kind": "call.failed", "payload": {"hangup_cause": "NO_ANSWER"}}],
        }
    }
    client, script, _ = make_client([httpx.Response(200, json=body)])
    call = client.get_call("HD_0123456789ab")
    assert script.requests[0].url.path == "/v1/calls/HD_0123456789ab"
    assert script.requests[0].method == "GET"
    assert isinstance(call, CallDetails)
    assert call.state is CallState.NO_ANSWER
    assert call.ended_at == datetime(2025, 6, 4, 7, 1, 2, tzinfo=UTC)
    assert call.events[0].kind == "call.failed"
    assert call.model_extra == {"brand_new_field": {"x": 1}}
    assert CallDetails.model_validate({}).state is None


def test_ids_are_one_path_segment() -> None:
    client, script, _ = make_client([httpx.Response(200, json={"call": {}})])
    client.get_call("../wallet/balance")
    assert script.requests[0].url.raw_path == b"/v1/calls/..%2Fwallet%2Fbalance"


def test_hangup_is_retried_as_idempotent() -> None:
    client, script, _ = make_client(
        [httpx.Response(502), httpx.Response(200, json={"call_id": "0190-aaaa", "status": "hung_up"})]
    )
    client.hangup("0190-aaaa")
    assert [r.url.path for r in script.requests] == ["/v1/calls/0190-aaaa/hangup"] * 2
    assert all(r.method == "POST" for r in script.requests)


def test_supervision_request_shape_and_conflict() -> None:
    client, script, _ = make_client(
        [
            httpx.Response(201, json={"supervision_id": "s1", "state": "connecting"}),
            httpx.Response(
                409, json={"error": {"code": "calls.supervision_in_progress", "message": "one per call"}}
            ),
        ]
    )
    result = client.start_supervision(
        "HD_0123456789ab", mode="barge", number="+254733000003", idempotency_key="sv-1"
    )
    assert result["supervision_id"] == "s1"
    req = script.requests[0]
    assert req.url.path == "/v1/calls/HD_0123456789ab/supervision"
    assert req.headers["idempotency-key"] == "sv-1"
    assert json.loads(req.content) == {
        "mode": "barge",
        "supervisor": {"type": "phone", "number": "+254733000003"},
    }
    with pytest.raises(SautikitError) as info:
        client.start_supervision(
            "HD_0123456789ab", mode="barge", number="+254733000003", idempotency_key="sv-2"
        )
    assert info.value.code == "calls.supervision_in_progress"
    assert not info.value.retryable


def test_update_and_stop_supervision() -> None:
    client, script, _ = make_client(
        [httpx.Response(503), httpx.Response(200, json={"mode": "listen"}), httpx.Response(204)]
    )
    assert client.update_supervision("HD_0123456789ab", mode="listen") == {"mode": "listen"}
    client.stop_supervision("HD_0123456789ab")
    assert [(r.method, r.url.path) for r in script.requests] == [
        ("PATCH", "/v1/calls/HD_0123456789ab/supervision"),
        ("PATCH", "/v1/calls/HD_0123456789ab/supervision"),
        ("DELETE", "/v1/calls/HD_0123456789ab/supervision"),
    ]
    assert script.bodies()[:2] == [{"mode": "listen"}] * 2


def test_get_supervision_reads_the_status_in_any_spelling() -> None:
    sup = {"id": "sup_1", "mode": "whisper", "supervisor": {"type": "phone", "number": "+254733000003"}}
    client, script, _ = make_client(
        [
            httpx.Response(200, json={"supervision": {**sup, "status": "ringing"}}),
            httpx.Response(503),  # a GET is safe to repeat
            httpx.Response(200, json={"supervision": {**sup, "status": "In-Progress"}}),
            httpx.Response(200, json={**sup, "state": "completed"}),  # unwrapped, `state` instead
            httpx.Response(200, json={"supervision": {**sup, "answered_at": "2025-06-01T10:00:00Z"}}),
            httpx.Response(200, json={"supervision": {**sup, "status": "sleeping"}}),
        ]
    )
    ringing = client.get_supervision("HD_0123456789ab")
    assert ringing is not None
    assert (ringing["status"], ringing["mode"], ringing["id"]) == ("ringing", "whisper", "sup_1")
    assert "status_raw" not in ringing
    active = client.get_supervision("HD_0123456789ab")
    assert active is not None
    assert (active["status"], active["status_raw"]) == ("active", "In-Progress")
    ended = client.get_supervision("HD_0123456789ab")
    assert ended is not None
    assert ended["status"] == "ended"
    inferred = client.get_supervision("HD_0123456789ab")
    assert inferred is not None
    assert inferred["status"] == "active"  # no status, but answered and not ended
    unknown = client.get_supervision("HD_0123456789ab")
    assert unknown is not None
    assert (unknown["status"], unknown["status_raw"]) == (None, "sleeping")
    assert [(r.method, r.url.path) for r in script.requests] == [
        ("GET", "/v1/calls/HD_0123456789ab/supervision")
    ] * 6


def test_get_supervision_is_none_without_a_supervisor_and_raises_on_other_errors() -> None:
    client, script, _ = make_client(
        [
            httpx.Response(404, json={"code": "supervision.not_found", "reason": "no supervisor"}),
            httpx.Response(403, json={"error": {"code": "api_key.scope_denied", "message": "no"}}),
            httpx.Response(200, json={"supervision": ["not", "an", "object"]}),
        ]
    )
    assert client.get_supervision("HD_0123456789ab") is None
    with pytest.raises(SautikitError) as denied:
        client.get_supervision("HD_0123456789ab")
    assert (denied.value.status, denied.value.code) == (403, "api_key.scope_denied")
    with pytest.raises(SautikitError) as garbled:
        client.get_supervision("HD_0123456789ab")
    assert garbled.value.code == "response.invalid"
    assert len(script.requests) == 3  # a 404 and a 403 are answers, not retried


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("ringing", "ringing"),
        ("connecting", "ringing"),
        ("answered", "active"),
        ("in progress", "active"),
        ("Active", "active"),
        ("hung-up", "ended"),
        ("no-answer", "no_answer"),
        ("NO_ANSWER", "no_answer"),
        ("Busy", "busy"),
        ("cancelled", "canceled"),
        ("failed", "failed"),
        ("", None),
        (None, None),
        (3, None),
        ("whatever", None),
    ],
)
def test_supervision_status_spellings(raw: Any, canonical: str | None) -> None:
    assert supervision_status(raw) == canonical


def test_set_number_routing_patch_style() -> None:
    client, script, _ = make_client([httpx.Response(200, json={"id": "n1"}), httpx.Response(200, json={})])
    assert client.set_number_routing("n1", routing_url="https://h/voice") == {"id": "n1"}
    client.set_number_routing("n1", routing_url="https://h/voice", events_url="https://h/events")
    first, second = script.requests
    assert (first.method, first.url.path) == ("PATCH", "/v1/numbers/n1")
    assert script.bodies() == [
        {"routing_url": "https://h/voice"},
        {"routing_url": "https://h/voice", "events_url": "https://h/events"},
    ]
    assert second.headers["authorization"] == f"Bearer {KEY}"


def test_set_number_routing_put_style() -> None:
    client, script, _ = make_client([httpx.Response(503), httpx.Response(204)], routing_style="put_routing")
    assert client.set_number_routing("n1", routing_url="https://h/voice", events_url="https://h/events") == {}
    assert [(r.method, r.url.path) for r in script.requests] == [("PUT", "/v1/numbers/n1/routing")] * 2
    assert script.bodies()[0] == {"voice_callback_url": "https://h/voice", "events_url": "https://h/events"}


def test_unknown_routing_style_is_refused() -> None:
    with pytest.raises(ValueError, match="routing_style"):
        SautikitClient(BASE, KEY, http=httpx.Client(), routing_style="post")  # type: ignore[arg-type]


def test_list_numbers_and_wallet_balance() -> None:
    client, script, _ = make_client(
        [
            httpx.Response(
                200, json={"numbers": [{"id": "n1", "e164": "+254711000001", "status": "active"}]}
            ),
            httpx.Response(
                200, json={"balance_minor": 12345, "currency": "KES", "low_balance_threshold_minor": 1000}
            ),
        ]
    )
    assert client.list_numbers() == [{"id": "n1", "e164": "+254711000001", "status": "active"}]
    assert client.wallet_balance() == WalletBalance(
        balance_minor=12345, currency="KES", low_balance_threshold_minor=1000
    )
    assert [r.url.path for r in script.requests] == ["/v1/numbers", "/v1/wallet/balance"]


def test_backoff_is_full_jitter_and_capped() -> None:
    policy = RetryPolicy(base_delay_s=1, max_delay_s=10)
    assert [policy.backoff_s(n, lambda: 1.0) for n in range(1, 6)] == [1, 2, 4, 8, 10]
    assert policy.backoff_s(3, lambda: 0.0) == 0
    assert RetryPolicy(base_delay_s=1, jitter=False).backoff_s(2, lambda: 0.0) == 2
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
