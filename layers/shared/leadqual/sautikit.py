"""Sautikit REST adapter (SAUTIKIT.md §1): one httpx client, typed results, typed errors, safe retries.

Retries follow one rule: a request is repeated only when repeating it cannot do anything twice —
GETs, the platform-idempotent hangup, routing updates that set a value, and POSTs that carry an
`Idempotency-Key`. A connection that never opened is safe to retry for any request. Every failure
leaves as `leadqual.errors.SautikitError` with `retryable` set, so callers decide between backing
off (SQS redelivery) and recording a permanent failure.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from leadqual.carrier import CallDetails, CreatedCall, WalletBalance, supervision_status
from leadqual.errors import SautikitError

log = logging.getLogger(__name__)

RoutingStyle = Literal["patch", "put_routing"]
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class RetryPolicy(BaseModel):
    """Bounded retries with full-jitter exponential backoff (AWS architecture blog's "full jitter").

    `max_attempts` counts the first try. A server's `Retry-After` is honoured when it is at most
    `retry_after_cap_s`; a longer one ends the retries at once and the error carries
    `retry_after_s`, so a Lambda gives the message back to SQS instead of sleeping on the clock.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=4, ge=1, le=20)
    base_delay_s: float = Field(default=0.25, ge=0)
    max_delay_s: float = Field(default=5.0, ge=0)
    jitter: bool = True
    retry_after_cap_s: float = Field(default=20.0, ge=0)

    def backoff_s(self, retry_number: int, rand: Callable[[], float] = random.random) -> float:
        """Delay before retry `retry_number` (1 = the first retry): U(0, min(max, base·2^(n-1)))."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** (retry_number - 1))
        return ceiling * rand() if self.jitter else ceiling


NO_RETRY = RetryPolicy(max_attempts=1)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive parse means the zone was missing
        return None
    return max(0.0, when.timestamp() - now)


def error_from_response(response: httpx.Response, *, retry_after_s: float | None = None) -> SautikitError:
    """Build a SautikitError from either envelope: `{"error": {code, message, request_id}}` or `{code, reason}`."""
    status = response.status_code
    code: str | None = None
    message = ""
    request_id = response.headers.get("x-request-id")
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        env = body["error"] if isinstance(body.get("error"), dict) else body
        if isinstance(env.get("code"), str):
            code = env["code"]
        for key in ("message", "reason", "detail"):
            if isinstance(env.get(key), str):
                message = env[key]
                break
        if isinstance(env.get("request_id"), str):
            request_id = env["request_id"]
        elif isinstance(body.get("request_id"), str):
            request_id = body["request_id"]
        if isinstance(body.get("error"), str) and not message:
            message = body["error"]
    return SautikitError.from_status(status, code, message, request_id, retry_after_s=retry_after_s)


def _transport_error(exc: httpx.TransportError, *, retryable: bool) -> SautikitError:
    code = "transport.timeout" if isinstance(exc, httpx.TimeoutException) else "transport.error"
    detail = str(exc)
    return SautikitError(
        None, code, f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__, retryable
    )


class SautikitClient:
    """Synchronous Sautikit API client. Bridge code calls it through `asyncio.to_thread`.

    `http` is injected in tests (an `httpx.Client` over a MockTransport) and built here otherwise;
    every request carries its own full URL, auth headers and timeout, so an injected client needs
    no configuration. `sleep`, `clock` and `rand` are injectable so retry timing is testable.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        http: httpx.Client | None = None,
        retry: RetryPolicy | None = None,
        timeout_s: float = 10,
        routing_style: RoutingStyle = "patch",
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if routing_style not in ("patch", "put_routing"):
            raise ValueError(f"unknown routing_style {routing_style!r}")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._own_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout_s)
        self.retry = retry if retry is not None else RetryPolicy()
        self.timeout_s = timeout_s
        self.routing_style: RoutingStyle = routing_style
        self._sleep = sleep
        self._clock = clock
        self._rand = rand

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __enter__(self) -> SautikitClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- core --------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        idempotency_key: str | None = None,
        idempotent: bool | None = None,
        expected: tuple[int, ...] | None = None,
    ) -> httpx.Response:
        """Send one API request with retries; return the response or raise SautikitError.

        `idempotent` overrides the default (safe methods, or any request with an idempotency key).
        `expected` lists the only statuses that count as success (default: any 2xx).
        """
        method = method.upper()
        safe = (
            idempotent if idempotent is not None else (method in _IDEMPOTENT_METHODS or bool(idempotency_key))
        )
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        url = f"{self.base_url}{path}"
        policy = self.retry
        attempt = 0
        while True:
            attempt += 1
            cause: httpx.TransportError | None = None
            try:
                response = self._http.request(method, url, json=json, headers=headers, timeout=self.timeout_s)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # The request never reached the server: repeating it cannot do anything twice.
                error, cause = _transport_error(exc, retryable=True), exc
            except httpx.TransportError as exc:
                # The server may have acted on it; only a request safe to repeat is retryable.
                error, cause = _transport_error(exc, retryable=safe), exc
            else:
                if (response.status_code in expected) if expected else response.is_success:
                    return response
                error = self._status_error(response, expected)
                if not safe:
                    raise error  # an answered request that is unsafe to repeat is never repeated here
            if not error.retryable or attempt >= policy.max_attempts:
                raise error from cause
            if error.retry_after_s is not None:
                if error.retry_after_s > policy.retry_after_cap_s:
                    raise error from cause  # longer than we will block: hand the wait to the caller
                delay = error.retry_after_s
            else:
                delay = policy.backoff_s(attempt, self._rand)
            log.warning(
                "sautikit request failed; retrying",
                extra={
                    "method": method,
                    "resource": path.split("/")[2] if path.count("/") >= 2 else path,
                    "status": error.status,
                    "code": error.code,
                    "attempt": attempt,
                    "delay_s": round(delay, 3),
                },
            )
            self._sleep(delay)

    def _status_error(self, response: httpx.Response, expected: tuple[int, ...] | None) -> SautikitError:
        if expected and response.is_success:
            # e.g. 200 where only 201 means "call placed": not a failure a retry would fix.
            return SautikitError(
                response.status_code,
                "response.unexpected_status",
                f"expected HTTP {'/'.join(map(str, expected))}, got {response.status_code}",
                False,
                response.headers.get("x-request-id"),
            )
        retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock())
        return error_from_response(response, retry_after_s=retry_after)

    def _json(self, response: httpx.Response, *, retryable: bool = False) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            raise SautikitError(
                response.status_code, "response.invalid_json", "response body is not JSON", retryable
            ) from exc
        if not isinstance(body, dict):
            raise SautikitError(
                response.status_code, "response.invalid_json", "response body is not an object", retryable
            )
        return body

    # -- calls -------------------------------------------------------------------------------------
    def create_call(
        self,
        *,
        from_: str,
        to: str,
        client_request_id: str,
        idempotency_key: str,
        voice_callback_url: str | None = None,
        caller_id: str | None = None,
    ) -> CreatedCall:
        """`POST /v1/calls`. Only 201 is success; a reused `idempotency_key` replays while that call lives."""
        body: dict[str, Any] = {"from": from_, "to": [to], "client_request_id": client_request_id}
        if voice_callback_url is not None:
            body["voice_callback_url"] = voice_callback_url
        if caller_id is not None:
            body["caller_id"] = caller_id
        response = self.request(
            "POST", "/v1/calls", json=body, idempotency_key=idempotency_key or None, expected=(201,)
        )
        # With a key, asking again replays the same call, so a garbled body is worth a retry.
        data = self._json(response, retryable=bool(idempotency_key))
        try:
            return CreatedCall.model_validate(data)
        except ValidationError as exc:
            raise SautikitError(
                response.status_code,
                "response.invalid",
                "create-call response has no session_id",
                bool(idempotency_key),
            ) from exc

    def get_call(self, call_or_session_id: str) -> CallDetails:
        """`GET /v1/calls/{id}`; `id` is the call uuid or the `HD_…` session id."""
        response = self.request("GET", f"/v1/calls/{_seg(call_or_session_id)}")
        data = self._json(response, retryable=True)
        call = data.get("call", data)
        try:
            return CallDetails.model_validate(call if isinstance(call, dict) else {})
        except ValidationError as exc:
            raise SautikitError(
                response.status_code, "response.invalid", "call record does not parse", False
            ) from exc

    def hangup(self, call_or_session_id: str) -> None:
        """`POST /v1/calls/{id}/hangup`. The platform makes it idempotent (an ended call succeeds)."""
        self.request("POST", f"/v1/calls/{_seg(call_or_session_id)}/hangup", idempotent=True)

    def start_supervision(
        self, call_or_session_id: str, *, mode: str, number: str, idempotency_key: str
    ) -> dict[str, Any]:
        """Put a phone supervisor on a live call (`barge` hands the lead to a rep). 409 if one exists."""
        body = {"mode": mode, "supervisor": {"type": "phone", "number": number}}
        response = self.request(
            "POST",
            f"/v1/calls/{_seg(call_or_session_id)}/supervision",
            json=body,
            idempotency_key=idempotency_key or None,
        )
        return self._json(response, retryable=bool(idempotency_key))

    def update_supervision(self, call_or_session_id: str, *, mode: str) -> dict[str, Any]:
        """`PATCH /v1/calls/{id}/supervision {mode}`: switch listen/whisper/barge. Whether the rep
        has picked up is `get_supervision`'s `status`, not this call's answer."""
        response = self.request(
            "PATCH", f"/v1/calls/{_seg(call_or_session_id)}/supervision", json={"mode": mode}, idempotent=True
        )
        return self._json(response, retryable=True) if response.content else {}

    def get_supervision(self, call_or_session_id: str) -> dict[str, Any] | None:
        """`GET /v1/calls/{id}/supervision`: the call's supervisor, or None when it has none (404).

        The platform sends no event when a supervisor picks up, so this is how to learn it. The
        object comes back as sent (unwrapped from `{"supervision": {...}}`) with `status` made
        canonical by `supervision_status` (ringing | active | ended | failed | no_answer | busy |
        canceled) and the platform's own spelling kept in `status_raw` when it differed. With no
        usable status, `ended_at` means ended and `answered_at` means active; otherwise `status`
        is None (unknown: ask again).
        """
        try:
            response = self.request("GET", f"/v1/calls/{_seg(call_or_session_id)}/supervision")
        except SautikitError as exc:
            if exc.status == 404:
                return None
            raise
        data = self._json(response, retryable=True)
        found = data.get("supervision", data)
        if not isinstance(found, dict):
            raise SautikitError(
                response.status_code, "response.invalid", "supervision is not an object", False
            )
        sup = dict(found)
        raw = next((sup[k] for k in ("status", "state") if sup.get(k) is not None), None)
        status: str | None = supervision_status(raw)
        if status is None:
            if sup.get("ended_at"):
                status = "ended"
            elif sup.get("answered_at"):
                status = "active"
        if raw is not None and raw != status:
            sup["status_raw"] = raw
        sup["status"] = status
        return sup

    def stop_supervision(self, call_or_session_id: str) -> None:
        """`DELETE /v1/calls/{id}/supervision`; idempotent on the platform."""
        self.request("DELETE", f"/v1/calls/{_seg(call_or_session_id)}/supervision")

    # -- numbers and wallet ------------------------------------------------------------------------
    def set_number_routing(
        self, number_id: str, *, routing_url: str, events_url: str | None = None
    ) -> dict[str, Any]:
        """Point a number's answer webhook (and optionally its events) at us.

        `routing_style="patch"` (the seed): `PATCH /v1/numbers/{id}` `{routing_url, events_url?}`;
        `"put_routing"` (seen in production): `PUT /v1/numbers/{id}/routing {voice_callback_url, events_url?}`.
        Both set absolute values, so repeating them is harmless and they are retried.
        """
        if self.routing_style == "patch":
            body: dict[str, Any] = {"routing_url": routing_url}
            method, path = "PATCH", f"/v1/numbers/{_seg(number_id)}"
        else:
            body = {"voice_callback_url": routing_url}
            method, path = "PUT", f"/v1/numbers/{_seg(number_id)}/routing"
        if events_url is not None:
            body["events_url"] = events_url
        response = self.request(method, path, json=body, idempotent=True)
        if not response.content:
            return {}
        return self._json(response, retryable=True)

    def list_numbers(self) -> list[dict[str, Any]]:
        data = self._json(self.request("GET", "/v1/numbers"), retryable=True)
        numbers = data.get("numbers", data.get("data", []))
        return [n for n in numbers if isinstance(n, dict)] if isinstance(numbers, list) else []

    def wallet_balance(self) -> WalletBalance:
        response = self.request("GET", "/v1/wallet/balance")
        data = self._json(response, retryable=True)
        wallet = data.get("wallet", data)
        try:
            return WalletBalance.model_validate(wallet if isinstance(wallet, Mapping) else {})
        except ValidationError as exc:
            raise SautikitError(
                response.status_code, "response.invalid", "wallet balance does not parse", False
            ) from exc


def _seg(value: str) -> str:
    """One path segment, percent-encoded so an id can never change the path."""
    return quote(value, safe="")
