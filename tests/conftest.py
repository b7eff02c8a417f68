"""Suite-wide: every log line any test produces is checked for every configured secret.

A handler on the root logger formats each record raw (message and traceback, WITHOUT the
production redaction filter: a secret must never reach a log record in the first place, and a
check behind the filter would only test the filter) and writes it to one file for the session.
Each line is searched for each secret, percent-decoded (URLs, form bodies) and inside every
base64 token (an `Authorization: Basic` header). After each test, the lines that test produced
are checked against the secrets known so far (a failure names the test); at the end of the
session the whole file is checked again against every secret configured by any test, so a
secret set up late is still looked for in early lines. Subprocesses' logs (`pbxcrm run`) are
added with `suite_logs.add_text(...)`.

`fault_report` lets a test print a figure in the terminal summary (runs, calls checked ...).

A test still running shortly before pytest-timeout fails it gets its asyncio tasks' stacks
printed to stderr: pytest-timeout shows threads, and a hung async test's thread only shows
the event loop waiting in select().
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from crm.secrets import known_secrets

# INFO is what `pbxcrm run` logs by default; records below the root level are never formatted.
SUITE_LOG_LEVEL = logging.INFO


class SuiteLogs(logging.Handler):
    def __init__(self, path: Path) -> None:
        super().__init__(level=logging.DEBUG)
        self.path = path
        self._file = path.open("w", encoding="utf-8", errors="backslashreplace")
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines = 0
        self._test_lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a bad log call must not break the suite; keep what we can
            text = f"{record.levelname} {record.name}: {record.msg!r} {record.args!r}"
        self.add_text(text)

    def add_text(self, text: str) -> None:
        self._file.write(text.replace("\n", "\n\t") + "\n")
        self._test_lines.append(text)
        self.lines += text.count("\n") + 1

    def take_test_lines(self) -> list[str]:
        lines, self._test_lines = self._test_lines, []
        return lines

    def close(self) -> None:
        self._file.close()
        super().close()


_BASE64_TOKEN = re.compile(r"[A-Za-z0-9+/_-]{8,}={0,2}")


def decoded_forms(line: str) -> list[str]:
    """The line, percent-decoded, and the text inside each of its base64 tokens."""
    forms = [line]
    if "%" in line or "+" in line:
        forms.append(urllib.parse.unquote_plus(line))
    for token in _BASE64_TOKEN.findall(line):
        padded = token + "=" * (-len(token) % 4)
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            with contextlib.suppress(ValueError):
                forms.append(decode(padded).decode("utf-8", "replace"))
    return forms


def leaks(lines: list[str], secrets: frozenset[str]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for line in lines:
        if not secrets:
            break
        forms = decoded_forms(line)
        found.extend((secret, line) for secret in secrets if any(secret in f for f in forms))
    return found


def _mask(secret: str) -> str:
    return secret[:2] + "…" + f"({len(secret)} chars)"


_suite_logs: SuiteLogs | None = None
_report: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    global _suite_logs
    handle, name = tempfile.mkstemp(prefix="pbxcrm-suite-", suffix=".log")
    os.close(handle)
    _suite_logs = SuiteLogs(Path(name))
    root = logging.getLogger()
    root.addHandler(_suite_logs)
    if root.level > SUITE_LOG_LEVEL or root.level == logging.NOTSET:
        root.setLevel(SUITE_LOG_LEVEL)


def _dump_asyncio_tasks(test: str) -> None:
    """From a timer thread: find the main thread's running event loop in its frames and
    print every task's stack (read-only; the loop is stuck, which is why we are here)."""
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    while frame is not None and not isinstance(
        frame.f_locals.get("self"), asyncio.AbstractEventLoop
    ):
        frame = frame.f_back
    if frame is None:
        return
    tasks = list(asyncio.all_tasks(frame.f_locals["self"]))
    print(f"\n--- {test} is still running: its {len(tasks)} asyncio task(s) ---", file=sys.stderr)
    for task in tasks:
        task.print_stack(file=sys.stderr)


@pytest.fixture(autouse=True)
def _report_stuck_asyncio_tasks(request: pytest.FixtureRequest) -> Iterator[None]:
    marker = request.node.get_closest_marker("timeout")
    limit = (
        float(marker.args[0])
        if marker and marker.args
        else float(request.config.getini("timeout") or 0)
    )
    if limit <= 0:
        yield
        return
    timer = threading.Timer(
        limit - min(60.0, limit * 0.1), _dump_asyncio_tasks, (request.node.nodeid,)
    )
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()


@pytest.fixture
def suite_logs() -> SuiteLogs:
    assert _suite_logs is not None
    return _suite_logs


@pytest.fixture(autouse=True)
def _no_secret_in_this_tests_logs() -> Iterator[None]:
    assert _suite_logs is not None
    _suite_logs.take_test_lines()
    yield
    found = leaks(_suite_logs.take_test_lines(), known_secrets())
    if found:
        secret, line = found[0]
        pytest.fail(
            f"a configured secret ({_mask(secret)}) appeared in {len(found)} log line(s) of this"
            f" test, e.g.: {line.replace(secret, '<SECRET>')[:300]}",
            pytrace=False,
        )


@pytest.fixture
def fault_report() -> list[str]:
    """Append a line to print it under 'pbxcrm reliability figures' at the end of the run."""
    return _report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _suite_logs is None:
        return
    logging.getLogger().removeHandler(_suite_logs)
    _suite_logs.close()
    secrets = known_secrets()
    found: list[tuple[str, str]] = []
    with _suite_logs.path.open(encoding="utf-8", errors="backslashreplace") as lines:
        for line in lines:
            found.extend(leaks([line], secrets))
    summary = (
        f"secrets in logs: checked {_suite_logs.lines} log lines of the whole suite for"
        f" {len(secrets)} configured secrets: {len(found)} leaks"
    )
    _report.append(summary)
    if found:
        secret, line = found[0]
        _report.append("  e.g.: " + line.replace(secret, "<SECRET>")[:300])
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        _suite_logs.path.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _report:
        terminalreporter.section("pbxcrm reliability figures")
        for line in _report:
            terminalreporter.write_line(line)
