"""Realtime engines behind one interface (engines.base.Engine): Gemini Live, OpenAI Realtime, cascade.

`make_engine(settings)` builds the engine `settings.engine` names, importing only that engine's
module (and so only its dependencies). Each engine class builds itself from the bridge settings
with a `from_settings(settings)` classmethod, or failing that its constructor takes the settings.
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


def engine_class(name: str) -> type[Any]:
    try:
        module_name, class_name = ENGINES[name.strip().lower()]
    except KeyError:
        raise UnknownEngine(name) from None
    return cast(type[Any], getattr(importlib.import_module(module_name), class_name))


def make_engine(settings: Any) -> Engine:
    """One engine session for one call, of the kind `settings.engine` names."""
    cls = engine_class(str(getattr(settings, "engine", "fake")))
    build = getattr(cls, "from_settings", None)
    return cast(Engine, build(settings) if callable(build) else cls(settings))


def engine_factory(settings: Any) -> Callable[[], Engine]:
    """What BridgeServer takes: a new engine per call. Fails at once on an unknown engine name."""
    engine_class(str(getattr(settings, "engine", "fake")))
    return lambda: make_engine(settings)
