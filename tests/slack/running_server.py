"""The app's HTTP server and worker pool running in background threads, for tests and benchmarks.

Production runs `bot.slack.server.serve_http` in the foreground; tests and benchmarks need the same
HttpServer and workers started in the background and stopped on demand, which is all this adds.
"""

from __future__ import annotations

import threading

from bot.slack.server import HttpServer


class RunningServer:
    """`wsgi_app` served by HttpServer on a background thread, its app's workers started, until `stop()`."""

    def __init__(self, wsgi_app, host: str = "127.0.0.1", port: int = 0, **options):
        self.handler = wsgi_app
        self.workers = getattr(getattr(wsgi_app, "app", None), "workers", None)
        if self.workers is not None:
            self.workers.start()
        self.http = HttpServer(wsgi_app, host, port, **options)
        self.url = self.http.url
        self.thread = threading.Thread(target=self.http.run, name="csbot-http", daemon=True)
        self.thread.start()

    def stop(self, grace: float | None = None) -> None:
        self.http.stop()
        self.thread.join(timeout=5)
        if self.workers is not None:
            self.workers.stop(grace)
