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
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "scripted-model"


class ScriptedEndpoint:
    """`with ScriptedEndpoint(reply) as url:` serves POST {url}/chat/completions, streaming `reply` a
    word at a time as server-sent events; `reply` is the text, or a function of the request's
    messages that returns it. `requests` keeps each request's JSON body."""

    def __init__(self, reply: str | Callable[[list[dict]], str]):
        self.reply = reply
        self.requests: list[dict] = []
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
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                reply = endpoint.reply if isinstance(endpoint.reply, str) else endpoint.reply(body["messages"])
                for piece in re.findall(r"\S+\s*|\s+", reply):
                    self._event({"index": 0, "delta": {"content": piece}, "finish_reason": None})
                self._event({"index": 0, "delta": {}, "finish_reason": "stop"})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _event(self, choice: dict) -> None:
                chunk = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0,
                         "model": MODEL, "choices": [choice]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
