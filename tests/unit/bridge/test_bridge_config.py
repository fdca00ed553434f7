"""BridgeConfig from leadqual.settings.BridgeSettings, and `python -m bridge`'s config loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.__main__ import load_config
from bridge.ports import BridgeConfig
from leadqual.errors import SettingsError
from leadqual.settings import BridgeSettings

ENV = {
    "HOST": "127.0.0.1",
    "PORT": "9000",
    "ENGINE": "local",
    "BRIDGE_TOKEN_SECRET": "tok",
    "DRAIN_SECONDS": "42",
    "TABLE_NAME": "leadqual-table",
    "SAUTIKIT_API_KEY": "sk",
    "REP_NOTIFY_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:reps",
}


def test_config_takes_the_settings_fields() -> None:
    settings = BridgeSettings.from_env(ENV)
    cfg = BridgeConfig.from_settings(settings)
    assert (cfg.host, cfg.port, cfg.engine, cfg.drain_seconds) == ("127.0.0.1", 9000, "local", 42.0)
    assert cfg.bridge_token_secret == "tok"
    assert cfg.rep_notify_topic_arn == ENV["REP_NOTIFY_TOPIC_ARN"]
    assert isinstance(cfg.campaigns_dir, Path)
    assert (cfg.campaigns_dir / "example.yaml").is_file()
    assert cfg.ping_interval_s == 15.0  # SAUTIKIT.md §5: ping every ~15 s
    assert BridgeConfig.from_settings(cfg) is cfg


def test_engine_fake_is_accepted_at_the_edge() -> None:
    _, cfg = load_config({**ENV, "ENGINE": "fake"})
    assert cfg.engine == "fake"
    with pytest.raises(SettingsError, match="ENGINE"):
        load_config({**ENV, "ENGINE": "nonsense"})
