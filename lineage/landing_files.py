"""A data subject's events in the landing files of `millpond serve`, found and cut out.

The landing folder is raw data like bronze: erasure rewrites every file that holds a line of the
person (their user id, an interaction found for them, or their e-mail address or phone number in
the text), atomically (a new file renamed over the old). A file a live server still holds open
(`.part`, under its writer's lock) is waited for until it rolls; what is still open after the
wait is reported as pending, never silently left.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lineage.subjects import SubjectForms

OPEN, CLOSED = ".part", ".jsonl"


@dataclass
class LandingErasure:
    files_rewritten: list[str] = field(default_factory=list)
    lines_removed: int = 0
    pending: list[str] = field(default_factory=list)  # open files of a live server that did not roll in time

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class _Matcher:
    def __init__(self, subjects: list[SubjectForms], interactions: set[str]):
        self.users = {v for s in subjects for v in s.clear}
        self.interactions = interactions
        self.literals = [t.lower() for s in subjects for t in s.text_literals]
        self.patterns = []
        for s in subjects:
            for p in s.text_patterns:
                try:
                    self.patterns.append(re.compile(p))
                except re.error:
                    continue

    def __call__(self, line: bytes) -> bool:
        text = line.decode("utf-8", errors="replace")
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and (
            record.get("user") in self.users or record.get("interaction_id") in self.interactions
        ):
            return True
        # A torn line, or another user's event that mentions them: matched on the raw text.
        if any(u and u in text for u in self.users if record is None):
            return True
        lower = text.lower()
        return any(t in lower for t in self.literals) or any(p.search(text) for p in self.patterns)


def _held(path: Path) -> bool:
    """Whether a live writer holds the file's lock."""
    try:
        with open(path, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except FileNotFoundError:
        return False


def erase_landing(
    folder: Path, subjects: list[SubjectForms], interactions: set[str], wait_seconds: float = 90.0
) -> LandingErasure:
    """Cut the person's lines out of every landing file; wait for open files holding some to roll."""
    result = LandingErasure()
    if not folder.is_dir():
        return result
    matches = _Matcher(subjects, interactions)

    def holds_match(path: Path) -> bool:
        try:
            return any(matches(line) for line in path.read_bytes().split(b"\n") if line.strip())
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + wait_seconds
    while True:
        live = [p for p in sorted(folder.glob(f"*{OPEN}")) if _held(p) and holds_match(p)]
        if not live or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    result.pending = [p.name for p in live]
    candidates = sorted(folder.glob(f"*{CLOSED}")) + [
        p for p in sorted(folder.glob(f"*{OPEN}")) if p.name not in result.pending and not _held(p)
    ]
    for path in candidates:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        lines = data.split(b"\n")
        keep = [line for line in lines if not (line.strip() and matches(line))]
        removed = len(lines) - len(keep)
        if not removed:
            continue
        temporary = path.with_name(f".{path.name}.erasing")
        with open(temporary, "wb") as handle:
            handle.write(b"\n".join(keep))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        result.files_rewritten.append(path.name)
        result.lines_removed += removed
    if result.files_rewritten:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return result
