"""Durable landing of interaction events: JSON lines, fsynced before the server answers.

One writer per server replica. Events go through one thread that appends every event queued
since its last pass, fsyncs once and then releases all their waiters (group commit: concurrent
requests share an fsync). A file is written as `<replica>-<seq>.part`, held under an exclusive
`flock` while it is open, and renamed to `.jsonl` when it rolls (by size or age) or the server
stops; the stream reads only `.jsonl` files, so it never sees a file still being written.

A replica killed with SIGKILL leaves its `.part` open; its lock dies with it. The next replica
that starts (any replica on that folder) closes such orphans: it takes the lock, and renames the
file. A torn last line (the event whose write the kill cut) was never acknowledged; it stays in
the file and the stream sends it to quarantine.
"""

from __future__ import annotations

import fcntl
import os
import queue
import socket
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

PART, CLOSED = ".part", ".jsonl"


@dataclass(frozen=True)
class LandingSettings:
    """How the landing files roll, and whether an answer waits for the disk."""

    roll_bytes: int = 16 * 1024 * 1024
    roll_seconds: float = 60.0
    # False only to measure what durability costs (benchmarks/serve.py): events may be lost.
    fsync: bool = True


def default_replica_id() -> str:
    """Unique per server process: no two writers ever share a file name."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def close_orphans(folder: Path) -> list[Path]:
    """Rename to `.jsonl` every `.part` file whose writer is gone (its lock is free)."""
    closed = []
    for part in sorted(folder.glob(f"*{PART}")):
        try:
            handle = open(part, "rb")  # noqa: SIM115 - held while the lock is tested
        except FileNotFoundError:
            continue  # its writer just rolled it
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live replica's open file
            target = part.with_suffix(CLOSED)
            stat = part.stat()
            if stat.st_size == 0 and time.time() - stat.st_mtime < 10:
                continue  # just created: its writer may not hold the lock yet
            if stat.st_size == 0:
                part.unlink()
            else:
                os.replace(part, target)
                closed.append(target)
    if closed:
        _fsync_dir(folder)
    return closed


class LandingWriter:
    """Appends events to this replica's landing files; `write()` returns once they are durable."""

    def __init__(self, folder: Path, settings: LandingSettings = LandingSettings(), replica: str | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.replica = replica or default_replica_id()
        self.recovered = close_orphans(self.folder)
        self._queue: queue.Queue[tuple[list[bytes], Future[None]] | None] = queue.Queue()
        self._handle: Any = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._sequence = 0
        self._error: BaseException | None = None
        self.events_written = 0
        self.fsyncs = 0
        self._thread = threading.Thread(target=self._run, name="landing-writer", daemon=True)
        self._thread.start()

    def submit(self, events: list[dict[str, Any]]) -> Future[None]:
        """Queue events; the future completes when they are on disk (or fails with the I/O error)."""
        future: Future[None] = Future()
        if self._error is not None:
            future.set_exception(self._error)
            return future
        lines = [orjson.dumps(e) + b"\n" for e in events]
        self._queue.put((lines, future))
        return future

    def write(self, events: list[dict[str, Any]], timeout: float | None = 30.0) -> None:
        """Durably append `events` (blocking)."""
        self.submit(events).result(timeout)

    def close(self) -> None:
        """Flush what is queued and close the open file as `.jsonl` (again: nothing)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=60)

    # The writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            timeout = None
            if self._handle is not None:
                timeout = max(0.0, self._opened_at + self.settings.roll_seconds - time.monotonic())
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._roll()
                continue
            batch = [first]
            while True:  # group commit: everything queued by now shares this fsync
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is None for item in batch)
            work = [item for item in batch if item is not None]
            if work:
                self._commit(work)
            if stop:
                self._roll()
                return

    def _commit(self, work: list[tuple[list[bytes], Future[None]]]) -> None:
        try:
            if self._handle is None:
                self._open()
            data = b"".join(line for lines, _ in work for line in lines)
            self._handle.write(data)
            self._handle.flush()
            if self.settings.fsync:
                os.fsync(self._handle.fileno())
                self.fsyncs += 1
        except BaseException as err:  # noqa: BLE001 - every waiter learns of the failure
            self._error = err
            for _, future in work:
                future.set_exception(err)
            return
        self.events_written += sum(len(lines) for lines, _ in work)
        for _, future in work:
            future.set_result(None)
        if self._handle.tell() >= self.settings.roll_bytes:
            self._roll()

    def _open(self) -> None:
        self._sequence += 1
        self._path = self.folder / f"{self.replica}-{self._sequence:06d}{PART}"
        self._handle = open(self._path, "ab")  # noqa: SIM115 - lives until the file rolls
        fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._opened_at = time.monotonic()
        _fsync_dir(self.folder)  # the new name survives a crash too

    def _roll(self) -> None:
        if self._handle is None or self._path is None:
            return
        empty = self._handle.tell() == 0
        if self.settings.fsync:
            os.fsync(self._handle.fileno())
        if empty:
            self._path.unlink()
        else:
            os.replace(self._path, self._path.with_suffix(CLOSED))
        self._handle.close()  # releases the lock after the rename: no one sees an unlocked .part
        self._handle = self._path = None
        _fsync_dir(self.folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
