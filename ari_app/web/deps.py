"""What the HTTP port needs from the rest of pbxcrm, handed in by whoever starts it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ari_app.agent.board import AgentBoard
    from ari_app.app.settings import Settings
    from ari_app.calls.pipeline import Pipeline
    from ari_app.calls.recording_links import RecordingLinkSigner
    from ari_app.originate.service import OriginateService
    from crm.recordings.library import RecordingLibrary
    from crm.store.interface import CallStore


@dataclass(slots=True)
class HttpDeps:
    settings: Settings  # the root settings: [http] plus [calls] (recording_dir) and [pbx] id
    store: CallStore | None = None  # history reads through its read connection
    originate_service: OriginateService | None = None  # None: click-to-call answers 503
    lookup: Any | None = None
    metrics_registry: CollectorRegistry | None = None  # None: prometheus_client's default
    pipeline: Pipeline | None = None  # None: 3CX journal and notes answer 503
    agent_board: AgentBoard | None = None  # None: the /agent screen pop answers 503
    recordings: RecordingLibrary | None = None  # None: MixMonitor's files served as they are
    # Checks the `<slot>` of `/<slot>/recording/<file>`; None: no signed link opens anything.
    recording_links: RecordingLinkSigner | None = None


DEPS_KEY = web.AppKey("pbxcrm_http_deps", HttpDeps)
