"""A PostgreSQL server for the tests, and one fresh database per test.

PBXCRM_TEST_PG_URL (set by `eval "$(bash .ci/postgres.sh)"`) names the server. Without it, a
developer machine that has Debian's postgresql package gets a throwaway cluster started by
.ci/postgres.sh for the session; a machine without it skips the PostgreSQL tests. Under CI=true
a missing server is an error, never a skip: CI must prove both backends.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "postgres.sh"


def _start_own_cluster() -> tuple[str, str] | None:
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return None
    out = subprocess.run(
        ["bash", str(SCRIPT)], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    values = dict(
        line.removeprefix("export ").split("=", 1) for line in out.splitlines() if "=" in line
    )
    return values["PBXCRM_TEST_PG_URL"], values["PBXCRM_TEST_PG_DIR"]


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    url = os.environ.get("PBXCRM_TEST_PG_URL")
    if url:
        yield url
        return
    started = _start_own_cluster()
    if started is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but PBXCRM_TEST_PG_URL is unset and PostgreSQL is not installed")
        pytest.skip("no PostgreSQL: set PBXCRM_TEST_PG_URL or apt-get install postgresql")
    url, directory = started
    try:
        yield url
    finally:
        subprocess.run(
            ["bash", str(SCRIPT), "stop"],
            env={**os.environ, "PBXCRM_TEST_PG_DIR": directory},
            check=False,
            capture_output=True,
            timeout=60,
        )


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


async def create_database(server_url: str) -> str:
    """A new empty database on the server; returns its URL."""
    name = "pbxcrm_t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(server_url, name)


async def drop_database(server_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def pg_url(pg_server_url: str) -> AsyncIterator[str]:
    """The URL of a fresh database, dropped after the test."""
    url = await create_database(pg_server_url)
    try:
        yield url
    finally:
        await asyncio.shield(drop_database(pg_server_url, url))
