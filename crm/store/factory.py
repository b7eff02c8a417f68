"""Opens the store that `[store]` asks for: PostgreSQL when `url` is set, else SQLite at `path`."""

from __future__ import annotations

import time
from collections.abc import Callable

from crm.store.interface import CallStore
from crm.store.postgres import PgStore
from crm.store.settings import StoreSettings
from crm.store.sqlite import Store


def backend_of(settings: StoreSettings) -> str:
    """'postgresql' or 'sqlite'; a URL of any other scheme is a config error."""
    if settings.url is None:
        return "sqlite"
    url = settings.url.get_secret_value()
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    raise ValueError(
        f"[store] url must start with postgresql:// (got a {scheme!r} URL);"
        " leave it unset to use SQLite at [store] path"
    )


async def open_store(settings: StoreSettings, *, now: Callable[[], float] = time.time) -> CallStore:
    if backend_of(settings) == "postgresql":
        return await PgStore.open(settings, now=now)
    return await Store.open(settings, now=now)
