"""The simulator's HTTP surface: Sautikit's REST API (SAUTIKIT.md §1) and `/_sim/*` inspection.

REST: bearer auth on `/v1/*` (401 on a wrong or missing key); errors in the envelope
`{"error": {"code", "message", "request_id"}}`, except supervision, which answers the bare
`{"code", "reason"}` shape the SDK documents for some endpoints.
"""

from __future__ import annotations

import hmac
import json
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web
from pydantic import ValidationError

from local.sautikit.call import E164, fingerprint
from local.sautikit.directory import Directory

if TYPE_CHECKING:
    from local.sautikit.simulator import Simulator

SIM_KEY: web.AppKey[Simulator] = web.AppKey("sim")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_LABEL = 5000
SUPERVISION_MODES = ("listen", "whisper", "barge")


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex[:20]}"


def error(status: int, code: str, message: str, request_id: str | None = None) -> web.Response:
    rid = request_id or _request_id()
    return web.json_response(
        {"error": {"code": code, "message": message, "request_id": rid}},
        status=status,
        headers={"X-Request-Id": rid},
    )


def bare_error(status: int, code: str, reason: str) -> web.Response:
    return web.json_response({"code": code, "reason": reason}, status=status)


def ok(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"X-Request-Id": _request_id()})


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith("/v1/"):
        sim = request.app[SIM_KEY]
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), sim.config.api_key):
            return error(401, "api_key.invalid", "missing or invalid API key")
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException:
        raise
    except Exception as exc:  # a crash must look like a 500 with an envelope, not a dropped socket
        return error(500, "internal_error", f"{type(exc).__name__}: {exc}")


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except json.JSONDecodeError:
        return error(400, "request.invalid_json", "request body is not valid JSON")
    if not isinstance(body, dict):
        return error(400, "request.invalid_json", "request body must be a JSON object")
    return body


# -- calls -------------------------------------------------------------------------------------------------
def _validate_label(label: Any) -> str | None:
    if not isinstance(label, str):
        return "client_request_id must be a string"
    if len(label) > MAX_LABEL:
        return f"client_request_id is longer than {MAX_LABEL} characters"
    if _CONTROL.search(label):
        return "client_request_id must not contain control characters"
    if label.startswith(("mcp:", "broadcast:")):
        return "client_request_id must not start with mcp: or broadcast:"
    return None


def _live_key(sim: Simulator, key: str) -> tuple[str, dict[str, Any], str] | None:
    """§1: a key replays "while the leg lives". Once the call it answered for has ended the key is
    free again (forgotten here), so it dials anew and a different body is no longer a conflict."""
    seen = sim.idempotency.get(key)
    if seen is None:
        return None
    call = sim.find_call(seen[2])
    if call is not None and call.live:
        return seen
    del sim.idempotency[key]
    return None


async def create_call(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    key = request.headers.get("Idempotency-Key")
    fp = fingerprint(body)
    seen = _live_key(sim, key) if key else None
    if seen is not None:
        if seen[0] != fp:
            return error(409, "idempotency.conflict", "Idempotency-Key reused with a different request body")
        return ok(seen[1], status=201)

    frm, to = body.get("from"), body.get("to")
    if not isinstance(frm, str) or not E164.match(frm):
        return error(422, "validation.failed", "`from` must be an E.164 number")
    if not isinstance(to, list) or not to:
        return error(422, "validation.failed", "`to` must be a non-empty array of E.164 numbers")
    if len(to) > 10 or not all(isinstance(n, str) and E164.match(n) for n in to):
        return error(422, "validation.failed", "`to` must hold 1 to 10 E.164 numbers")
    number = sim.number_by_e164(frm)
    if number is None:
        return error(422, "calls.from_not_owned", "`from` is not a number this workspace owns")
    if number["status"] != "active":
        return error(422, "calls.from_inactive", "`from` is not active")
    label = body.get("client_request_id", body.get("clientRequestId"))
    if label is not None:
        problem = _validate_label(label)
        if problem:
            return error(422, "validation.failed", problem)
    voice_url = body.get("voice_callback_url")
    if voice_url is not None and not (
        isinstance(voice_url, str) and voice_url.startswith(("http://", "https://"))
    ):
        return error(422, "validation.failed", "`voice_callback_url` must be an http(s) URL")
    caller_id = body.get("caller_id")
    if caller_id is not None and not (isinstance(caller_id, str) and E164.match(caller_id)):
        return error(422, "validation.failed", "`caller_id` must be an E.164 number")

    # §1: the label is an idempotency hint too; reusing it collapses onto the first call.
    if label is not None and label in sim.labels:
        first = sim.labels[label]
        if key:
            sim.idempotency[key] = (fp, first, first["session_id"])
        return ok(first, status=201)
    if sim.wallet_minor <= 0:
        return error(402, "wallet.insufficient_funds", "wallet balance is zero; top up to place calls")

    call = sim.place_call(
        number=number, to=list(to), label=label, voice_callback_url=voice_url, caller_id=caller_id
    )
    omit = sim.config.omit_call_id or bool(call.person_spec and call.person_spec.omit_call_id)
    response: dict[str, Any] = {"session_id": call.session_id, "status": "ringing"}
    if not omit:
        response = {"call_id": call.id, **response}
    if label is not None:
        response["client_request_id"] = label
    if key:
        sim.idempotency[key] = (fp, response, call.session_id)
    if label is not None:
        sim.labels[label] = response
    return ok(response, status=201)


def _call_or_404(request: web.Request) -> Any:
    sim = request.app[SIM_KEY]
    call = sim.find_call(request.match_info["id"])
    if call is None:
        return error(404, "calls.not_found", "no call with this id or session id")
    return call


async def get_call(request: web.Request) -> web.Response:
    call = _call_or_404(request)
    if isinstance(call, web.Response):
        return call
    return ok({"call": call.record()})


async def hangup_call(request: web.Request) -> web.Response:
    call = _call_or_404(request)
    if isinstance(call, web.Response):
        return call
    if call.live:
        call.request_hangup()
    return ok({"call_id": call.id, "status": "hung_up"})


async def recording(request: web.Request) -> web.StreamResponse:
    call = _call_or_404(request)
    if isinstance(call, web.Response):
        return call
    if call.answered_at is None and not call.live:
        return error(404, "recording.not_found", "the call was never answered")
    if call.live or not call.finalized.is_set():
        return ok({"retry_after_seconds": 5}, status=202)
    ready = call.recording_ready_mono
    if ready is None or time.monotonic() < ready:
        # §7.7: a few seconds after hang-up the recording is not there yet.
        return error(404, "recording.not_found", "recording not available yet")
    if not call.wav_path.exists():
        return error(410, "recording.gone", "recording lost")
    sim = request.app[SIM_KEY]
    location = f"{sim.url}/_sim/recordings/{call.session_id}.wav?X-Amz-Expires=900&X-Amz-Signature={uuid.uuid4().hex}"
    raise web.HTTPFound(location)


# -- supervision (bare error shape) ------------------------------------------------------------------------
# GET returns {"supervision": {id, call_id, mode, supervisor, status, created_at, answered_at?,
# ended_at?}}, status ringing → active (picked up) → ended, or no_answer | busy | failed | canceled.
def _supervision_view(call: Any) -> dict[str, Any]:
    return {"supervision": dict(call.supervision)}


async def supervision(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    call = sim.find_call(request.match_info["id"])
    if call is None:
        return bare_error(404, "calls.not_found", "no call with this id or session id")
    method = request.method
    if method not in ("GET", "POST", "PATCH", "DELETE"):
        return bare_error(405, "method_not_allowed", f"{method} is not supported here")
    if method == "GET":
        if call.supervision is None:
            return bare_error(404, "supervision.not_found", "no supervisor on this call")
        return ok(_supervision_view(call))
    if method == "DELETE":
        if call.supervision is None:
            return bare_error(404, "supervision.not_found", "no supervisor on this call")
        call.end_supervision()
        return ok(_supervision_view(call))
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    if method == "PATCH":
        if call.supervision is None:
            return bare_error(404, "supervision.not_found", "no supervisor on this call")
        mode = body.get("mode")
        if mode not in SUPERVISION_MODES:
            return bare_error(422, "validation.failed", f"mode must be one of {', '.join(SUPERVISION_MODES)}")
        if call.supervision.get("status") not in ("ringing", "active"):
            # [ours] The docs are silent; a mode for a supervisor who has left cannot apply.
            return bare_error(409, "calls.supervision_ended", "the supervisor has left this call")
        # Accepted while the supervisor still rings: the mode applies from their pickup. Whether
        # they picked up is the GET's `status`, never this answer.
        call.set_supervision_mode(mode)
        return ok(_supervision_view(call))
    # POST
    key = request.headers.get("Idempotency-Key")
    if key and key in sim.supervision_keys and call.supervision is not None and call.supervision_key == key:
        return ok(_supervision_view(call), status=201)
    if not call.live or call.answered_at is None:
        return bare_error(409, "calls.not_in_progress", "the call is not live")
    if call.supervision is not None and call.supervision.get("status") in ("ringing", "active"):
        return bare_error(409, "calls.supervision_in_progress", "this call already has a supervisor")
    mode = body.get("mode")
    supervisor = body.get("supervisor")
    if mode not in SUPERVISION_MODES:
        return bare_error(422, "validation.failed", f"mode must be one of {', '.join(SUPERVISION_MODES)}")
    if not isinstance(supervisor, dict) or supervisor.get("type") not in ("phone", "client", "sip"):
        return bare_error(422, "validation.failed", "supervisor must be {type: phone|client|sip, ...}")
    if supervisor.get("type") == "phone" and not (
        isinstance(supervisor.get("number"), str) and E164.match(supervisor["number"])
    ):
        return bare_error(422, "validation.failed", "a phone supervisor needs an E.164 number")
    call.supervision = {
        "id": f"sup_{uuid.uuid4().hex[:16]}",
        "call_id": call.id,
        "mode": mode,
        "supervisor": supervisor,
        "status": "ringing",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    call.supervision_key = key
    if key:
        sim.supervision_keys[key] = call.supervision
    call.note("supervision_requested", mode=mode, supervisor_type=supervisor.get("type"))
    call.record_event("supervision.started", {"mode": mode})
    sim.spawn(call.start_supervision(mode, supervisor), name=f"supervision-{call.session_id}")
    return ok(_supervision_view(call), status=201)


# -- numbers and wallet ------------------------------------------------------------------------------------
def _number_view(n: dict[str, Any]) -> dict[str, Any]:
    return dict(n)


async def list_numbers(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    return ok({"numbers": [_number_view(n) for n in sim.numbers.values()]})


def _routing_update(request: web.Request, body: dict[str, Any], url_keys: tuple[str, ...]) -> web.Response:
    sim = request.app[SIM_KEY]
    number_id = request.match_info["id"]
    if number_id not in sim.numbers:
        return error(404, "numbers.not_found", "no such number")
    routing = next((body[k] for k in url_keys if k in body), None)
    events = body.get("events_url")
    for value in (routing, events):
        if value is not None and not (isinstance(value, str) and value.startswith(("http://", "https://"))):
            return error(422, "validation.failed", "URLs must be http(s)")
    if routing is None and events is None:
        return error(
            422, "validation.failed", f"nothing to update: send {' or '.join(url_keys)} or events_url"
        )
    sim.set_routing(number_id, routing, events)
    return ok({"number": _number_view(sim.numbers[number_id])})


async def patch_number(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    return _routing_update(request, body, ("routing_url", "voice_callback_url"))


async def put_routing(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    return _routing_update(request, body, ("voice_callback_url", "routing_url"))


async def get_number(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    number = sim.numbers.get(request.match_info["id"])
    if number is None:
        return error(404, "numbers.not_found", "no such number")
    return ok({"number": _number_view(number)})


async def wallet_balance(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    return ok(
        {
            "balance_minor": sim.wallet_minor,
            "currency": sim.config.currency,
            "low_balance_threshold_minor": sim.config.low_balance_threshold_minor,
        }
    )


# -- /_sim inspection ---------------------------------------------------------------------------------------
async def sim_calls(request: web.Request) -> web.Response:
    return web.json_response({"calls": request.app[SIM_KEY].calls()}, dumps=_dumps)


async def sim_call(request: web.Request) -> web.Response:
    try:
        return web.json_response(request.app[SIM_KEY].call(request.match_info["id"]), dumps=_dumps)
    except KeyError:
        return error(404, "calls.not_found", "no call with this id or session id")


async def sim_violations(request: web.Request) -> web.Response:
    q = request.query
    return web.json_response(
        {"violations": request.app[SIM_KEY].violations(q.get("call_id"), q.get("reason"))}, dumps=_dumps
    )


async def sim_deliveries(request: web.Request) -> web.Response:
    q = request.query
    return web.json_response(
        {"deliveries": request.app[SIM_KEY].deliveries(q.get("session_id"), q.get("purpose"))}, dumps=_dumps
    )


async def sim_recording(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    ident = request.match_info["id"].removesuffix(".wav")
    call = sim.find_call(ident)
    if call is None or not call.wav_path.exists() or not call.finalized.is_set():
        return error(404, "recording.not_found", "no finished recording for this call")
    return web.FileResponse(call.wav_path, headers={"Content-Type": "audio/wav"})


async def sim_wallet(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    value = body.get("balance_minor")
    if not isinstance(value, int):
        return error(422, "validation.failed", "balance_minor must be an integer")
    request.app[SIM_KEY].set_wallet(value)
    return web.json_response({"balance_minor": value})


async def sim_directory(request: web.Request) -> web.Response:
    raw = await request.text()
    try:
        directory = Directory.model_validate(yaml.safe_load(raw) or {})
    except (yaml.YAMLError, ValidationError, ValueError) as exc:
        return error(422, "validation.failed", f"directory does not load: {exc}")
    request.app[SIM_KEY].directory = directory
    return web.json_response({"numbers": len(directory.numbers), "reps": len(directory.reps)})


async def sim_health(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    live = sum(1 for c in sim.calls_by_id.values() if c.live)
    return web.json_response({"ok": True, "calls": len(sim.calls_by_id), "live_calls": live})


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)


def build_app(sim: Simulator) -> web.Application:
    app = web.Application(middlewares=[auth_middleware], client_max_size=2 * 1024 * 1024)
    app[SIM_KEY] = sim
    r = app.router
    r.add_post("/v1/calls", create_call)
    r.add_get("/v1/calls/{id}", get_call)
    r.add_post("/v1/calls/{id}/hangup", hangup_call)
    r.add_get("/v1/calls/{id}/recording", recording)
    r.add_route("*", "/v1/calls/{id}/supervision", supervision)
    r.add_get("/v1/numbers", list_numbers)
    r.add_get("/v1/numbers/{id}", get_number)
    r.add_patch("/v1/numbers/{id}", patch_number)
    r.add_put("/v1/numbers/{id}/routing", put_routing)
    r.add_get("/v1/wallet/balance", wallet_balance)
    r.add_get("/v1/wallet", wallet_balance)
    r.add_get("/_sim/health", sim_health)
    r.add_get("/_sim/calls", sim_calls)
    r.add_get("/_sim/calls/{id}", sim_call)
    r.add_get("/_sim/calls/{id}/recording.wav", sim_recording)
    r.add_get("/_sim/recordings/{id}", sim_recording)
    r.add_get("/_sim/violations", sim_violations)
    r.add_get("/_sim/deliveries", sim_deliveries)
    r.add_post("/_sim/wallet", sim_wallet)
    r.add_put("/_sim/directory", sim_directory)
    return app
