"""What a benchmark section reports: figures (with their goal or comparison) and correctness
checks; printed as a table and written as JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class Figure:
    name: str
    value: float
    unit: str
    goal: str = ""  # e.g. ">= 100,000"; empty for a comparison figure
    met: bool | None = None
    key: str = ""  # the JSON key

    def line(self) -> str:
        value = _fmt(self.value, self.unit)
        verdict = "" if self.met is None else ("  [goal met]" if self.met else "  [GOAL MISSED]")
        goal = f"  goal {self.goal}" if self.goal else ""
        return f"  {self.name:<58} {value:>16}{goal}{verdict}"


@dataclass(slots=True)
class Check:
    name: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        return f"  check: {self.name:<50} {'ok' if self.ok else 'FAILED'}  ({self.detail})"


@dataclass(slots=True)
class Section:
    title: str
    figures: list[Figure] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def text(self) -> str:
        lines = [self.title]
        lines += [f"  ({note})" for note in self.notes]
        lines += [figure.line() for figure in self.figures]
        lines += [check.line() for check in self.checks]
        lines.append(f"  [{self.seconds:.1f} s]")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "seconds": round(self.seconds, 2),
            "figures": {f.key or f.name: {**asdict(f)} for f in self.figures},
            "checks": [asdict(c) for c in self.checks],
            "notes": self.notes,
        }


def _fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return f"n/a {unit}"
    if unit == "x":
        return f"{value:.3f} x"  # 0.599 must not print as a met 0.60
    if unit in ("ms", "s"):
        return f"{value:.2f} {unit}"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.1f} {unit}"


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of the samples; NaN when there are none."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
