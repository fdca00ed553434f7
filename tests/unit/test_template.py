"""template.yaml holds what the design promises: least privilege, partial batches, redrive, durable data,
a balancer that never cuts a call, a dashboard on metrics that exist, and no dependency cycle.

Also: the sample events in events/ stay consistent with the template's routes and the shared models.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from leadqual.campaign import Limits, builtin_campaign_path, load_campaign
from leadqual.http_api import raw_body
from leadqual.models import Lead
from leadqual.signing import verify_webhook
from leadqual.webhooks import FIRST_SETUP, LIFECYCLE, classify, parse_callback, parse_event
from local.resources import load_template

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
SAMPLE_SECRET = "sample-webhook-secret"
SAMPLE_FROM = "+254709100100"

# The metric contract (observability's METRIC names): everything the dashboard, alarms and scaling read.
CONTRACT_METRICS = {
    "CallsPlaced",
    "CallsAnswered",
    "LeadsHot",
    "LeadsCold",
    "Transfers",
    "TransfersUnconfirmed",
    "BilledSeconds",
    "CostKES",
    "TimeToFirstWordMs",
    "BridgeActiveSessions",
    "DialFailures",
    "WebhookRejected",
    "LeadsDeferred",
    "WalletBalanceMinor",
}
FUNCTIONS = ("DialerFunction", "VoiceFunction", "EventsFunction", "RoutingFunction")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]


def _props(resources: Mapping[str, Any], name: str) -> dict[str, Any]:
    return resources[name]["Properties"]


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def _statements(value: Any) -> Iterator[dict[str, Any]]:
    """Every IAM statement anywhere in `value` (roles, SAM inline policies, translated output)."""
    for node in _walk(value):
        if isinstance(node, dict) and "Statement" in node:
            statements = node["Statement"]
            yield from statements if isinstance(statements, list) else [statements]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _env(template: Mapping[str, Any], function: str) -> dict[str, Any]:
    merged = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    merged.update(_props(template["Resources"], function).get("Environment", {}).get("Variables", {}))
    return merged


def _timeout(template: Mapping[str, Any], function: str) -> int:
    return int(
        _props(template["Resources"], function).get("Timeout", template["Globals"]["Function"]["Timeout"])
    )


# ---------------------------------------------------------------- least privilege

# SAM policy templates whose expansion lists explicit actions (checked against samtranslator's
# policy_templates.json; the translated-template test below re-checks the real expansion).
# SQSSendMessagePolicy is deliberately absent: it grants sqs:SendMessage*.
EXPLICIT_POLICY_TEMPLATES = {
    "DynamoDBCrudPolicy",
    "DynamoDBReadPolicy",
    "DynamoDBWritePolicy",
    "AWSSecretsManagerGetSecretValuePolicy",
    "SNSPublishMessagePolicy",
    "SQSPollerPolicy",
}


def test_no_statement_grants_a_wildcard_action(resources: dict[str, Any]) -> None:
    statements = list(_statements(resources))
    assert len(statements) >= 7  # roles and inline function policies were found at all
    for statement in statements:
        assert "NotAction" not in statement
        for action in _as_list(statement["Action"]):
            assert isinstance(action, str)
            assert "*" not in action, f"wildcard action {action!r}"


def test_functions_use_only_explicit_policies(resources: dict[str, Any]) -> None:
    for name in FUNCTIONS:
        for policy in _props(resources, name)["Policies"]:
            assert isinstance(policy, dict), f"{name}: managed policy {policy!r} is not least privilege"
            (kind,) = policy
            assert kind == "Statement" or kind in EXPLICIT_POLICY_TEMPLATES, f"{name}: {kind}"


def test_functions_read_exactly_the_secrets_they_are_told_about(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    """Each *_SECRET_ARN variable has a GetSecretValue grant and no secret is granted without one."""
    secrets = {lid for lid, r in resources.items() if r["Type"] == "AWS::SecretsManager::Secret"}
    assert secrets == {"SautikitApiKey", "WebhookSecret", "BridgeTokenSecret", "GeminiApiKey", "OpenAIApiKey"}
    for name in FUNCTIONS:
        told = {
            value["Ref"]
            for key, value in _env(template, name).items()
            if key.endswith("_SECRET_ARN") and isinstance(value, dict)
        }
        granted = {
            p["AWSSecretsManagerGetSecretValuePolicy"]["SecretArn"]["Ref"]
            for p in _props(resources, name)["Policies"]
            if "AWSSecretsManagerGetSecretValuePolicy" in p
        }
        assert told == granted, name
        assert told <= secrets
    # The model keys only ever reach the bridge.
    for name in FUNCTIONS:
        assert _references(_props(resources, name), {"GeminiApiKey", "OpenAIApiKey"}) == set()


def test_bridge_roles_are_scoped(resources: dict[str, Any]) -> None:
    task = _props(resources, "BridgeTaskRole")["Policies"][0]["PolicyDocument"]["Statement"]
    actions = {a for s in task for a in _as_list(s["Action"])}
    assert not {"dynamodb:Scan", "dynamodb:DeleteTable"} & actions
    assert "sns:Publish" in actions
    for statement in task:
        for resource in _as_list(statement["Resource"]):
            assert resource != "*"
    secrets = _props(resources, "BridgeExecutionRole")["Policies"][0]["PolicyDocument"]["Statement"]
    (grant,) = secrets
    assert grant["Action"] == ["secretsmanager:GetSecretValue"]
    container = _props(resources, "BridgeTaskDefinition")["ContainerDefinitions"][0]
    injected = {s["ValueFrom"]["Ref"] for s in container["Secrets"]}
    assert {r["Ref"] for r in grant["Resource"]} == injected


# ---------------------------------------------------------------- queue and dialer


def test_dialer_reports_partial_batch_failures(resources: dict[str, Any]) -> None:
    dialer = _props(resources, "DialerFunction")
    assert dialer["Handler"] == "app.lambda_handler"
    assert dialer["CodeUri"].rstrip("/") == "functions/dialer"
    (event,) = dialer["Events"].values()
    assert event["Type"] == "SQS"
    props = event["Properties"]
    assert props["Queue"] == {"Fn::GetAtt": ["LeadsQueue", "Arn"]}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BatchSize"] == 10
    assert 0 < props["MaximumBatchingWindowInSeconds"] <= 30
    assert props["ScalingConfig"]["MaximumConcurrency"] >= 2


def test_visibility_timeout_is_six_times_the_dialer_timeout(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    visibility = _props(resources, "LeadsQueue")["VisibilityTimeout"]
    assert visibility >= 6 * _timeout(template, "DialerFunction")


def test_queue_redrives_to_a_longer_lived_dlq(resources: dict[str, Any]) -> None:
    queue, dlq = _props(resources, "LeadsQueue"), _props(resources, "LeadsDLQ")
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["LeadsDLQ", "Arn"]},
        "maxReceiveCount": 5,
    }
    # A message keeps its original enqueue time in the DLQ, so the DLQ must outlive the source queue.
    assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
    assert queue["SqsManagedSseEnabled"] is True
    assert dlq["SqsManagedSseEnabled"] is True


# ---------------------------------------------------------------- data


def test_main_table_follows_the_store_contract(resources: dict[str, Any]) -> None:
    table = resources["Table"]
    props = table["Properties"]
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert {(k["AttributeName"], k["KeyType"]) for k in props["KeySchema"]} == {
        ("PK", "HASH"),
        ("SK", "RANGE"),
    }
    (gsi,) = props["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "GSI1"
    assert gsi["Projection"] == {"ProjectionType": "ALL"}
    assert {(k["AttributeName"], k["KeyType"]) for k in gsi["KeySchema"]} == {
        ("GSI1PK", "HASH"),
        ("GSI1SK", "RANGE"),
    }
    assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS"}


def test_idempotency_table_matches_powertools(resources: dict[str, Any]) -> None:
    props = _props(resources, "IdempotencyTable")
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True


# ---------------------------------------------------------------- webhooks and env


def _routes(resources: Mapping[str, Any]) -> dict[str, str]:
    routes = {}
    for name in FUNCTIONS:
        for event in _props(resources, name).get("Events", {}).values():
            if event["Type"] == "HttpApi":
                p = event["Properties"]
                assert p["ApiId"] == {"Ref": "HttpApi"}
                routes[f"{p['Method']} {p['Path']}"] = name
    return routes


def test_webhook_routes(resources: dict[str, Any]) -> None:
    assert _routes(resources) == {
        "POST /voice": "VoiceFunction",
        "POST /events": "EventsFunction",
        "POST /stream-status": "EventsFunction",
    }
    for name in FUNCTIONS:
        props = _props(resources, name)
        assert props["Handler"] == "app.lambda_handler"
        assert (ROOT / props["CodeUri"]).is_dir()


def test_function_environment_names(template: dict[str, Any]) -> None:
    common = {
        "TABLE_NAME",
        "IDEMPOTENCY_TABLE",
        "SAUTIKIT_BASE_URL",
        "FROM_NUMBER",
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
    }
    expected = {
        "DialerFunction": {
            "SAUTIKIT_API_KEY_SECRET_ARN",
            "NUMBER_ID",
            "MAX_CONCURRENT_CALLS",
            "SLOT_LEASE_SECONDS",
            "QUEUE_URL",
            "VOICE_WEBHOOK_URL",
        },
        "VoiceFunction": {"WEBHOOK_SECRET_ARN", "BRIDGE_TOKEN_SECRET_ARN", "BRIDGE_URL"},
        "EventsFunction": {"SAUTIKIT_API_KEY_SECRET_ARN", "WEBHOOK_SECRET_ARN", "NUMBER_ID", "QUEUE_URL"},
        "RoutingFunction": {
            "SAUTIKIT_API_KEY_SECRET_ARN",
            "NUMBER_ID",
            "VOICE_WEBHOOK_URL",
            "EVENTS_WEBHOOK_URL",
        },
    }
    for name, names in expected.items():
        env = _env(template, name)
        assert common | names <= set(env), name
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Leadqual"
    assert _env(template, "DialerFunction")["VOICE_WEBHOOK_URL"]["Fn::Sub"].endswith("/voice")
    routing = _env(template, "RoutingFunction")
    assert routing["EVENTS_WEBHOOK_URL"]["Fn::Sub"].endswith("/events")
    bridge_url = _env(template, "VoiceFunction")["BRIDGE_URL"]["Fn::If"]
    assert all(
        branch["Fn::Sub"].startswith("wss://") and branch["Fn::Sub"].endswith("/stream")
        for branch in bridge_url[1:]
    )


def test_number_routing_custom_resource(resources: dict[str, Any]) -> None:
    routing = resources["NumberRouting"]
    assert routing["Type"] == "Custom::NumberRouting"
    props = routing["Properties"]
    assert props["ServiceToken"] == {"Fn::GetAtt": ["RoutingFunction", "Arn"]}
    assert props["RoutingUrl"]["Fn::Sub"].endswith("/voice")
    assert props["EventsUrl"]["Fn::Sub"].endswith("/events")
    assert props["NumberId"] == {"Ref": "FromNumberId"}


# ---------------------------------------------------------------- bridge


def test_load_balancer_never_cuts_a_call(resources: dict[str, Any]) -> None:
    attrs = {a["Key"]: a["Value"] for a in _props(resources, "BridgeLoadBalancer")["LoadBalancerAttributes"]}
    longest_call = Limits.model_json_schema()["properties"]["max_call_seconds"]["maximum"]
    assert int(attrs["idle_timeout.timeout_seconds"]) > longest_call


def test_draining_outlasts_a_call(template: dict[str, Any], resources: dict[str, Any]) -> None:
    tg = {a["Key"]: a["Value"] for a in _props(resources, "BridgeTargetGroup")["TargetGroupAttributes"]}
    assert tg["deregistration_delay.timeout_seconds"] == {"Ref": "BridgeDrainSeconds"}
    drain = template["Parameters"]["BridgeDrainSeconds"]
    container = _props(resources, "BridgeTaskDefinition")["ContainerDefinitions"][0]
    stop_timeout = container["StopTimeout"]
    assert stop_timeout <= 120  # Fargate's maximum
    assert drain["MinValue"] >= stop_timeout
    assert drain["Default"] > load_campaign(builtin_campaign_path("example")).limits.max_call_seconds
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert int(env["DRAIN_SECONDS"]) < stop_timeout


def test_health_checks_hit_healthz_on_the_container_port(resources: dict[str, Any]) -> None:
    tg = _props(resources, "BridgeTargetGroup")
    assert tg["HealthCheckPath"] == "/healthz"
    container = _props(resources, "BridgeTaskDefinition")["ContainerDefinitions"][0]
    (port,) = container["PortMappings"]
    assert port["ContainerPort"] == tg["Port"] == 8080
    assert "http://127.0.0.1:8080/healthz" in " ".join(container["HealthCheck"]["Command"])
    service = _props(resources, "BridgeService")
    assert service["LoadBalancers"][0]["ContainerPort"] == 8080


def test_listener_is_tls_and_forwards_the_stream(resources: dict[str, Any]) -> None:
    listener = _props(resources, "BridgeHttpsListener")
    assert (listener["Protocol"], listener["Port"]) == ("HTTPS", 443)
    assert listener["Certificates"] == [{"CertificateArn": {"Ref": "BridgeCertificateArn"}}]
    assert listener["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    rule = _props(resources, "BridgeStreamRule")
    assert "/stream" in rule["Conditions"][0]["PathPatternConfig"]["Values"]


def test_bridge_scales_on_cpu_and_live_calls(resources: dict[str, Any]) -> None:
    configs = [
        _props(resources, name)["TargetTrackingScalingPolicyConfiguration"]
        for name, r in resources.items()
        if r["Type"] == "AWS::ApplicationAutoScaling::ScalingPolicy"
    ]
    predefined = {
        c["PredefinedMetricSpecification"]["PredefinedMetricType"]
        for c in configs
        if "PredefinedMetricSpecification" in c
    }
    custom = [c["CustomizedMetricSpecification"] for c in configs if "CustomizedMetricSpecification" in c]
    assert predefined == {"ECSServiceAverageCPUUtilization"}
    assert [(c["Namespace"], c["MetricName"]) for c in custom] == [("Leadqual", "BridgeActiveSessions")]


# ---------------------------------------------------------------- watching


def _dashboard(resources: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """The DashboardBody as JSON with each `${Name}` shown as `<Name>` (and bare numbers as 0)."""
    body = _props(resources, "Dashboard")["DashboardBody"]["Fn::Sub"]
    names = set(re.findall(r"\$\{([^}]+)\}", body))
    marked = re.sub(r"\$\{([^}]+)\}", r"<\1>", body)
    return json.loads(re.sub(r":\s*<[^>]+>", ": 0", marked)), names


def _dashboard_metrics(dashboard: dict[str, Any]) -> list[list[Any]]:
    return [m for w in dashboard["widgets"] for m in w.get("properties", {}).get("metrics", [])]


def test_dashboard_charts_every_contract_metric(template: dict[str, Any], resources: dict[str, Any]) -> None:
    dashboard, _ = _dashboard(resources)
    rows = _dashboard_metrics(dashboard)
    ours = [row for row in rows if row[0] == "Leadqual"]
    assert {row[1] for row in ours} == CONTRACT_METRICS
    service = template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
    for row in ours:
        # Powertools adds exactly one default dimension, service=<POWERTOOLS_SERVICE_NAME>.
        assert row[2:4] == ["service", service], row
    assert {row[4]["stat"] for row in ours if row[1] == "TimeToFirstWordMs"} == {"p50", "p95"}
    plain = [row[:4] for row in rows]
    for function in ("DialerFunction", "VoiceFunction", "EventsFunction"):
        assert ["AWS/Lambda", "Errors", "FunctionName", f"<{function}>"] in plain
    assert ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", "<LeadsDLQ.QueueName>"] in plain
    alarm_widget = next(w for w in dashboard["widgets"] if w["type"] == "alarm")
    assert len(alarm_widget["properties"]["alarms"]) == 3


def test_bridge_reports_metrics_under_the_same_service(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    service = template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
    container = _props(resources, "BridgeTaskDefinition")["ContainerDefinitions"][0]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["POWERTOOLS_SERVICE_NAME"] == service
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Leadqual"
    scaling = _props(resources, "BridgeSessionsScaling")["TargetTrackingScalingPolicyConfiguration"]
    assert scaling["CustomizedMetricSpecification"]["Dimensions"] == [{"Name": "service", "Value": service}]


def test_dashboard_substitutions_name_real_things(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    _, names = _dashboard(resources)
    known = set(resources) | set(template["Parameters"])
    for name in names:
        base = name.split(".")[0]
        assert name.startswith("AWS::") or base in known, name
    assert "LeadsDLQ.QueueName" in names


def test_alarms_and_their_topic(template: dict[str, Any], resources: dict[str, Any]) -> None:
    alarms = {n: r["Properties"] for n, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert set(alarms) == {"DlqNotEmptyAlarm", "FunctionErrorRateAlarm", "LowWalletAlarm"}
    for props in alarms.values():
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    dlq = alarms["DlqNotEmptyAlarm"]
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["LeadsDLQ", "QueueName"]}}]
    assert (dlq["Threshold"], dlq["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    wallet = alarms["LowWalletAlarm"]
    assert (wallet["Namespace"], wallet["MetricName"]) == ("Leadqual", "WalletBalanceMinor")
    assert wallet["Threshold"] == {"Ref": "LowWalletThresholdMinor"}
    assert wallet["ComparisonOperator"] == "LessThanThreshold"
    rate = alarms["FunctionErrorRateAlarm"]["Metrics"]
    assert [m["Id"] for m in rate if m.get("ReturnData")] == ["rate"]
    counted = {m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"] for m in rate if "MetricStat" in m}
    assert counted == {"DialerFunction", "VoiceFunction", "EventsFunction"}
    subscription = resources["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert template["Conditions"]["HasAlarmEmail"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]
    }


def test_outputs(template: dict[str, Any]) -> None:
    assert {
        "LeadsQueueUrl",
        "VoiceWebhookUrl",
        "EventsWebhookUrl",
        "BridgeUrl",
        "DashboardUrl",
        "BridgeRepositoryUri",
        "TableName",
    } <= set(template["Outputs"])


# ---------------------------------------------------------------- dependency cycles

_SUB_NAMES = re.compile(r"\$\{([^}!][^}]*)\}")


def _references(value: Any, names: set[str]) -> set[str]:
    found: set[str] = set()
    for node in _walk(value):
        if not isinstance(node, dict):
            continue
        if isinstance(node.get("Ref"), str):
            found.add(node["Ref"])
        if "Fn::GetAtt" in node:
            target = node["Fn::GetAtt"]
            found.add(target[0] if isinstance(target, list) else target.split(".")[0])
        if "Fn::Sub" in node:
            sub = node["Fn::Sub"]
            text = sub[0] if isinstance(sub, list) else sub
            found |= {n.split(".")[0] for n in _SUB_NAMES.findall(text)}
    return found & names


def _cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _sam_dependency_graph(template: Mapping[str, Any]) -> dict[str, set[str]]:
    """Resource -> resources it depends on, including the edge SAM adds from an HttpApi to each
    function routed on it (the API's OpenAPI body embeds the function ARN)."""
    resources = template["Resources"]
    names = set(resources)
    graph = {}
    for name, spec in resources.items():
        # A function's Events become their own resources (permissions, event source mappings); they
        # do not make the function depend on its API or queue.
        props = {k: v for k, v in spec.get("Properties", {}).items() if k != "Events"}
        graph[name] = _references(props, names) | set(_as_list(spec.get("DependsOn", [])))
    for name, spec in resources.items():
        for event in spec.get("Properties", {}).get("Events", {}).values():
            if event["Type"] == "HttpApi":
                graph[event["Properties"]["ApiId"]["Ref"]].add(name)
    for name in names:
        globals_env = template.get("Globals", {}).get("Function", {})
        if resources[name]["Type"] == "AWS::Serverless::Function":
            graph[name] |= _references(globals_env, names)
    return graph


def test_no_dependency_cycle(template: dict[str, Any]) -> None:
    assert _cycle(_sam_dependency_graph(template)) is None


def test_the_cycle_check_catches_a_webhook_that_names_its_own_api(template: dict[str, Any]) -> None:
    """The trap this guards: `sam validate --lint` passes it, CloudFormation refuses it."""
    broken = json.loads(json.dumps(template))
    env = broken["Resources"]["VoiceFunction"]["Properties"]["Environment"]["Variables"]
    env["EVENTS_WEBHOOK_URL"] = {
        "Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/events"
    }
    assert _cycle(_sam_dependency_graph(broken)) == ["HttpApi", "VoiceFunction", "HttpApi"]


_TRANSLATE = r"""
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

class NoManagedPolicies:
    def load(self):
        return {}

template = yaml_parse(sys.stdin.read())
for spec in template["Resources"].values():
    props = spec.get("Properties", {})
    for key in ("CodeUri", "ContentUri"):
        if isinstance(props.get(key), str):
            props[key] = "s3://bucket/" + props[key].strip("/")
print(json.dumps(transform(template, json.loads(sys.argv[1]), NoManagedPolicies())))
"""


def test_translated_template_has_no_cycle_and_no_wildcard_action() -> None:
    """The real SAM transform (the SAM CLI's own samtranslator), offline, as CloudFormation will see it."""
    sam_python = ROOT / ".tools" / "sam" / "bin" / "python"
    assert sam_python.exists(), "the SAM CLI is missing: run `make install`"
    parameters = {
        "FromNumber": "+254709100100",
        "FromNumberId": "n",
        "BridgeImageUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/bridge:1",
        "BridgeCertificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/x",
        "VpcId": "vpc-1",
        "PublicSubnetIds": ["subnet-1", "subnet-2"],
        "BridgeSubnetIds": ["subnet-3"],
    }
    result = subprocess.run(
        [str(sam_python), "-c", _TRANSLATE, json.dumps(parameters)],
        input=(ROOT / "template.yaml").read_text(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "AWS_DEFAULT_REGION": "eu-west-1", "SAM_CLI_TELEMETRY": "0"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    translated = json.loads(result.stdout)
    resources = translated["Resources"]
    assert "AWS::Serverless::Function" not in {r["Type"] for r in resources.values()}
    graph = {
        name: _references(spec.get("Properties", {}), set(resources))
        | set(_as_list(spec.get("DependsOn", [])))
        for name, spec in resources.items()
    }
    assert _cycle(graph) is None
    statements = list(_statements(resources))
    assert len(statements) > 10
    for statement in statements:
        for action in _as_list(statement.get("Action", [])):
            assert "*" not in action, action


# ---------------------------------------------------------------- layer requirements


def _requirement_name(line: str) -> str:
    return re.split(r"[=<>!~\[ ;]", line, maxsplit=1)[0].lower().replace("_", "-")


def test_layer_requirements_mirror_pyproject_and_the_lock() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    core = {_requirement_name(dep): dep for dep in pyproject["project"]["dependencies"]}
    lines = [
        line.strip()
        for line in (ROOT / "layers/shared/requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    layer = {_requirement_name(line): line for line in lines}
    assert set(layer) == set(core)
    for name, line in layer.items():
        extras = re.search(r"\[[^\]]+\]", core[name])
        assert (extras.group(0) if extras else "") in line, f"{name}: extras differ from pyproject"
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {pkg["name"]: pkg["version"] for pkg in lock["package"]}
    for name, line in layer.items():
        assert line.endswith(f"=={locked[name]}"), f"{line!r} is not pinned to uv.lock's {locked[name]}"


def test_function_requirements_add_nothing() -> None:
    """Everything comes from the layer; a package here would be a second, unpinned copy."""
    for name in ("dialer", "voice", "events", "routing"):
        text = (ROOT / "functions" / name / "requirements.txt").read_text()
        assert [line for line in text.splitlines() if line.strip() and not line.startswith("#")] == []


# ---------------------------------------------------------------- sample events


def _event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def _verify_sample(event: Mapping[str, Any]) -> None:
    header = event["headers"]["x-sautikit-signature"]
    t = int(header.split(",")[0].removeprefix("t="))
    verify_webhook(SAMPLE_SECRET, raw_body(event), header, now=t)


def test_sqs_sample_carries_valid_leads() -> None:
    records = _event("sqs_leads_batch.json")["Records"]
    assert len(records) == 3
    for record in records:
        Lead.model_validate_json(record["body"])
        assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()  # noqa: S324 - SQS's own checksum
        assert record["eventSource"] == "aws:sqs"
    assert len({r["messageId"] for r in records}) == 3


HTTP_SAMPLES = {
    "voice_answer_form.json": "POST /voice",
    "voice_lifecycle_completed.json": "POST /voice",
    "events_envelope_completed.json": "POST /events",
    "events_switch_body.json": "POST /events",
    "stream_status.json": "POST /stream-status",
}


@pytest.mark.parametrize(("name", "route"), sorted(HTTP_SAMPLES.items()))
def test_http_samples_hit_a_template_route_and_are_signed(
    resources: dict[str, Any], name: str, route: str
) -> None:
    event = _event(name)
    assert event["version"] == "2.0"
    assert event["routeKey"] == event["requestContext"]["routeKey"] == route
    assert route in _routes(resources)
    assert int(event["headers"]["content-length"]) == len(raw_body(event))
    _verify_sample(event)


def test_voice_samples_parse_as_first_setup_then_lifecycle() -> None:
    answer, completed = _event("voice_answer_form.json"), _event("voice_lifecycle_completed.json")
    fields = dict(parse_qsl(raw_body(answer).decode()))
    assert {
        "sessionId",
        "callerNumber",
        "destinationNumber",
        "callSessionState",
        "direction",
        "isActive",
        "clientRequestId",
    } <= set(fields)
    first = parse_callback(
        raw_body(answer), answer["headers"]["content-type"], answer["queryStringParameters"]
    )
    assert first.client_request_id == "lq-lead-0001-1"
    assert classify(first, [SAMPLE_FROM]) == FIRST_SETUP
    last = parse_callback(
        raw_body(completed), completed["headers"]["content-type"], completed["queryStringParameters"]
    )
    assert last.session_id == first.session_id
    assert classify(last, [SAMPLE_FROM]) == LIFECYCLE


def test_event_samples_parse_in_their_shapes() -> None:
    shapes = {}
    for name in ("events_envelope_completed.json", "events_switch_body.json", "stream_status.json"):
        event = _event(name)
        parsed = parse_event(raw_body(event), event["headers"]["content-type"], event["headers"])
        assert parsed.session_id == "HD_3f9a1c2b7d4e"
        assert parsed.client_request_id == "lq-lead-0001-1"
        shapes[name] = parsed
    envelope = shapes["events_envelope_completed.json"]
    assert envelope.shape == "envelope"
    assert envelope.is_final
    assert envelope.duration_seconds == 96
    assert envelope.event_id_source == "header"
    assert shapes["events_switch_body.json"].shape == "switch"
    assert shapes["events_switch_body.json"].raw_kind == "StreamStopped"
    assert shapes["stream_status.json"].shape == "stream"


@pytest.mark.parametrize("kind", ["create", "update", "delete"])
def test_custom_resource_samples_match_the_template(resources: dict[str, Any], kind: str) -> None:
    event = _event(f"custom_resource_{kind}.json")
    assert event["RequestType"] == kind.capitalize()
    assert event["ResourceType"] == resources["NumberRouting"]["Type"]
    assert event["LogicalResourceId"] == "NumberRouting"
    assert set(event["ResourceProperties"]) == set(_props(resources, "NumberRouting"))
    assert all(isinstance(v, str) for v in event["ResourceProperties"].values())
    assert event["ResponseURL"].startswith("https://")
    if kind != "create":
        assert event["PhysicalResourceId"]


def test_every_event_file_is_covered() -> None:
    covered = (
        set(HTTP_SAMPLES)
        | {"sqs_leads_batch.json"}
        | {f"custom_resource_{k}.json" for k in ("create", "update", "delete")}
    )
    assert {p.name for p in EVENTS.glob("*.json")} == covered


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
