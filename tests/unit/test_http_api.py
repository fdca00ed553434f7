"""The webhook functions' HTTP edge: each concurrent request is resolved against its own event."""

from __future__ import annotations

import threading
import time
from typing import Any

from aws_lambda_powertools.event_handler import Response

from leadqual.http_api import HttpResolver, raw_body, resolve
from local.lambda_runtime import LambdaContext, http_api_event


def _make_app() -> HttpResolver:
    app = HttpResolver()

    @app.post("/voice")
    def voice() -> Response[str]:
        first = raw_body(app.current_event.raw_event)
        # Another request resolving meanwhile must not change what this one reads.
        time.sleep(0.05)
        second = raw_body(app.current_event.raw_event)
        return Response(200, "text/plain", (first + b"|" + second).decode())

    return app


def test_concurrent_requests_each_see_their_own_event() -> None:
    results: dict[str, str] = {}

    def call(body: str) -> None:
        event = http_api_event(
            "POST", "/voice", {"content-type": "text/plain"}, body.encode(), "h", "POST /voice"
        )
        out: dict[str, Any] = resolve(_make_app, event, LambdaContext(function_name="voice"), deps=None)
        results[body] = out["body"]

    threads = [threading.Thread(target=call, args=(f"call-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.01)  # overlap: each starts while the others sleep inside the handler
    for t in threads:
        t.join()
    assert results == {f"call-{i}": f"call-{i}|call-{i}" for i in range(4)}


def test_raw_body_decodes_base64_form_posts() -> None:
    event = http_api_event(
        "POST", "/voice", {"content-type": "application/x-www-form-urlencoded"}, b"a=1", "h", "k"
    )
    assert event["isBase64Encoded"] is True
    assert raw_body(event) == b"a=1"
