"""Reading the recorded ARI captures in tests (format: fixtures/asterisk/README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ARI_DIR = Path(__file__).parent / "fixtures" / "asterisk" / "ari"


def recorded_ari_messages(scenario: str) -> list[dict[str, Any]]:
    """Every websocket message of `ari/<scenario>.jsonl`, in arrival order."""
    lines = (ARI_DIR / f"{scenario}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def recorded_rest(name: str) -> dict[str, Any]:
    """`ari/rest/<name>.json`: {"request": {...}, "status": int, "response": body}."""
    return json.loads((ARI_DIR / "rest" / f"{name}.json").read_text(encoding="utf-8"))
