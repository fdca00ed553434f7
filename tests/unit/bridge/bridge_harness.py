"""A hermetic harness for one Conversation: an in-memory socket, the fake engine, recording ports.

Imported by the tests beside it (pytest puts this directory on sys.path)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from bridge.audio import frame_bytes, silence, tone
from bridge.conversation import CallIdentity, Conversation, Services
from bridge.engines.fake import FakeEngine
from bridge.ports import BridgeConfig
from bridge.testing import MemoryStore, RecordingCarrier, RecordingNotifier
from leadqual.campaign import Campaign
from leadqual.models import Lead
from leadqual.normalise import normalise_answer
from leadqual.scoring import score

SID = "HD_0123456789ab"
LEAD = Lead(lead_id="L1", phone="+254711000111", name="Wanjiku Kamau", company="Duka Ltd", opt_in=True)


class FakeSocket:
    """The media socket, in memory: tests push inbound frames, the conversation's sends are kept."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.sent: list[tuple[float, str | bytes]] = []
        self.closed_with: tuple[int, str] | None = None
        self.sent_after_close = 0
        self._loop = asyncio.get_running_loop()

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[str | bytes]:
        while True:
            msg = await self.inbox.get()
            if msg is None:
                return
            yield msg

    async def recv(self) -> str | bytes:
        msg = await self.inbox.get()
        assert msg is not None
        return msg

    async def send(self, message: str | bytes) -> None:
        if self.closed_with is not None:
            self.sent_after_close += 1
        self.sent.append((self._loop.time(), message))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed_with is None:
            self.closed_with = (code, reason)
            self.inbox.put_nowait(None)

    def carrier_closes(self) -> None:
        self.inbox.put_nowait(None)

    def audio(self) -> list[bytes]:
        return [m for _, m in self.sent if isinstance(m, bytes)]

    def texts(self) -> list[str]:
        return [m for _, m in self.sent if isinstance(m, str)]


class DictCampaigns:
    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign

    def load(self, campaign_id: str) -> Campaign:
        assert campaign_id == self.campaign.id
        return self.campaign


def fallback_voice(text: str, rate: int, language: str) -> bytes | None:
    return tone(330.0, 200, rate)


class Harness:
    def __init__(
        self,
        campaign: Campaign,
        engine: FakeEngine,
        *,
        carrier: RecordingCarrier | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.store = MemoryStore()
        self.store.add_call(LEAD, SID)
        self.carrier = carrier or RecordingCarrier()
        self.notifier = RecordingNotifier()
        self.metrics: list[str] = []
        self.engines_made = 0
        cfg = replace(
            BridgeConfig(bridge_token_secret="s3cret"),
            playout_margin_s=0.02,
            hangup_close_grace_s=0.2,
            **(config or {}),
        )

        def factory() -> FakeEngine:
            self.engines_made += 1
            return engine

        self.services = Services(
            config=cfg,
            engine_factory=factory,
            store=self.store,
            carrier=self.carrier,
            notifier=self.notifier,
            campaigns=DictCampaigns(campaign),
            normalise=normalise_answer,
            score=score,
            write_metrics=self.metrics.append,
            synthesise=fallback_voice,
        )
        self.ws: FakeSocket | None = None
        self.conv: Conversation | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Harness:
        self.ws = FakeSocket()
        self.conv = Conversation(self.ws, CallIdentity(SID), self.services)
        self.carrier.on_hangup = lambda _sid: self.ws.carrier_closes() if self.ws else None
        self.task = asyncio.create_task(self.conv.run())
        return self

    async def agent_done(self, limit_s: float = 5.0) -> None:
        """Wait until the engine is up and the agent's last reply has been heard."""
        loop = asyncio.get_running_loop()
        await self.until(
            lambda: (
                self.engine.started is not None
                and self.conv is not None
                and self.conv.metrics.turns > 0
                and not self.conv._in_turn
                and self.conv.clock.remaining(loop.time()) == 0
            ),
            limit_s,
        )

    async def speak(self, ms: int = 200, quiet_ms: int = 400) -> None:
        assert self.ws is not None
        pcm = tone(220.0, ms, 16000) + silence(quiet_ms, 16000)
        size = frame_bytes(16000)
        for i in range(0, len(pcm), size):
            self.ws.inbox.put_nowait(pcm[i : i + size])
        await asyncio.sleep(0)

    async def finished(self, limit_s: float = 10.0) -> None:
        assert self.task is not None
        async with asyncio.timeout(limit_s):
            await self.task

    async def until(self, predicate: Any, limit_s: float = 5.0) -> None:
        async with asyncio.timeout(limit_s):
            while True:
                if predicate():
                    return
                await asyncio.sleep(0.005)
