"""Dialer throughput: a 10-lead SQS batch through the real dialer handler, against the time the same
leads take one at a time.

Everything real except the cloud: `functions.dialer.app` built from its settings (DynamoDB and SQS
on a moto server, the Sautikit client talking to the simulator), Powertools idempotency included.
The carrier's answer to `POST /v1/calls` is delayed by 50 ms (an httpx transport around the
client's own, in this process: the dialer sees a slow carrier, the simulator does not change).
Serial time = the sum of ten one-lead batches; actual = one ten-lead batch; speedup = serial /
actual. Moto runs in its own process on the core the bridge benchmarks use (idle by now), so its
per-request CPU does not share the dialer's interpreter lock. Every DynamoDB request the dialer
makes is counted and timed (botocore events), to say where a lead's time goes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from bench.analysis import spread_pct
from bench.procs import ROOT, cores, own_cpu_seconds, realtime
from bench.report import GOALS, metric

Log = Callable[[str], None]
REGION = "us-east-1"
API_KEY = "sk_test_bench"
FROM = "+254709100100"
BATCH = 10


class DelayedTransport(httpx.BaseTransport):
    """Adds `delay_s` before every `POST …/v1/calls` (the carrier's latency); the rest pass through."""

    def __init__(self, inner: httpx.BaseTransport, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.delayed = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.rstrip("/").endswith("/v1/calls"):
            self.delayed += 1
            time.sleep(self.delay_s)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class DynamoTimer:
    """Counts and times DynamoDB requests through botocore's events."""

    def __init__(self, client: Any) -> None:
        self.count = 0
        self.total_s = 0.0
        self._starts: dict[int, float] = {}
        client.meta.events.register("before-send.dynamodb", self._before)
        client.meta.events.register("needs-retry.dynamodb", self._after)

    def _before(self, request: Any, **kwargs: Any) -> None:
        self._starts[id(request)] = time.perf_counter()

    def _after(self, request_dict: Any = None, **kwargs: Any) -> None:
        self.count += 1
        # needs-retry fires once per attempt with the response; match it to the oldest pending start.
        if self._starts:
            key = next(iter(self._starts))
            self.total_s += time.perf_counter() - self._starts.pop(key)


def _pin_and_prioritise(cpu: int | None) -> Callable[[], None] | None:
    """For a fake's child process: its own core and real-time priority (bench.procs.realtime), so
    the fake answers like the service it stands for, not like a process sharing a busy machine."""
    if cpu is None:
        return None

    def setup() -> None:
        os.sched_setaffinity(0, {cpu})
        realtime(True)

    return setup


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextlib.contextmanager
def moto_process(cpu: int | None) -> Iterator[tuple[str, psutil.Process]]:
    """`python -m moto.server` in its own process (pinned to `cpu`); yields its endpoint and process."""
    port = _free_port()
    preexec = _pin_and_prioritise(cpu)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=preexec,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1.0)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield endpoint, psutil.Process(proc.pid)
    finally:
        _stop(proc)


@contextlib.contextmanager
def simulator_process(cpu: int | None, data_dir: Path) -> Iterator[tuple[str, psutil.Process]]:
    """The Sautikit simulator (`python -m local.sautikit`) in its own process, as a remote carrier
    is; nobody in its directory answers. Yields its URL and process."""
    directory = data_dir / "directory.yaml"
    directory.write_text("numbers: {}\n")
    preexec = _pin_and_prioritise(cpu)
    # stdout carries one JSON line (its URL), then nothing we read: keep it off the pipe after that.
    log = (data_dir / "sautikit.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local.sautikit",
            "--directory",
            str(directory),
            "--port",
            "0",
            "--api-key",
            API_KEY,
            "--webhook-secret",
            "bench-webhook-secret",
            "--number",
            FROM,
            "--data-dir",
            str(data_dir / "sim"),
        ],
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=log,
        preexec_fn=preexec,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the simulator did not start (log: {data_dir / 'sautikit.log'})")
        yield json.loads(line)["url"], psutil.Process(proc.pid)
    finally:
        _stop(proc)
        log.close()


def moto_ceiling(ddb: Any, table: str, requests_per_lead: int) -> dict[str, float]:
    """Moto's own parallel speedup: the dialer's DynamoDB request count for ten leads, issued from ten
    threads vs one. The dialer cannot beat this by much when DynamoDB time dominates a lead."""
    from concurrent.futures import ThreadPoolExecutor

    n = max(1, requests_per_lead)

    def lead(i: int) -> None:
        for j in range(n):
            ddb.put_item(TableName=table, Item={"PK": {"S": f"BENCH#{i}#{j}"}, "SK": {"S": "X"}})

    lead(-1)
    t0 = time.perf_counter()
    for i in range(BATCH):
        lead(i)
    serial = time.perf_counter() - t0
    with ThreadPoolExecutor(BATCH) as pool:
        t0 = time.perf_counter()
        list(pool.map(lead, range(BATCH, 2 * BATCH)))
        parallel = time.perf_counter() - t0
    return {
        "requests": BATCH * n,
        "serial_ms": round(serial * 1000, 1),
        "ten_threads_ms": round(parallel * 1000, 1),
        "speedup_x": round(serial / parallel, 2),
        "ms_per_request": round(serial * 1000 / (BATCH * n), 2),
    }


def _event(lead_ids: list[str], phones: list[str]) -> dict[str, Any]:
    records = []
    for lead_id, phone in zip(lead_ids, phones, strict=True):
        body = {
            "lead_id": lead_id,
            "phone": phone,
            "name": "Wanjiku Kamau",
            "company": "Duka",
            "opt_in": True,
        }
        body["campaign"] = "demo"
        records.append(
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": uuid.uuid4().hex,
                "body": json.dumps(body),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(int(time.time() * 1000))},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:bench-LeadsQueue",
                "awsRegion": REGION,
            }
        )
    return {"Records": records}


def dialer_section(cfg: Any, log: Log) -> dict[str, Any]:
    import boto3

    from functions.dialer import app
    from leadqual.observability import logger
    from leadqual.settings import DialerSettings
    from local.lambda_runtime import LambdaContext
    from local.resources import create_resources

    sut_cpu, _ = cores()
    runs: list[dict[str, Any]] = []
    ceiling: dict[str, Any] = {}
    old_level = logger.log_level
    logger.setLevel("WARNING")  # one INFO line per lead otherwise
    try:
        # The fakes (moto, the carrier) run on the SUT core, idle by now; the dialer on the other.
        fakes_cpu = sut_cpu if len(os.sched_getaffinity(0)) < (os.cpu_count() or 1) else None
        with (
            tempfile.TemporaryDirectory(prefix="bench-dial-") as tmp,
            moto_process(fakes_cpu) as (endpoint, moto_ps),
            simulator_process(fakes_cpu, Path(tmp)) as (sim_url, _sim_ps),
        ):
            kw = {
                "endpoint_url": endpoint,
                "region_name": REGION,
                "aws_access_key_id": "test",
                "aws_secret_access_key": "test",
            }
            ddb, sqs = boto3.client("dynamodb", **kw), boto3.client("sqs", **kw)
            res = create_resources(ddb, sqs, stack_name="bench", region=REGION)
            # The demo campaign: the example's, with calling windows open all day (local/data).
            campaigns = Path(tmp) / "campaigns"
            campaigns.mkdir()
            shutil.copyfile(ROOT / "local" / "data" / "campaign.yaml", campaigns / "demo.yaml")
            try:
                transport = DelayedTransport(httpx.HTTPTransport(), cfg.dialer_latency_s)
                http = httpx.Client(transport=transport, timeout=10.0)
                settings = DialerSettings.from_env(
                    {
                        "TABLE_NAME": res.table_name,
                        "IDEMPOTENCY_TABLE": res.idempotency_table_name,
                        "QUEUE_URL": res.queue_url,
                        "SAUTIKIT_BASE_URL": sim_url,
                        "SAUTIKIT_API_KEY": API_KEY,
                        "FROM_NUMBER": FROM,
                        "CAMPAIGNS_DIR": str(campaigns),
                        # Slots are never released here (nobody answers, no events function runs),
                        # so leave room for every lead of the run: one batch read of 100 slot keys.
                        "MAX_CONCURRENT_CALLS": "100",
                    }
                )
                runner = app.build(settings, dynamodb=ddb, sqs=sqs, http=http)
                timer = DynamoTimer(ddb)
                ctx = LambdaContext(function_name="dialer", timeout_s=60)
                phone_n = 0

                def leads(prefix: str, n: int) -> tuple[list[str], list[str]]:
                    nonlocal phone_n
                    ids = [f"{prefix}-{i:02d}" for i in range(n)]
                    phones = [f"+2547130{phone_n + i:05d}" for i in range(n)]
                    phone_n += n
                    return ids, phones

                def run(event: dict[str, Any]) -> tuple[float, dict[str, Any]]:
                    t0 = time.perf_counter()
                    resp = app.handle(event, ctx, runner=runner)
                    return time.perf_counter() - t0, resp

                # One warm-up lead: imports, campaign load, idempotency table, connection pools.
                run(_event(*leads("warm", 1)))
                for rep in range(cfg.dialer_repeats):
                    c0, t0 = timer.count, timer.total_s
                    singles = []
                    for lead_id, phone in zip(*leads(f"s{rep}", BATCH), strict=True):
                        dt, resp = run(_event([lead_id], [phone]))
                        if resp.get("batchItemFailures"):
                            raise RuntimeError(f"single-lead batch failed: {resp}")
                        singles.append(dt)
                    ddb_per_lead = (timer.count - c0) / BATCH
                    ddb_ms_per_lead = 1000 * (timer.total_s - t0) / BATCH
                    delayed0 = transport.delayed
                    moto0, own0 = sum(moto_ps.cpu_times()[:2]), own_cpu_seconds()
                    actual, resp = run(_event(*leads(f"b{rep}", BATCH)))
                    moto_cpu = (sum(moto_ps.cpu_times()[:2]) - moto0) / actual
                    own_cpu = (own_cpu_seconds() - own0) / actual
                    if resp.get("batchItemFailures"):
                        raise RuntimeError(f"batch had failures: {resp}")
                    if transport.delayed - delayed0 != BATCH:
                        raise RuntimeError(
                            f"expected {BATCH} dials in the batch, saw {transport.delayed - delayed0}"
                        )
                    serial = sum(singles)
                    runs.append(
                        {
                            "serial_s": round(serial, 3),
                            "batch_s": round(actual, 3),
                            "speedup": round(serial / actual, 2),
                            "single_lead_ms": {
                                "median": round(1000 * float(np.median(singles)), 1),
                                "max": round(1000 * max(singles), 1),
                            },
                            "dynamodb_requests_per_lead": round(ddb_per_lead, 1),
                            "dynamodb_ms_per_lead": round(ddb_ms_per_lead, 1),
                            "moto_cpu_during_batch_pct": round(100 * moto_cpu, 1),
                            "dialer_process_cpu_during_batch_pct": round(100 * own_cpu, 1),
                        }
                    )
                    log(
                        f"  dialer: serial {serial * 1000:.0f} ms, batch {actual * 1000:.0f} ms -> "
                        f"{serial / actual:.1f}x ({ddb_per_lead:.0f} DynamoDB requests/lead, "
                        f"{ddb_ms_per_lead:.0f} ms of them; during the batch moto {100 * moto_cpu:.0f}% busy, "
                        f"the dialer's process {100 * own_cpu:.0f}%)"
                    )
                ceiling = (
                    moto_ceiling(ddb, res.table_name, round(runs[-1]["dynamodb_requests_per_lead"]))
                    if runs
                    else {}
                )
                log(
                    f"  moto alone: {ceiling.get('speedup_x')}x with {BATCH} threads ({ceiling.get('ms_per_request')} ms a request)"
                )
                doc = httpx.get(f"{sim_url}/_sim/calls", timeout=10).json()
                placed = len(doc["calls"] if isinstance(doc, dict) else doc)
            finally:
                http.close()
    finally:
        logger.setLevel(old_level)
    speedups = [r["speedup"] for r in runs]
    best_possible = None
    if runs:
        r0 = runs[-1]
        # If the batch were perfectly parallel it would take about one lead's time.
        best_possible = round(r0["serial_s"] * 1000 / r0["single_lead_ms"]["max"], 1)
    return {
        "dialer_batch_speedup": metric(
            round(float(np.median(speedups)), 2),
            "x",
            detail={
                "goal": GOALS["dialer_batch_speedup"].text,
                "how": f"{BATCH}-lead SQS batch through functions.dialer.app.handle vs {BATCH} one-lead "
                f"batches; +{cfg.dialer_latency_s * 1000:.0f} ms on POST /v1/calls; DynamoDB+SQS on "
                "moto (own process), carrier = the Sautikit simulator",
                "runs": runs,
                "spread_pct": spread_pct(speedups),
                "calls_placed_on_simulator": placed,
                "moto_alone": ceiling,
                "limit": (
                    f"{runs[-1]['dynamodb_requests_per_lead']:.0f} DynamoDB requests per lead "
                    f"({runs[-1]['dynamodb_ms_per_lead']} ms of a lead's {runs[-1]['single_lead_ms']['median']} ms), "
                    f"and moto serves them nearly one at a time: alone it reaches "
                    f"{ceiling.get('speedup_x')}x with {BATCH} threads"
                )
                if runs
                else "",
                "perfectly_parallel_bound_x": best_possible,
            },
        )
    }
