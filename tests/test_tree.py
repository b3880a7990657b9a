"""The repository is self-contained: a clone anywhere runs the tests and the benchmarks."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# An absolute path into the machine this was written on, or a climb out of the clone to a sibling
# folder: either breaks on every other machine.
OUTSIDE = re.compile(r"/wor[k]/|\.\./shared/")


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return [ROOT / name for name in out.split("\0") if name]


def test_no_tracked_file_names_a_path_outside_the_repository() -> None:
    offenders = []
    for path in tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not offenders, "paths outside the repository:\n" + "\n".join(offenders)


def test_recorded_traffic_is_in_the_repository() -> None:
    fixtures = ROOT / "tests" / "fixtures"
    for folder in ("asterisk-20", "asterisk-20-pjsip", "freeswitch", "freeswitch-faults"):
        assert list((fixtures / folder).glob("*.jsonl")), folder
