"""Where a command's own output goes, and our progress display on stderr.

While a `csbot` command runs, `sys.stdout` points at stderr (bot/cli.py), so anything a library
prints (the transformers trainer prints a `{'train_runtime': ...}` dict) lands in the log, never
between the JSON Lines a command writes. A command writes its results with `out(...)`, which goes
to the real standard output.
"""

from __future__ import annotations

import sys
import threading
import time

_stdout = None


def set_stdout(stream) -> None:
    global _stdout
    _stdout = stream


def stdout():
    """The command's real standard output (sys.stdout when not run through bot/cli.py)."""
    return _stdout if _stdout is not None else sys.stdout


def out(*values, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
    print(*values, sep=sep, end=end, file=stdout(), flush=flush)


class Progress:
    """A one-line progress display on stderr for long work: `label · 12s` refreshed in place, then
    `label: done in 12.3s`. Off (silent) when stderr is not a terminal or when `quiet`."""

    def __init__(self, label: str, *, quiet: bool = False, stream=None, interval: float = 0.5):
        self.label = label
        self.stream = stream or sys.__stderr__ or sys.stderr
        self.enabled = not quiet and bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._lock = threading.Lock()
        self._shown = False

    def clear(self) -> None:
        """Blank the progress line so that a log line printed next starts clean (the ticker redraws
        it below on its next tick)."""
        with self._lock:
            if self._shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._shown = False

    def filter(self, record) -> bool:
        """As a logging filter on a logger that prints to the same terminal: clear first."""
        self.clear()
        return True

    def __enter__(self) -> "Progress":
        self._started = time.perf_counter()
        if self.enabled:
            self._thread = threading.Thread(target=self._tick, name="csbot-progress", daemon=True)
            self._thread.start()
        return self

    def _tick(self) -> None:
        frames = "|/-\\"
        n = 0
        while not self._stop.wait(self.interval if n else 0):
            elapsed = time.perf_counter() - self._started
            with self._lock:
                self.stream.write(f"\r{frames[n % 4]} {self.label} · {elapsed:.0f}s ")
                self.stream.flush()
                self._shown = True
            n += 1

    def __exit__(self, exc_type, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            elapsed = time.perf_counter() - self._started
            status = "done" if exc_type is None else "stopped"
            with self._lock:
                self.stream.write(f"\r\x1b[K{self.label}: {status} in {elapsed:.1f}s\n")
                self.stream.flush()
