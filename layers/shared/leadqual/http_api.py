"""The HTTP edge the webhook functions share: the body exactly as signed, the domain errors'
statuses in one place, and one Powertools resolver per thread."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from leadqual.observability import Metric, logger
from leadqual.signing import SignatureError
from leadqual.webhooks import WebhookError

_resolvers = threading.local()


def raw_body(event: dict[str, Any]) -> bytes:
    """The body exactly as signed: HTTP API hands form posts over base64-encoded."""
    body = event.get("body") or ""
    return base64.b64decode(body) if event.get("isBase64Encoded") else str(body).encode()


def map_webhook_errors(app: APIGatewayHttpResolver, what: str) -> None:
    """401 for a missing, stale or forged signature (counted), 400 for a body we cannot read."""

    # Powertools' exception_handler and append_context carry no type hints.
    @app.exception_handler(SignatureError)  # type: ignore[untyped-decorator]
    def _unsigned(exc: SignatureError) -> Response[str]:
        app.context["deps"].metrics.add(Metric.WEBHOOK_REJECTED.value)
        logger.warning(f"{what} webhook rejected", extra={"reason": str(exc)})
        return Response(401, "application/json", '{"message":"invalid signature"}')

    @app.exception_handler(WebhookError)  # type: ignore[untyped-decorator]
    def _unreadable(exc: WebhookError) -> Response[str]:
        logger.warning(f"{what} webhook unreadable", extra={"reason": exc.reason})
        return Response(400, "application/json", '{"message":"unreadable body"}')


def resolve(
    make_app: Callable[[], APIGatewayHttpResolver], event: dict[str, Any], context: Any, deps: Any
) -> dict[str, Any]:
    # A resolver keeps the current event on itself: Lambda runs one invocation at a time, but the
    # local API emulator serves requests on several threads, so each thread gets its own.
    apps: dict[Callable[[], APIGatewayHttpResolver], APIGatewayHttpResolver] = getattr(_resolvers, "apps", {})
    _resolvers.apps = apps
    app = apps.get(make_app)
    if app is None:
        app = apps[make_app] = make_app()
    app.append_context(deps=deps)  # type: ignore[no-untyped-call]  # untyped in Powertools
    return app.resolve(event, context)
