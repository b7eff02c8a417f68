"""`python -m tests.benchmarks [--quick] [--json PATH] [--only NAME ...]`

Runs every benchmark, prints each figure beside its goal or comparison, checks correctness
while measuring, and exits 1 if a correctness check failed (never because of a figure).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.report import Check, Section

SECTIONS: dict[str, str] = {
    "ingest": "tests.benchmarks.ingest",
    "memory": "tests.benchmarks.memory",
    "fastagi": "tests.benchmarks.fastagi_bench",
    "click_to_call": "tests.benchmarks.click_to_call",
    "outbox": "tests.benchmarks.outbox_bench",
    "latency": "tests.benchmarks.latency",
    "recordings": "tests.benchmarks.recordings_bench",
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (seconds)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="run only these")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> list[Section]:
    sections: list[Section] = []
    for name, module_name in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        module: Any = importlib.import_module(module_name)
        started = time.monotonic()
        try:
            section: Section = await module.run(args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            section = Section(
                name, checks=[Check("benchmark ran", False, f"{type(exc).__name__}: {exc}")]
            )
        section.seconds = time.monotonic() - started
        print(section.text(), flush=True)
        print(flush=True)
        sections.append(section)
    return sections


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started = time.monotonic()
    print(
        f"pbxcrm benchmarks{' (quick smoke run)' if args.quick else ''}: "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}; load average before the run"
        f" {os.getloadavg()[0]:.2f} (other processes on these cores lower every figure)\n",
        flush=True,
    )
    sections = asyncio.run(_run(args))
    total = time.monotonic() - started
    failed = [c for s in sections for c in s.checks if not c.ok]
    missed = [f for s in sections for f in s.figures if f.met is False]
    print(
        f"total {total:.0f} s; correctness: "
        + ("all checks passed" if not failed else f"{len(failed)} check(s) FAILED")
        + f"; goals missed: {len(missed)}"
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "quick": args.quick,
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "load_average_before": os.getloadavg()[0],
                    "total_seconds": round(total, 1),
                    "sections": {s.title: s.as_json() for s in sections},
                    "checks_passed": not failed,
                },
                indent=2,
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
