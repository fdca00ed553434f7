"""make_engine / engine_factory: the engine named by settings, built from the settings' fields."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bridge.engines import ENGINES, UnknownEngine, engine_class, engine_factory, make_engine
from bridge.engines.base import Engine


def conforms(engine: Engine) -> Engine:
    return engine


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        (SimpleNamespace(engine="fake"), "fake"),
        (SimpleNamespace(engine="local"), "cascade"),
        (SimpleNamespace(engine="cascade"), "cascade"),
        (
            SimpleNamespace(
                engine="openai",
                openai_api_key="k",
                openai_model="gpt-realtime",
                openai_realtime_url="wss://x/rt",
            ),
            "openai",
        ),
        (
            SimpleNamespace(engine="gemini", gemini_api_key="k", gemini_model="m", gemini_base_url=None),
            "gemini",
        ),
    ],
)
def test_the_named_engine_is_built(settings: SimpleNamespace, name: str) -> None:
    engine = conforms(make_engine(settings))
    assert engine.name == name
    assert engine.input_rate in (16000, 24000)
    assert engine.output_rate in (16000, 24000)


def test_one_factory_makes_a_fresh_engine_per_call() -> None:
    factory = engine_factory(SimpleNamespace(engine="local"), "fake")
    a, b = factory(), factory()
    assert a is not b
    assert a.name == b.name == "fake"


def test_unknown_engine_and_missing_key_fail_at_start() -> None:
    with pytest.raises(UnknownEngine, match="unknown engine 'whisper'"):
        engine_factory(SimpleNamespace(engine="whisper"))
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        engine_factory(SimpleNamespace(engine="openai", openai_api_key=None))
    assert {engine_class(n).__name__ for n in ENGINES} == {
        "GeminiLiveEngine",
        "OpenAIRealtimeEngine",
        "CascadeEngine",
        "FakeEngine",
    }
