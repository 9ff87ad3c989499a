"""An OpenAI-compatible chat endpoint on loopback that streams a reply fixed in advance, as a stand-in
for a language-model server (not for any csbot class): the composer's real OpenAI backend
(models/composer_openai.py, the `openai` client) talks to it over HTTP.

What the small embedded model writes for a question varies with the CPU (llama.cpp picks its
kernels by instruction set: the same GGUF, greedy, one thread, drafted a different answer on an AVX2
VM than on the AVX-512 ones), so the tests of what the guard does with a given draft feed that draft
from here; tests/compose/test_compose_real.py keeps the real model for the drafts it writes alike
everywhere."""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "scripted-model"


class ScriptedEndpoint:
    """`with ScriptedEndpoint(reply) as url:` serves POST {url}/chat/completions, streaming `reply` a
    word at a time as server-sent events; `reply` is the text, or a function of the request's
    messages that returns it. `requests` keeps each request's JSON body.

    A slow server: `first_delay` seconds before the first word (with `headers_first`, after the
    response headers, as vLLM does; else before them, as llama.cpp's server does, which answers only
    once it has the first token), `delay` seconds before each later word (or `delay(i)` before word
    i, to stall in the middle of the answer). While it waits it watches
    the connection: `hung_up` is set when the client closes it before the reply is done (the
    server's generation would then stop)."""

    def __init__(self, reply: str | Callable[[list[dict]], str], *, first_delay: float = 0.0,
                 delay: float | Callable[[int], float] = 0.0, headers_first: bool = True):
        self.reply = reply
        self.first_delay, self.delay, self.headers_first = first_delay, delay, headers_first
        self.requests: list[dict] = []
        self.hung_up = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                endpoint.requests.append(body)
                if not self.path.endswith("/chat/completions"):
                    self.send_error(404)
                    return
                if not endpoint.headers_first and not self._wait(endpoint.first_delay):
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                self.wfile.flush()
                reply = endpoint.reply if isinstance(endpoint.reply, str) else endpoint.reply(body["messages"])
                for i, piece in enumerate(re.findall(r"\S+\s*|\s+", reply)):
                    wait = endpoint.pause(i)
                    if not self._wait(wait):
                        return
                    self._event({"index": 0, "delta": {"content": piece}, "finish_reason": None})
                self._event({"index": 0, "delta": {}, "finish_reason": "stop"})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _wait(self, seconds: float) -> bool:
                """Sleep `seconds`; False (and `hung_up` set) as soon as the client closes the connection."""
                deadline = time.monotonic() + seconds
                while (left := deadline - time.monotonic()) > 0:
                    readable, _, _ = select.select([self.connection], [], [], left)
                    if readable:
                        if not self._connected():
                            endpoint.hung_up.set()
                            return False
                        time.sleep(min(left, 0.05))  # bytes, not a hang-up: nothing here reads them
                return True

            def _connected(self) -> bool:
                try:
                    return bool(self.connection.recv(1, socket.MSG_PEEK))  # b"": the client closed it
                except OSError:  # reset
                    return False

            def _event(self, choice: dict) -> None:
                chunk = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0,
                         "model": MODEL, "choices": [choice]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def pause(self, i: int) -> float:
        """Seconds to wait before word `i` once the headers are sent."""
        if i == 0:
            return self.first_delay if self.headers_first else 0.0
        return self.delay(i) if callable(self.delay) else self.delay

    def __enter__(self) -> str:
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
