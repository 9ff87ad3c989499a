"""An OpenAI-compatible chat endpoint as a composer backend (vLLM, llama.cpp's server, TGI, Ollama).

`OpenAIChat` streams `/v1/chat/completions` through the official `openai` client (no retries: a
failed request falls back to the select answer at once, see serving/compose.py). OpenAI's API takes
at most four stop strings: the first four go to the server, and every stop string is also applied
here, holding back a piece's tail while it could still be the start of one, so the text ends before
any of them whatever the server does with `stop`. Every failure is an `EndpointError` (one line,
naming the endpoint's URL), raised from the openai client's own exception.

A composition past its deadline cancels the stream (`cancel`, models/composer.py `Cancel`): the
request's socket is shut down at once, which ends a wait for the response headers or for the next
piece (the server sees the client hang up and stops generating). The socket is caught as it is
connected (an httpcore trace hook), so each request opens its own connection (no keep-alive): a
reused one would be connected already, out of reach of the hook.
"""

from __future__ import annotations

import contextvars
import socket
from typing import Generator, Iterator

from core.errors import UserError
from core.settings import ComposeSettings
from models.cancel import Cancel

MAX_STOP = 4  # OpenAI's limit on `stop`; vLLM and llama.cpp's server take more, others refuse them


class EndpointError(UserError):
    """The compose endpoint could not be reached, refused the request, or failed mid-answer."""


class OpenAIChat:
    """A model served behind an OpenAI-compatible `/v1` base URL (greedy unless temperature > 0).

    `timeout`: seconds to connect and, once connected, between streamed pieces."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 30.0):
        import openai

        self.name = f"{model} at {base_url}"
        self.base_url, self.model, self.timeout = base_url, model, timeout
        # Servers without authentication still want some bearer token from this client.
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout,
                                    max_retries=0, http_client=_cuttable_client())

    def stream(self, messages: list[dict], *, max_new_tokens: int,
               temperature: float = ComposeSettings.temperature, stop: list[str] | None = None,
               cancel: Cancel | None = None) -> Generator[str, None, None]:
        import openai

        stop = [s for s in stop or [] if s]
        cuts: list = []  # unregisters the socket's shutdown from `cancel` once the stream is done
        token = _CANCEL.set((cancel, cuts) if cancel is not None else None)
        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=max_new_tokens, temperature=temperature,
                stop=stop[:MAX_STOP] or None, stream=True)
        except openai.OpenAIError as exc:
            _forget(cuts)
            raise self._error(exc) from exc
        finally:
            _CANCEL.reset(token)
        held = ""  # the end of the text so far that may begin a stop string
        try:
            for chunk in _chunks(response, self._error):
                piece = chunk.choices[0].delta.content if chunk.choices else None
                if not piece:
                    continue
                pending = held + piece
                cut = _first_stop(pending, stop)
                if cut is not None:
                    if pending[:cut]:
                        yield pending[:cut]
                    return
                keep = _stop_prefix(pending, stop)
                ready, held = pending[:len(pending) - keep], pending[len(pending) - keep:]
                if ready:
                    yield ready
            if held:
                yield held
        finally:
            response.close()  # ends the server's generation when the caller stops early
            _forget(cuts)

    def _error(self, exc: Exception) -> EndpointError:
        import openai

        where = f"the compose endpoint {self.base_url}"
        if isinstance(exc, openai.APITimeoutError):
            return EndpointError(f"{where} did not answer within {self.timeout:g}s")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            detail = _one_line(str(cause)) if cause is not None and str(cause) else _one_line(str(exc))
            return EndpointError(f"cannot connect to {where} ({detail}); is the server running?")
        if isinstance(exc, openai.APIStatusError):
            hint = {401: "; check the compose api_key (or OPENAI_API_KEY)", 403: "; check the compose api_key",
                    404: f"; does it serve the model {self.model!r} (compose model) under that /v1 URL?"}
            return EndpointError(f"{where} answered HTTP {exc.status_code}: {_one_line(_message(exc))}"
                                 f"{hint.get(exc.status_code, '')}")
        return EndpointError(f"{where} failed: {type(exc).__name__}: {_one_line(str(exc))}")


# The stream being requested on this thread: its Cancel and the list its socket's hook goes in.
_CANCEL: contextvars.ContextVar = contextvars.ContextVar("csbot_compose_cancel", default=None)


def _cuttable_client():
    """openai's default httpx client, without keep-alive, whose requests made inside a cancellable
    `OpenAIChat.stream` have their socket shut down when the stream's Cancel is set."""
    import openai

    class Client(openai.DefaultHttpxClient):
        def send(self, request, **kwargs):
            current = _CANCEL.get()
            if current is not None:
                request.extensions = {**request.extensions, "trace": _shut_on(*current)}
            return super().send(request, **kwargs)

    limits = openai.DEFAULT_CONNECTION_LIMITS  # an httpx Limits (the openai client's own httpx fork)
    return Client(limits=type(limits)(max_connections=limits.max_connections, max_keepalive_connections=0))


def _shut_on(cancel: Cancel, cuts: list):
    """An httpcore trace hook: once the request's connection is made, `cancel` shuts its socket down."""

    def trace(event: str, info: dict) -> None:
        if event == "connection.connect_tcp.complete":
            sock = info["return_value"].get_extra_info("socket")
            if sock is not None:
                cuts.append(cancel.on_set(lambda: _shutdown(sock)))

    return trace


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked in another thread (close() would not)
    except OSError:
        pass  # closed already


def _forget(cuts: list) -> None:
    for forget in cuts:
        forget()
    cuts.clear()


def _chunks(response, error) -> Iterator:
    """The stream's chunks; any failure while reading it (a dropped connection, an error event) as
    an EndpointError."""
    iterator = iter(response)
    while True:
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - the openai and httpx errors of a broken stream
            raise error(exc) from exc
        yield chunk


def _first_stop(text: str, stop: list[str]) -> int | None:
    """Where the earliest stop string in `text` begins, or None."""
    found = [at for at in (text.find(s) for s in stop) if at != -1]
    return min(found) if found else None


def _stop_prefix(text: str, stop: list[str]) -> int:
    """The length of the longest end of `text` that is the start of a stop string."""
    best = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


def _message(exc) -> str:
    """The server's own words: OpenAI's {"error": {"message"}}, FastAPI's {"detail"}, or the body."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            inner = inner.get("message") or inner.get("detail")
        if inner:
            return str(inner)
    if isinstance(body, str) and body.strip():
        return body
    return str(getattr(exc, "message", "") or exc)


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 1] + "…"
