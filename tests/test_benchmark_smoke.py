"""The benchmark's smoke run: `python -m tests.benchmarks --quick` finishes by itself, every
correctness check passes and every figure is printed and written to JSON. The figures
themselves are never asserted (machines are noisy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIGURE_KEYS = {
    "ingest_events_per_s",
    "panoramisk_events_per_s",
    "minimal_parser_events_per_s",
    "ingest_vs_panoramisk",
    "rss_mb",
    "fastagi_minimal_sessions_per_s",
    "fastagi_hit_sessions_per_s",
    "fastagi_miss_sessions_per_s",
    "fastagi_hit_vs_minimal",
    "fastagi_hit_p99_ms",
    "classic_agi_ms_per_call",
    "classic_agi_vs_pyst2",
    "classic_agi_in_process_ms_per_call",
    "c2c_requests_per_s",
    "c2c_p99_ms",
    "c2c_cpu_us_per_request",
    "outbox_deliveries_per_s",
    "outbox_drain_seconds",
    "hangup_to_crm_p99_ms",
    "mp3_cpu_seconds_per_audio_minute",
}


def test_quick_benchmark_run_passes_every_correctness_check_and_prints_every_figure(
    tmp_path: Path,
) -> None:
    out = tmp_path / "figures.json"
    run = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    assert report["checks_passed"] is True
    sections = report["sections"].values()
    assert len(sections) == 7
    checks = [check for section in sections for check in section["checks"]]
    assert checks and all(check["ok"] for check in checks), checks
    figures = {key: f for section in sections for key, f in section["figures"].items()}
    assert FIGURE_KEYS <= figures.keys()
    for key in FIGURE_KEYS:
        # Printed beside its goal or comparison, on a line of its own.
        assert figures[key]["name"] in run.stdout, key
    assert "correctness: all checks passed" in run.stdout
