"""`pbxcrm replay`: a recorded AMI or ARI capture through your config, as `pbxcrm run` sees it.

An AMI capture (`.ami`) is served by the fake PBX over a real socket and pbxcrm connects to
it as to Asterisk; pbxcrm's own actions are answered from the answers recorded in the stream
(matched by action, as the `.sent.ami` files show), so a capture that starts mid-call gives
the call `run` gives. An ARI capture (`.jsonl`, one websocket message a line) goes through
the same ARI event mapping `pbx.source = "ari"` uses. Nothing leaves the machine unless
`--send`; the store is a throwaway one unless `--store PATH`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ari_app.app.demo import DEMO_MAX_GAP, table_header, table_row
from ari_app.app.fake_pbx import FakePbx
from ari_app.app.service import Service
from ari_app.app.settings import Settings
from ari_app.calls.pipeline import Pipeline
from ari_app.pbx.ami.errors import AmiError
from ari_app.pbx.ari.events import AriEventMapper
from ari_app.pbx.ari.models import BadAriMessage, parse_event
from crm.delivery.dry_run import RecordingSession, requests_for
from crm.dialects.registry import build_adapter
from crm.model import CallEvent, EventKind

log = logging.getLogger("pbxcrm.replay")

# What pbxcrm sends by itself after every AMI login: the fake PBX holds the stream at the
# recorded answer until it is asked, as Asterisk answered the recording's client.
OWN_AMI_ACTIONS = ("CoreShowChannels",)
# Long enough for pbxcrm to log in again after a recorded reconnect (back-off starts at 0.5 s).
_OWN_ACTION_WAIT_SECONDS = 15.0


@dataclass
class ReplayOptions:
    capture: Path
    send: bool = False
    store: Path | None = None  # None: a throwaway store, deleted at exit
    json_lines: bool = False
    wait_seconds: float = 30.0  # --send: how long to wait for the outbox to drain
    pace: float = 0.0


@dataclass
class _Delivery:
    """One outbox row this replay queued."""

    row_id: int
    crm: str
    call_id: str
    seq: int
    kind: str
    idempotency_key: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    event_json: str

    def brief(self) -> dict[str, Any]:
        return {"crm": self.crm, "call_id": self.call_id, "seq": self.seq, "kind": self.kind}


def capture_kind(path: Path) -> str:
    """`ari` for a websocket capture (`.jsonl`, or JSON on the first line), else `ami`."""
    if path.suffix == ".jsonl":
        return "ari"
    with path.open("rb") as handle:
        head = handle.read(64).lstrip()
    return "ari" if head.startswith(b"{") else "ami"


async def replay(options: ReplayOptions, settings: Settings, out: TextIO, err: TextIO) -> int:
    if not options.capture.is_file():
        print(f"replay: no such file {options.capture}", file=err)
        return 2
    notes = err if options.json_lines else out
    with tempfile.TemporaryDirectory(prefix="pbxcrm-replay-") as folder:
        if options.store is None:
            store_path = Path(folder) / "replay.sqlite3"
            print(
                f"store: throwaway {store_path} (deleted at exit; --store PATH keeps one)",
                file=notes,
            )
        else:
            store_path = options.store
            print(f"store: {store_path}", file=notes)
        settings.store.path = str(store_path)
        settings.store.url = None  # a replay never writes into a shared PostgreSQL store
        # Nothing asks the dialplan scripts or the HTTP port during a replay, nor the lookup
        # sources they would use (whose secrets a dry run need not have).
        settings.http.enabled = False
        settings.agi.enabled = False
        settings.lookup = []
        # The classic-AGI survey spool belongs to the running service: a replay must neither
        # consume it nor send its ratings along.
        settings.agi.survey_spool = Path(folder) / "survey-spool.jsonl"
        return await _run(options, settings, out, notes, kept=options.store is not None)


async def _run(
    options: ReplayOptions, settings: Settings, out: TextIO, notes: TextIO, *, kept: bool
) -> int:
    kind = capture_kind(options.capture)
    completed: list[CallEvent] = []
    pbx: FakePbx | None = None
    if kind == "ami":
        settings.pbx.source = "ami"
        pbx = FakePbx(
            options.capture,
            pace=options.pace,
            max_gap=DEMO_MAX_GAP,
            await_actions=OWN_AMI_ACTIONS,
        )
        await pbx.start()
        settings.pbx.ami.host, settings.pbx.ami.port = "127.0.0.1", pbx.port
    else:
        settings.pbx.source = "ari"
    service = Service(settings, send=options.send, follow_pbx=kind == "ami")

    def on_event(event: CallEvent) -> None:
        if event.kind is EventKind.COMPLETED:
            completed.append(event)
            if not options.json_lines:
                print(table_row(event), file=out)

    if not options.json_lines:
        print(table_header(), file=out)
    try:
        await service.start()
        assert service.pipeline is not None and service.store is not None
        service.pipeline.add_call_listener(on_event)
        first_row = await _last_outbox_id(service)
        if pbx is not None:
            await _until_ami_capture_read(pbx, service)
        else:
            await feed_ari_capture(
                options.capture.read_text(encoding="utf-8").splitlines(),
                service.pipeline,
                pace=options.pace,
            )
        await service.pipeline.drain()
        drained = True
        if options.send and service.outbox is not None:
            drained = await _until_outbox_drained(service, first_row, options.wait_seconds)
        deliveries = await _deliveries(service, first_row)
        requests = [] if options.send else await _dry_run(settings, deliveries)
    finally:
        await service.stop()
        if pbx is not None:
            await pbx.stop()
    if options.json_lines:
        return _print_json(completed, deliveries, requests, options.send, out)
    return _print_text(
        completed, deliveries, requests, options, out, notes, drained=drained, kept=kept
    )


async def feed_ari_capture(lines: Iterable[str], pipeline: Pipeline, *, pace: float = 0.0) -> int:
    """Each recorded websocket message through the ARI source's own mapping; returns how many.

    The run's ARI client reconciles from `GET /channels` when it connects; a capture holds no
    such answer, so the replay starts as against an idle Asterisk: with no channel.
    """
    mapper = AriEventMapper()
    count = 0
    last_ts: float | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = parse_event(json.loads(line))
        except (ValueError, BadAriMessage) as exc:
            log.warning("ARI capture line %d skipped: %s", number, exc)
            continue
        ts = event.timestamp.timestamp()
        if pace > 0 and last_ts is not None and ts > last_ts:
            await asyncio.sleep(min((ts - last_ts) * pace, DEMO_MAX_GAP))
        last_ts = ts
        for channel_event in mapper.map(event):
            pipeline.on_channel_event(channel_event)
        count += 1
    return count


async def _until_ami_capture_read(pbx: FakePbx, service: Service) -> None:
    """Until pbxcrm has read and handled everything the fake PBX sent."""
    await pbx.wait_finished(timeout=3600)
    ami = service.ami
    assert ami is not None
    # pbxcrm asks for the channel list after every login; its answer must be in before the
    # Ping below, whose Pong then closes everything the PBX sent.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_OWN_ACTION_WAIT_SECONDS):
            # The fake PBX has no event for "an action came in": polled.
            while ami.connected and not _asked_since_login(pbx.received_actions):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    with contextlib.suppress(AmiError):
        await ami.send_action({"Action": "Ping"}, timeout=5)


def _asked_since_login(actions: list[dict[str, str]]) -> bool:
    """Whether pbxcrm's own actions were sent on the current (last) connection."""
    own = {name.lower() for name in OWN_AMI_ACTIONS}
    for action in reversed(actions):
        name = action.get("Action", "").lower()
        if name in own:
            return True
        if name == "login":
            return False
    return False


async def _last_outbox_id(service: Service) -> int:
    assert service.store is not None
    rows = await service.store.reader.execute_fetchall("SELECT coalesce(max(id), 0) FROM outbox")
    return int(next(iter(rows))[0])


async def _until_outbox_drained(service: Service, first_row: int, seconds: float) -> bool:
    assert service.store is not None
    reader = await service.store.open_reader()
    try:
        async with asyncio.timeout(seconds):
            while True:
                rows = await reader.execute_fetchall(
                    "SELECT count(*) FROM outbox WHERE id > ? AND state = 'pending'", (first_row,)
                )
                if next(iter(rows))[0] == 0:
                    return True
                await asyncio.sleep(0.05)
    except TimeoutError:
        return False
    finally:
        await reader.close()


async def _deliveries(service: Service, first_row: int) -> list[_Delivery]:
    assert service.store is not None
    reader = await service.store.open_reader()
    try:
        rows = await reader.execute_fetchall(
            "SELECT o.id, o.adapter, o.call_id, o.seq, e.kind, o.idempotency_key, o.state, "
            "o.attempts, o.last_status, o.last_error, e.event_json "
            "FROM outbox o JOIN call_events e ON e.id = o.event_row WHERE o.id > ? ORDER BY o.id",
            (first_row,),
        )
    finally:
        await reader.close()
    return [_Delivery(*row) for row in rows]


async def _dry_run(
    settings: Settings, deliveries: list[_Delivery]
) -> list[tuple[_Delivery, list[dict[str, Any]], str | None]]:
    """The HTTP requests each queued delivery would make, recorded instead of sent."""
    session = RecordingSession()
    adapters = {
        config.name: build_adapter(config, session)  # type: ignore[arg-type]
        for config in settings.crm
        if config.enabled
    }
    out: list[tuple[_Delivery, list[dict[str, Any]], str | None]] = []
    try:
        for delivery in deliveries:
            adapter = adapters.get(delivery.crm)
            if adapter is None:
                continue
            event = CallEvent.model_validate_json(delivery.event_json)
            made, error = await requests_for(adapter, session, event, delivery.idempotency_key)
            out.append((delivery, [request.as_json() for request in made], error))
    finally:
        for adapter in adapters.values():
            await adapter.close()
    return out


def _print_json(
    completed: list[CallEvent],
    deliveries: list[_Delivery],
    requests: list[tuple[_Delivery, list[dict[str, Any]], str | None]],
    send: bool,
    out: TextIO,
) -> int:
    for event in completed:
        record = {"type": "call", "call": event.call.model_dump(mode="json")}
        print(json.dumps(record, ensure_ascii=False), file=out)
    if not send:
        for delivery, made, _error in requests:
            for request in made:
                line = {"type": "request", **delivery.brief(), **request}
                print(json.dumps(line, ensure_ascii=False), file=out)
        return 0
    for delivery in deliveries:
        line = {
            "type": "delivery",
            **delivery.brief(),
            "state": delivery.state,
            "attempts": delivery.attempts,
            "last_status": delivery.last_status,
            "last_error": delivery.last_error,
        }
        print(json.dumps(line, ensure_ascii=False), file=out)
    return 0 if all(d.state == "done" for d in deliveries) else 1


def _print_text(
    completed: list[CallEvent],
    deliveries: list[_Delivery],
    requests: list[tuple[_Delivery, list[dict[str, Any]], str | None]],
    options: ReplayOptions,
    out: TextIO,
    notes: TextIO,
    *,
    drained: bool,
    kept: bool,
) -> int:
    print(
        f"\n{len(completed)} call(s) completed, {len(deliveries)} delivery(ies) queued.", file=out
    )
    code = 0
    if options.send:
        states = {
            state: sum(1 for d in deliveries if d.state == state)
            for state in ("done", "dead", "pending")
        }
        print(
            f"Delivered {states['done']}, dead {states['dead']}, pending {states['pending']}.",
            file=out,
        )
        for delivery in deliveries:
            if delivery.state != "done":
                print(
                    f"  {delivery.state:<7} {delivery.crm}  {delivery.kind:<9} call "
                    f"{delivery.call_id} seq {delivery.seq}: {delivery.last_error or '-'}",
                    file=out,
                )
        if not drained:
            where = (
                "kept in the store above (`pbxcrm outbox list --state pending`)"
                if kept
                else "lost with the throwaway store: use --store PATH to keep them"
            )
            print(
                f"The outbox did not drain within {options.wait_seconds:g} s; the pending "
                f"deliveries are {where}.",
                file=notes,
            )
        if states["dead"] or states["pending"]:
            code = 1
    else:
        print("\nWould be sent (use --send to deliver):", file=out)
        if not requests:
            print("  nothing: no enabled [[crm]] block takes these calls' steps", file=out)
        for delivery, made, _error in requests:
            for request in made:
                print(
                    f"  {delivery.crm}  {delivery.kind:<9} call {delivery.call_id} seq "
                    f"{delivery.seq}: {request['method']} {request['url']}",
                    file=out,
                )
    print("\nCalls:", file=out)
    for event in completed:
        print(json.dumps(event.call.model_dump(mode="json"), ensure_ascii=False), file=out)
    return code
