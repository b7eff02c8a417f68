"""Benchmark roles run in their own processes, so a load generator never shares the CPU time
(or the event loop) of what it measures.

The parent starts `python -m tests.benchmarks.worker ROLE JSON_ARGS`; the child writes JSON
lines to stdout (`{"ready": ...}`, then `{"result": ...}`) and reads JSON commands from stdin.
Roles are registered with `@role("name")` in the benchmark modules.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_MODULES = (
    "tests.benchmarks.ami_source",
    "tests.benchmarks.ingest",
    "tests.benchmarks.memory",
    "tests.benchmarks.fastagi_bench",
    "tests.benchmarks.click_to_call",
    "tests.benchmarks.outbox_bench",
    "tests.benchmarks.crm_sink",
    "tests.benchmarks.latency",
)

RoleFn = Callable[["Link", dict[str, Any]], Awaitable[dict[str, Any]]]
ROLES: dict[str, RoleFn] = {}


def role(name: str) -> Callable[[RoleFn], RoleFn]:
    def register(fn: RoleFn) -> RoleFn:
        ROLES[name] = fn
        return fn

    return register


class Link:
    """The child's end: report readiness and results, wait for the parent's commands."""

    def __init__(self) -> None:
        self._stdin: asyncio.StreamReader | None = None

    def send(self, **message: Any) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    async def command(self) -> dict[str, Any]:
        if self._stdin is None:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=1 << 24)
            await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0)
            )
            self._stdin = reader
        line = await self._stdin.readline()
        if not line:
            return {"cmd": "stop"}  # the parent went away: stop
        message: dict[str, Any] = json.loads(line)
        return message


def deployed_logging() -> None:
    """Log as `pbxcrm run` does by default (INFO, one line per call step or delivery), to
    this worker's stderr file: the figures include what logging costs."""
    from ari_app.app.logs import setup_logging

    setup_logging("INFO")


class WorkerError(RuntimeError):
    """A worker process failed; the message carries its stderr tail."""


class Worker:
    """The parent's end of one worker process."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, stderr: Any) -> None:
        self.name = name
        self.proc = proc
        # A file, not a pipe: a chatty worker must never block on a full stderr pipe.
        self._stderr = stderr

    @classmethod
    async def start(cls, name: str, **args: Any) -> Worker:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        stderr = tempfile.TemporaryFile()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.benchmarks.worker",
            name,
            json.dumps(args),
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            limit=1 << 24,
        )
        return cls(name, proc, stderr)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def message(self, timeout: float = 120.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                line = await self.proc.stdout.readline()
        except TimeoutError:
            await self.kill()
            raise WorkerError(f"worker {self.name}: no message within {timeout}s") from None
        if not line:
            await self.proc.wait()
            raise WorkerError(
                f"worker {self.name} exited ({self.proc.returncode}): {await self._err()}"
            )
        message: dict[str, Any] = json.loads(line)
        return message

    async def ready(self, timeout: float = 120.0) -> dict[str, Any]:
        message = await self.message(timeout)
        if "ready" not in message:
            raise WorkerError(f"worker {self.name}: expected ready, got {message}")
        ready: dict[str, Any] = message["ready"]
        return ready

    async def result(self, timeout: float = 300.0) -> dict[str, Any]:
        message = await self.message(timeout)
        if "result" not in message:
            raise WorkerError(f"worker {self.name}: expected result, got {message}")
        result: dict[str, Any] = message["result"]
        return result

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())

    async def finish(self, timeout: float = 60.0) -> None:
        if self.proc.returncode is None:
            try:
                self.send(cmd="stop")
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except (ConnectionError, RuntimeError):
                pass
            try:
                async with asyncio.timeout(timeout):
                    await self.proc.wait()
            except TimeoutError:
                await self.kill()
        if self.proc.returncode not in (0, None):
            raise WorkerError(
                f"worker {self.name} failed ({self.proc.returncode}): {await self._err()}"
            )

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def _err(self) -> str:
        self._stderr.seek(0)
        data: bytes = self._stderr.read()
        return data.decode(errors="replace")[-3000:]


async def _main(name: str, args: dict[str, Any]) -> None:
    for module in _MODULES:
        importlib.import_module(module)
    link = Link()
    result = await ROLES[name](link, args)
    link.send(result=result)


if __name__ == "__main__":
    import logging

    from tests.benchmarks import worker  # the importable module, whose ROLES the roles fill

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(worker._main(sys.argv[1], json.loads(sys.argv[2])))
