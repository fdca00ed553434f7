"""Transfers: `<Dial>` after the stream (seed strategy) and supervision barge, with the rep leg billed."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime

import httpx
import numpy as np
import pytest
from conftest import API_KEY, place_call

from local.sautikit.audio import read_wav

pytestmark = pytest.mark.integration

LEAD = "+254712000001"
REP = "+254711999000"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def place(sim, to: str = LEAD, label: str = "lq-t-1") -> dict:
    return await place_call(sim, to, label)


def entries(view: dict, kind: str) -> list[dict]:
    return [e for e in view["timeline"] if e["kind"] == kind]


def band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float32))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / 16000)
    return float(spec[(freqs >= lo) & (freqs <= hi)].sum() / max(spec.sum(), 1e-9))


async def close_after(seconds: float):
    async def behaviour(ws, rec):
        await asyncio.sleep(seconds)
        await ws.close()

    return behaviour


async def test_dial_after_the_stream_bridges_the_rep_and_bills_both_legs(make_sim, fake_app):
    sim = await make_sim(
        {
            "numbers": {LEAD: {"says": []}},
            "reps": {REP: {"rings": 2, "talk_s": 1.5, "says": ["Hi, this is the sales team."]}},
        },
        ring_seconds=0.6,
        no_answer_after_rings=10,
    )
    fake_app.answer_with(
        fake_app.stream_xml(after=f'<Dial timeout="20"><Number>{REP}</Number></Dial><Say>Fallback.</Say>')
    )
    fake_app.ws_behaviour = await close_after(0.3)
    created = await place(sim)
    view = await sim.wait_ended(created["session_id"], 20)
    await sim.drain()
    call = view["call"]
    assert [v["verb"] for v in view["verbs"]] == ["stream", "dial"]  # the fallback never ran
    assert call["hangup_by"] == "rep"
    transfer = call["transfer"]
    assert transfer["status"] == "answered"
    assert transfer["number"] == REP
    assert transfer["via"] == "dial"
    lead_leg, rep_leg = call["legs"]
    assert (lead_leg["role"], rep_leg["role"]) == ("lead", "rep")
    assert 1 <= rep_leg["billed_seconds"] <= 3
    assert rep_leg["cost_minor"] == rep_leg["billed_seconds"] * 5
    assert call["cost_minor"] == lead_leg["cost_minor"] + rep_leg["cost_minor"]
    assert sim.wallet_minor == 100_000 - call["cost_minor"]
    assert transfer["billed_seconds"] == rep_leg["billed_seconds"]
    assert [e["kind"] for e in view["timeline"] if e["kind"].startswith(("transfer", "rep_"))] == [
        "transfer_ringing",
        "transfer_answered",
        "rep_says",
        "rep_hangup",
    ]
    ringing, answered = entries(view, "transfer_ringing")[0], entries(view, "transfer_answered")[0]
    assert 1.1 <= answered["t"] - ringing["t"] <= 1.5  # two rings of 0.6 s
    dial_done = fake_app.voice("DialCompleted")
    assert len(dial_done) == 1
    assert dial_done[0].data["dialStatus"] == "answered"
    assert dial_done[0].data["dialDestinationNumber"] == REP

    # The lead's ear: ringback (425 Hz) while the rep rings, then the rep's voice.
    audio, _ = read_wav(sim.call_object(created["session_id"]).wav_path)
    answered_at = entries(view, "answered")[0]["t"]
    ring = audio[int((ringing["t"] - answered_at) * 16000) :][: int(0.35 * 16000), 1]
    assert band_energy(ring, 400, 450) > 0.8
    voice = audio[int((answered["t"] - answered_at + 0.3) * 16000) :, 1]
    assert np.sqrt((voice.astype(np.float32) ** 2).mean()) > 300
    assert band_energy(voice, 400, 450) < 0.2  # speech, not the ringback


async def test_a_rep_who_does_not_answer_in_time_falls_through_to_the_next_verb(make_sim, fake_app):
    sim = await make_sim({"numbers": {LEAD: {"says": []}}, "reps": {"*": {"rings": 20}}})
    fake_app.answer_with(
        fake_app.stream_xml(
            after=f'<Dial timeout="0.4"><Number>{REP}</Number></Dial><Say>Sorry, nobody is free.</Say><Hangup/>'
        )
    )
    fake_app.ws_behaviour = await close_after(0.3)
    created = await place(sim)
    view = await sim.wait_ended(created["session_id"], 20)
    await sim.drain()
    call = view["call"]
    assert [v["verb"] for v in view["verbs"]] == ["stream", "dial", "say", "hangup"]
    assert call["transfer"]["status"] == "no_answer"
    assert [leg["role"] for leg in call["legs"]] == ["lead"]  # nothing billed for the rep
    failed = entries(view, "transfer_failed")[0]
    assert 0.35 <= failed["after_s"] <= 0.5  # the Dial timeout, not the rep's 20 rings
    assert fake_app.voice("DialCompleted")[0].data["dialStatus"] == "no_answer"


async def test_supervision_barge_hands_the_live_call_to_a_rep(make_sim, fake_app):
    sim = await make_sim(
        {
            "numbers": {LEAD: {"says": []}},
            "reps": {REP: {"rings": 1, "talk_s": 1.2, "says": ["Hello, sales here."]}},
        }
    )
    fake_app.answer_with(fake_app.stream_xml())
    created = await place(sim)
    await fake_app.ws_opened.wait()
    body = {"mode": "barge", "supervisor": {"type": "phone", "number": REP}}
    url = f"{sim.url}/v1/calls/{created['call_id']}/supervision"
    async with httpx.AsyncClient(trust_env=False, headers=AUTH) as c:
        first = await c.post(url, json=body, headers={"Idempotency-Key": "sup-1"})
        replay = await c.post(url, json=body, headers={"Idempotency-Key": "sup-1"})
        other = await c.post(url, json=body, headers={"Idempotency-Key": "sup-2"})
        await asyncio.sleep(0.4)
        current = (await c.get(url)).json()
        view = await sim.wait_ended(created["session_id"], 15)
    assert first.status_code == 201
    assert first.json()["supervision"]["mode"] == "barge"
    assert replay.status_code == 201
    assert replay.json()["supervision"]["id"] == first.json()["supervision"]["id"]
    assert other.status_code == 409
    assert other.json() == {
        "code": "calls.supervision_in_progress",
        "reason": "this call already has a supervisor",
    }
    assert current["supervision"]["status"] == "active"
    call = view["call"]
    assert call["hangup_by"] == "rep"
    assert [leg["role"] for leg in call["legs"]] == ["lead", "supervisor"]
    assert call["legs"][1]["billed_seconds"] >= 1
    assert call["cost_minor"] == sum(leg["cost_minor"] for leg in call["legs"])
    assert call["transfer"]["via"] == "supervision"
    assert entries(view, "rep_says")[0]["audible_to_lead"] is True
    assert fake_app.ws[0].close_code == 1000  # the stream lived until the rep hung up
    assert json.dumps(view["violations"]) == "[]"


async def test_supervision_listen_patch_and_delete_keep_the_call_going(make_sim, fake_app):
    sim = await make_sim({"numbers": {LEAD: {"says": []}}, "reps": {REP: {"rings": 1, "talk_s": 30}}})
    fake_app.answer_with(fake_app.stream_xml())
    created = await place(sim)
    await fake_app.ws_opened.wait()
    url = f"{sim.url}/v1/calls/{created['session_id']}/supervision"
    async with httpx.AsyncClient(trust_env=False, headers=AUTH) as c:
        started = await c.post(url, json={"mode": "listen", "supervisor": {"type": "phone", "number": REP}})
        bad = await c.post(url, json={"mode": "shout", "supervisor": {"type": "phone", "number": REP}})
        for _ in range(200):  # until the supervisor is on the line
            if (await c.get(url)).json()["supervision"]["status"] == "active":
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.6)
        # Listening: nobody would hear them, so they say nothing.
        quiet = entries(sim.call(created["session_id"]), "rep_says")
        patched = await c.patch(url, json={"mode": "whisper"})
        for _ in range(200):  # until the supervisor has spoken (to the agent)
            if entries(sim.call(created["session_id"]), "rep_says"):
                break
            await asyncio.sleep(0.02)
        deleted = await c.delete(url)
        after_delete = await c.patch(url, json={"mode": "barge"})
        await asyncio.sleep(0.2)
        still_live = sim.call(created["session_id"])["call"]["status"]
        await c.post(f"{sim.url}/v1/calls/{created['call_id']}/hangup")
    view = await sim.wait_ended(created["session_id"], 10)
    assert started.status_code == 201
    assert bad.status_code == 409  # one supervisor per call, whatever the body
    assert quiet == []
    assert patched.json()["supervision"]["mode"] == "whisper"
    assert deleted.json()["supervision"]["status"] == "ended"
    assert after_delete.status_code == 409
    assert after_delete.json()["code"] == "calls.supervision_ended"
    assert still_live == "answered"
    call = view["call"]
    assert call["hangup_cause"] == "api_hangup"
    assert [leg["role"] for leg in call["legs"]] == ["lead", "supervisor"]
    sup = call["legs"][1]
    connected = (
        datetime.fromisoformat(sup["ended_at"]) - datetime.fromisoformat(sup["answered_at"])
    ).total_seconds()
    assert sup["billed_seconds"] == math.ceil(
        connected
    )  # billed from answer to removal, not to the call's end
    assert sup["ended_at"] < call["ended_at"]
    (said,) = entries(view, "rep_says")
    assert (said["mode"], said["heard_by"], said["audible_to_lead"]) == ("whisper", ["agent"], False)
