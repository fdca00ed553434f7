"""Number routing custom resource (`Custom::NumberRouting`): point the Sautikit number at our webhooks.

Thin: the domain call (`leadqual.routing.handle_custom_resource`) always answers CloudFormation
through the ResponseURL, success or failure. Settings (and the API key secret) are read only when a
Create/Update needs the Sautikit client, so a broken configuration still reaches CloudFormation as a
clear FAILED reason and a Delete never depends on it. Tests call `handle(event, context, deps=…)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from leadqual.observability import logger, tracer
from leadqual.routing import RoutingApi, handle_custom_resource, put_response
from leadqual.sautikit import SautikitClient
from leadqual.settings import RoutingSettings


@dataclass
class Deps:
    api: Callable[[], RoutingApi]
    http: Any  # an httpx.Client for the ResponseURL PUT


def _sautikit() -> RoutingApi:
    settings = RoutingSettings.from_env()
    return SautikitClient(settings.sautikit_base_url, settings.sautikit_api_key)


def _default_deps() -> Deps:
    import httpx

    return Deps(api=_sautikit, http=httpx.Client(timeout=10))


def handle(event: dict[str, Any], context: Any, *, deps: Deps | None = None) -> dict[str, Any]:
    deps = deps or _default_deps()
    return handle_custom_resource(
        event, api=deps.api, respond=lambda url, body: put_response(deps.http, url, body)
    )


@logger.inject_lambda_context
@tracer().capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context)
