"""`pbxcrm run`: the store, the CRM adapters and outbox, the PBX source, the HTTP port and
FastAGI, started together and stopped in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp

from ari_app.ami import AmiClient
from ari_app.ami_events import tracked_frame_filter
from ari_app.pipeline import Pipeline
from ari_app.settings import Settings
from crm import metrics
from crm.adapters.base import Adapter, build_adapter
from crm.store import Store

log = logging.getLogger("pbxcrm")

SWEEP_INTERVAL_SECONDS = 60.0


class Service:
    """Everything `pbxcrm run` starts. `send` False keeps deliveries queued (replay dry runs)."""

    def __init__(
        self,
        settings: Settings,
        *,
        send: bool = True,
        http_session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.settings = settings
        self.send = send
        self._own_session = http_session is None
        self._session = http_session
        self.store: Store | None = None
        self.adapters: list[Adapter] = []
        self.outbox: Any = None  # crm.outbox.Outbox when delivering
        self.pipeline: Pipeline | None = None
        self.ami: AmiClient | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.settings
        self.store = await Store.open(settings.store)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self.adapters = [
            build_adapter(config, self._session) for config in settings.crm if config.enabled
        ]
        self.pipeline = Pipeline(
            settings.calls,
            self.store,
            self.adapters,
            pbx_id=settings.pbx.id,
            source=settings.pbx.source,
        )
        await self.pipeline.restore()
        if self.send and self.adapters:
            from crm.outbox import Outbox

            self.outbox = Outbox(
                self.store, {adapter.name: adapter for adapter in self.adapters}, settings.outbox
            )
            await self.outbox.start()
        self._sweeper = asyncio.create_task(self._sweep_forever())
        await self._start_source()

    async def _start_source(self) -> None:
        pipeline = self.pipeline
        assert pipeline is not None
        ami_settings = self.settings.pbx.ami
        pbx_id = self.settings.pbx.id

        async def reconcile() -> None:
            metrics.ami_connected.labels(pbx_id).set(1)
            assert self.ami is not None
            # The channel list tells which calls ended while we were away and which go on.
            response = await self.ami.send_action(
                {"Action": "CoreShowChannels"}, timeout=ami_settings.action_timeout_seconds
            )
            if not response.ok:
                log.error("CoreShowChannels refused (%s): open calls not reconciled",
                          response.message)
                return
            for frame in response.events:
                pipeline.on_ami_frame(frame)
            if response.complete is not None:
                pipeline.on_ami_frame(response.complete)

        def disconnected(reason: str) -> None:
            metrics.ami_connected.labels(pbx_id).set(0)
            pipeline.on_disconnected(reason)

        self.ami = AmiClient(
            ami_settings,
            on_frame=pipeline.on_ami_frame,
            on_connected=reconcile,
            on_disconnected=disconnected,
            frame_filter=tracked_frame_filter(),
        )
        await self.ami.start()

    async def _sweep_forever(self) -> None:
        assert self.pipeline is not None
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
            self.pipeline.sweep()

    async def stop(self) -> None:
        if self.ami is not None:
            await self.ami.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.pipeline is not None:
            await self.pipeline.drain()
        if self.outbox is not None:
            await self.outbox.stop()
        for adapter in self.adapters:
            await adapter.close()
        if self.store is not None:
            await self.store.close()
        if self._own_session and self._session is not None:
            await self._session.close()
