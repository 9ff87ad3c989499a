"""Stopping a generation: the one signal every composer backend and the serving deadline share (its own
module so that the backends need not import each other)."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("csbot.composer")


class Cancel(threading.Event):
    """The signal to stop a generation: an Event that also runs the callbacks registered with
    `on_set` when it is set, so that a backend can interrupt a call that blocks (cut a connection,
    flag llama.cpp to abort)."""

    def __init__(self):
        super().__init__()
        self._hooks: list = []
        self._hooks_lock = threading.Lock()

    def set(self) -> None:
        with self._hooks_lock:
            super().set()
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            try:
                hook()
            except Exception as exc:  # noqa: BLE001 - one failed interruption must not stop the others
                log.info("stopping a generation: %s: %s", type(exc).__name__, exc)

    def on_set(self, hook):
        """Call `hook()` when this is set (now, if it is already); returns a function that unregisters it."""
        with self._hooks_lock:
            if not self.is_set():
                self._hooks.append(hook)
                return lambda: self._forget(hook)
        hook()
        return lambda: None

    def _forget(self, hook) -> None:
        with self._hooks_lock:
            if hook in self._hooks:
                self._hooks.remove(hook)
