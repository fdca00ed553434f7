"""Settings: read once from a given environment, errors name the variable, secrets by value or ARN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from leadqual.errors import SettingsError
from leadqual.settings import (
    BridgeSettings,
    DialerSettings,
    EventsSettings,
    RoutingSettings,
    VoiceSettings,
    builtin_campaigns_dir,
    secret_arn_variable,
)

COMMON = {
    "TABLE_NAME": "leadqual",
    "SAUTIKIT_API_KEY": "sk_test_123",
    "WEBHOOK_SECRET": "whsec_abc",
    "FROM_NUMBER": "+254711000000",
}
DIALER = {
    **COMMON,
    "IDEMPOTENCY_TABLE": "leadqual-idem",
    "QUEUE_URL": "http://127.0.0.1:5000/123456789012/leads",
}
VOICE = {**COMMON, "BRIDGE_URL": "wss://bridge.example.com/stream", "BRIDGE_TOKEN_SECRET": "bt_secret"}
BRIDGE = {"TABLE_NAME": "leadqual", "SAUTIKIT_API_KEY": "sk_test_123", "BRIDGE_TOKEN_SECRET": "bt_secret"}


def error(cls: Any, env: dict[str, str], **kw: Any) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        cls.from_env(env, **kw)
    assert not info.value.retryable
    return info.value


def test_dialer_defaults() -> None:
    s = DialerSettings.from_env(DIALER)
    assert s.table_name == "leadqual"
    assert s.sautikit_base_url == "https://api.sautikit.com"
    assert s.sautikit_api_key == "sk_test_123"
    assert s.webhook_secret == "whsec_abc"
    assert s.from_number == "+254711000000"
    assert s.campaigns_dir == builtin_campaigns_dir()
    assert (s.campaigns_dir / "example.yaml").is_file()
    assert (s.max_concurrent_calls, s.slot_lease_seconds) == (10, 900)
    assert s.voice_webhook_url is None
    assert s.idempotency_table == "leadqual-idem"
    assert s.queue_url == DIALER["QUEUE_URL"]


def test_dialer_overrides_and_types(tmp_path: Path) -> None:
    env = {
        **DIALER,
        "SAUTIKIT_BASE_URL": "http://127.0.0.1:8123/",
        "MAX_CONCURRENT_CALLS": "3",
        "SLOT_LEASE_SECONDS": "120",
        "VOICE_WEBHOOK_URL": "https://api.example.com/voice",
        "CAMPAIGNS_DIR": str(tmp_path),
        "NUMBER_ID": "0190-abc",
    }
    s = DialerSettings.from_env(env)
    assert s.sautikit_base_url == "http://127.0.0.1:8123"  # no trailing slash: the client appends paths
    assert (s.max_concurrent_calls, s.slot_lease_seconds) == (3, 120)
    assert s.voice_webhook_url == "https://api.example.com/voice"
    assert s.campaigns_dir == tmp_path
    assert s.number_id == "0190-abc"


def test_every_missing_variable_is_named_at_once() -> None:
    err = error(DialerSettings, {})
    text = str(err)
    assert text.startswith("DialerSettings: ")
    for var in ("TABLE_NAME", "FROM_NUMBER", "IDEMPOTENCY_TABLE", "QUEUE_URL"):
        assert f"{var}: not set" in text
    assert "SAUTIKIT_API_KEY: not set (set SAUTIKIT_API_KEY or SAUTIKIT_API_KEY_SECRET_ARN)" in text
    assert "WEBHOOK_SECRET" not in text  # the dialer receives no webhooks (template: no secret for it)
    assert err.variable in {"SAUTIKIT_API_KEY", "TABLE_NAME"}
    events_err = str(error(EventsSettings, {}))
    assert "WEBHOOK_SECRET: not set (set WEBHOOK_SECRET or WEBHOOK_SECRET_ARN)" in events_err


def test_empty_values_count_as_unset() -> None:
    err = error(DialerSettings, {**DIALER, "TABLE_NAME": "  "})
    assert err.variable == "TABLE_NAME"
    assert "TABLE_NAME: not set" in str(err)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("MAX_CONCURRENT_CALLS", "ten", "MAX_CONCURRENT_CALLS: Input should be a valid integer"),
        ("MAX_CONCURRENT_CALLS", "0", "MAX_CONCURRENT_CALLS: Input should be greater than or equal to 1"),
        ("SLOT_LEASE_SECONDS", "5", "SLOT_LEASE_SECONDS: Input should be greater than or equal to 30"),
        (
            "FROM_NUMBER",
            "0711000000",
            "FROM_NUMBER: must be an E.164 number like +254711000000 (got '0711000000')",
        ),
        ("QUEUE_URL", "leads", "QUEUE_URL: must be a http:// or https:// URL (got 'leads')"),
        ("SAUTIKIT_BASE_URL", "ftp://x", "SAUTIKIT_BASE_URL: must be a http:// or https:// URL"),
        ("VOICE_WEBHOOK_URL", "https://", "VOICE_WEBHOOK_URL: must be a http:// or https:// URL"),
        ("CAMPAIGNS_DIR", "/no/such/dir", "CAMPAIGNS_DIR: is not a directory"),
    ],
)
def test_bad_values_name_the_variable_and_the_value(var: str, value: str, message: str) -> None:
    err = error(DialerSettings, {**DIALER, var: value})
    assert err.variable == var
    assert message in str(err)


def test_secrets_by_arn_go_through_the_resolver_and_never_into_errors_or_reprs() -> None:
    env = {**DIALER, "SAUTIKIT_API_KEY_SECRET_ARN": "arn:aws:secretsmanager:k", "WEBHOOK_SECRET_ARN": "arn:w"}
    del env["SAUTIKIT_API_KEY"], env["WEBHOOK_SECRET"]
    seen: list[str] = []

    def resolver(arn: str) -> str:
        seen.append(arn)
        return {"arn:aws:secretsmanager:k": "sk_from_arn", "arn:w": "wh_from_arn"}[arn]

    s = DialerSettings.from_env(env, secrets=resolver)
    assert (s.sautikit_api_key, s.webhook_secret) == ("sk_from_arn", "wh_from_arn")
    assert sorted(seen) == ["arn:aws:secretsmanager:k", "arn:w"]
    assert "sk_from_arn" not in repr(s)
    assert "wh_from_arn" not in str(s)


def test_a_direct_value_wins_over_an_arn_and_the_resolver_is_not_called() -> None:
    def resolver(arn: str) -> str:
        raise AssertionError("must not resolve")

    s = DialerSettings.from_env({**DIALER, "SAUTIKIT_API_KEY_SECRET_ARN": "arn:k"}, secrets=resolver)
    assert s.sautikit_api_key == "sk_test_123"


def test_unknown_or_unreadable_secrets_name_the_arn_variable() -> None:
    env = {**DIALER, "WEBHOOK_SECRET_ARN": "arn:missing"}
    del env["WEBHOOK_SECRET"]
    err = error(DialerSettings, env, secrets={})
    assert err.variable == "WEBHOOK_SECRET_ARN"
    assert "WEBHOOK_SECRET_ARN: no such secret" in str(err)
    assert "WEBHOOK_SECRET: not set" not in str(err)

    def broken(arn: str) -> str:
        raise TimeoutError("secretsmanager timed out")

    err = error(DialerSettings, env, secrets=broken)
    assert "WEBHOOK_SECRET_ARN: cannot read the secret (TimeoutError)" in str(err)


def test_invalid_secret_values_are_not_echoed() -> None:
    err = error(VoiceSettings, {**VOICE, "BRIDGE_URL": "https://not-a-socket"})
    assert "BRIDGE_URL: must be a ws:// or wss:// URL (got 'https://not-a-socket')" in str(err)
    assert "bt_secret" not in str(err)
    assert "whsec_abc" not in str(err)


def test_arn_variable_names() -> None:
    assert secret_arn_variable("WEBHOOK_SECRET") == "WEBHOOK_SECRET_ARN"
    assert secret_arn_variable("BRIDGE_TOKEN_SECRET") == "BRIDGE_TOKEN_SECRET_ARN"
    assert secret_arn_variable("SAUTIKIT_API_KEY") == "SAUTIKIT_API_KEY_SECRET_ARN"


def test_voice_settings() -> None:
    env = dict(VOICE)
    del env["SAUTIKIT_API_KEY"]  # the voice webhook calls no API
    s = VoiceSettings.from_env(env)
    assert s.sautikit_api_key is None
    assert s.bridge_url == "wss://bridge.example.com/stream"
    assert s.bridge_token_secret == "bt_secret"
    assert s.events_webhook_url is None
    assert (s.output_sample_rate, s.bidirectional_sample_rate, s.bridge_token_ttl_seconds) == (
        16000,
        16000,
        900,
    )
    local = VoiceSettings.from_env(
        {
            **env,
            "BRIDGE_URL": "ws://127.0.0.1:8080/stream",
            "OUTPUT_SAMPLE_RATE": "8000",
            "EVENTS_WEBHOOK_URL": "http://127.0.0.1:3000/stream-status",
        }
    )
    assert local.output_sample_rate == 8000
    assert local.events_webhook_url == "http://127.0.0.1:3000/stream-status"
    err = error(VoiceSettings, {**env, "OUTPUT_SAMPLE_RATE": "44100"})
    assert err.variable == "OUTPUT_SAMPLE_RATE"
    err = error(VoiceSettings, {k: v for k, v in env.items() if k != "BRIDGE_TOKEN_SECRET"})
    assert "BRIDGE_TOKEN_SECRET: not set (set BRIDGE_TOKEN_SECRET or BRIDGE_TOKEN_SECRET_ARN)" in str(err)


def test_events_settings() -> None:
    s = EventsSettings.from_env({**COMMON, "QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/leads"})
    assert s.queue_url.endswith("/leads")
    assert error(EventsSettings, COMMON).variable == "QUEUE_URL"


def test_routing_settings() -> None:
    env = {
        "SAUTIKIT_API_KEY_SECRET_ARN": "arn:k",
        "NUMBER_ID": "0190c0de",
        "VOICE_WEBHOOK_URL": "https://api.example.com/voice",
        "EVENTS_WEBHOOK_URL": "https://api.example.com/events",
    }
    s = RoutingSettings.from_env(env, secrets={"arn:k": "sk"})
    assert (s.sautikit_api_key, s.number_id) == ("sk", "0190c0de")
    assert s.events_webhook_url == "https://api.example.com/events"
    err = error(RoutingSettings, {}, secrets={})
    assert "NUMBER_ID: not set" in str(err)
    assert "VOICE_WEBHOOK_URL: not set" in str(err)


def test_bridge_defaults() -> None:
    s = BridgeSettings.from_env(BRIDGE)
    assert (s.host, s.port, s.engine, s.drain_seconds) == ("0.0.0.0", 8080, "local", 300)  # noqa: S104
    assert s.gemini_model.startswith("gemini-")
    assert s.openai_model == "gpt-realtime"
    assert s.openai_realtime_url == "wss://api.openai.com/v1/realtime"
    assert s.gemini_base_url is None
    assert s.rep_notify_topic_arn is None
    assert s.campaigns_dir == builtin_campaigns_dir()
    assert s.from_number is None


def test_bridge_engines_need_their_keys() -> None:
    err = error(BridgeSettings, {**BRIDGE, "ENGINE": "gemini"})
    assert err.variable == "GEMINI_API_KEY"
    assert "GEMINI_API_KEY: needed for ENGINE=gemini" in str(err)
    err = error(BridgeSettings, {**BRIDGE, "ENGINE": "openai"})
    assert err.variable == "OPENAI_API_KEY"
    err = error(BridgeSettings, {**BRIDGE, "ENGINE": "whisper"})
    assert err.variable == "ENGINE"
    assert "'local', 'gemini', 'openai' or 'fake'" in str(err)
    assert BridgeSettings.from_env({**BRIDGE, "ENGINE": "fake"}).engine == "fake"
    s = BridgeSettings.from_env(
        {
            **BRIDGE,
            "ENGINE": "gemini",
            "GEMINI_API_KEY_SECRET_ARN": "arn:g",
            "GEMINI_BASE_URL": "https://127.0.0.1:9443",
            "PORT": "0",
            "DRAIN_SECONDS": "110",
            "REP_NOTIFY_TOPIC_ARN": "arn:aws:sns:eu-west-1:1:reps",
        },
        secrets={"arn:g": "gk"},
    )
    assert (s.engine, s.gemini_api_key, s.gemini_base_url, s.port, s.drain_seconds) == (
        "gemini",
        "gk",
        "https://127.0.0.1:9443",
        0,
        110,
    )
    assert s.rep_notify_topic_arn == "arn:aws:sns:eu-west-1:1:reps"
    assert "gk" not in repr(s)


def test_from_env_reads_os_environ_only_when_called(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in BRIDGE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PORT", "9999")
    assert BridgeSettings.from_env().port == 9999
    monkeypatch.setenv("PORT", "9998")
    assert BridgeSettings.from_env().port == 9998


def test_models_are_frozen_and_constructible_by_name() -> None:
    s = BridgeSettings.model_validate(
        {"table_name": "tbl", "sautikit_api_key": "k", "bridge_token_secret": "b"}
    )
    assert s.port == 8080
    with pytest.raises(ValueError, match="frozen"):
        s.port = 1


def test_the_default_resolver_reads_secrets_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws

    for key, value in {
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        arn = boto3.client("secretsmanager").create_secret(Name="webhook", SecretString="wh_from_sm")["ARN"]
        env = {**DIALER, "WEBHOOK_SECRET_ARN": arn}
        del env["WEBHOOK_SECRET"]
        assert DialerSettings.from_env(env).webhook_secret == "wh_from_sm"


def test_bridge_cascade_parts_are_offline_unless_a_backend_url_is_given() -> None:
    offline = BridgeSettings.from_env(BRIDGE)
    assert offline.cascade_stt_url is None
    assert offline.cascade_llm_url is None
    hosted = BridgeSettings.from_env(
        {
            **BRIDGE,
            "CASCADE_STT_URL": "http://stt.internal:8000",
            "CASCADE_API_KEY": "k",
            "CASCADE_VOICE": "en",
        }
    )
    assert hosted.cascade_stt_url == "http://stt.internal:8000"
    assert "cascade_api_key" not in repr(hosted)  # a bearer token stays out of logs
