"""Voice webhook Lambda (POST /voice): verify, parse, answer with the document `leadqual.answering` picks.

Thin: a Powertools resolver maps the route and the domain errors to statuses (401 for a bad
signature, 400 for an unreadable body); adapters are built once per container on first use.
Tests call `handle(event, context, deps=…)`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from leadqual.answering import VoiceAnswerer, VoiceConfig, with_query
from leadqual.dialing import CampaignCatalog
from leadqual.observability import Metric, MetricsSink, PowertoolsSink, logger, metrics, tracer
from leadqual.settings import VoiceSettings
from leadqual.signing import SignatureError
from leadqual.store import DynamoStore
from leadqual.webhooks import WebhookError, parse_callback, verify_request

_resolvers = threading.local()


@dataclass
class Deps:
    answerer: VoiceAnswerer
    webhook_secret: str
    stream_status_url: str | None = None  # fixed statusCallback (local stack); else from the request
    metrics: MetricsSink = field(default_factory=PowertoolsSink)
    now: Callable[[], float] = field(default=time.time)


_deps: Deps | None = None


def build(settings: VoiceSettings, *, dynamodb: Any = None) -> Deps:
    import boto3

    answerer = VoiceAnswerer(
        store=DynamoStore(settings.table_name, dynamodb or boto3.client("dynamodb")),
        campaigns=CampaignCatalog(settings.campaigns_dir),
        config=VoiceConfig(
            bridge_url=settings.bridge_url,
            bridge_token_secret=settings.bridge_token_secret,
            own_numbers=(settings.from_number,),
            token_ttl_s=settings.bridge_token_ttl_seconds,
            output_sample_rate=settings.output_sample_rate,
            bidirectional_sample_rate=settings.bidirectional_sample_rate,
        ),
        metrics=PowertoolsSink(),
    )
    status_url = (
        with_query(settings.events_webhook_url, source="stream") if settings.events_webhook_url else None
    )
    return Deps(answerer=answerer, webhook_secret=settings.webhook_secret, stream_status_url=status_url)


def _default_deps() -> Deps:
    global _deps
    if _deps is None:
        _deps = build(VoiceSettings.from_env())
    return _deps


def make_app() -> APIGatewayHttpResolver:
    """The route and the domain errors' statuses. One resolver per thread (see `handle`)."""
    app = APIGatewayHttpResolver()

    @app.post("/voice")
    def voice() -> Response[str]:
        deps: Deps = app.context["deps"]
        event = app.current_event
        raw = raw_body(event.raw_event)
        verify_request(deps.webhook_secret, raw, event.headers, now=deps.now())
        callback = parse_callback(raw, event.headers.get("content-type"), event.query_string_parameters or {})
        domain = event.request_context.domain_name
        status_url = deps.stream_status_url or f"https://{domain}/stream-status"
        reply = deps.answerer.answer(callback, status_callback_url=status_url)
        return Response(200, reply.content_type, reply.body)

    @app.exception_handler(SignatureError)
    def _unsigned(exc: SignatureError) -> Response[str]:
        app.context["deps"].metrics.add(Metric.WEBHOOK_REJECTED.value)
        logger.warning("voice webhook rejected", extra={"reason": str(exc)})
        return Response(401, "application/json", '{"message":"invalid signature"}')

    @app.exception_handler(WebhookError)
    def _unreadable(exc: WebhookError) -> Response[str]:
        logger.warning("voice webhook unreadable", extra={"reason": exc.reason})
        return Response(400, "application/json", '{"message":"unreadable body"}')

    return app


def raw_body(event: dict[str, Any]) -> bytes:
    """The body exactly as signed: HTTP API hands form posts over base64-encoded."""
    import base64

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
