"""Signed deliveries to the app: voice callbacks, lifecycle re-invocations, events, stream status.

Every request is signed with `leadqual.signing.sign_webhook` (`X-Sautikit-Signature: t=…,v1=…`).
Each attempt is recorded (purpose, url, status, elapsed); what the app does wrong becomes a
violation on the call: non-2xx, no answer within the 10 s limit, unreachable, 401/403 to a correctly
signed request (`bad_signature_response`), or 2xx to a deliberately mis-signed one
(`accepted_bad_signature`). Events are retried with exponential backoff (bounded); nothing is
deduplicated here — that is the app's job (§3).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from leadqual.signing import SIGNATURE_HEADER, sign_webhook

ViolationSink = Callable[[str, str], None]
_WRONG_SECRET = "not-the-webhook-secret"  # noqa: S105 - deliberately wrong, for the bad-signature trap


@dataclass
class WebhookResult:
    status: int | None
    body: bytes
    content_type: str
    elapsed_ms: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def redact_url(url: str) -> str:
    """The URL without its query (tokens live there), for timelines and delivery logs."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def add_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def encode(fields: dict[str, Any], encoding: str) -> tuple[bytes, str]:
    if encoding == "json":
        return json.dumps(fields, separators=(",", ":")).encode(), "application/json"
    flat = {k: ("" if v is None else str(v)) for k, v in fields.items()}
    return urlencode(flat).encode(), "application/x-www-form-urlencoded"


class WebhookSender:
    def __init__(
        self,
        http: httpx.AsyncClient,
        secret: str,
        *,
        timeout_s: float = 10.0,
        retry_attempts: int = 5,
        retry_base_s: float = 0.5,
        record: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.http = http
        self.secret = secret
        self.timeout_s = timeout_s
        self.retry_attempts = retry_attempts
        self.retry_base_s = retry_base_s
        self._record = record or (lambda _d: None)

    async def send(
        self,
        url: str,
        body: bytes,
        content_type: str,
        *,
        purpose: str,
        violation: ViolationSink,
        session_id: str | None = None,
        event_id: str | None = None,
        event_kind: str | None = None,
        bad_signature: bool = False,
        method: str = "POST",
        attempt: int = 1,
    ) -> WebhookResult:
        """One signed attempt; records it and any violation, never raises for HTTP trouble."""
        headers = {
            "Content-Type": content_type,
            SIGNATURE_HEADER: sign_webhook(_WRONG_SECRET if bad_signature else self.secret, body),
            "User-Agent": "Sautikit-Simulator/1.0",
        }
        if event_id:
            headers["X-Sautikit-Event-Id"] = event_id
        if event_kind:
            headers["X-Sautikit-Event-Kind"] = event_kind
        started = time.monotonic()
        result: WebhookResult
        try:
            if method.upper() == "GET":
                response = await self.http.get(url, headers=headers, timeout=self.timeout_s)
            else:
                response = await self.http.request(
                    method.upper(), url, content=body, headers=headers, timeout=self.timeout_s
                )
            result = WebhookResult(
                response.status_code,
                response.content,
                response.headers.get("content-type", ""),
                (time.monotonic() - started) * 1000,
            )
        except httpx.TimeoutException:
            result = WebhookResult(None, b"", "", (time.monotonic() - started) * 1000, "timeout")
        except httpx.HTTPError as exc:
            result = WebhookResult(
                None, b"", "", (time.monotonic() - started) * 1000, f"{type(exc).__name__}: {exc}"
            )
        self._judge(result, purpose, url, violation, bad_signature)
        self._record(
            {
                "delivery_id": str(uuid.uuid4()),
                "at": time.time(),
                "purpose": purpose,
                "url": redact_url(url),
                "session_id": session_id,
                "event_id": event_id,
                "event_kind": event_kind,
                "attempt": attempt,
                "status": result.status,
                "elapsed_ms": round(result.elapsed_ms, 1),
                "error": result.error,
                "bad_signature": bad_signature,
            }
        )
        return result

    def _judge(
        self, result: WebhookResult, purpose: str, url: str, violation: ViolationSink, bad_signature: bool
    ) -> None:
        where = f"{purpose} {redact_url(url)}"
        if bad_signature:
            if result.ok:
                violation("accepted_bad_signature", f"{where} answered {result.status} to a wrong signature")
            return
        if result.error == "timeout":
            violation("webhook_slow", f"{where} did not answer within {self.timeout_s:g} s")
        elif result.error:
            violation("webhook_unreachable", f"{where}: {result.error}")
        elif result.status in (401, 403):
            violation("bad_signature_response", f"{where} answered {result.status} to a valid signature")
        elif not result.ok:
            violation("webhook_non_2xx", f"{where} answered {result.status}")

    async def deliver(
        self,
        url: str,
        body: bytes,
        content_type: str,
        *,
        purpose: str,
        violation: ViolationSink,
        session_id: str | None = None,
        event_id: str | None = None,
        event_kind: str | None = None,
        bad_signature: bool = False,
    ) -> WebhookResult:
        """At-least-once delivery: retry non-2xx and transport failures with backoff (bounded)."""
        attempt = 1
        while True:
            result = await self.send(
                url,
                body,
                content_type,
                purpose=purpose,
                violation=violation,
                session_id=session_id,
                event_id=event_id,
                event_kind=event_kind,
                bad_signature=bad_signature,
                attempt=attempt,
            )
            # A 401 to a wrong signature is the right answer; retrying it would not change it.
            if result.ok or bad_signature or attempt >= self.retry_attempts:
                return result
            await asyncio.sleep(self.retry_base_s * 2 ** (attempt - 1))
            attempt += 1
