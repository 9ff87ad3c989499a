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


def _duration(seconds: float) -> str:
    """`45s`, `1m 30s`, `2h 05m`: how long a stage has run, for people."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


class Progress:
    """Progress of long work on stderr, following its stages (`stage("encoding 1,234 chunks")`).

    On a terminal: one line `label · 12s` redrawn in place, its label the current stage, then
    `label: done in 12.3s` under the first label. When stderr is not a terminal (a pipe, a log file):
    plain lines, without carriage returns or escape codes: one per stage change (`csbot ingest:
    encoding 1,234 chunks…`) and, while a stage runs long, one every `heartbeat` seconds (`csbot
    ingest: … still encoding 1,234 chunks (1m 30s)`); the first label is not printed there, so work that
    stops early on bad input leaves only its one error line. `name` (the command, default "csbot")
    starts those plain lines. Silent with `quiet`."""

    def __init__(self, label: str, *, quiet: bool = False, stream=None, interval: float = 0.5,
                 heartbeat: float = 30.0, name: str | None = None):
        self.label = self.title = label
        self.stream = stream or sys.__stderr__ or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.quiet = quiet
        self.enabled = not quiet and self.tty  # the redrawn line is shown
        self.interval = interval
        self.heartbeat = heartbeat
        self.prefix = f"{name or 'csbot'}: "
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = self._stage_started = self._last_line = 0.0
        self._lock = threading.Lock()
        self._shown = False
        self._lines = 0  # plain lines written (not a terminal)

    def stage(self, label: str) -> None:
        """The work moved on to `label` (a callback the work calls: `progress=bar.stage`)."""
        with self._lock:
            if label == self.label:
                return
            self.label = label
            self._stage_started = time.perf_counter()
            if not self.quiet and not self.tty:
                self._line(f"{label}…")

    def _line(self, text: str) -> None:  # with the lock held
        self.stream.write(f"{self.prefix}{text}\n")
        self.stream.flush()
        self._last_line = time.perf_counter()
        self._lines += 1

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
        self._started = self._stage_started = self._last_line = time.perf_counter()
        if not self.quiet:
            target = self._tick if self.tty else self._beat
            self._thread = threading.Thread(target=target, name="csbot-progress", daemon=True)
            self._thread.start()
        return self

    def _tick(self) -> None:
        frames = "|/-\\"
        n = 0
        while not self._stop.wait(self.interval if n else 0):
            elapsed = time.perf_counter() - self._started
            with self._lock:
                self.stream.write(f"\r\x1b[K{frames[n % 4]} {self.label} · {elapsed:.0f}s ")
                self.stream.flush()
                self._shown = True
            n += 1

    def _beat(self) -> None:
        """Not a terminal: a line when the current stage has printed nothing for `heartbeat` seconds."""
        while True:
            with self._lock:
                due = self._last_line + self.heartbeat
            if self._stop.wait(max(0.0, due - time.perf_counter())):
                return
            with self._lock:
                now = time.perf_counter()
                if now >= self._last_line + self.heartbeat:
                    self._line(f"… still {self.label} ({_duration(now - self._stage_started)})")

    def __exit__(self, exc_type, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        elapsed = time.perf_counter() - self._started
        status = "done" if exc_type is None else "stopped"
        with self._lock:
            if self.enabled:
                self.stream.write(f"\r\x1b[K{self.title}: {status} in {elapsed:.1f}s\n")
                self.stream.flush()
            elif self._lines:  # a log that said what was going on says that it ended
                self._line(f"{status} after {_duration(elapsed)}")
