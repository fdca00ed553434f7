"""Number routing: point the Sautikit number's answer webhook (and events) at our API.

One operation, two callers: the `Custom::NumberRouting` resource on deploy (`handle_custom_resource`)
and `leadqual configure-number`. Setting routing is absolute (PATCH with the URLs), so Create and
Update are idempotent; Delete leaves the number's routing alone (another stack, or a person, may
own it by then) and always succeeds. Every outcome reaches CloudFormation through the pre-signed
ResponseURL — a failure too, with a reason that says what to fix — because a custom resource that
never answers leaves the stack waiting for an hour.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from leadqual.errors import LeadqualError, SautikitError
from leadqual.observability import logger

MAX_REASON = 1000  # CloudFormation shows the reason in the console; keep it readable


class RoutingApi(Protocol):
    def set_number_routing(
        self, number_id: str, *, routing_url: str, events_url: str | None = None
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RoutingRequest:
    number_id: str
    routing_url: str
    events_url: str | None = None


def configure_number(api: RoutingApi, request: RoutingRequest) -> dict[str, Any]:
    """Set the number's routing; returns the platform's view of the number. Raises SautikitError."""
    result = api.set_number_routing(
        request.number_id, routing_url=request.routing_url, events_url=request.events_url
    )
    logger.info(
        "number routing set",
        extra={
            "number_id": request.number_id,
            "routing_url": request.routing_url,
            "events_url": request.events_url,
        },
    )
    return result


def describe_failure(exc: BaseException, request: RoutingRequest | None) -> str:
    """A reason a person can act on, naming the number and what the platform said."""
    number = f"number {request.number_id}" if request else "the number"
    if isinstance(exc, SautikitError):
        hint = {
            401: " — check the Sautikit API key secret",
            403: " — the API key lacks the numbers scope",
            404: " — check FromNumberId (GET /v1/numbers lists the workspace's numbers)",
        }.get(exc.status or 0, "")
        status = exc.status if exc.status is not None else "no response"
        return f"Sautikit refused to set the routing of {number}: {status} {exc.code or ''} {exc.message}{hint}".replace(
            "  ", " "
        )
    if isinstance(exc, LeadqualError):
        return f"cannot set the routing of {number}: {exc.reason}"
    return f"cannot set the routing of {number}: {type(exc).__name__}: {exc}"


def _request_from(props: Mapping[str, Any]) -> RoutingRequest:
    missing = [key for key in ("NumberId", "RoutingUrl") if not str(props.get(key) or "").strip()]
    if missing:
        raise LeadqualError(f"the resource needs {' and '.join(missing)}")
    events = str(props.get("EventsUrl") or "").strip() or None
    return RoutingRequest(
        number_id=str(props["NumberId"]).strip(),
        routing_url=str(props["RoutingUrl"]).strip(),
        events_url=events,
    )


def handle_custom_resource(
    event: Mapping[str, Any],
    *,
    api: Callable[[], RoutingApi],
    respond: Callable[[str, dict[str, Any]], None],
) -> dict[str, Any]:
    """Handle one CloudFormation request and send its response. `api` builds the Sautikit client
    (lazily: a Delete never needs it, and building it can fail — that too becomes FAILED).
    `respond(url, body)` PUTs the body to the ResponseURL. Returns the body sent."""
    request_type = str(event.get("RequestType", ""))
    props = event.get("ResourceProperties") or {}
    old_id = event.get("PhysicalResourceId")
    status, reason, data = "SUCCESS", "", {}
    physical_id = str(old_id or props.get("NumberId") or "number-routing")
    request: RoutingRequest | None = None
    try:
        if request_type == "Delete":
            reason = "routing left as it is (delete never changes a number's routing)"
        elif request_type in ("Create", "Update"):
            request = _request_from(props)
            result = configure_number(api(), request)
            # Same number → same resource; another number → a new one (CloudFormation then deletes the old).
            old_number = (event.get("OldResourceProperties") or {}).get("NumberId")
            if request_type == "Create" or not old_id or old_number != request.number_id:
                physical_id = request.number_id
            data = {
                "NumberId": request.number_id,
                "RoutingUrl": str(result.get("routing_url") or request.routing_url),
            }
            reason = f"routing of {request.number_id} set"
        else:
            raise LeadqualError(f"unknown RequestType {request_type!r}")
    except Exception as exc:  # every failure must still reach CloudFormation
        status, reason = "FAILED", describe_failure(exc, request)
        logger.exception("number routing failed", extra={"request_type": request_type})
    body = {
        "Status": status,
        "Reason": reason[:MAX_REASON],
        "PhysicalResourceId": physical_id,
        "StackId": event.get("StackId", ""),
        "RequestId": event.get("RequestId", ""),
        "LogicalResourceId": event.get("LogicalResourceId", ""),
        "NoEcho": False,
        "Data": data,
    }
    respond(str(event.get("ResponseURL", "")), body)
    return body


def put_response(http: Any, url: str, body: dict[str, Any], *, attempts: int = 3) -> None:
    """PUT the response to the pre-signed S3 URL (an empty content type: the URL is signed without one)."""
    payload = json.dumps(body).encode()
    last: Exception | None = None
    for _ in range(attempts):
        try:
            response = http.put(url, content=payload, headers={"content-type": ""}, timeout=10)
            if response.status_code < 300:
                return
            last = RuntimeError(f"response URL answered {response.status_code}")
        except Exception as exc:  # transport errors: try again, then give up loudly
            last = exc
    raise LeadqualError(f"could not send the CloudFormation response: {last}", retryable=True)
