"""Scripted fakes for the pipeline's unit tests: a carrier that records every call and replays
idempotency keys as Sautikit does while a call lives (these calls never end), a settable clock, and a Lambda context."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import boto3

from leadqual.carrier import CallDetails, CreatedCall, WalletBalance
from leadqual.dialing import DialRequest
from leadqual.errors import SautikitError
from local.resources import LocalResources, create_resources

NAIROBI = ZoneInfo("Africa/Nairobi")
REGION = "eu-west-1"
FROM = "+254709100100"
REP = "+254711999000"


class Aws:
    def __init__(self) -> None:
        self.dynamodb = boto3.client("dynamodb", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.resources: LocalResources = create_resources(self.dynamodb, self.sqs, region=REGION)
        self.sqs = RecordingSqs(self.sqs)

    def reset(self) -> None:
        """Empty every table and queue (cheaper than creating them again)."""
        for table in self.resources.tables.values():
            keys = [
                k["AttributeName"]
                for k in self.dynamodb.describe_table(TableName=table.name)["Table"]["KeySchema"]
            ]
            for page in self.dynamodb.get_paginator("scan").paginate(TableName=table.name):
                for item in page["Items"]:
                    self.dynamodb.delete_item(TableName=table.name, Key={k: item[k] for k in keys})
        for queue in self.resources.queues.values():
            self.drain(queue.url)
        self.sqs.take()

    def drain(self, queue_url: str | None = None) -> list[dict[str, Any]]:
        """Receive and delete every visible message (PurgeQueue allows one call a minute)."""
        url = queue_url or self.resources.queue_url
        out: list[dict[str, Any]] = []
        while got := self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        ):
            out.extend(got)
            self.sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)],
            )
        return out


class RecordingSqs:
    """The boto3 SQS client with every SendMessage remembered: moto holds delayed messages back in
    real time, and the tests want to read what was sent (and with which delay) right away."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.sent: list[dict[str, Any]] = []

    def send_message(self, **kwargs: Any) -> Any:
        self.sent.append(kwargs)
        return self._client.send_message(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def take(self) -> list[dict[str, Any]]:
        sent, self.sent = self.sent, []
        return sent


class Clock:
    """A settable aware clock (UTC inside)."""

    def __init__(self, start: datetime) -> None:
        self.now = start.astimezone(UTC)

    def __call__(self) -> datetime:
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when.astimezone(UTC)

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def timestamp(self) -> float:
        return self.now.timestamp()


class FakeCarrier:
    """The carrier side of the dialer and events function.

    `dial` behaves like POST /v1/calls: the same client_request_id (= Idempotency-Key) replays the
    first response. `requests` lists every request that reached it; `placed` every call it really
    placed. `fail_next` queues errors to raise (one per request); `latency_s` makes each request slow.
    `details` maps a call id or session id to the CallDetails `get_call` returns (or a list of them,
    served in order, the last one repeating).
    """

    def __init__(
        self, *, latency_s: float = 0.0, balance_minor: int = 0, barrier: threading.Barrier | None = None
    ) -> None:
        self.latency_s = latency_s
        self.barrier = barrier  # every dial waits here until `parties` dials are in flight at once
        self.balance_minor = balance_minor
        self.requests: list[DialRequest] = []
        self.placed: dict[str, CreatedCall] = {}
        self.fail_next: list[SautikitError] = []
        self.details: dict[str, list[CallDetails]] = {}
        self.get_calls: list[str] = []
        self.wallet_reads = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def dial(self, request: DialRequest) -> CreatedCall:
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.barrier is not None:
                self.barrier.wait()  # BrokenBarrierError after its timeout: the dials were not concurrent
            if self.latency_s:
                time.sleep(self.latency_s)
            with self._lock:
                if self.fail_next:
                    raise self.fail_next.pop(0)
                key = request.client_request_id
                if key not in self.placed:
                    self.placed[key] = CreatedCall(
                        call_id=str(uuid.uuid4()),
                        session_id=f"HD_{uuid.uuid4().hex[:12]}",
                        status="ringing",
                        client_request_id=key,
                    )
                return self.placed[key]
        finally:
            with self._lock:
                self.in_flight -= 1

    def wallet_balance(self) -> WalletBalance:
        self.wallet_reads += 1
        return WalletBalance(balance_minor=self.balance_minor, currency="KES")

    def get_call(self, call_or_session_id: str) -> CallDetails:
        self.get_calls.append(call_or_session_id)
        if self.fail_next:
            raise self.fail_next.pop(0)
        served = self.details.get(call_or_session_id)
        if not served:
            raise SautikitError.from_status(404, "call.not_found", "no such call")
        return served.pop(0) if len(served) > 1 else served[0]


def payment_required() -> SautikitError:
    return SautikitError.from_status(402, "wallet.insufficient_funds", "wallet balance is zero")


def server_error() -> SautikitError:
    return SautikitError.from_status(503, "service.unavailable", "try again")


@dataclass
class FakeContext:
    """The attributes Powertools reads from a Lambda context."""

    function_name: str = "test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:test"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remaining_ms: int = 60_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def sqs_event(bodies: list[str], receive_count: int = 1) -> dict[str, Any]:
    """An SQS batch event as Lambda delivers it."""
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": uuid.uuid4().hex,
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": str(receive_count),
                    "SentTimestamp": "1749020390000",
                    "SenderId": "AIDAIOSFODNN7EXAMPLE",
                    "ApproximateFirstReceiveTimestamp": "1749020391000",
                },
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:leads",
                "awsRegion": "eu-west-1",
            }
            for body in bodies
        ]
    }


def once(exc: BaseException) -> Callable[[Any], None]:
    """A fault hook that raises `exc` the first time only."""
    fired: list[bool] = []

    def hook(_: Any) -> None:
        if not fired:
            fired.append(True)
            raise exc

    return hook


class RecordingSink:
    """A MetricsSink that remembers what was emitted."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, float, str]] = []
        self._lock = threading.Lock()

    def add(self, name: str, value: float = 1, unit: str = "Count") -> None:
        with self._lock:
            self.emitted.append((name, value, unit))

    def total(self, name: str) -> float:
        return sum(v for n, v, _ in self.emitted if n == name)

    def names(self) -> list[str]:
        return [n for n, _, _ in self.emitted]


class MemoryDialStore:
    """Just enough of DynamoStore for the dialer, in memory: for timing tests, where moto's
    in-process work (tens of milliseconds a lead) would drown the latency being measured."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.leads: dict[str, dict[str, Any]] = {}
        self.calls: dict[tuple[str, int], Any] = {}
        self.sessions: dict[str, tuple[str, int]] = {}
        self.slots: set[str] = set()
        self.events: set[str] = set()

    def put_lead(self, lead: Any) -> bool:
        with self._lock:
            if lead.lead_id in self.leads:
                return False
            self.leads[lead.lead_id] = {"lead": lead, "attempts": 0, "outcome": None, "status": "queued"}
            return True

    def get_lead(self, lead_id: str) -> Any:
        from types import SimpleNamespace

        with self._lock:
            item = self.leads.get(lead_id)
            return SimpleNamespace(**item) if item else None

    def begin_attempt(self, lead_id: str, attempt: int) -> bool:
        with self._lock:
            item = self.leads[lead_id]
            if item["attempts"] != attempt - 1:
                return False
            item["attempts"] = attempt
            return True

    def put_call(self, record: Any) -> bool:
        with self._lock:
            return self.calls.setdefault((record.lead_id, record.attempt), record) is record

    def update_call(self, lead_id: str, attempt: int, **fields: Any) -> bool:
        with self._lock:
            key = (lead_id, attempt)
            self.calls[key] = self.calls[key].model_copy(update=fields)
            return True

    def get_call(self, lead_id: str, attempt: int) -> Any:
        with self._lock:
            return self.calls.get((lead_id, attempt))

    def put_session(self, session_id: str, lead_id: str, attempt: int) -> None:
        with self._lock:
            self.sessions[session_id] = (lead_id, attempt)

    def set_status(self, lead_id: str, status: Any, **kwargs: Any) -> None:
        with self._lock:
            self.leads[lead_id]["status"] = status

    def set_outcome(self, lead_id: str, outcome: Any, **kwargs: Any) -> None:
        with self._lock:
            self.leads[lead_id]["outcome"] = outcome

    def is_dnc(self, e164: str) -> bool:
        return False

    def mark_event(self, event_id: str, ttl_s: int = 0) -> bool:
        with self._lock:
            if event_id in self.events:
                return False
            self.events.add(event_id)
            return True

    def acquire_slot(self, limit: int, holder: str, lease_s: int, now: float | None = None) -> bool:
        with self._lock:
            if holder in self.slots or len(self.slots) < limit:
                self.slots.add(holder)
                return True
            return False

    def release_slot(self, holder: str) -> bool:
        with self._lock:
            had = holder in self.slots
            self.slots.discard(holder)
            return had
