"""Realtime engines behind one interface (engines.base.Engine): Gemini Live, OpenAI Realtime, cascade.

`engine_factory(settings, name)` returns what BridgeServer takes: a callable making one engine
per call, of the kind `name` (default `settings.engine`) names. Only that engine's module is
imported, so only its dependencies load. Process-wide resources (the google-genai client) are
made once per factory. An engine class with a `from_settings(settings)` classmethod builds
itself; otherwise the builder below reads the BridgeSettings fields it needs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, cast

from bridge.engines.base import Engine

ENGINES: dict[str, tuple[str, str]] = {
    "gemini": ("bridge.engines.gemini", "GeminiLiveEngine"),
    "openai": ("bridge.engines.openai_realtime", "OpenAIRealtimeEngine"),
    "cascade": ("bridge.engines.cascade", "CascadeEngine"),
    "local": ("bridge.engines.cascade", "CascadeEngine"),  # the offline cascade, models shipped in packages
    "fake": ("bridge.engines.fake", "FakeEngine"),
}


class UnknownEngine(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown engine {name!r}; one of: {', '.join(sorted(ENGINES))}")
        self.name = name


def _key(name: str) -> str:
    key = name.strip().lower()
    if key not in ENGINES:
        raise UnknownEngine(name)
    return key


def engine_class(name: str) -> type[Any]:
    module_name, class_name = ENGINES[_key(name)]
    return cast(type[Any], getattr(importlib.import_module(module_name), class_name))


def _need(settings: Any, field: str) -> Any:
    value = getattr(settings, field, None)
    if not value:
        raise ValueError(f"{field.upper()} is needed for this engine")
    return value


def _builder(name: str, settings: Any) -> Callable[[], Engine]:
    key = _key(name)
    cls = engine_class(key)
    from_settings = getattr(cls, "from_settings", None)
    if callable(from_settings):
        return lambda: cast(Engine, from_settings(settings))
    if key == "gemini":
        from bridge.engines.gemini import make_client

        client = make_client(
            _need(settings, "gemini_api_key"), base_url=getattr(settings, "gemini_base_url", None)
        )
        model = getattr(settings, "gemini_model", None)
        kwargs = {"model": model} if model else {}
        return lambda: cast(Engine, cls(client, **kwargs))
    if key == "openai":
        api_key = _need(settings, "openai_api_key")
        kwargs = {
            k: v
            for k, v in (
                ("model", getattr(settings, "openai_model", None)),
                ("url", getattr(settings, "openai_realtime_url", None)),
            )
            if v
        }
        return lambda: cast(Engine, cls(api_key, **kwargs))
    # cascade/local and fake take no settings: their parts ship with the image.
    return lambda: cast(Engine, cls())


def engine_factory(settings: Any, name: str | None = None) -> Callable[[], Engine]:
    """A new engine per call. Fails at once on an unknown name or missing key, and imports the
    engine's module now, so a missing dependency shows at start rather than on the first call."""
    return _builder(name or str(getattr(settings, "engine", "fake")), settings)


def make_engine(settings: Any, name: str | None = None) -> Engine:
    """One engine for one call (builds the engine's shared resources each time; prefer
    `engine_factory` in a server)."""
    return engine_factory(settings, name)()
