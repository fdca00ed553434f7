"""The simulator's REST API (SAUTIKIT.md §1) and its /_sim inspection endpoints."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from conftest import API_KEY, FROM, wait_for

pytestmark = pytest.mark.integration

LEAD = "+254712000001"
NOBODY = "+254799000000"  # in neither list: rings out


def client(url: str, key: str = API_KEY) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, trust_env=False)


def assert_envelope(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert err["message"]
    assert err["request_id"].startswith("req_")


async def test_bearer_auth_401_on_wrong_or_missing_key(make_sim):
    sim = await make_sim()
    async with client(sim.url, "sk_wrong") as c:
        assert_envelope(await c.get("/v1/numbers"), 401, "api_key.invalid")
        assert_envelope(await c.post("/v1/calls", json={}), 401, "api_key.invalid")
    async with httpx.AsyncClient(base_url=sim.url, trust_env=False) as bare:
        assert_envelope(await bare.get("/v1/wallet/balance"), 401, "api_key.invalid")
    async with client(sim.url) as c:
        assert (await c.get("/v1/numbers")).status_code == 200
    assert sim.calls() == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"from": FROM, "to": LEAD}, "validation.failed"),  # `to` must be an array
        ({"from": FROM, "to": []}, "validation.failed"),
        ({"from": FROM, "to": ["0712000001"]}, "validation.failed"),
        ({"from": "+254799999999", "to": [LEAD]}, "calls.from_not_owned"),
        ({"from": "+254700000200", "to": [LEAD]}, "calls.from_inactive"),
        ({"from": FROM, "to": [LEAD], "client_request_id": "bad\x07label"}, "validation.failed"),
        ({"from": FROM, "to": [LEAD], "client_request_id": "mcp:thing"}, "validation.failed"),
        ({"from": FROM, "to": [LEAD], "clientRequestId": "broadcast:x"}, "validation.failed"),
        ({"from": FROM, "to": [LEAD], "client_request_id": "x" * 5001}, "validation.failed"),
        ({"from": FROM, "to": [LEAD], "voice_callback_url": "ftp://x"}, "validation.failed"),
    ],
)
async def test_create_call_validation(make_sim, body, code):
    sim = await make_sim()
    async with client(sim.url) as c:
        assert_envelope(await c.post("/v1/calls", json=body), 422, code)
        assert_envelope(await c.post("/v1/calls", content=b"{not json"), 400, "request.invalid_json")
    assert sim.calls() == []


async def test_idempotency_key_replays_the_first_response_and_dials_once_while_the_call_rings(make_sim):
    sim = await make_sim(ring_seconds=10)  # the call rings throughout: the key is only bound while it lives
    body = {"from": FROM, "to": [NOBODY], "client_request_id": "lq-L1-1"}
    async with client(sim.url) as c:
        first = await c.post("/v1/calls", json=body, headers={"Idempotency-Key": "k-1"})
        again = await c.post("/v1/calls", json=body, headers={"Idempotency-Key": "k-1"})
        conflict = await c.post(
            "/v1/calls",
            json={**body, "to": [LEAD], "client_request_id": "lq-L1-2"},
            headers={"Idempotency-Key": "k-1"},
        )
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    created = first.json()
    assert created["status"] == "ringing"
    assert created["session_id"].startswith("HD_")
    assert len(created["session_id"]) == 15
    assert created["client_request_id"] == "lq-L1-1"
    assert_envelope(conflict, 409, "idempotency.conflict")
    assert len(sim.calls()) == 1


async def test_the_same_idempotency_key_after_its_call_ended_places_a_new_call(make_sim):
    """§1: a key replays "while the leg lives". After the call has ended it dials again, and then
    belongs to the new call (replayed, 409 on another body) until that one ends too."""
    sim = await make_sim(ring_seconds=10)
    body = {"from": FROM, "to": [NOBODY]}  # no label: a reused label collapses calls on its own
    key = {"Idempotency-Key": "k-ended"}
    async with client(sim.url) as c:
        first = (await c.post("/v1/calls", json=body, headers=key)).json()
        await c.post(f"/v1/calls/{first['session_id']}/hangup")
        await sim.wait_ended(first["session_id"], 5)

        second = await c.post("/v1/calls", json=body, headers=key)
        replay = await c.post("/v1/calls", json=body, headers=key)
        conflict = await c.post("/v1/calls", json={**body, "to": [LEAD]}, headers=key)
        await c.post(f"/v1/calls/{second.json()['session_id']}/hangup")
        await sim.wait_ended(second.json()["session_id"], 5)
        # With its call over, another body under the same key is a new request, not a conflict.
        third = await c.post("/v1/calls", json={**body, "to": [LEAD]}, headers=key)

    assert second.status_code == 201
    assert second.json()["session_id"] != first["session_id"]
    assert second.json()["status"] == "ringing"
    assert (replay.status_code, replay.json()) == (201, second.json())
    assert_envelope(conflict, 409, "idempotency.conflict")
    assert third.status_code == 201
    sessions = [first["session_id"], second.json()["session_id"], third.json()["session_id"]]
    assert len(set(sessions)) == 3
    assert [sim.call(s)["to"] for s in sessions] == [[NOBODY], [NOBODY], [LEAD]]
    assert [sim.call(s)["call"]["status"] for s in sessions[:2]] == ["canceled", "canceled"]
    assert len(sim.calls()) == 3


async def test_key_and_label_reused_after_the_call_ended_collapse_through_the_label(make_sim):
    """The key is free once the call ended, but the label (the same in a dialer's retried request)
    still collapses onto the first call [ours]: no second call, the first response again."""
    sim = await make_sim(ring_seconds=10)
    body = {"from": FROM, "to": [NOBODY], "client_request_id": "lq-L3-1"}
    key = {"Idempotency-Key": "lq-L3-1"}
    async with client(sim.url) as c:
        first = await c.post("/v1/calls", json=body, headers=key)
        await c.post(f"/v1/calls/{first.json()['session_id']}/hangup")
        await sim.wait_ended(first.json()["session_id"], 5)
        again = await c.post("/v1/calls", json=body, headers=key)
    assert (again.status_code, again.json()) == (201, first.json())
    assert len(sim.calls()) == 1


async def test_client_request_id_in_either_spelling_collapses_onto_the_first_call(make_sim):
    sim = await make_sim()
    async with client(sim.url) as c:
        snake = await c.post("/v1/calls", json={"from": FROM, "to": [NOBODY], "client_request_id": "lq-L2-1"})
        camel = await c.post("/v1/calls", json={"from": FROM, "to": [NOBODY], "clientRequestId": "lq-L2-1"})
        other = await c.post("/v1/calls", json={"from": FROM, "to": [NOBODY], "clientRequestId": "lq-L2-2"})
    assert snake.status_code == camel.status_code == other.status_code == 201
    assert camel.json() == snake.json()
    assert other.json()["session_id"] != snake.json()["session_id"]
    assert other.json()["client_request_id"] == "lq-L2-2"
    assert len(sim.calls()) == 2


async def test_empty_wallet_refuses_with_402_before_dialing(make_sim, fake_app):
    sim = await make_sim(wallet_minor=0)
    async with client(sim.url) as c:
        r = await c.post("/v1/calls", json={"from": FROM, "to": [LEAD], "client_request_id": "lq-w-1"})
        assert_envelope(r, 402, "wallet.insufficient_funds")
        balance = (await c.get("/v1/wallet/balance")).json()
        assert balance == {"balance_minor": 0, "currency": "KES", "low_balance_threshold_minor": 5000}
        sim.set_wallet(500)
        ok = await c.post("/v1/calls", json={"from": FROM, "to": [NOBODY], "client_request_id": "lq-w-2"})
        assert ok.status_code == 201
    assert len(sim.calls()) == 1
    # The funded call rings out to a final callback; by then the refused one would have called back too.
    await wait_for(fake_app.voice)
    assert {r.query["clientRequestId"] for r in fake_app.voice()} == {"lq-w-2"}  # lq-w-1 never rang anyone


async def test_get_call_by_call_id_or_session_id_with_full_record(make_sim):
    sim = await make_sim()
    async with client(sim.url) as c:
        created = (
            await c.post("/v1/calls", json={"from": FROM, "to": [NOBODY], "client_request_id": "lq-g-1"})
        ).json()
        by_id = (await c.get(f"/v1/calls/{created['call_id']}")).json()["call"]
        by_session = (await c.get(f"/v1/calls/{created['session_id']}")).json()["call"]
        missing = await c.get("/v1/calls/HD_000000000000")
    assert by_id == by_session
    for key in (
        "id", "workspace_id", "session_id", "direction", "local_e164", "remote_e164", "country", "started_at",
        "answered_at", "ended_at", "duration_seconds", "status", "cost_minor", "cost_currency",
        "rate_per_minute_minor", "failure_code", "metadata", "created_at", "updated_at", "events",
    ):  # fmt: skip
        assert key in by_id, key
    assert by_id["status"] == "ringing"
    assert by_id["local_e164"] == FROM
    assert by_id["remote_e164"] == NOBODY
    assert by_id["country"] == "KE"
    assert by_id["rate_per_minute_minor"] == 300
    assert by_id["cost_currency"] == "KES"
    assert by_id["events"][0]["kind"] == "call.started"
    assert set(by_id["events"][0]) == {"id", "call_id", "kind", "payload", "occurred_at"}
    assert_envelope(missing, 404, "calls.not_found")


async def test_hangup_is_idempotent_and_cancels_a_ringing_call_for_free(make_sim):
    sim = await make_sim()
    async with client(sim.url) as c:
        created = (await c.post("/v1/calls", json={"from": FROM, "to": [NOBODY]})).json()
        first = await c.post(f"/v1/calls/{created['session_id']}/hangup")
        view = await sim.wait_ended(created["session_id"], 5)
        second = await c.post(f"/v1/calls/{created['call_id']}/hangup")
        unknown = await c.post("/v1/calls/nope/hangup")
    assert first.status_code == second.status_code == 200
    assert first.json() == {"call_id": created["call_id"], "status": "hung_up"}
    assert second.json() == first.json()
    assert view["call"]["status"] == "canceled"
    assert view["call"]["cost_minor"] == 0
    assert view["call"]["duration_seconds"] == 0
    assert_envelope(unknown, 404, "calls.not_found")
    assert sim.wallet_minor == 100_000


async def test_numbers_listing_and_routing_in_both_forms(make_sim):
    sim = await make_sim()
    async with client(sim.url) as c:
        numbers = (await c.get("/v1/numbers")).json()["numbers"]
        assert {n["e164"] for n in numbers} == {FROM, "+254700000200"}
        active = next(n for n in numbers if n["e164"] == FROM)
        assert {"id", "e164", "status", "voice_callback_url", "events_url"} <= set(active)
        r = await c.patch(
            "/v1/numbers/num_test_1",
            json={"routing_url": "https://app.example/voice", "events_url": "https://app.example/ev"},
        )
        assert r.status_code == 200
        assert r.json()["number"]["routing_url"] == "https://app.example/voice"
        r = await c.put(
            "/v1/numbers/num_test_1/routing", json={"voice_callback_url": "https://b.example/voice"}
        )
        assert r.json()["number"]["voice_callback_url"] == "https://b.example/voice"
        assert r.json()["number"]["events_url"] == "https://app.example/ev"
        assert_envelope(
            await c.patch("/v1/numbers/nope", json={"routing_url": "https://x"}), 404, "numbers.not_found"
        )
        assert_envelope(await c.patch("/v1/numbers/num_test_1", json={}), 422, "validation.failed")
        assert_envelope(
            await c.patch("/v1/numbers/num_test_1", json={"routing_url": 5}), 422, "validation.failed"
        )
        listed = (await c.get("/v1/numbers")).json()["numbers"]
    assert next(n for n in listed if n["id"] == "num_test_1")["routing_url"] == "https://b.example/voice"


async def test_supervision_errors_use_the_bare_shape(make_sim):
    sim = await make_sim()
    async with client(sim.url) as c:
        created = (await c.post("/v1/calls", json={"from": FROM, "to": [NOBODY]})).json()
        body = {"mode": "barge", "supervisor": {"type": "phone", "number": "+254711999000"}}
        ringing = await c.post(f"/v1/calls/{created['call_id']}/supervision", json=body)
        unknown = await c.post("/v1/calls/nope/supervision", json=body)
        none_yet = await c.get(f"/v1/calls/{created['call_id']}/supervision")
    assert ringing.status_code == 409
    assert ringing.json() == {
        "code": "calls.not_in_progress",
        "reason": "the call is not live",
    }
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "calls.not_found"
    assert none_yet.status_code == 404
    assert set(none_yet.json()) == {"code", "reason"}


async def test_recording_is_202_while_live_404_just_after_then_a_redirect(make_sim, fake_app):
    sim = await make_sim({"numbers": {LEAD: {"answer": "after_rings"}}}, recording_delay_s=0.6)
    fake_app.answer_with("<Response><Say>Hello there.</Say></Response>")
    async with client(sim.url) as c:
        created = (await c.post("/v1/calls", json={"from": FROM, "to": [LEAD]})).json()
        sid = created["session_id"]
        for _ in range(100):
            if sim.call(sid)["call"]["status"] == "answered":
                break
            await asyncio.sleep(0.05)
        live = await c.get(f"/v1/calls/{sid}/recording")
        await sim.wait_ended(sid, 10)
        just_after = await c.get(f"/v1/calls/{sid}/recording")
        await asyncio.sleep(0.7)
        later = await c.get(f"/v1/calls/{sid}/recording", follow_redirects=False)
        wav = await c.get(later.headers["location"])
    assert live.status_code == 202
    assert live.json()["retry_after_seconds"] > 0
    assert_envelope(just_after, 404, "recording.not_found")
    assert later.status_code == 302
    assert "X-Amz-Expires=900" in later.headers["location"]
    assert wav.status_code == 200
    assert wav.content[:4] == b"RIFF"


async def test_sim_inspection_endpoints(make_sim):
    sim = await make_sim()
    async with client(sim.url) as c:
        created = (
            await c.post("/v1/calls", json={"from": FROM, "to": [NOBODY], "clientRequestId": "lq-i-1"})
        ).json()
        await sim.wait_ended(created["session_id"], 5)
        calls = (await c.get("/_sim/calls")).json()["calls"]
        one = (await c.get(f"/_sim/calls/{created['call_id']}")).json()
        violations = (await c.get("/_sim/violations")).json()["violations"]
        health = (await c.get("/_sim/health")).json()
        set_wallet = await c.post("/_sim/wallet", json={"balance_minor": 42})
        balance = (await c.get("/v1/wallet/balance")).json()["balance_minor"]
    assert [x["call"]["session_id"] for x in calls] == [created["session_id"]]
    assert one["call"]["status"] == "no_answer"
    assert one["client_request_id"] == "lq-i-1"
    assert [e["kind"] for e in one["timeline"]][:3] == ["created", "ringing", "no_answer"]
    assert violations == []
    assert health["ok"] is True
    assert health["calls"] == 1
    assert set_wallet.status_code == 200
    assert balance == 42


def test_simulator_thread_for_sync_callers(tmp_path):
    from local.sautikit import Directory, SimulatorThread

    with SimulatorThread(
        Directory(),
        api_key=API_KEY,
        webhook_secret="s",
        numbers=[{"id": "n1", "e164": FROM}],
        data_dir=tmp_path,
        ring_seconds=0.02,
        no_answer_after_rings=2,
        warm_up=False,
    ) as st:
        r = httpx.post(
            f"{st.url}/v1/calls",
            json={"from": FROM, "to": [NOBODY]},
            headers={"Authorization": f"Bearer {API_KEY}"},
            trust_env=False,
        )
        assert r.status_code == 201
        started = time.monotonic()
        view = st.wait_ended(r.json()["session_id"], 5)
        assert time.monotonic() - started < 2
        assert view["call"]["status"] == "no_answer"
        assert [c["call"]["status"] for c in st.calls()] == ["no_answer"]
        assert st.violations() == []
