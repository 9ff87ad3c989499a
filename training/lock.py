"""One retrain at a time: an exclusive `fcntl` lock on `CSBOT_HOME/retrain.lock`.

The kernel releases an fcntl lock when its process dies, however it dies (SIGKILL included), so a
crashed run never leaves a stale lock behind: the file may still exist, but nobody holds it and the
next run takes it at once. The file's content (pid, host, start time) is only informational, for
the "another retrain is running" message; it is never trusted to decide anything.

    with RetrainLock(settings.home) as lock:      # raises LockBusy if another run holds it
        ...

`csbot ingest` can take the same lock (`RetrainLock(home).acquire(wait=True)`) so that a build it
starts never races a retrain (both create `.building-*` folders and both call `clean_partial`).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from core.errors import CsbotError

LOCK_FILE = "retrain.lock"


class LockBusy(CsbotError):
    """Another process holds the lock."""

    def __init__(self, path: Path, holder: dict | None):
        self.path = path
        self.holder = holder or {}
        who = f"pid {self.holder.get('pid', '?')}"
        if self.holder.get("started"):
            who += f", started {self.holder['started']}"
        super().__init__(f"another retrain is running ({who}; lock {path})")


class RetrainLock:
    def __init__(self, home: str | os.PathLike, name: str = LOCK_FILE):
        self.path = Path(home) / name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> dict | None:
        """What the holder wrote into the file (informational), or None."""
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None

    def acquire(self, *, wait: bool = False, timeout: float | None = None) -> "RetrainLock":
        """Take the lock; `wait=False` raises LockBusy at once when it is held elsewhere."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait or (deadline is not None and time.monotonic() >= deadline):
                    os.close(fd)
                    raise LockBusy(self.path, self.holder()) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.write(fd, json.dumps(info).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RetrainLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
