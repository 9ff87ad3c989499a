"""Streaming an answer into one Slack message, with the fallback to a whole post.

`stream_reply` takes the answer as an iterator of Markdown text pieces - the whole article section
in select mode (it exists whole, so one piece: chat.startStream shows it at once), a composer's
checked sentences in compose mode - and streams them through
slack_sdk's `WebClient.chat_stream` (chat.startStream / chat.appendStream / chat.stopStream):

* the stream starts with the first piece, at once (not when slack_sdk's buffer fills), so the
  first text shows as soon as it exists; later pieces are buffered by slack_sdk (`BUFFER_SIZE`
  characters per call, which keeps a token-by-token composer inside Slack's rate limits);
* chat.stopStream ends the message with the blocks below the text (sources, details, the native
  feedback buttons) and the answer's message metadata;
* if the stream cannot start (a workspace without streaming, `unknown_method`; a channel without
  the recipient ids; any Web API error) the whole message is posted with chat.postMessage; if it
  fails once started, the message is replaced with the whole answer by chat.update (its ts is
  known by then). Either way the caller gets the ts of the one message that holds the answer;
* the pieces may give up (`Abandon`: a composed sentence failed the guard or ran out of time): the
  stream is stopped and its message replaced by the whole fallback (the select answer); if nothing
  was streamed yet, the fallback is posted instead.
`footer`, `metadata` and `fallback` may be zero-argument callables, called when needed: a composed
answer's sources and outcome are known only once its pieces are done.

`show_status` / `set_title` are bolt's `SetStatus` / `SetTitle` (assistant.threads.setStatus /
setTitle), best effort: a workspace or thread that refuses them only logs a line.
`StatusInBackground` makes the status call while the engine works and is settled before the reply.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Iterable

from slack_bolt.context.set_status import SetStatus
from slack_bolt.context.set_title import SetTitle
from slack_sdk.errors import SlackApiError, SlackClientError

log = logging.getLogger("csbot.slack.streaming")
BUFFER_SIZE = 256  # characters slack_sdk collects before each chat.appendStream
TITLE_LIMIT = 80  # characters of the question a thread's title keeps


class Abandon(Exception):
    """Raised by a stream's pieces to give up: the fallback message replaces what was streamed."""


def _value(item):
    return item() if callable(item) else item


@dataclass(frozen=True)
class Delivery:
    ts: str
    streamed: bool  # False: posted (or replaced) whole by the fallback


def stream_reply(client, *, channel: str, thread_ts: str, chunks: Iterable[str], footer: list, metadata,
                 fallback: dict, recipient_team_id: str | None = None, recipient_user_id: str | None = None,
                 buffer_size: int = BUFFER_SIZE) -> Delivery:
    """Stream `chunks` as the reply in `thread_ts`, ending with `footer` blocks and `metadata`.

    `fallback`: the whole message (text, blocks, metadata) for chat.postMessage / chat.update."""
    chunks = iter(chunks)
    try:
        first = next(chunks, "")
    except Abandon as exc:
        log.info("the answer for %s gave up before streaming (%s): posting the fallback whole", channel, exc)
        return _post_whole(client, channel, thread_ts, fallback)
    streamer = client.chat_stream(channel=channel, thread_ts=thread_ts, recipient_team_id=recipient_team_id,
                                  recipient_user_id=recipient_user_id, buffer_size=buffer_size)
    try:
        streamer.append(markdown_text=first, chunks=[])  # chunks=[]: flush now, i.e. chat.startStream
        if not streamer.ts:
            raise SlackClientError("chat.startStream returned no ts")
    except (SlackApiError, SlackClientError) as exc:
        log.info("streaming unavailable in %s (%s): posting the answer whole", channel, _why(exc))
        try:
            for _ in chunks:  # a composer's remaining sentences: the whole answer is posted at once
                pass
        except Abandon:
            pass
        return _post_whole(client, channel, thread_ts, fallback)
    try:
        for chunk in chunks:
            if chunk:
                streamer.append(markdown_text=chunk)
        streamer.stop(blocks=_value(footer), metadata=_value(metadata))
    except Abandon as exc:
        log.info("the stream %s in %s gave up (%s): replacing it with the fallback", streamer.ts, channel, exc)
        try:
            streamer.stop()
        except (SlackApiError, SlackClientError) as stop_exc:
            log.info("could not stop the stream %s: %s", streamer.ts, _why(stop_exc))
        client.chat_update(channel=channel, ts=streamer.ts, **_value(fallback))
        return Delivery(streamer.ts, streamed=False)
    except (SlackApiError, SlackClientError) as exc:
        log.warning("the stream %s in %s failed (%s): replacing it with the whole answer", streamer.ts, channel,
                    _why(exc))
        client.chat_update(channel=channel, ts=streamer.ts, **_value(fallback))
        return Delivery(streamer.ts, streamed=False)
    return Delivery(streamer.ts, streamed=True)


def _post_whole(client, channel: str, thread_ts: str, fallback) -> Delivery:
    response = client.chat_postMessage(channel=channel, thread_ts=thread_ts, unfurl_links=False,
                                       unfurl_media=False, **_value(fallback))
    return Delivery(response["ts"], streamed=False)


class StatusInBackground:
    """The status call, made on its own thread while the engine works (so its round trip does not
    delay the answer); `settled()` waits for it before the reply goes out, so a slow status can
    never land after the answer (Slack clears the status when the reply arrives)."""

    def __init__(self, client, channel: str, thread_ts: str, status: str, *, wait_seconds: float = 2.0):
        self.wait_seconds = wait_seconds
        self.shown: bool | None = None
        self._thread = threading.Thread(target=self._run, args=(client, channel, thread_ts, status),
                                        name="csbot-status", daemon=True)
        self._thread.start()

    def _run(self, client, channel, thread_ts, status) -> None:
        try:
            self.shown = show_status(client, channel, thread_ts, status)
        except Exception as exc:  # noqa: BLE001 - e.g. a connection error: the answer goes out anyway
            log.info("no status in %s/%s: %s", channel, thread_ts, exc)
            self.shown = False

    def settled(self) -> bool | None:
        self._thread.join(self.wait_seconds)
        return self.shown


def show_status(client, channel: str, thread_ts: str, status: str) -> bool:
    """The thread's "is working" status (cleared by Slack when the reply arrives)."""
    try:
        SetStatus(client, channel, thread_ts)(status)
        return True
    except (SlackApiError, SlackClientError) as exc:
        log.info("no status in %s/%s: %s", channel, thread_ts, _why(exc))
        return False


def set_title(client, channel: str, thread_ts: str, question: str) -> bool:
    """Title a new agent thread after its first question."""
    title = " ".join((question or "").split())
    if len(title) > TITLE_LIMIT:
        title = title[: TITLE_LIMIT - 1].rsplit(" ", 1)[0] + "…"
    if not title:
        return False
    try:
        SetTitle(client, channel, thread_ts)(title)
        return True
    except (SlackApiError, SlackClientError) as exc:
        log.info("no title for %s/%s: %s", channel, thread_ts, _why(exc))
        return False


def _why(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    error = response.get("error") if response is not None and hasattr(response, "get") else None
    return error or f"{type(exc).__name__}: {exc}"
