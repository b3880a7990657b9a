"""Shared helpers for the benchmarks: machine description and the closing JSON line."""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def emit_json(figures: dict[str, Any]) -> None:
    """The last line of every benchmark's output."""
    print(json.dumps(figures, separators=(",", ":")))
