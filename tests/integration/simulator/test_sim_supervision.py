"""Supervision as a transfer: the supervisor's status (ringing → active → ended) and who hears the rep
in each mode (listen: nobody; whisper: the agent, i.e. the stream; barge: everyone, so the lead's
ear and the recording's right channel)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import API_KEY, FakeApp, WsRecord, wait_for

from local.sautikit import Simulator
from local.sautikit.audio import read_wav

pytestmark = pytest.mark.integration

LEAD = "+254712000001"
REP = "+254711999000"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
LINE = "Hello, this is the sales desk. Thanks for holding."
SPEECH_RMS = 300.0  # a voice, well above the digital silence of an idle line
QUIET_RMS = 30.0


async def start_call(sim: Simulator, fake_app: FakeApp) -> dict[str, Any]:
    fake_app.answer_with(fake_app.stream_xml())  # a stream that stays open and sends nothing
    async with httpx.AsyncClient(trust_env=False) as c:
        r = await c.post(
            f"{sim.url}/v1/calls",
            json={"from": "+254700000100", "to": [LEAD], "client_request_id": "lq-sup-1"},
            headers=AUTH,
        )
    assert r.status_code == 201, r.text
    await asyncio.wait_for(fake_app.ws_opened.wait(), 10)
    return dict(r.json())


def entries(view: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in view["timeline"] if e["kind"] == kind]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt((x.astype(np.float32) ** 2).mean())) if x.size else 0.0


def lead_heard(sim: Simulator, sid: str, view: dict[str, Any], t0: float, t1: float) -> float:
    """RMS of what the lead heard (the recording's right channel) between timeline times t0 and t1."""
    audio, rate = read_wav(sim.call_object(sid).wav_path)
    answered = entries(view, "answered")[0]["t"]
    return rms(audio[int((t0 - answered) * rate) : int((t1 - answered) * rate), 1])


def agent_heard(sim: Simulator, sid: str, rec: WsRecord, t0: float, t1: float) -> float:
    """RMS of the stream's inbound audio (what the agent hears) that arrived between t0 and t1."""
    base = sim.call_object(sid).created_mono
    frames = [f for at, f in rec.frames if base + t0 <= at <= base + t1]
    return rms(np.frombuffer(b"".join(frames), dtype="<i2"))


def window(said: dict[str, Any]) -> tuple[float, float]:
    """The middle of a rep's line (its edges are where scheduling jitter lives)."""
    return said["t"] + 0.2, said["t"] + said["duration_s"] - 0.2


async def test_whispering_rep_reaches_the_agent_only_then_the_lead_after_barge(make_sim, fake_app):
    sim = await make_sim(
        {"numbers": {LEAD: {"says": []}}, "reps": {REP: {"rings": 8, "talk_s": 4.0, "says": [LINE]}}}
    )
    created = await start_call(sim, fake_app)
    sid = created["session_id"]
    url = f"{sim.url}/v1/calls/{sid}/supervision"
    async with httpx.AsyncClient(trust_env=False, headers=AUTH) as c:
        posted = await c.post(
            url,
            json={"mode": "listen", "supervisor": {"type": "phone", "number": REP}},
            headers={"Idempotency-Key": "sup-w-1"},
        )
        ringing = (await c.get(url)).json()["supervision"]
        # Accepted while the phone rings: the mode the rep will have when they pick up.
        patched_ringing = await c.patch(url, json={"mode": "whisper"})

        async def status_is_active() -> bool:
            return bool((await c.get(url)).json()["supervision"]["status"] == "active")

        await wait_for(status_is_active)
        active = (await c.get(url)).json()["supervision"]

        async def rep_spoke() -> bool:
            return bool(entries(sim.call(sid), "rep_says"))

        await wait_for(rep_spoke)
        (whispered,) = entries(sim.call(sid), "rep_says")
        await asyncio.sleep(whispered["duration_s"] + 0.3)  # the whole line, heard by the agent only
        barged = await c.patch(url, json={"mode": "barge"})
        view = await sim.wait_ended(sid, 20)
    assert posted.status_code == 201
    assert (ringing["status"], ringing["mode"]) == ("ringing", "listen")
    assert patched_ringing.status_code == 200
    assert patched_ringing.json()["supervision"] == {**ringing, "mode": "whisper"}
    assert (active["status"], active["mode"]) == ("active", "whisper")
    assert active["answered_at"]
    assert barged.json()["supervision"]["mode"] == "barge"

    kinds = [
        e["kind"]
        for e in view["timeline"]
        if e["kind"].startswith(("supervision", "rep_", "transfer")) or e["kind"] == "hangup"
    ]
    assert kinds == [
        "supervision_requested",
        "transfer_ringing",
        "supervision_mode",  # whisper, while ringing
        "transfer_answered",
        "supervision_active",
        "rep_says",  # to the agent
        "supervision_mode",  # barge
        "rep_says",  # to everyone
        "rep_hangup",
        "supervision_ended",
        "hangup",
    ], kinds
    modes = entries(view, "supervision_mode")
    assert [(m["mode"], m["status"]) for m in modes] == [("whisper", "ringing"), ("barge", "active")]
    to_agent, to_all = entries(view, "rep_says")
    assert (to_agent["mode"], to_agent["heard_by"], to_agent["audible_to_lead"]) == (
        "whisper",
        ["agent"],
        False,
    )
    assert (to_all["mode"], to_all["heard_by"], to_all["audible_to_lead"]) == (
        "barge",
        ["lead", "agent"],
        True,
    )
    assert to_all["t"] >= modes[1]["t"]
    (hangup,) = entries(view, "hangup")
    assert (hangup["by"], hangup["cause"]) == ("rep", "normal_clearing")

    # Audio: in whisper the agent hears the rep and the lead hears nothing; after barge, both.
    rec = fake_app.ws[0]
    assert agent_heard(sim, sid, rec, *window(to_agent)) > SPEECH_RMS
    assert lead_heard(sim, sid, view, *window(to_agent)) < QUIET_RMS
    assert lead_heard(sim, sid, view, *window(to_all)) > SPEECH_RMS
    assert agent_heard(sim, sid, rec, *window(to_all)) > SPEECH_RMS
    # Before the rep spoke (ringing, then listening), neither side heard a thing from them.
    start = entries(view, "supervision_requested")[0]["t"]
    assert lead_heard(sim, sid, view, start, to_agent["t"]) < QUIET_RMS
    assert agent_heard(sim, sid, rec, start, to_agent["t"]) < QUIET_RMS

    # The supervisor's leg bills from pickup to hang-up, at the outbound rate.
    call = view["call"]
    assert call["supervision"]["status"] == "ended"
    lead_leg, sup_leg = call["legs"]
    assert (lead_leg["role"], sup_leg["role"], sup_leg["number"]) == ("lead", "supervisor", REP)
    assert sup_leg["billed_seconds"] >= 1
    assert sup_leg["cost_minor"] == sup_leg["billed_seconds"] * 5
    assert call["cost_minor"] == lead_leg["cost_minor"] + sup_leg["cost_minor"]
    assert call["transfer"]["mode"] == "barge"
    assert view["violations"] == []


async def test_a_rep_joining_in_barge_is_heard_by_the_lead_at_once(make_sim, fake_app):
    sim = await make_sim(
        {"numbers": {LEAD: {"says": []}}, "reps": {REP: {"rings": 1, "talk_s": 3.5, "says": [LINE]}}}
    )
    created = await start_call(sim, fake_app)
    sid = created["session_id"]
    async with httpx.AsyncClient(trust_env=False, headers=AUTH) as c:
        r = await c.post(
            f"{sim.url}/v1/calls/{sid}/supervision",
            json={"mode": "barge", "supervisor": {"type": "phone", "number": REP}},
        )
    assert r.status_code == 201
    view = await sim.wait_ended(sid, 20)
    (said,) = entries(view, "rep_says")
    assert (said["mode"], said["audible_to_lead"]) == ("barge", True)
    assert lead_heard(sim, sid, view, *window(said)) > SPEECH_RMS
    (active,) = entries(view, "supervision_active")
    assert active["t"] <= said["t"]


@pytest.mark.parametrize(("answer", "status"), [("no_answer", "no_answer"), ("busy", "busy")])
async def test_a_supervisor_who_does_not_pick_up_is_never_active_nor_billed(
    make_sim, fake_app, answer: str, status: str
):
    sim = await make_sim(
        {"numbers": {LEAD: {"says": []}}, "reps": {REP: {"answer": answer}}}, supervision_ring_timeout_s=0.6
    )
    created = await start_call(sim, fake_app)
    sid = created["session_id"]
    url = f"{sim.url}/v1/calls/{sid}/supervision"
    async with httpx.AsyncClient(trust_env=False, headers=AUTH) as c:
        await c.post(url, json={"mode": "whisper", "supervisor": {"type": "phone", "number": REP}})
        seen: list[str] = []

        async def settled() -> bool:
            seen.append((await c.get(url)).json()["supervision"]["status"])
            return seen[-1] != "ringing"

        await wait_for(settled)
        late_patch = await c.patch(url, json={"mode": "barge"})
        await c.post(f"{sim.url}/v1/calls/{sid}/hangup")
    view = await sim.wait_ended(sid, 10)
    assert seen[-1] == status
    assert set(seen[:-1]) <= {"ringing"}
    assert late_patch.status_code == 409
    assert [leg["role"] for leg in view["call"]["legs"]] == ["lead"]
    assert entries(view, "supervision_active") == []
    assert entries(view, "rep_says") == []
    assert view["call"]["supervision"]["status"] == status


async def test_delete_while_ringing_stops_the_supervisor_joining(make_sim, fake_app):
    sim = await make_sim({"numbers": {LEAD: {"says": []}}, "reps": {REP: {"rings": 12}}})  # 0.6 s
    created = await start_call(sim, fake_app)
    sid = created["session_id"]
    url = f"{sim.url}/v1/calls/{sid}/supervision"
    async with httpx.AsyncClient(trust_env=False, headers=AUTH) as c:
        await c.post(url, json={"mode": "barge", "supervisor": {"type": "phone", "number": REP}})
        deleted = await c.delete(url)
        await asyncio.sleep(1.0)  # past the moment the rep would have picked up
        after = (await c.get(url)).json()["supervision"]
        await c.post(f"{sim.url}/v1/calls/{sid}/hangup")
    view = await sim.wait_ended(sid, 10)
    assert deleted.json()["supervision"]["status"] == "ended"
    assert after["status"] == "ended"
    assert [leg["role"] for leg in view["call"]["legs"]] == ["lead"]
    assert entries(view, "transfer_answered") == []
    assert view["call"]["transfer"]["status"] == "canceled"


async def test_a_whispering_supervisor_never_put_through_gives_up_unheard(
    make_sim, fake_app, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("local.sautikit.call.SUPERVISOR_PATIENCE_S", 1.5)
    sim = await make_sim(
        {"numbers": {LEAD: {"says": []}}, "reps": {REP: {"rings": 1, "talk_s": 1.0, "says": ["Hi."]}}}
    )
    created = await start_call(sim, fake_app)
    sid = created["session_id"]
    url = f"{sim.url}/v1/calls/{sid}/supervision"
    async with httpx.AsyncClient(trust_env=False, headers=AUTH) as c:
        await c.post(url, json={"mode": "whisper", "supervisor": {"type": "phone", "number": REP}})

        async def ended() -> bool:
            return bool((await c.get(url)).json()["supervision"]["status"] == "ended")

        await wait_for(ended)
        live = sim.call(sid)["call"]["status"]
        await c.post(f"{sim.url}/v1/calls/{sid}/hangup")
    view = await sim.wait_ended(sid, 10)
    assert live == "answered"  # the call goes on without them
    (gave_up,) = entries(view, "rep_hangup")
    assert gave_up["heard_by_lead"] is False
    (active,) = entries(view, "supervision_active")
    assert 1.4 <= gave_up["t"] - active["t"] <= 2.5  # patience, counted from their pickup (+0.3 s)
    assert [e["by"] for e in entries(view, "supervision_ended")] == ["supervisor"]
    assert [leg["role"] for leg in view["call"]["legs"]] == ["lead", "supervisor"]
    (said,) = entries(view, "rep_says")
    assert said["audible_to_lead"] is False
    assert lead_heard(sim, sid, view, active["t"], gave_up["t"]) < QUIET_RMS
