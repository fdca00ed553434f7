"""Number routing: the custom resource (Create/Update idempotent, Delete leaves routing alone, every
outcome PUT to CloudFormation's ResponseURL) and `leadqual configure-number`, over scripted HTTP."""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from functions.routing import app as routing_app
from leadqual.commands import configure_number
from leadqual.errors import SettingsError
from leadqual.routing import RoutingApi
from leadqual.sautikit import NO_RETRY, SautikitClient

EVENTS = Path(__file__).resolve().parents[3] / "events"
NUMBER_ID = "01973400-0f1e-7a2b-8c3d-4e5f6a7b8c9d"
VOICE = "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/voice"
EVENTS_URL = "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/events"
API_KEY = "sk_test_routing"


class FakeSautikit:
    """Records every request; answers PATCH /v1/numbers/{id} like the platform, or with `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[httpx.Request] = []
        self.numbers: dict[str, dict[str, Any]] = {NUMBER_ID: {"id": NUMBER_ID, "e164": "+254709100100"}}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return httpx.Response(401, json={"error": {"code": "auth.invalid", "message": "bad key"}})
        if self.status >= 400:
            return httpx.Response(
                self.status, json={"error": {"code": "number.not_found", "message": "no such number"}}
            )
        number_id = request.url.path.rsplit("/", 1)[-1]
        if number_id not in self.numbers:
            return httpx.Response(
                404, json={"error": {"code": "number.not_found", "message": "no such number"}}
            )
        self.numbers[number_id].update(json.loads(request.content))
        return httpx.Response(200, json=self.numbers[number_id])

    def client(self, api_key: str = API_KEY) -> SautikitClient:
        return SautikitClient(
            "https://api.sautikit.test",
            api_key,
            http=httpx.Client(transport=httpx.MockTransport(self)),
            retry=NO_RETRY,
        )


class FakeS3:
    """The pre-signed ResponseURL: records what CloudFormation would receive."""

    def __init__(self) -> None:
        self.puts: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.puts.append(request)
        return httpx.Response(200)

    @property
    def body(self) -> dict[str, Any]:
        [put] = self.puts
        assert put.method == "PUT"
        assert put.headers.get("content-type") == ""  # the URL is signed without a content type
        return dict(json.loads(put.content))


def sample(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))


def invoke(event: dict[str, Any], api: Callable[[], RoutingApi]) -> tuple[dict[str, Any], FakeS3]:
    s3 = FakeS3()
    deps = routing_app.Deps(api=api, http=httpx.Client(transport=httpx.MockTransport(s3)))
    routing_app.handle(event, None, deps=deps)
    return s3.body, s3


def test_create_sets_the_routing_and_reports_success() -> None:
    sautikit = FakeSautikit()
    event = sample("custom_resource_create")
    body, s3 = invoke(event, sautikit.client)

    [patch] = sautikit.requests
    assert (patch.method, patch.url.path) == ("PATCH", f"/v1/numbers/{NUMBER_ID}")
    assert json.loads(patch.content) == {"routing_url": VOICE, "events_url": EVENTS_URL}
    assert str(s3.puts[0].url) == event["ResponseURL"]
    assert body["Status"] == "SUCCESS"
    assert body["PhysicalResourceId"] == NUMBER_ID
    for key in ("StackId", "RequestId", "LogicalResourceId"):
        assert body[key] == event[key]
    assert body["Data"] == {"NumberId": NUMBER_ID, "RoutingUrl": VOICE}


def test_update_is_idempotent_and_keeps_the_resource_for_the_same_number() -> None:
    sautikit = FakeSautikit()
    event = sample("custom_resource_update")
    first, _ = invoke(event, sautikit.client)
    second, _ = invoke(event, sautikit.client)

    assert first == second
    assert first["Status"] == "SUCCESS"
    assert first["PhysicalResourceId"] == event["PhysicalResourceId"]
    assert [json.loads(r.content) for r in sautikit.requests] == [
        {"routing_url": VOICE, "events_url": EVENTS_URL}
    ] * 2

    moved = sample("custom_resource_update")
    moved["OldResourceProperties"]["NumberId"] = "0197-old-number"
    body, _ = invoke(moved, sautikit.client)
    assert (
        body["PhysicalResourceId"] == NUMBER_ID
    )  # a new number is a new resource; CloudFormation deletes the old


def test_delete_leaves_the_routing_alone() -> None:
    def no_api() -> RoutingApi:
        raise AssertionError("Delete must not touch the number")

    event = sample("custom_resource_delete")
    body, _ = invoke(event, no_api)
    assert body["Status"] == "SUCCESS"
    assert body["PhysicalResourceId"] == event["PhysicalResourceId"]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda: FakeSautikit(status=404).client(),
            "404 number.not_found no such number — check FromNumberId (GET /v1/numbers lists the workspace's numbers)",
        ),
        (
            lambda: FakeSautikit().client(api_key="wrong"),
            "401 auth.invalid bad key — check the Sautikit API key secret",
        ),
    ],
)
def test_platform_refusals_fail_with_a_reason_to_act_on(
    make: Callable[[], RoutingApi], expected: str
) -> None:
    body, _ = invoke(sample("custom_resource_create"), make)
    assert body["Status"] == "FAILED"
    assert body["Reason"] == f"Sautikit refused to set the routing of number {NUMBER_ID}: {expected}"
    assert body["PhysicalResourceId"] == NUMBER_ID


def test_broken_configuration_and_missing_properties_still_answer_cloudformation() -> None:
    def unconfigured() -> RoutingApi:
        raise SettingsError(
            "RoutingSettings: SAUTIKIT_API_KEY_SECRET_ARN: no such secret",
            variable="SAUTIKIT_API_KEY_SECRET_ARN",
        )

    body, _ = invoke(sample("custom_resource_create"), unconfigured)
    assert body["Status"] == "FAILED"
    assert "SAUTIKIT_API_KEY_SECRET_ARN: no such secret" in body["Reason"]

    event = sample("custom_resource_create")
    del event["ResourceProperties"]["RoutingUrl"]
    body, _ = invoke(event, FakeSautikit().client)
    assert body["Status"] == "FAILED"
    assert body["Reason"] == "cannot set the routing of the number: the resource needs RoutingUrl"


def test_configure_number_runs_the_same_operation(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("NUMBER_ID", "EVENTS_WEBHOOK_URL", "SAUTIKIT_API_KEY_SECRET_ARN", "SAUTIKIT_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SAUTIKIT_API_KEY", API_KEY)
    monkeypatch.setenv("VOICE_WEBHOOK_URL", VOICE)
    sautikit = FakeSautikit()
    http = httpx.Client(transport=httpx.MockTransport(sautikit))
    args = argparse.Namespace(
        number_id=NUMBER_ID,
        routing_url=None,
        events_url=EVENTS_URL,
        base_url="https://api.sautikit.test",
        api_key=None,
    )

    assert configure_number.run(args, http=http) == 0
    assert json.loads(sautikit.requests[0].content) == {"routing_url": VOICE, "events_url": EVENTS_URL}
    assert json.loads(capsys.readouterr().out)["routing_url"] == VOICE

    args.number_id = "nope"
    assert configure_number.run(args, http=http) == 1
    assert "no such number" in capsys.readouterr().err

    monkeypatch.delenv("VOICE_WEBHOOK_URL")
    assert configure_number.run(args, http=http) == 2
    assert "VOICE_WEBHOOK_URL: not set" in capsys.readouterr().err
