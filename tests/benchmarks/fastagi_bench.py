"""Figure 3: FastAGI caller_check against a local CRM, beside a minimal FastAGI server.

Processes: the server under test (pbxcrm's FastAGI server and caller_check, asking a jtel-style
lookup with its TTL cache), a local CRM answering the lookups, and a client playing Asterisk:
it sends the recorded `agi_*` environment of `agi/caller_check.txt` and answers each command
as recorded (`200 result=1 (+7903...)` to GET VARIABLE, `200 result=1` otherwise). The
minimal server sends the recorded script's two commands and does nothing else.

- saturation: a closed loop keeping 200 sessions open; sessions/s.
- latency: an open loop starting sessions at a fixed rate (500/s) whatever the answers do;
  p50/p99 of connect -> the server closing the session.
- classic AGI: the cost per call of a process per call (pbxcrm-agi, and a bare pyst2 script).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.report import Check, Figure, Section, percentile
from tests.benchmarks.worker import ROOT, Link, Worker, role
from tests.recordings import FIXTURES

GOAL_VS_MINIMAL = 0.6
GOAL_CLASSIC_VS_PYST2 = 2.0
GOAL_P99_MS = 10.0
CONCURRENCY = 200
OPEN_LOOP_RATE = 500.0

_RAW = (FIXTURES / "agi" / "caller_check.from_asterisk.raw").read_bytes()
ENVIRONMENT = _RAW[: _RAW.index(b"\n\n") + 2]
RECORDED_NUMBER = "+79031234567"


def environment(number: str) -> bytes:
    return ENVIRONMENT.replace(RECORDED_NUMBER.encode(), number.encode())


# -- the local CRM --------------------------------------------------------------------------


@role("lookup_crm")
async def lookup_crm(link: Link, args: dict[str, Any]) -> dict[str, Any]:
    """A jtel-style lookup: every caller is a known customer (200 + a JSON record)."""
    from aiohttp import web

    lookups = 0

    async def lookup(request: web.Request) -> web.Response:
        nonlocal lookups
        await request.read()
        lookups += 1
        return web.json_response({"CustomerId": "42"})

    app = web.Application()
    app.router.add_post("/lookup", lookup)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    link.send(ready={"url": f"http://127.0.0.1:{port}/lookup"})
    while (await link.command()).get("cmd") != "stop":
        pass
    await runner.cleanup()
    return {"lookups": lookups}


# -- the servers ----------------------------------------------------------------------------


@role("fastagi_pbxcrm")
async def fastagi_pbxcrm(link: Link, args: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    from agi.context import build_script_context
    from agi.fastagi import start_fastagi
    from agi.settings import AgiSettings
    from ari_app.app.gc_tuning import settle_after_start
    from tests.benchmarks.worker import deployed_logging

    deployed_logging()
    settings = AgiSettings(port=0, max_sessions=1000)
    lookups = [{"type": "jtel", "name": "crm", "url": args["crm_url"], "cache_ttl_seconds": 600}]
    async with aiohttp.ClientSession() as http:
        context = build_script_context(settings, lookups, http)
        server = await start_fastagi(settings, context)
        # As `pbxcrm run` (Service(settle_gc=True)) leaves the process before serving.
        settle_after_start()
        link.send(ready={"port": server.port})
        cpu_at_ready = time.process_time()  # imports and set-up are not per session
        while (await link.command()).get("cmd") != "stop":
            pass
        sessions = server.sessions_total
        await server.stop()
    return {"sessions": sessions, "cpu_s": time.process_time() - cpu_at_ready}


_minimal_sessions = 0


async def _minimal_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global _minimal_sessions
    _minimal_sessions += 1
    try:
        while (await reader.readline()) not in (b"\n", b""):
            pass
        writer.write(b"GET VARIABLE CALLERID(num)\n")
        await reader.readline()
        writer.write(b"SET VARIABLE CRM_FOUND 1\n")
        await reader.readline()
    finally:
        writer.close()


@role("fastagi_minimal")
async def fastagi_minimal(link: Link, args: dict[str, Any]) -> dict[str, Any]:
    server = await asyncio.start_server(_minimal_session, "127.0.0.1", 0)
    link.send(ready={"port": server.sockets[0].getsockname()[1]})
    cpu_at_ready = time.process_time()
    while (await link.command()).get("cmd") != "stop":
        pass
    server.close()
    return {"sessions": _minimal_sessions, "cpu_s": time.process_time() - cpu_at_ready}


# -- the client (Asterisk) -------------------------------------------------------------------


async def _session(port: int, number: str, commands: list[int]) -> float:
    """One call's AGI session; returns its duration in seconds."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(environment(number))
    count = 0
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            count += 1
            if line.startswith(b"GET VARIABLE CALLERID(num)"):
                writer.write(f"200 result=1 ({number})\n".encode())
            else:
                writer.write(b"200 result=1\n")
    finally:
        writer.close()
    commands.append(count)
    return time.monotonic() - started


@role("fastagi_client")
async def fastagi_client(link: Link, args: dict[str, Any]) -> dict[str, Any]:
    port, seconds, warmup = int(args["port"]), float(args["seconds"]), float(args["warmup"])
    unique = bool(args["unique_numbers"])
    serial = itertools.count(int(args.get("first_number", 1_000_000)))

    def number() -> str:
        return f"+7903{next(serial):07d}" if unique else RECORDED_NUMBER

    commands: list[int] = []
    errors = 0
    link.send(ready={})
    start = time.monotonic()
    measure_from, measure_to = start + warmup, start + warmup + seconds
    latencies: list[float] = []
    done_in_window = 0

    async def one() -> None:
        nonlocal errors, done_in_window
        try:
            took = await _session(port, number(), commands)
        except OSError:
            errors += 1
            return
        now = time.monotonic()
        if measure_from <= now - took and now <= measure_to:
            latencies.append(took)
        if measure_from <= now <= measure_to:
            done_in_window += 1

    if args["mode"] == "closed":

        async def loop() -> None:
            while time.monotonic() < measure_to:
                await one()

        await asyncio.gather(*(loop() for _ in range(int(args["concurrency"]))))
    else:
        rate = float(args["rate"])
        tasks: set[asyncio.Task[None]] = set()
        sent = 0
        while time.monotonic() < measure_to:
            due = int((time.monotonic() - start) * rate) + 1
            while sent < due:
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            # The generator's clock: an open loop starts sessions on time, answered or not.
            await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
        await asyncio.gather(*tasks)
    return {
        "sessions_per_s": done_in_window / seconds,
        "latencies": latencies,
        "errors": errors,
        "sessions": len(commands),
        "commands_per_session": statistics.mean(commands) if commands else 0,
    }


async def _client(port: int, **args: Any) -> dict[str, Any]:
    client = await Worker.start("fastagi_client", port=port, **args)
    try:
        await client.ready()
        return await client.result(timeout=300)
    finally:
        await client.finish()


# -- classic AGI ----------------------------------------------------------------------------

_PYST2_SCRIPT = """
from asterisk.agi import AGI
agi = AGI()
number = agi.get_variable("CALLERID(num)")
agi.set_variable("CRM_FOUND", "1")
"""


async def _classic_call(argv: list[str], number: str) -> tuple[float, list[bytes]]:
    """One call's classic AGI process, as Asterisk runs it; its wall time and commands."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(environment(number))
    commands: list[bytes] = []
    while line := await proc.stdout.readline():
        commands.append(line.rstrip(b"\n"))
        if line.startswith(b"GET VARIABLE"):
            proc.stdin.write(f"200 result=1 ({number})\n".encode())
        else:
            proc.stdin.write(b"200 result=1\n")
    proc.stdin.close()
    await proc.wait()
    return time.monotonic() - started, commands


CLASSIC_COMMANDS = [
    b"GET VARIABLE CALLERID(num)",
    b"SET VARIABLE CRM_FOUND 1",
    b"SET VARIABLE CRM_LOOKUP_STATUS FOUND",
]


def _pbxcrm_agi() -> list[str]:
    """The console script Asterisk runs (`AGI(pbxcrm-agi,...)`), as installed by pip."""
    script = Path(sys.executable).with_name("pbxcrm-agi")
    return [str(script)] if script.exists() else [sys.executable, "-m", "agi.classic"]


async def _classic_costs(crm_url: str, calls: int) -> tuple[dict[str, float], list[Check]]:
    """Median wall time per call: through the daemon, in-process, and a bare pyst2 script.

    Every call is a new caller (a cache miss: the CRM is asked each time, in the daemon or
    in the process), and the three kinds take turns so the machine's drift hits them alike.
    """
    daemon = await Worker.start("fastagi_pbxcrm", crm_url=crm_url)
    try:
        port = (await daemon.ready())["port"]
        with tempfile.TemporaryDirectory(prefix="pbxcrm-bench-") as tmp:
            lookup = f'[[lookup]]\ntype = "jtel"\nname = "crm"\nurl = "{crm_url}"\n'
            agi = f'[agi]\nport = {port}\nsurvey_spool = "{tmp}/spool.jsonl"\n'
            relayed, in_process = Path(tmp) / "relayed.toml", Path(tmp) / "in_process.toml"
            relayed.write_text(f"{agi}\n{lookup}")
            in_process.write_text(f"{agi}classic_via_daemon = false\n\n{lookup}")
            script = Path(tmp) / "pyst2_caller_check.py"
            script.write_text(_PYST2_SCRIPT)
            argv = {
                "relayed": [*_pbxcrm_agi(), "--config", str(relayed), "caller_check"],
                "in_process": [*_pbxcrm_agi(), "--config", str(in_process), "caller_check"],
                "pyst2": [sys.executable, str(script)],
            }
            numbers = (f"+7916{n:07d}" for n in itertools.count(1))
            for command in argv.values():
                await _classic_call(command, next(numbers))  # warm the OS file cache
            times: dict[str, list[float]] = {name: [] for name in argv}
            wrong: list[bytes] = []
            for _ in range(calls):
                for name, command in argv.items():
                    took, commands = await _classic_call(command, next(numbers))
                    times[name].append(took)
                    if name != "pyst2" and commands != CLASSIC_COMMANDS:
                        wrong += commands
        daemon.send(cmd="stop")
        served = (await daemon.result())["sessions"]
    finally:
        await daemon.finish()
    checks = [
        Check(
            "classic AGI: every call set the recorded variables",
            not wrong,
            f"{2 * calls} pbxcrm-agi calls" + (f", wrong: {wrong[:3]}" if wrong else ""),
        ),
        Check(
            "classic AGI: each relayed call was served by the daemon",
            served == calls + 1,
            f"{served} daemon sessions for {calls + 1} relayed calls",
        ),
    ]
    return {name: statistics.median(values) for name, values in times.items()}, checks


# -- the figure -----------------------------------------------------------------------------


async def run(quick: bool) -> Section:
    seconds, warmup = (0.5, 0.2) if quick else (4.0, 1.0)
    section = Section(
        "3. FastAGI caller_check against a local CRM (jtel-style lookup, TTL cache)",
        notes=[
            "client and servers share the 2 cores; the minimal server sends the recorded two"
            " commands, pbxcrm's caller_check also sets CRM_LOOKUP_STATUS (three commands)",
        ],
    )
    crm = await Worker.start("lookup_crm")
    checks: list[Check] = []
    try:
        crm_url = (await crm.ready())["url"]
        rates: dict[str, float] = {}
        cpu_us: dict[str, float] = {}
        p50: dict[str, float] = {}
        p99: dict[str, float] = {}
        for name, unique in (("minimal", False), ("hit", False), ("miss", True)):
            server = await Worker.start(
                "fastagi_minimal" if name == "minimal" else "fastagi_pbxcrm", crm_url=crm_url
            )
            try:
                port = (await server.ready())["port"]
                common = {"seconds": seconds, "warmup": warmup, "unique_numbers": unique}
                # Different numbers in each client: a miss must stay a miss.
                closed = await _client(
                    port, mode="closed", concurrency=CONCURRENCY, first_number=1_000_000, **common
                )
                opened = await _client(
                    port, mode="open", rate=OPEN_LOOP_RATE, first_number=5_000_000, **common
                )
                server.send(cmd="stop")
                used = await server.result()
            finally:
                await server.finish()
            # CPU time of the server process per session: what the shared cores leave aside.
            cpu_us[name] = used["cpu_s"] / max(1, used["sessions"]) * 1e6
            rates[name] = closed["sessions_per_s"]
            p50[name] = percentile(opened["latencies"], 50) * 1000
            p99[name] = percentile(opened["latencies"], 99) * 1000
            want = 2 if name == "minimal" else 3
            sessions = closed["sessions"] + opened["sessions"]
            checks.append(
                Check(
                    f"{name}: every session answered, no connection error",
                    closed["errors"] + opened["errors"] == 0
                    and closed["commands_per_session"] == want
                    and opened["commands_per_session"] == want,
                    f"{sessions:,} sessions, {closed['errors'] + opened['errors']} errors,"
                    f" {closed['commands_per_session']:.2f} commands each (want {want})",
                )
            )
        # While the CRM still answers: each classic call asks it (a new caller every time).
        classic, classic_checks = await _classic_costs(crm_url, 3 if quick else 15)
        checks += classic_checks
        crm.send(cmd="stop")
        lookups = (await crm.result())["lookups"]
    finally:
        await crm.finish()
    for name, label in (("hit", "cache hit"), ("miss", "cache miss")):
        ratio = rates[name] / rates["minimal"]
        section.figures.append(
            Figure(
                f"pbxcrm caller_check, {label}, {CONCURRENCY} concurrent",
                rates[name],
                "sessions/s",
                key=f"fastagi_{name}_sessions_per_s",
            )
        )
        section.figures.append(
            Figure(
                f"  / minimal FastAGI server ({label})",
                ratio,
                "x",
                # The goal is the server's own cost (a hit); a miss adds the CRM's HTTP round
                # trip, which is what asking a CRM costs, shown for comparison.
                goal=f">= {GOAL_VS_MINIMAL}" if name == "hit" else "",
                met=ratio >= GOAL_VS_MINIMAL if name == "hit" else None,
                key=f"fastagi_{name}_vs_minimal",
            )
        )
    section.figures.insert(
        0,
        Figure(
            f"minimal FastAGI server, {CONCURRENCY} concurrent",
            rates["minimal"],
            "sessions/s",
            key="fastagi_minimal_sessions_per_s",
        ),
    )
    for name, label in (
        ("minimal", "minimal server"),
        ("hit", "cache hit"),
        ("miss", "cache miss"),
    ):
        goal = name == "hit"
        section.figures += [
            Figure(
                f"p50 at {OPEN_LOOP_RATE:.0f} sessions/s offered, {label}",
                p50[name],
                "ms",
                key=f"fastagi_{name}_p50_ms",
            ),
            Figure(
                f"p99 at {OPEN_LOOP_RATE:.0f} sessions/s offered, {label}",
                p99[name],
                "ms",
                goal=f"<= {GOAL_P99_MS:.0f}" if goal else "",
                met=(p99[name] <= GOAL_P99_MS) if goal else None,
                key=f"fastagi_{name}_p99_ms",
            ),
        ]
    section.figures += [
        Figure(
            f"server CPU per session, {label}",
            cpu_us[name],
            "us",
            key=f"fastagi_{name}_cpu_us_per_session",
        )
        for name, label in (
            ("minimal", "minimal server"),
            ("hit", "cache hit"),
            ("miss", "cache miss"),
        )
    ]
    classic_ratio = classic["relayed"] / classic["pyst2"]
    section.figures += [
        Figure(
            "classic AGI, pbxcrm-agi caller_check via the daemon, per call",
            classic["relayed"] * 1000,
            "ms",
            key="classic_agi_ms_per_call",
        ),
        Figure(
            "classic AGI, bare pyst2 script, per call",
            classic["pyst2"] * 1000,
            "ms",
            key="pyst2_script_ms_per_call",
        ),
        Figure(
            "  pbxcrm-agi via the daemon / bare pyst2 script",
            classic_ratio,
            "x",
            goal=f"<= {GOAL_CLASSIC_VS_PYST2:g}",
            met=classic_ratio <= GOAL_CLASSIC_VS_PYST2,
            key="classic_agi_vs_pyst2",
        ),
        Figure(
            "classic AGI, pbxcrm-agi in its own process, per call",
            classic["in_process"] * 1000,
            "ms",
            key="classic_agi_in_process_ms_per_call",
        ),
        Figure(
            "  in the process / bare pyst2 script",
            classic["in_process"] / classic["pyst2"],
            "x",
            key="classic_agi_in_process_vs_pyst2",
        ),
    ]
    checks.append(
        Check("the CRM was asked (cache misses reach it)", lookups > 0, f"{lookups:,} lookups")
    )
    section.checks += checks
    return section
