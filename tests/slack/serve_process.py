"""`csbot serve --http PORT` (or `--socket`) in a subprocess on 127.0.0.1, pointed at the mock Slack Web API: for the
crash, stop and two-process tests (tests/slack/test_slack_intake.py) and benchmarks/bench_slack_load.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.slack.slack_mock import BOT_TOKEN, SIGNING_SECRET
from tests.slack.slack_sender import SlackSender

REPO = Path(__file__).resolve().parents[2]
SCRIPT = ("import argparse, sys; from bot.commands import serve; p = argparse.ArgumentParser(); "
          "serve.register(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """One serving process. `settings` become CSBOT_<NAME> environment variables."""

    def __init__(self, home: Path, api_url: str, log_path: Path, *, port: int | None = None, socket_mode: bool = False,
                 **settings):
        self.port = port or free_port()
        self.home = Path(home)
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env.update({"CSBOT_HOME": str(home), "CSBOT_SLACK_API_URL": api_url, "SLACK_BOT_TOKEN": BOT_TOKEN,
                    "SLACK_SIGNING_SECRET": SIGNING_SECRET, "NO_PROXY": "127.0.0.1,localhost",
                    "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
        env.update({f"CSBOT_{k.upper()}": str(v) for k, v in settings.items()})
        if socket_mode:
            env["SLACK_APP_TOKEN"] = "xapp-test-token"
        mode = ["--socket"] if socket_mode else ["--http", str(self.port), "--host", "127.0.0.1"]
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-c", SCRIPT, "serve", *mode, "--log-level", "INFO"],
                                     env=env, cwd=str(self.home.parent),
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.sender = SlackSender(f"http://127.0.0.1:{self.port}")

    def wait_healthy(self, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, body = self.sender.get("/healthz")
                if status == 200:
                    return json.loads(body)
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"csbot serve exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"csbot serve did not come up:\n{self.output()}")
            time.sleep(0.2)

    def health(self) -> dict:
        return json.loads(self.sender.get("/healthz")[1])

    def wait_drained(self, timeout: float = 120.0) -> dict:
        """Until the shared inbox has nothing pending or running."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if not health["inbox"]["pending"] and not health["inbox"]["running"]:
                return health
            if time.monotonic() > deadline:
                raise AssertionError(f"the inbox did not drain: {health}\n{self.output()}")
            time.sleep(0.2)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._log.close()

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]
