"""What an IVR script gets besides its channel: lookups, settings and the survey sink."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import aiohttp
from pydantic import BaseModel, ConfigDict

from agi.settings import AgiSettings
from crm.lookup import LookupChain, build_lookup_chain
from crm.lookup.base import LookupConfig, LookupRequest, LookupResult, LookupStatus

log = logging.getLogger("pbxcrm.agi")


class Lookup(Protocol):
    """A LookupSource, or the chain built from all `[[lookup]]` blocks."""

    async def lookup(self, request: LookupRequest) -> LookupResult: ...


class SurveyResult(BaseModel):
    """One rating; the service records it as a SURVEY step of its call, sent through the outbox."""

    model_config = ConfigDict(frozen=True)

    number: str  # the caller's number, as Asterisk gave it
    extension: str | None  # the agent who transferred the caller into the survey
    rating: int
    question: str
    at: datetime  # UTC, when the digit was read
    uniqueid: str  # the AGI channel's Uniqueid
    linkedid: str | None = None  # the call's Linkedid (= Call.call_id), when Asterisk gave it
    channel: str = ""

    def event_data(self) -> dict[str, object]:
        """The `data` of the SURVEY CallEvent (field names fixed by the design)."""
        return {
            "rating": self.rating,
            "extension": self.extension,
            "number": self.number,
            "question": self.question,
            "at": self.at.isoformat(),
        }


SurveySink = Callable[[SurveyResult], Awaitable[None]]


async def _no_sink(result: SurveyResult) -> None:
    log.error(
        "survey rating %s from %s not saved: no survey sink configured",
        result.rating,
        result.number,
    )


@dataclass(slots=True)
class ScriptContext:
    settings: AgiSettings
    # Every [[lookup]] block in order (caller_check); None = no lookup configured.
    lookup: Lookup | None = None
    # The same sources by name, for `[agi.crm_lookup] source = "..."`.
    sources: Mapping[str, Lookup] = field(default_factory=dict)
    survey_sink: SurveySink = _no_sink

    async def lookup_within_budget(self, request: LookupRequest, source: str = "") -> LookupResult:
        """Never raises and never takes longer than the budget: trouble is status ERROR."""
        target = self.sources.get(source) if source else self.lookup
        if target is None:
            what = f"lookup source {source!r}" if source else "lookup source"
            return LookupResult(status=LookupStatus.ERROR, error=f"no {what} configured")
        budget = self.settings.lookup_budget_seconds
        try:
            if isinstance(target, LookupChain):
                # The chain spends the budget only on real requests: no timer for a cache hit.
                return await target.lookup(request, budget)
            async with asyncio.timeout(budget):
                return await target.lookup(request)
        except TimeoutError:
            return LookupResult(status=LookupStatus.ERROR, error=f"no answer within {budget:g} s")
        except Exception as exc:  # a source must not raise, but a bug there must not strand a call
            log.exception("lookup source raised instead of returning ERROR")
            return LookupResult(status=LookupStatus.ERROR, error=f"{type(exc).__name__}")


def build_script_context(
    settings: AgiSettings,
    lookup_configs: Iterable[dict[str, Any] | LookupConfig],
    http: aiohttp.ClientSession,
    survey_sink: SurveySink = _no_sink,
) -> ScriptContext:
    """The context from the `[agi]` section and the `[[lookup]]` blocks (raises ValueError).

    caller_check asks the whole chain; crm_lookup may name one source, which then gets a
    chain of its own so it keeps the cache, the per-source timeout and the number formats.
    """
    chain = build_lookup_chain(list(lookup_configs), http)
    sources = {source.name: LookupChain([source]) for source in chain.sources}
    wanted = settings.crm_lookup.source
    if wanted and wanted not in sources:
        known = ", ".join(sorted(sources)) or "none"
        raise ValueError(f"[agi.crm_lookup] source {wanted!r} is not a [[lookup]] name ({known})")
    return ScriptContext(
        settings=settings,
        lookup=chain if chain.sources else None,
        sources=sources,
        survey_sink=survey_sink,
    )
