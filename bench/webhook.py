"""The voice webhook's cost: a cold start, and warm calls in process.

Cold: a fresh `python -c` that imports `functions/voice/app.py` and serves one signed first-answer
callback through `lambda_handler` (Powertools decorators included), configured from the
environment as the template configures the function, DynamoDB on a moto server on loopback. Timed
from the moment the process is spawned to the moment its response line is read, so interpreter
start, imports, settings, boto3 client and the DynamoDB round trips are all in. The bare
interpreter's start (`python -c` printing a line) is measured the same way and reported beside.
One more cold run under `python -X importtime` names the imports that cost most.

Warm: `handle()` in this process, `webhook_warm_calls` distinct first-answer callbacks (each its
own lead, session and signature), the answerer's store in memory: what the handler itself costs
(verify, parse, look up, render the <Stream> document). The same with DynamoDB on moto is in the
detail (moto's own per-request cost, a few ms, dominates it and says nothing about ours).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np

from bench.analysis import spread_pct, summary_ms
from bench.procs import ROOT
from bench.report import GOALS, metric

Log = Callable[[str], None]
EVENT = ROOT / "events" / "voice_answer_form.json"
SECRET = "bench-webhook-secret"  # noqa: S105 - loopback only
BRIDGE_SECRET = "bench-bridge-secret"  # noqa: S105 - loopback only
FROM = "+254709100100"
REGION = "us-east-1"

RESULT = "BENCH-RESULT "
_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import functions.voice.app as app
t1 = time.perf_counter()
from local.lambda_runtime import LambdaContext
event = json.load(open(sys.argv[1]))
resp = app.lambda_handler(event, LambdaContext(function_name="voice"))
t2 = time.perf_counter()
sys.stdout.write("BENCH-RESULT " + json.dumps({"status": resp["statusCode"], "import_ms": (t1 - t0) * 1e3,
                             "handle_ms": (t2 - t1) * 1e3, "body": resp["body"][:120]}) + "\n")
sys.stdout.flush()
"""
_BARE = "import sys; sys.stdout.write('BENCH-RESULT {}\\n'); sys.stdout.flush()"


def make_event(
    template: dict[str, Any], lead_id: str, session_id: str, *, now: float | None = None
) -> dict[str, Any]:
    """The sample first-answer callback for another lead and session, signed now."""
    from leadqual.signing import sign_webhook

    label = f"lq-{lead_id}-1"
    body = urlencode(
        {
            "sessionId": session_id,
            "isActive": "1",
            "direction": "Outbound",
            "callerNumber": FROM,
            "destinationNumber": "+254712345678",
            "callSessionState": "Answered",
            "clientRequestId": label,
        }
    ).encode()
    event: dict[str, Any] = json.loads(json.dumps(template))
    event["body"] = base64.b64encode(body).decode()
    event["isBase64Encoded"] = True
    event["rawQueryString"] = f"clientRequestId={label}"
    event["queryStringParameters"] = {"clientRequestId": label}
    event["headers"]["content-length"] = str(len(body))
    stamp = None if now is None else int(now)
    event["headers"]["x-sautikit-signature"] = sign_webhook(SECRET, body, timestamp=stamp)
    return event


def handler_env(endpoint: str, table: str) -> dict[str, str]:
    """The voice function's environment as the template sets it, DynamoDB on the moto server."""
    from local.stack import POWERTOOLS_ENV, aws_env

    return {
        **aws_env(endpoint),
        **POWERTOOLS_ENV,
        "TABLE_NAME": table,
        "WEBHOOK_SECRET": SECRET,
        "BRIDGE_TOKEN_SECRET": BRIDGE_SECRET,
        "BRIDGE_URL": "wss://bridge.example.com/stream",
        "FROM_NUMBER": FROM,
        "SAUTIKIT_API_KEY": "sk_test_bench",
    }


@contextlib.contextmanager
def moto_table() -> Iterator[tuple[str, str, Any]]:
    """A moto server with the template's tables; yields (endpoint, table name, DynamoStore)."""
    import boto3

    from leadqual.store import DynamoStore
    from local.lambda_runtime import moto_server
    from local.resources import create_resources

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    with moto_server() as endpoint:
        kw = {
            "endpoint_url": endpoint,
            "region_name": REGION,
            "aws_access_key_id": "test",
            "aws_secret_access_key": "test",
        }
        ddb = boto3.client("dynamodb", **kw)
        res = create_resources(ddb, boto3.client("sqs", **kw), stack_name="bench", region=REGION)
        yield endpoint, res.table_name, DynamoStore(res.table_name, client=ddb)


def seed(store: Any, lead_ids: list[str]) -> None:
    """Leads the dialer has dialled: a profile and a ringing call record for attempt 1."""
    from leadqual.models import CallRecord, Lead, client_request_id

    for lead_id in lead_ids:
        store.put_lead(
            Lead(lead_id=lead_id, phone="+254712345678", name="Wanjiku Kamau", company="Duka", opt_in=True)
        )
        store.begin_attempt(lead_id, 1)
        store.put_call(
            CallRecord(lead_id=lead_id, attempt=1, client_request_id=client_request_id(lead_id, 1))
        )


class MemoryAnswerStore:
    """The store calls the voice answerer makes (leadqual.answering.AnswerStore), in dicts."""

    def __init__(self) -> None:
        self.leads: dict[str, Any] = {}
        self.calls: dict[tuple[str, int], Any] = {}
        self.sessions: dict[str, tuple[str, int]] = {}
        self.events: set[str] = set()

    def seed(self, lead_ids: list[str]) -> None:
        from leadqual.models import CallRecord, Lead, LeadStatus, client_request_id
        from leadqual.store import LeadProfile

        for lead_id in lead_ids:
            lead = Lead(
                lead_id=lead_id, phone="+254712345678", name="Wanjiku Kamau", company="Duka", opt_in=True
            )
            self.leads[lead_id] = LeadProfile(lead=lead, status=LeadStatus.DIALING, attempts=1)
            self.calls[(lead_id, 1)] = CallRecord(
                lead_id=lead_id, attempt=1, client_request_id=client_request_id(lead_id, 1)
            )

    def get_lead(self, lead_id: str) -> Any:
        return self.leads.get(lead_id)

    def get_call(self, lead_id: str, attempt: int) -> Any:
        return self.calls.get((lead_id, attempt))

    def put_call(self, record: Any) -> bool:
        return self.calls.setdefault((record.lead_id, record.attempt), record) is record

    def update_call(self, lead_id: str, attempt: int, **fields: Any) -> None:
        rec = self.calls.get((lead_id, attempt))
        if rec is not None:
            self.calls[(lead_id, attempt)] = rec.model_copy(update=fields)

    def put_session(self, session_id: str, lead_id: str, attempt: int) -> None:
        self.sessions[session_id] = (lead_id, attempt)

    def get_session(self, session_id: str) -> tuple[str, int] | None:
        return self.sessions.get(session_id)

    def mark_event(self, event_id: str, ttl_s: int = 7 * 86400) -> bool:
        if event_id in self.events:
            return False
        self.events.add(event_id)
        return True

    def set_status(self, lead_id: str, status: Any, **kwargs: Any) -> None:
        prof = self.leads.get(lead_id)
        if prof is not None:
            self.leads[lead_id] = prof.model_copy(update={"status": status})


def _spawn_timed(args: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any] | str, str]:
    """Wall ms from spawn to the result line (the handler's own log lines, which Lambda also
    writes to stdout, come first), the result, and stderr (via a file: a full pipe would block)."""
    with tempfile.TemporaryFile("w+") as errf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=errf, text=True)
        assert proc.stdout is not None
        line = ""
        while True:
            line = proc.stdout.readline()
            if not line or line.startswith(RESULT):
                break
        elapsed = (time.perf_counter() - t0) * 1000.0
        proc.communicate(timeout=30)
        errf.seek(0)
        err = errf.read()
    try:
        doc: dict[str, Any] | str = json.loads(line.removeprefix(RESULT))
    except ValueError:
        doc = line.strip()
    return elapsed, doc, err


def _importtime_top(stderr: str, n: int = 8) -> list[dict[str, Any]]:
    """Import time by top-level package (the sum of each module's own time, nested ones included),
    from `python -X importtime` output: what a cold start spends importing, and where."""
    per_pkg: dict[str, int] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split(":", 1)[1].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        top = parts[2].strip().split(".")[0]
        per_pkg[top] = per_pkg.get(top, 0) + int(parts[0].strip())
    rows = sorted(per_pkg.items(), key=lambda kv: kv[1], reverse=True)[:n]
    return [{"package": k, "ms": round(v / 1000.0, 1)} for k, v in rows]


def cold_starts(runs: int, log: Log) -> dict[str, Any]:
    template = json.loads(EVENT.read_text())
    with moto_table() as (endpoint, table, store), tempfile.TemporaryDirectory(prefix="bench-wh-") as tmp:
        lead_ids = [f"cold-{i:04d}" for i in range(runs + 1)]
        seed(store, lead_ids)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
        env.update(handler_env(endpoint, table))
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "layers" / "shared")])
        bare = [_spawn_timed([sys.executable, "-c", _BARE], env)[0] for _ in range(max(3, runs))]
        walls, inner = [], []
        for i in range(runs + 1):
            path = Path(tmp) / f"e{i}.json"
            path.write_text(json.dumps(make_event(template, lead_ids[i], f"HD_cold{i:08d}")))
            args = [sys.executable] + (["-X", "importtime"] if i == runs else []) + ["-c", _CHILD, str(path)]
            wall, doc, err = _spawn_timed(args, env)
            if not isinstance(doc, dict) or doc.get("status") != 200 or "Stream" not in str(doc.get("body")):
                raise RuntimeError(f"cold webhook did not answer with a stream: {doc!r} {err[-800:]}")
            if i == runs:
                imports = _importtime_top(err)
            else:
                walls.append(wall)
                inner.append(doc)
    bare_ms = float(np.median(bare))
    log(f"  cold: median {np.median(walls):.0f} ms (bare interpreter {bare_ms:.0f} ms)")
    return {
        "walls_ms": [round(w, 1) for w in walls],
        "median_ms": round(float(np.median(walls)), 1),
        "bare_interpreter_ms": round(bare_ms, 1),
        "median_minus_interpreter_ms": round(float(np.median(walls)) - bare_ms, 1),
        "import_ms_median": round(float(np.median([d["import_ms"] for d in inner])), 1),
        "first_event_ms_median": round(float(np.median([d["handle_ms"] for d in inner])), 1),
        "slowest_imports": imports,
        "spread_pct": spread_pct(walls),
    }


def _warm_run(handle: Callable[..., Any], deps: Any, events: list[dict[str, Any]]) -> np.ndarray:
    from local.lambda_runtime import LambdaContext

    ctx = LambdaContext(function_name="voice")
    times = np.empty(len(events))
    for i, event in enumerate(events):
        t0 = time.perf_counter()
        resp = handle(event, ctx, deps=deps)
        times[i] = (time.perf_counter() - t0) * 1000.0
        if resp["statusCode"] != 200:
            raise RuntimeError(f"warm webhook answered {resp['statusCode']}: {resp.get('body')}")
    return times


def warm_calls(calls: int, log: Log) -> dict[str, Any]:
    from functions.voice import app
    from leadqual.answering import VoiceAnswerer, VoiceConfig
    from leadqual.campaign import CampaignCatalog
    from leadqual.observability import logger
    from leadqual.settings import builtin_campaigns_dir

    template = json.loads(EVENT.read_text())
    config = VoiceConfig(
        bridge_url="wss://bridge.example.com/stream", bridge_token_secret=BRIDGE_SECRET, own_numbers=(FROM,)
    )

    class NullMetrics:
        def add(self, name: str, value: float = 1, unit: str = "Count") -> None:
            pass

    def deps_for(store: Any) -> Any:
        answerer = VoiceAnswerer(
            store=store,
            campaigns=CampaignCatalog(builtin_campaigns_dir()),
            config=config,
            metrics=NullMetrics(),
        )
        return app.Deps(
            answerer=answerer, webhook_secret=SECRET, stream_status_url=None, metrics=NullMetrics()
        )

    # The handler logs one INFO line per callback (as in Lambda); keep them off the bench's output.
    old_level = logger.log_level
    logger.setLevel("WARNING")
    try:
        mem = MemoryAnswerStore()
        ids = [f"warm-{i:05d}" for i in range(calls)]
        mem.seed(ids)
        events = [make_event(template, lead_id, f"HD_warm{i:08d}") for i, lead_id in enumerate(ids)]
        _warm_run(app.handle, deps_for(mem), events[:20])  # first calls load the campaign, warm caches
        mem2 = MemoryAnswerStore()
        mem2.seed(ids)
        half = len(events) // 2
        halves = [_warm_run(app.handle, deps_for(mem2), part) for part in (events[:half], events[half:])]
        times = np.concatenate(halves)
        moto_n = min(200, calls)
        with moto_table() as (_endpoint, _table, store):
            seed(store, ids[:moto_n])
            moto_times = _warm_run(app.handle, deps_for(store), events[:moto_n])
    finally:
        logger.setLevel(old_level)
    log(f"  warm: p50 {np.percentile(times, 50):.2f} ms, p99 {np.percentile(times, 99):.2f} ms")
    return {
        "in_memory_store_ms": summary_ms(times),
        "halves_p99_ms": [round(float(np.percentile(h, 99)), 3) for h in halves],
        "moto_dynamodb_ms": summary_ms(moto_times),
    }


def webhook_section(cfg: Any, log: Log) -> dict[str, Any]:
    cold = cold_starts(cfg.webhook_cold_runs, log)
    warm = warm_calls(cfg.webhook_warm_calls, log)
    return {
        "webhook_cold_ms": metric(
            cold["median_ms"],
            "ms",
            detail={
                "goal": GOALS["webhook_cold_ms"].text,
                "how": "spawn of a fresh python -> the response to one signed first-answer callback "
                "(lambda_handler, settings from env, boto3 DynamoDB on moto), median of runs",
                "limit": "imports: "
                + ", ".join(f"{r['package']} {r['ms']} ms" for r in cold["slowest_imports"][:4]),
                **cold,
            },
        ),
        "webhook_warm_p99_ms": metric(
            warm["in_memory_store_ms"]["p99"],
            "ms",
            detail={
                "goal": GOALS["webhook_warm_p99_ms"].text,
                "how": f"{cfg.webhook_warm_calls} distinct signed first-answer callbacks through handle() "
                "in process, store in memory (the handler's own cost); moto for reference",
                **warm,
                "halves_spread_pct": spread_pct(warm["halves_p99_ms"]),
            },
        ),
    }
