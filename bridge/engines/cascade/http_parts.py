"""Cascade parts backed by self-hosted, OpenAI-compatible HTTP services (production swaps).

- `OpenAICompatibleSTT`: `POST {base}/v1/audio/transcriptions` (multipart WAV), e.g.
  faster-whisper-server, speaches, vLLM, whisper.cpp's server.
- `OpenAICompatibleTTS`: `POST {base}/v1/audio/speech` (`response_format` pcm or wav), e.g.
  Kokoro-FastAPI, openedai-speech, speaches.
- `LLMDialog`: `POST {base}/v1/chat/completions` with the call's tools (vLLM, llama.cpp server,
  Ollama, TGI): the model speaks and calls record_answer / end_call like a realtime model would.

`base_url` may end in `/v1` or not. Each part takes an injected `httpx.AsyncClient` (shared
connection pool, tests) or makes its own; `aclose()` closes only a client the part made.
Transient failures (connection errors, timeouts, 429, 5xx) are retried once; then, and for other
4xx, `HttpPartError` carries the status and whether retrying could help.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import wave
from typing import Any

import httpx
import numpy as np

from bridge.engines.base import SessionContext, ToolCall
from bridge.engines.cascade.interviewer import END_CALL, DialogAction, Speak
from bridge.engines.cascade.tts import resample_pcm

log = logging.getLogger("bridge.cascade")


class HttpPartError(RuntimeError):
    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


def endpoint(base_url: str, path: str) -> str:
    """`path` ("/v1/…") under `base_url`, which may already end in /v1."""
    base = base_url.rstrip("/")
    if base.endswith("/v1") and path.startswith("/v1/"):
        path = path[3:]
    return base + path


def pcm_to_wav(pcm: bytes, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def wav_to_pcm(data: bytes) -> tuple[bytes, int]:
    """Mono S16LE and its rate from a WAV file (stereo is mixed down)."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise HttpPartError(f"not a WAV file: {exc}") from exc
    if width != 2:
        raise HttpPartError(f"WAV sample width {width * 8} bits; expected 16")
    if channels > 1:
        samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels).astype(np.int32)
        frames = (samples.sum(axis=1) // channels).astype("<i2").tobytes()
    return frames, rate


class _HttpPart:
    def __init__(
        self, base_url: str, api_key: str, client: httpx.AsyncClient | None, timeout_s: float
    ) -> None:
        self.base_url = base_url
        self._api_key = api_key
        self._client = client
        self._owns_client = client is None
        self._timeout_s = timeout_s

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout_s)
        return self._client

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _post(self, path: str, **kwargs: Any) -> httpx.Response:
        url = endpoint(self.base_url, path)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        for attempt in (1, 2):
            try:
                response = await self._http().post(url, headers=headers, timeout=self._timeout_s, **kwargs)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if attempt == 1:
                    await asyncio.sleep(0.2)
                    continue
                raise HttpPartError(f"POST {path}: {type(exc).__name__}", retryable=True) from exc
            status = response.status_code
            if status < 400:
                return response
            retryable = status in (408, 429) or status >= 500
            if retryable and attempt == 1:
                await asyncio.sleep(0.2)
                continue
            raise HttpPartError(
                f"POST {path}: HTTP {status}: {response.text[:200]}", status=status, retryable=retryable
            )
        raise AssertionError("unreachable")  # pragma: no cover - the second attempt returns or raises


class OpenAICompatibleSTT(_HttpPart):
    """Speech-to-text over `/v1/audio/transcriptions`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        *,
        language: str = "en",
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        super().__init__(base_url, api_key, client, timeout_s)
        self.model = model
        self.language = language

    async def transcribe(self, pcm: bytes, rate: int, *, prompt: str = "") -> str:
        data = {"model": self.model, "response_format": "json", "language": self.language, "temperature": "0"}
        if prompt:
            data["prompt"] = prompt
        files = {"file": ("utterance.wav", pcm_to_wav(pcm, rate), "audio/wav")}
        response = await self._post("/v1/audio/transcriptions", data=data, files=files)
        if "json" in response.headers.get("content-type", ""):
            body = response.json()
            text = body.get("text", "") if isinstance(body, dict) else ""
            return str(text).strip()
        return response.text.strip()

    async def warm_up(self) -> None:
        return None  # a remote service is already warm, or warms itself


class OpenAICompatibleTTS(_HttpPart):
    """Text-to-speech over `/v1/audio/speech`; `pcm` responses are S16LE mono at `pcm_rate`
    (24 kHz in OpenAI's API), `wav` responses carry their own rate."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        voice: str,
        *,
        response_format: str = "pcm",
        pcm_rate: int = 24000,
        speed: float | None = None,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        if response_format not in ("pcm", "wav"):
            raise ValueError("response_format must be 'pcm' or 'wav'")
        super().__init__(base_url, api_key, client, timeout_s)
        self.model = model
        self.voice = voice
        self.response_format = response_format
        self.pcm_rate = pcm_rate
        self.speed = speed

    @property
    def key(self) -> str:
        return f"http:{self.base_url}:{self.model}:{self.voice}:{self.speed}"

    async def synthesize(self, text: str, rate: int) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "input": text,
            "voice": self.voice,
            "response_format": self.response_format,
        }
        if self.speed is not None:
            body["speed"] = self.speed
        response = await self._post("/v1/audio/speech", json=body)
        if self.response_format == "wav":
            pcm, source_rate = wav_to_pcm(response.content)
        else:
            pcm, source_rate = response.content, self.pcm_rate
        pcm = pcm[: len(pcm) - len(pcm) % 2]
        return await asyncio.to_thread(resample_pcm, pcm, source_rate, rate)

    async def warm_up(self) -> None:
        return None


class LLMDialog(_HttpPart):
    """The dialog as an OpenAI-compatible chat model with tools (the call's ToolSpecs).

    The conversation is kept as chat messages: the call's instructions as the system message,
    the bridge's lines and the model's replies as assistant messages, transcripts as user
    messages, tool results as tool messages. After a `wrap_up` result the model is not asked
    again: the bridge speaks the closing line.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        *,
        temperature: float = 0.2,
        max_tokens: int = 300,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        super().__init__(base_url, api_key, client, timeout_s)
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.messages: list[dict[str, Any]] = []
        self._tools: list[dict[str, Any]] = []
        self._pending: set[str] = set()  # tool call ids awaiting their results
        self._wrap_up = False
        self._deferred: list[str] = []  # what the lead said while results were outstanding
        self._ended = False
        self._ids = 0

    async def start(self, ctx: SessionContext) -> None:
        self.messages = [{"role": "system", "content": ctx.instructions}]
        self._tools = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            }
            for t in ctx.tools
        ]

    async def close(self) -> None:
        self._ended = True
        await self.aclose()

    async def on_agent_said(self, text: str) -> None:
        self.messages.append({"role": "assistant", "content": text})

    async def on_partial_text(self, text: str) -> list[DialogAction]:
        return []

    async def on_user_text(self, text: str, *, overlapped: bool = False) -> list[DialogAction]:
        if self._ended:
            return []
        if self._pending:
            self._deferred.append(text)
            return []
        self.messages.append({"role": "user", "content": text})
        if overlapped:
            return []  # said over the agent: context for the next turn, not a turn of its own
        return await self._complete()

    async def on_tool_result(self, call: ToolCall, result: dict[str, Any]) -> list[DialogAction]:
        if call.call_id not in self._pending:
            return []
        self._pending.discard(call.call_id)
        self.messages.append({"role": "tool", "tool_call_id": call.call_id, "content": json.dumps(result)})
        if result.get("status") == "wrap_up" or call.name == END_CALL:
            self._wrap_up = True
        if self._pending:
            return []
        if self._wrap_up:
            self._ended = True
            return []
        for text in self._deferred:
            self.messages.append({"role": "user", "content": text})
        self._deferred.clear()
        return await self._complete()

    async def _complete(self) -> list[DialogAction]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self._tools:
            body["tools"] = self._tools
            body["tool_choice"] = "auto"
        response = await self._post("/v1/chat/completions", json=body)
        try:
            message = response.json()["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise HttpPartError(f"chat completion without a message: {response.text[:200]}") from exc
        content = message.get("content") or ""
        tool_calls = message.get("tool_calls") or []
        kept: dict[str, Any] = {"role": "assistant", "content": content or None}
        actions: list[DialogAction] = []
        if content.strip():
            actions.append(Speak(content.strip()))
        calls = []
        for raw in tool_calls:
            function = raw.get("function") or {}
            self._ids += 1
            call_id = str(raw.get("id") or f"llm-{self._ids}")
            try:
                args = json.loads(function.get("arguments") or "{}")
            except json.JSONDecodeError:
                args = {"_raw": function.get("arguments")}
            if not isinstance(args, dict):
                args = {"_raw": args}
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": function.get("name", ""),
                        "arguments": function.get("arguments") or "{}",
                    },
                }
            )
            self._pending.add(call_id)
            actions.append(ToolCall(call_id=call_id, name=str(function.get("name", "")), args=args))
        if calls:
            kept["tool_calls"] = calls
        self.messages.append(kept)
        return actions
