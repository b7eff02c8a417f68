"""Ask lookup sources in order: per-source timeout, number formats tried in turn, TTL cache."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
from cachetools import TTLCache

from crm.lookup.base import (
    LOOKUP_KINDS,
    LookupConfig,
    LookupRequest,
    LookupResult,
    LookupSource,
    LookupStatus,
)
from crm.numbers import NUMBER_STYLES, format_number

log = logging.getLogger(__name__)

_CACHEABLE = frozenset({LookupStatus.FOUND, LookupStatus.NOTFOUND, LookupStatus.MULTIPLE})


def parse_lookup_config(
    raw: dict[str, Any] | LookupConfig, context: dict[str, Any] | None = None
) -> LookupConfig:
    """Validate one `[[lookup]]` block against its kind's model (raises ValueError)."""
    import crm.lookup  # noqa: F401 - registers the built-in lookup sources

    if isinstance(raw, LookupConfig):
        config = raw
    else:
        kind = raw.get("type")
        if kind not in LOOKUP_KINDS:
            known = ", ".join(sorted(LOOKUP_KINDS))
            raise ValueError(f"unknown lookup type {kind!r}; known types: {known}")
        config = LOOKUP_KINDS[kind].config_model.model_validate(raw, context=context)
    bad = [style for style in config.number_formats if style not in NUMBER_STYLES]
    if bad:
        raise ValueError(
            f"lookup {config.name or config.type}: unknown number format(s) {', '.join(bad)}; "
            f"use {', '.join(NUMBER_STYLES)}"
        )
    if not config.name:
        config.name = config.type
    return config


class LookupChain:
    """The `[[lookup]]` blocks as one source: first FOUND or MULTIPLE answer wins."""

    def __init__(
        self, sources: list[LookupSource], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.sources = sources
        self._clock = clock
        # Bounded per source: a call centre sees tens of thousands of distinct callers a day,
        # and an entry nobody asks for again must not stay until the process ends.
        self._caches: dict[str, TTLCache[tuple[Any, ...], LookupResult]] = {
            source.name: TTLCache(
                maxsize=source.config.cache_max_entries,
                ttl=source.config.cache_ttl_seconds,
                timer=lambda: self._clock(),
            )
            for source in sources
            if source.config.cache_ttl_seconds > 0
        }

    async def lookup(self, request: LookupRequest, budget: float | None = None) -> LookupResult:
        """`budget`: seconds all the sources' answers may take together (the IVR's lookup
        budget). Only a real request to a source spends it, so a cache hit needs no timer."""
        deadline = None if budget is None else asyncio.get_running_loop().time() + budget
        errors: list[str] = []
        answered = False
        for source in self.sources:
            result = await self._ask(source, request, deadline)
            if result.status in (LookupStatus.FOUND, LookupStatus.MULTIPLE):
                return result
            if result.status == LookupStatus.NOTFOUND:
                answered = True
            else:
                errors.append(f"{source.name}: {result.error}")
        if answered or not errors:
            return LookupResult(status=LookupStatus.NOTFOUND, source="chain")
        return LookupResult(status=LookupStatus.ERROR, source="chain", error="; ".join(errors))

    async def _ask(
        self, source: LookupSource, request: LookupRequest, deadline: float | None
    ) -> LookupResult:
        """One source, each configured number format in turn until one finds something."""
        config = source.config
        tried: set[str] = set()
        last = LookupResult(status=LookupStatus.NOTFOUND, source=source.name)
        for style in config.number_formats:
            number = format_number(request.number, style, config.default_region)
            if number in tried:
                continue
            tried.add(number)
            last = await self._cached(source, request, number, deadline)
            if last.status != LookupStatus.NOTFOUND:
                return last  # FOUND, MULTIPLE, or ERROR: other formats would not help
        return last

    async def _cached(
        self, source: LookupSource, request: LookupRequest, number: str, deadline: float | None
    ) -> LookupResult:
        cache = self._caches.get(source.name)
        key = (
            number,
            request.service_number,
            request.service_name,
            request.function,
            tuple(request.user_data),
        )
        if cache is not None and (hit := cache.get(key)) is not None:
            return hit
        # Copied only for a real request: a pydantic copy was a tenth of a cache hit's cost.
        attempt = (
            request if number == request.number else request.model_copy(update={"number": number})
        )
        result = await self._timed(source, attempt, deadline)
        if cache is not None and result.status in _CACHEABLE:
            cache[key] = result
        return result

    async def _timed(
        self, source: LookupSource, request: LookupRequest, deadline: float | None
    ) -> LookupResult:
        timeout = source.config.timeout_seconds
        if deadline is not None:
            timeout = min(timeout, deadline - asyncio.get_running_loop().time())
            if timeout <= 0:
                # Not asked at all: a request cancelled at once may still reach the CRM.
                return LookupResult(
                    status=LookupStatus.ERROR, source=source.name, error="lookup budget spent"
                )
        try:
            async with asyncio.timeout(timeout):
                return await source.lookup(request)
        except TimeoutError:
            reason = f"no answer within {timeout:g} s"
        except Exception as exc:  # a source that breaks its contract must not break the IVR
            log.exception("lookup source %s raised", source.name)
            reason = f"{type(exc).__name__}: {exc}"
        return LookupResult(status=LookupStatus.ERROR, source=source.name, error=reason)


def build_lookup_chain(
    configs: Iterable[dict[str, Any] | LookupConfig], http: aiohttp.ClientSession
) -> LookupChain:
    sources: list[LookupSource] = []
    for raw in configs:
        config = parse_lookup_config(raw)
        sources.append(LOOKUP_KINDS[config.type].source_class(config, http))
    return LookupChain(sources)
