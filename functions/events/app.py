"""Events Lambda (POST /events, POST /stream-status): verify, parse either body shape, account for it.

Thin: a Powertools resolver maps both routes and the domain errors to statuses (401 for a bad
signature, 400 for an unreadable body); a transient failure raises (500) so Sautikit redelivers.
Adapters are built once per container on first use. Tests call `handle(event, context, deps=…)`.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from leadqual.accounting import Accountant
from leadqual.dialing import CampaignCatalog
from leadqual.observability import Metric, MetricsSink, PowertoolsSink, logger, metrics, tracer
from leadqual.queue import LeadQueue
from leadqual.sautikit import SautikitClient
from leadqual.settings import EventsSettings
from leadqual.signing import SignatureError
from leadqual.store import DynamoStore
from leadqual.webhooks import WebhookError, parse_event, verify_request

_resolvers = threading.local()


@dataclass
class Deps:
    accountant: Accountant
    webhook_secret: str
    metrics: MetricsSink = field(default_factory=PowertoolsSink)
    now: Callable[[], float] = field(default=time.time)


_deps: Deps | None = None


def build(settings: EventsSettings, *, dynamodb: Any = None, sqs: Any = None, http: Any = None) -> Deps:
    import boto3

    sink = PowertoolsSink()
    accountant = Accountant(
        store=DynamoStore(settings.table_name, dynamodb or boto3.client("dynamodb")),
        calls=SautikitClient(settings.sautikit_base_url, settings.sautikit_api_key, http=http),
        queue=LeadQueue(settings.queue_url, sqs or boto3.client("sqs")),
        campaigns=CampaignCatalog(settings.campaigns_dir),
        metrics=sink,
    )
    return Deps(accountant=accountant, webhook_secret=settings.webhook_secret, metrics=sink)


def _default_deps() -> Deps:
    global _deps
    if _deps is None:
        _deps = build(EventsSettings.from_env())
    return _deps


def make_app() -> APIGatewayHttpResolver:
    """Both routes and the domain errors' statuses. One resolver per thread (see `handle`)."""
    app = APIGatewayHttpResolver()

    @app.post("/events")
    @app.post("/stream-status")
    def events() -> Response[str]:
        deps: Deps = app.context["deps"]
        event = app.current_event
        raw = raw_body(event.raw_event)
        verify_request(deps.webhook_secret, raw, event.headers, now=deps.now())
        call_event = parse_event(
            raw, event.headers.get("content-type"), event.headers, event.query_string_parameters
        )
        result = deps.accountant.handle(call_event)
        return Response(200, "application/json", f'{{"result":"{result.value}"}}')

    @app.exception_handler(SignatureError)
    def _unsigned(exc: SignatureError) -> Response[str]:
        app.context["deps"].metrics.add(Metric.WEBHOOK_REJECTED.value)
        logger.warning("event webhook rejected", extra={"reason": str(exc)})
        return Response(401, "application/json", '{"message":"invalid signature"}')

    @app.exception_handler(WebhookError)
    def _unreadable(exc: WebhookError) -> Response[str]:
        logger.warning("event webhook unreadable", extra={"reason": exc.reason})
        return Response(400, "application/json", '{"message":"unreadable body"}')

    return app


def raw_body(event: dict[str, Any]) -> bytes:
    """The body exactly as signed (HTTP API may hand it over base64-encoded)."""
    body = event.get("body") or ""
    return base64.b64decode(body) if event.get("isBase64Encoded") else str(body).encode()


def handle(event: dict[str, Any], context: Any, *, deps: Deps | None = None) -> dict[str, Any]:
    # A resolver keeps the current event on itself: Lambda runs one invocation at a time, but the
    # local API emulator serves requests on several threads, so each thread gets its own.
    app = getattr(_resolvers, "app", None)
    if app is None:
        app = _resolvers.app = make_app()
    app.append_context(deps=deps or _default_deps())
    return app.resolve(event, context)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context)
