"""`pbxcrm run`: the store, the CRM adapters and outbox, the PBX source (AMI or ARI), the HTTP
port and FastAGI, started together and stopped in reverse order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from agi.context import ScriptContext, SurveyResult, build_script_context
from agi.fastagi import FastAgiServer, start_fastagi
from ari_app.agent.board import AgentBoard
from ari_app.app.gc_tuning import settle_after_start
from ari_app.app.http_server import bound_port, start_http
from ari_app.app.settings import Settings
from ari_app.calls.pipeline import Pipeline
from ari_app.calls.recording_links import load_or_create_key
from ari_app.calls.survey_spool import SurveySpoolReader
from ari_app.originate.ami_backend import AmiOriginateBackend
from ari_app.originate.model import OriginateRecord
from ari_app.originate.record_log import StoreOriginateLog
from ari_app.originate.relay import OriginateRelay
from ari_app.originate.service import OriginateService
from ari_app.pbx.ami.client import AmiClient
from ari_app.pbx.ami.events import tracked_frame_filter
from ari_app.pbx.extension_owner import ExtensionOwners
from ari_app.web.deps import HttpDeps
from crm import metrics
from crm.dialects.base import Adapter
from crm.dialects.registry import build_adapter
from crm.model import Call, Direction, EventKind
from crm.shutdown import cancel_and_wait, finish_within
from crm.store.factory import backend_of, open_store
from crm.store.interface import CallStore

if TYPE_CHECKING:
    from crm.recordings.library import RecordingLibrary

log = logging.getLogger("pbxcrm")

SWEEP_INTERVAL_SECONDS = 60.0
# Past ring + grace a live instance has closed its request; this much more covers clock skew
# between instances sharing a store.
ORPHAN_MARGIN_SECONDS = 60.0
SPOOL_INTERVAL_SECONDS = 2.0


class Service:
    """Everything `pbxcrm run` starts. `send` False keeps deliveries queued (replay dry runs)."""

    def __init__(
        self,
        settings: Settings,
        *,
        send: bool = True,
        http_session: aiohttp.ClientSession | None = None,
        follow_pbx: bool = True,
        settle_gc: bool = False,
    ) -> None:
        self.settings = settings
        self.send = send
        # `pbxcrm run` only: a process that starts many services (the tests) keeps its defaults.
        self.settle_gc = settle_gc
        # False: no AMI/ARI connection; events come from elsewhere (an ARI capture replayed).
        self.follow_pbx = follow_pbx
        self._own_session = http_session is None
        self._session = http_session
        self.store: CallStore | None = None
        self.adapters: list[Adapter] = []
        self.outbox: Any = None  # crm.delivery.outbox.Outbox when delivering
        self.pipeline: Pipeline | None = None
        self.agent_board: AgentBoard | None = None  # the /agent screen pop's live cards
        self.ami: AmiClient | None = None
        self.ari: Any = None  # ari_app.pbx.ari.client.AriClient when pbx.source = "ari"
        self.originate: OriginateService | None = None
        self.scripts: ScriptContext | None = None
        self.fastagi: FastAgiServer | None = None
        self.http: web.AppRunner | None = None
        self.recordings: RecordingLibrary | None = None  # with a [recordings] section
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: list[Callable[[], Awaitable[object]]] = []

    @property
    def http_port(self) -> int:
        assert self.http is not None
        return bound_port(self.http)

    async def start(self) -> None:
        settings = self.settings
        # [store] url selects PostgreSQL (several instances share it); else SQLite at path.
        self.store = await open_store(settings.store)
        if self._session is None:
            # aiohttp's default of 100 connections for all CRMs together would cap deliveries
            # below what the [[crm]] concurrency settings ask for.
            wanted = sum(config.concurrency for config in settings.crm if config.enabled)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=max(100, wanted + 20))
            )
        self.adapters = [
            build_adapter(config, self._session) for config in settings.crm if config.enabled
        ]
        # Recording links are signed with pbxcrm's own key, kept in the store (shared by every
        # instance on it), so the CRM never holds a credential (ari_app/calls/recording_links.py).
        link_key = await load_or_create_key(self.store)
        self.pipeline = Pipeline(
            settings.calls.with_recording_key(link_key),
            self.store,
            self.adapters,
            pbx_id=settings.pbx.id,
            source=settings.pbx.source,
        )
        await self.pipeline.restore()
        self._start_recordings()
        agent = settings.http.agent
        self.agent_board = AgentBoard(
            directions=agent.directions,
            keep_ended_seconds=agent.keep_ended_minutes * 60,
            max_ended_per_extension=agent.max_ended_cards,
        )
        self.pipeline.add_call_listener(self.agent_board.on_call_event)
        if self.send and self.adapters:
            from crm.delivery.outbox import Outbox

            self.outbox = Outbox(
                self.store, {adapter.name: adapter for adapter in self.adapters}, settings.outbox
            )
            await self.outbox.start()
        self.scripts = build_script_context(
            settings.agi, settings.lookup, self._session, survey_sink=self.record_survey
        )
        self._tasks.append(asyncio.create_task(self._every(SWEEP_INTERVAL_SECONDS, self._sweep)))
        self._tasks.append(
            asyncio.create_task(self._every(settings.calls.heartbeat_seconds, self._heartbeat))
        )
        spool = SurveySpoolReader(
            settings.agi.survey_spool, self.store, self.record_survey, pbx_id=settings.pbx.id
        )
        self._tasks.append(asyncio.create_task(self._every(SPOOL_INTERVAL_SECONDS, spool.poll)))
        await self._sweep_originates()  # what a killed run left ringing gets its ending now
        if self.settle_gc:
            settle_after_start()  # before the PBX's first event
        if not self.follow_pbx:
            pass
        elif settings.pbx.source == "ari":
            await self._start_ari()
        else:
            await self._start_ami()
        if self.originate is not None:
            # A click-to-call's status answers how its call ended, once it has.
            self.pipeline.add_call_listener(self.originate.on_call_event)
        if settings.agi.enabled:
            self.fastagi = await start_fastagi(settings.agi, self.scripts)
        if settings.http.enabled:
            self.http = await start_http(
                HttpDeps(
                    settings,
                    store=self.store,
                    originate_service=self.originate,
                    lookup=self.scripts.lookup,
                    metrics_registry=metrics.REGISTRY,
                    pipeline=self.pipeline,
                    agent_board=self.agent_board,
                    recordings=self.recordings,
                    recording_links=self.pipeline.tracker.rules.recording_links,
                )
            )
            log.info("HTTP port on %s:%d", settings.http.host, self.http_port)

    def _start_recordings(self) -> None:
        """`[recordings]`: the file check before the final record is stored, conversion after
        it, uploads for the adapters that send files, and the retention sweep."""
        recordings = self.settings.recordings
        if recordings is None:
            return
        from crm.recordings import retention
        from crm.recordings.library import RecordingLibrary, attach

        assert self.pipeline is not None and self.store is not None
        library = self.recordings = RecordingLibrary(recordings, self.settings.calls.recording_dir)
        self.pipeline.set_event_check(library.check_completed)
        self.pipeline.add_call_listener(library.on_call_event)
        attach(self.adapters, library)
        store = self.store

        async def sweep() -> None:
            await retention.sweep(library, store, store.now())

        if recordings.keep_days > 0 or not recordings.keep_original:
            interval = recordings.sweep_interval_minutes * 60
            self._tasks.append(asyncio.create_task(self._every(interval, sweep)))

    async def _start_ami(self) -> None:
        pipeline = self.pipeline
        store = self.store
        assert pipeline is not None and store is not None
        ami_settings = self.settings.pbx.ami
        pbx_id = self.settings.pbx.id

        # Events that arrive while the channel list is outstanding wait for it: they happened
        # after the channels it lists, and a Hangup read in the same chunk as the list's end
        # would otherwise reach the tracker before the call it ends.
        held: list[dict[str, str]] | None = None

        def on_frame(frame: dict[str, str]) -> None:
            if held is not None:
                held.append(frame)
            else:
                pipeline.on_ami_frame(frame)

        async def reconcile() -> None:
            nonlocal held
            metrics.ami_connected.labels(pbx_id).set(1)
            assert self.ami is not None
            held = []
            try:
                await channel_list()
            finally:
                frames, held = held, None
                for frame in frames:
                    pipeline.on_ami_frame(frame)

        async def channel_list() -> None:
            assert self.ami is not None
            # The channel list tells which calls ended while we were away and which go on.
            response = await self.ami.send_action(
                {"Action": "CoreShowChannels"}, timeout=ami_settings.action_timeout_seconds
            )
            if not response.ok:
                log.error(
                    "CoreShowChannels refused (%s): open calls not reconciled", response.message
                )
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
            on_frame=on_frame,
            on_connected=reconcile,
            on_disconnected=disconnected,
            frame_filter=tracked_frame_filter(),
        )
        originate_log = StoreOriginateLog(store)
        owners = await self._extension_owners()
        self.originate = OriginateService(
            self.settings.http.originate,
            AmiOriginateBackend(self.ami),
            agent_pattern=self.settings.calls.internal_extension_pattern,
            log_store=originate_log,
            action_timeout=ami_settings.action_timeout_seconds,
            owners=owners,
        )
        pipeline.add_frame_listener(self.originate.on_frame)
        self.originate.add_send_listener(self._tell_tracker_the_number)
        self._closers.append(self.originate.close)
        await self.ami.start()
        self._start_relay(owners, originate_log)

    async def _start_ari(self) -> None:
        from ari_app.originate.ari_backend import AriOriginateBackend
        from ari_app.pbx.ari.client import AriClient
        from ari_app.pbx.ari.stasis import StasisApp

        pipeline, store, scripts = self.pipeline, self.store, self.scripts
        assert pipeline is not None and store is not None and scripts is not None
        ari_settings = self.settings.pbx.ari
        stasis: StasisApp | None = None

        def on_stasis(event: Any) -> None:
            if stasis is not None:
                stasis.handle(event)

        self.ari = AriClient(ari_settings, on_event=pipeline.on_channel_event, on_stasis=on_stasis)
        backend = AriOriginateBackend(self.ari)
        originate_log = StoreOriginateLog(store)
        owners = await self._extension_owners()
        self.originate = OriginateService(
            self.settings.http.originate,
            backend,
            agent_pattern=self.settings.calls.internal_extension_pattern,
            log_store=originate_log,
            action_timeout=self.settings.pbx.ari.request_timeout_seconds,
            owners=owners,
        )
        backend.bind(self.originate)
        self.originate.add_send_listener(self._tell_tracker_the_number)
        stasis = StasisApp(self.ari, scripts, originate=backend)
        self._closers.extend([self.originate.close, stasis.close, backend.close])
        await self.ari.start()
        self._start_relay(owners, originate_log)

    def _tell_tracker_the_number(self, record: OriginateRecord) -> None:
        if self.pipeline is not None:
            self.pipeline.tracker.expect_originate(record.id, record.dial_number)

    async def _extension_owners(self) -> ExtensionOwners | None:
        """Click-to-call routing between PBXs; only a shared (PostgreSQL) store has peers."""
        if backend_of(self.settings.store) != "postgresql":
            return None
        assert self.store is not None
        pbx = self.settings.pbx
        owners = ExtensionOwners(self.store, pbx.id, pbx.extensions)
        await owners.publish()
        return owners

    def _start_relay(
        self, owners: ExtensionOwners | None, originate_log: StoreOriginateLog
    ) -> None:
        """Send the click-to-calls other instances queued for our PBX (ari_app.originate.relay)."""
        if owners is None or self.originate is None:
            return
        pbx = self.settings.pbx
        relay = OriginateRelay(
            self.originate, originate_log, pbx.id, max_age_seconds=pbx.relay_max_age_seconds
        )

        async def poll() -> None:
            await relay.poll()

        self._tasks.append(asyncio.create_task(self._every(pbx.relay_poll_seconds, poll)))

    async def record_survey(self, result: SurveyResult) -> None:
        """A survey rating from the IVR becomes a SURVEY step of its call (saveSurvey etc.)."""
        assert self.pipeline is not None
        call_key = result.linkedid or result.uniqueid
        # A survey on a call pbxcrm never saw (AMI down, or surveys only) still reaches the CRM.
        fallback = Call(
            call_id=call_key,
            pbx_id=self.settings.pbx.id,
            source="agi",
            direction=Direction.INBOUND,
            caller_number=result.number,
            agent_extension=result.extension,
            start_time=result.at,
        )
        await self.pipeline.add_call_event(
            call_key,
            EventKind.SURVEY,
            data=result.event_data(),
            extension=result.extension,
            at=result.at,
            fallback_call=fallback,
        )

    async def _every(self, seconds: float, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:
                log.exception("periodic job %s failed; will try again", job)

    async def _heartbeat(self) -> None:
        assert self.pipeline is not None
        await self.pipeline.heartbeat()

    async def _sweep(self) -> None:
        assert self.pipeline is not None
        self.pipeline.sweep()
        await self._sweep_originates()

    async def _sweep_originates(self) -> None:
        """Click-to-calls a stopped instance (this one before a restart, or a peer on a shared
        store) left pending or ringing never get an outcome: fail them once no live instance
        can still be following them, so the CRM polling their state sees an end."""
        assert self.store is not None
        originate = self.settings.http.originate
        horizon = originate.ring_seconds + originate.outcome_grace_seconds + ORPHAN_MARGIN_SECONDS
        try:
            failed = await self.store.fail_stale_originates(
                self.store.now() - horizon, "no outcome: the pbxcrm instance following it stopped"
            )
        except Exception:
            log.exception("could not close click-to-calls left by a stopped instance")
            return
        if failed:
            log.warning("closed %d click-to-call(s) a stopped pbxcrm left without outcome", failed)

    async def stop(self) -> None:
        # Each step is bounded (crm.shutdown): one stuck part must not hang SIGTERM, and the
        # steps after it (the store's last commit above all) must still run.
        if self.http is not None:
            await finish_within(self.http.cleanup(), "stopping the HTTP port")
        if self.fastagi is not None:
            await finish_within(self.fastagi.stop(), "stopping FastAGI")
        if self.ami is not None:
            await finish_within(self.ami.stop(), "stopping the AMI client")
        for closer in reversed(self._closers):
            await finish_within(closer(), f"closing {closer!r}")
        if self.ari is not None:
            await finish_within(self.ari.stop(), "stopping the ARI client")
        await cancel_and_wait(self._tasks, "periodic jobs")
        if self.pipeline is not None:
            await finish_within(self.pipeline.drain(), "writing the last call steps")
        if self.outbox is not None:
            await finish_within(self.outbox.stop(), "stopping the outbox")
        if self.recordings is not None:  # after the outbox: an upload may wait for a file
            await finish_within(self.recordings.close(), "closing the recordings library")
        for adapter in self.adapters:
            await finish_within(adapter.close(), f"closing CRM adapter {adapter!r}")
        if self.store is not None:
            await finish_within(self.store.close(), "closing the store")
        if self._own_session and self._session is not None:
            await finish_within(self._session.close(), "closing the CRM HTTP session")
