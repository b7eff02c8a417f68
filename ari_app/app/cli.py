"""The `pbxcrm` command: run, demo, replay, check-config, outbox, recordings, contacts."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

from ari_app.app.logs import setup_logging
from ari_app.app.settings import ConfigError, Settings, check_settings, load_settings

DEFAULT_CONFIG = "config/pbxcrm.toml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pbxcrm", description="Connects an Asterisk PBX to CRMs.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="follow the PBX and deliver calls to the CRMs")
    run.add_argument("--config", default=DEFAULT_CONFIG)

    demo = sub.add_parser("demo", help="replay recorded Asterisk calls into a local CRM sink")
    demo.add_argument("--serve", action="store_true", help="keep running (HTTP port on 8080)")
    demo.add_argument("--pace", type=float, default=None, help="replay speed factor (0 = max)")

    replay = sub.add_parser(
        "replay", help="run an AMI (.ami) or ARI (.jsonl) capture through your config, offline"
    )
    replay.add_argument("file", type=Path)
    replay.add_argument("--config", default=DEFAULT_CONFIG)
    replay.add_argument("--send", action="store_true", help="really deliver to the CRMs")
    replay.add_argument(
        "--store",
        type=Path,
        default=None,
        help="SQLite store to use and keep (default: a throwaway one)",
    )
    replay.add_argument(
        "--json",
        action="store_true",
        dest="json_lines",
        help="JSON lines: each call, then each request (or delivery)",
    )
    replay.add_argument(
        "--wait",
        type=float,
        default=30.0,
        dest="wait_seconds",
        help="--send: seconds to wait for the outbox to drain (default 30)",
    )
    replay.add_argument("--pace", type=float, default=0.0)

    check = sub.add_parser("check-config", help="validate a config file and name any mistake")
    check.add_argument("--config", default=DEFAULT_CONFIG)

    outbox = sub.add_parser("outbox", help="inspect and manage CRM deliveries")
    outbox.add_argument("action", choices=["list", "retry", "purge"])
    outbox.add_argument("--config", default=DEFAULT_CONFIG)
    outbox.add_argument("--state", default=None, help="pending | done | dead")
    outbox.add_argument("--adapter", default=None)
    outbox.add_argument("--limit", type=int, default=50)
    outbox.add_argument("--id", type=int, action="append", dest="ids", help="row id (repeat)")
    outbox.add_argument("--older-than-days", type=float, default=7.0)

    recordings = sub.add_parser("recordings", help="list recording files, delete old ones")
    recordings.add_argument("action", choices=["list", "purge"])
    recordings.add_argument("--config", default=DEFAULT_CONFIG)
    recordings.add_argument(
        "--older-than-days", type=float, default=None, help="default: [recordings] keep_days"
    )
    contacts = sub.add_parser(
        "contacts", help="import the store's local contacts (screen pop, 3CX lookup) from a CSV"
    )
    contacts.add_argument("action", choices=["import"])
    contacts.add_argument(
        "file", help="CSV with a header: number[,name,company,owner_extension,url]"
    )
    contacts.add_argument("--config", default=DEFAULT_CONFIG)
    return parser


def _load(path: str) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"config error:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _load_unsent(path: str) -> Settings:
    try:
        return check_settings(path).settings
    except ConfigError as exc:
        print(f"config error:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


async def _run(settings: Settings) -> int:
    from ari_app.app.service import Service

    service = Service(settings, settle_gc=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await service.start()
    try:
        await stop.wait()
    finally:
        await service.stop()
    return 0


async def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from ari_app.app.replay import ReplayOptions, replay

    options = ReplayOptions(
        capture=args.file,
        send=args.send,
        store=args.store,
        json_lines=args.json_lines,
        wait_seconds=args.wait_seconds,
        pace=args.pace,
    )
    return await replay(options, settings, sys.stdout, sys.stderr)


async def _outbox(args: argparse.Namespace, settings: Settings) -> int:
    from crm.delivery import admin as outbox_admin
    from crm.store.factory import open_store

    store = await open_store(settings.store)
    try:
        if args.action == "list":
            rows = await outbox_admin.list_deliveries(
                store, state=args.state, adapter=args.adapter, limit=args.limit
            )
            for row in rows:
                print(json.dumps(row, ensure_ascii=False, default=str))
            print(f"{len(rows)} row(s)", file=sys.stderr)
        elif args.action == "retry":
            count = await outbox_admin.retry(store, args.ids)
            print(f"{count} delivery(ies) queued again")
        else:
            count = await outbox_admin.purge(
                store, state=args.state or "done", older_than_seconds=args.older_than_days * 86400
            )
            print(f"{count} row(s) purged")
    finally:
        await store.close()
    return 0


async def _contacts(args: argparse.Namespace, settings: Settings) -> int:
    from crm.store.contacts_import import ContactFileError, import_contacts
    from crm.store.factory import open_store

    try:
        text = await asyncio.to_thread(Path(args.file).read_text, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"contacts import: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    store = await open_store(settings.store)
    try:
        result = await import_contacts(store, text.splitlines())
    except ContactFileError as exc:
        print(f"contacts import: {args.file}: {exc}", file=sys.stderr)
        return 2
    finally:
        await store.close()
    for problem in result.problems:
        print(f"contacts import: {args.file}: {problem} (skipped)", file=sys.stderr)
    print(f"{result.imported} contact(s) imported into {store.describe()}")
    return 1 if result.problems else 0


async def _recordings(args: argparse.Namespace, settings: Settings) -> int:
    from crm.recordings import retention
    from crm.recordings.library import RecordingLibrary
    from crm.recordings.settings import RecordingsSettings
    from crm.store.factory import open_store

    recordings = settings.recordings or RecordingsSettings()
    keep_days = args.older_than_days if args.older_than_days is not None else (recordings.keep_days)
    if args.action == "purge" and keep_days <= 0 and recordings.keep_original:
        print(
            "recordings purge: nothing to do: keep_days = 0 keeps recordings forever;"
            " give --older-than-days N",
            file=sys.stderr,
        )
        return 2
    library = RecordingLibrary(recordings, settings.calls.recording_dir)
    store = await open_store(settings.store)
    failed = False
    try:
        if args.action == "list":
            rows = await retention.list_files(library, store)
            for row in rows:
                print(json.dumps(row, ensure_ascii=False))
            print(f"{len(rows)} file(s)", file=sys.stderr)
        else:
            report = await retention.sweep(library, store, store.now(), keep_days=keep_days)
            for name in report.kept_pending:
                print(f"kept (delivery pending): {name}")
            for name in report.failed:
                print(f"could not delete: {name}", file=sys.stderr)
            print(f"{len(report.deleted)} file(s) deleted")
            failed = bool(report.failed)
    finally:
        await store.close()
        await library.close()
    return 1 if failed else 0


def pbx_address(settings: Settings) -> str:
    """Where pbxcrm follows the PBX: the AMI host:port, or the ARI URL and app."""
    if settings.pbx.source == "ari":
        return f"ARI {settings.pbx.ari.url} app {settings.pbx.ari.app}"
    return f"AMI {settings.pbx.ami.host}:{settings.pbx.ami.port}"


def _check_config(path: str) -> int:
    from crm.dialects.summary import describe_block

    try:
        check = check_settings(path)
    except ConfigError as exc:
        print(f"config error:\n{exc}", file=sys.stderr)
        return 2
    settings = check.settings
    enabled = sum(1 for block in settings.crm if block.enabled)
    print(
        f"{path}: OK ({len(settings.crm)} CRM block(s), {enabled} enabled; "
        f"PBX source {settings.pbx.source} at {pbx_address(settings)})"
    )
    for index, block in enumerate(settings.crm):
        print(f"  {describe_block(index, block)}")
    if check.unreadable_secrets:
        print(
            "secrets not readable from here (pbxcrm run needs them in its own environment):",
            file=sys.stderr,
        )
        for problem in check.unreadable_secrets:
            print(f"  {problem}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.config)
    if args.command == "demo":
        from ari_app.app.demo import DEMO_PACE, run_demo

        setup_logging("WARNING")
        pace = DEMO_PACE if args.pace is None else args.pace
        return asyncio.run(run_demo(sys.stdout, serve=args.serve, pace=pace))
    if args.command == "replay":
        # A dry run sends nothing, so secrets this shell cannot read do not stop it.
        settings = _load(args.config) if args.send else _load_unsent(args.config)
        setup_logging(settings.logging.level, settings.logging.format)
        return asyncio.run(_replay(args, settings))
    settings = _load(args.config)
    setup_logging(settings.logging.level, settings.logging.format)
    if args.command == "run":
        return asyncio.run(_run(settings))
    if args.command == "recordings":
        return asyncio.run(_recordings(args, settings))
    if args.command == "contacts":
        return asyncio.run(_contacts(args, settings))
    return asyncio.run(_outbox(args, settings))


if __name__ == "__main__":
    raise SystemExit(main())
