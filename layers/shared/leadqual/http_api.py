"""The HTTP edge the webhook functions share: the body exactly as signed, the domain errors'
statuses in one place, and one Powertools resolver per thread."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from leadqual.observability import Metric, logger
from leadqual.signing import SignatureError
from leadqual.webhooks import WebhookError, verify_request

_resolvers = threading.local()


class HttpResolver(APIGatewayHttpResolver):
    """Powertools' resolver, with the current event kept per thread.

    Powertools keeps the event being resolved on the BaseRouter *class*: right in Lambda, where a
    process serves one invocation at a time, but the local API emulator serves several requests at
    once, and one request's handler would read another's event (a busy callback answered with the
    stream meant for another call)."""

    _state = threading.local()

    # Per-thread properties over Powertools' class attributes.
    @property
    def current_event(self) -> Any:
        return self._state.event

    @current_event.setter
    def current_event(self, value: Any) -> None:
        self._state.event = value

    @property
    def lambda_context(self) -> Any:
        return self._state.context

    @lambda_context.setter
    def lambda_context(self, value: Any) -> None:
        self._state.context = value

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        self._state.event = self._to_proxy_event(dict(event))
        self._state.context = context
        return super().resolve(event, context)


def raw_body(event: dict[str, Any]) -> bytes:
    """The body exactly as signed: HTTP API hands form posts over base64-encoded."""
    body = event.get("body") or ""
    return base64.b64decode(body) if event.get("isBase64Encoded") else str(body).encode()


def signed_body(app: HttpResolver) -> bytes:
    """The current request's body once its X-Sautikit-Signature checks out against the deps'
    `webhook_secret` at `now()`; SignatureError (→ 401 by `map_webhook_errors`) otherwise."""
    deps = app.context["deps"]
    event = app.current_event
    raw = raw_body(event.raw_event)
    verify_request(deps.webhook_secret, raw, event.headers, now=deps.now())
    return raw


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
    make_app: Callable[[], HttpResolver], event: dict[str, Any], context: Any, deps: Any
) -> dict[str, Any]:
    # The resolver keeps its context (the deps) on itself, and the local API emulator serves
    # requests on several threads: each thread gets its own resolver.
    apps: dict[Callable[[], HttpResolver], HttpResolver] = getattr(_resolvers, "apps", {})
    _resolvers.apps = apps
    app = apps.get(make_app)
    if app is None:
        app = apps[make_app] = make_app()
    app.append_context(deps=deps)  # type: ignore[no-untyped-call]  # untyped in Powertools
    return app.resolve(event, context)
