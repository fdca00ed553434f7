"""Run real Lambda handlers locally the way AWS invokes them.

- `ApiGatewayEmulator`: an HTTP server on loopback that turns each request into an API Gateway
  HTTP API (payload v2) event, calls the handler routed for it and writes its response back.
- `SqsPoller`: Lambda's SQS event source mapping: receives batches, invokes the handler with a
  real SQS batch event, deletes only what succeeded (honouring `batchItemFailures`), and leaves the
  rest to reappear after the visibility timeout and, past maxReceiveCount, land in the DLQ.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

Handler = Callable[[dict[str, Any], Any], Any]

log = logging.getLogger("leadqual.local")

_TEXT_TYPES = ("application/json", "application/xml", "text/")


@dataclass
class LambdaContext:
    """The attributes Powertools and our handlers read from a Lambda context."""

    function_name: str
    timeout_s: float = 30.0
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    @property
    def function_version(self) -> str:
        return "$LATEST"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self._started)) * 1000))


def http_api_event(
    method: str, raw_path: str, headers: Mapping[str, str], body: bytes, host: str, route_key: str
) -> dict[str, Any]:
    """An API Gateway HTTP API payload v2 event, as API Gateway builds it."""
    split = urlsplit(raw_path)
    query = dict(parse_qsl(split.query, keep_blank_values=True))
    lower = {k.lower(): v for k, v in headers.items()}
    content_type = lower.get("content-type", "")
    is_text = content_type.startswith(_TEXT_TYPES) or content_type == ""
    now = datetime.now(UTC)
    return {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": split.path,
        "rawQueryString": split.query,
        "headers": lower,
        "queryStringParameters": query or None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "http": {
                "method": method,
                "path": split.path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": lower.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        # Form bodies arrive base64-encoded from API Gateway, as in production.
        "body": body.decode() if is_text else base64.b64encode(body).decode(),
        "isBase64Encoded": not is_text,
    }


class ApiGatewayEmulator:
    """`routes` maps "POST /voice" to a handler. Serves on loopback until `close()`."""

    def __init__(self, routes: Mapping[str, Handler], host: str = "127.0.0.1", port: int = 0) -> None:
        self.routes = dict(routes)
        emulator = self

        class _Request(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                emulator._dispatch(self)

            do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("apigw %s", format % args)

        self._server = ThreadingHTTPServer((host, port), _Request)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="apigw", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ApiGatewayEmulator:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ApiGatewayEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _dispatch(self, req: BaseHTTPRequestHandler) -> None:
        path = urlsplit(req.path).path
        route_key = f"{req.command} {path}"
        handler = self.routes.get(route_key)
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        if handler is None:
            self._reply(req, 404, {"content-type": "application/json"}, b'{"message":"Not Found"}')
            return
        event = http_api_event(
            req.command, req.path, dict(req.headers.items()), body, req.headers.get("Host", ""), route_key
        )
        context = LambdaContext(function_name=route_key.replace(" ", "").replace("/", "-").strip("-"))
        try:
            result = handler(event, context)
        except Exception:
            # API Gateway answers 500 for a handler that raised; the traceback goes to our log.
            log.exception("handler for %s raised", route_key)
            self._reply(
                req, 500, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}'
            )
            return
        status, headers, payload = _http_response(result)
        self._reply(req, status, headers, payload)

    @staticmethod
    def _reply(req: BaseHTTPRequestHandler, status: int, headers: Mapping[str, str], payload: bytes) -> None:
        req.send_response(status)
        for key, value in headers.items():
            if key.lower() != "content-length":
                req.send_header(key, value)
        req.send_header("Content-Length", str(len(payload)))
        req.end_headers()
        req.wfile.write(payload)


def _http_response(result: Any) -> tuple[int, dict[str, str], bytes]:
    """Map a handler's return value the way HTTP API payload v2 does."""
    if not isinstance(result, dict) or "statusCode" not in result:
        # A bare value is JSON with status 200 (payload v2's inference).
        import json

        return 200, {"content-type": "application/json"}, json.dumps(result).encode()
    body = result.get("body") or ""
    payload = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    headers = {k: str(v) for k, v in (result.get("headers") or {}).items()}
    for key, values in (result.get("multiValueHeaders") or {}).items():
        headers[key] = ",".join(str(v) for v in values)
    return int(result["statusCode"]), headers, payload


class SqsPoller:
    """Feed a handler real SQS batch events from a queue, as Lambda's event source mapping does."""

    def __init__(
        self,
        sqs_client: Any,
        queue_url: str,
        handler: Handler,
        *,
        function_name: str = "dialer",
        batch_size: int = 10,
        wait_s: int = 1,
        timeout_s: float = 30.0,
    ) -> None:
        self.sqs = sqs_client
        self.queue_url = queue_url
        self.handler = handler
        self.function_name = function_name
        self.batch_size = batch_size
        self.wait_s = wait_s
        self.timeout_s = timeout_s
        self.invocations = 0
        self.failures_reported = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sqs-{function_name}", daemon=True)
        self._arn = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]

    def start(self) -> SqsPoller:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.wait_s + self.timeout_s + 5)

    def __enter__(self) -> SqsPoller:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def poll_once(self) -> int:
        """Receive one batch and invoke the handler; returns how many messages were received."""
        resp = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=self.wait_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = resp.get("Messages", [])
        if messages:
            self._invoke(messages)
        return len(messages)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("sqs poller for %s failed; retrying", self.function_name)
                self._stop.wait(1.0)

    def _invoke(self, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [self._record(m) for m in messages]}
        self.invocations += 1
        try:
            result = self.handler(
                event, LambdaContext(function_name=self.function_name, timeout_s=self.timeout_s)
            )
        except Exception:
            # A handler that raises fails the whole batch: nothing is deleted, all of it comes back.
            log.exception("%s raised; the whole batch will be retried", self.function_name)
            return
        failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
        self.failures_reported += len(failed)
        done = [m for m in messages if m["MessageId"] not in failed]
        for chunk_start in range(0, len(done), 10):
            chunk = done[chunk_start : chunk_start + 10]
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        attributes = message.get("Attributes", {})
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": {
                "ApproximateReceiveCount": attributes.get("ApproximateReceiveCount", "1"),
                "SentTimestamp": attributes.get("SentTimestamp", str(int(time.time() * 1000))),
                "SenderId": attributes.get("SenderId", "AIDAIENQZJOLO23YVJ4VO"),
                "ApproximateFirstReceiveTimestamp": attributes.get(
                    "ApproximateFirstReceiveTimestamp", str(int(time.time() * 1000))
                ),
            },
            "messageAttributes": {
                name: {
                    "stringValue": value.get("StringValue"),
                    "binaryValue": value.get("BinaryValue"),
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": value.get("DataType", "String"),
                }
                for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self._arn,
            "awsRegion": self._arn.split(":")[3] if self._arn.count(":") >= 3 else "us-east-1",
        }


@contextlib.contextmanager
def moto_server(port: int = 0) -> Any:
    """An in-process moto server on loopback; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        host, bound_port = server.get_host_and_port()
        url = f"http://{host}:{bound_port}"
        # moto keeps its AWS state per process, not per server: start every server from empty, so a
        # second stack in the same process never sees the first one's tables, queues or leads.
        import httpx

        httpx.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()
        yield url
    finally:
        server.stop()
