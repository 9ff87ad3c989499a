"""The AI-app (agent) surface: suggested prompts, and the legacy assistant-thread events.

* Opening the app's messages tab (`app_home_opened` with `tab == "messages"`, the agent messaging
  experience) sets suggested prompts there (assistant.threads.setSuggestedPrompts through bolt's
  `set_suggested_prompts`): the knowledge base's most asked articles (the store's answers), then
  the rest in the knowledge base's order, `slack_suggested_prompts` of them (Slack shows at most
  4); each prompt's message is the article's first example question, else its title. The list
  is rebuilt when the served model version changes (bot/catalog.py reads its articles).
* The legacy `assistant_view` events go through bolt's `Assistant` middleware: a new assistant
  thread (`assistant_thread_started`) gets the same prompts; `assistant_thread_context_changed`
  is acknowledged (csbot does not use the channel the user is looking at). Only these two events
  are given to the middleware (`LegacyAssistantEvents`): the user's messages in DM threads stay
  with bot/slack/handlers/messages.py (status, title, streamed answer), and their edits too.

Statuses, titles and streaming are in messages.py and bot/slack/streaming.py.
"""

from __future__ import annotations

import threading

from slack_bolt import Assistant
from slack_bolt.middleware import Middleware

from bot.slack.handlers import Deps, ack_now, log

PROMPTS_TITLE = "Popular questions"
PROMPT_TITLE_LIMIT = 75
ASSISTANT_EVENTS = ("assistant_thread_started", "assistant_thread_context_changed")


class AgentSurface:
    def __init__(self, deps: Deps):
        self.deps = deps
        self._lock = threading.Lock()
        self._cached: tuple[str | None, list[dict]] | None = None

    # ----- lazy listeners ------------------------------------------------------------------------
    def on_messages_tab(self, event, set_suggested_prompts) -> None:
        if set_suggested_prompts is None or not event.get("channel"):
            return
        self.suggest(set_suggested_prompts)

    def on_thread_started(self, set_suggested_prompts) -> None:
        if set_suggested_prompts is not None:
            self.suggest(set_suggested_prompts)

    # ----- prompts -------------------------------------------------------------------------------
    def suggest(self, set_suggested_prompts) -> None:
        prompts = self.prompts()
        if prompts:
            set_suggested_prompts(prompts=prompts, title=PROMPTS_TITLE)

    def prompts(self) -> list[dict]:
        """[{"title", "message"}] for the served model version (cached until it changes)."""
        limit = self.deps.options.suggested_prompts
        if limit <= 0:
            return []
        catalogue = self.deps.engine.catalogue()
        version = catalogue.model_version
        with self._lock:
            if self._cached is not None and self._cached[0] == version:
                return self._cached[1][:limit]
        documents = list(catalogue.articles.values())
        by_id = {doc.id: doc for doc in documents}
        try:
            asked = [doc_id for doc_id, _ in self.deps.store.most_answered_docs(limit=50) if doc_id in by_id]
        except Exception as exc:  # noqa: BLE001 - the knowledge base's order alone
            log.warning("answer counts unavailable for the suggested prompts: %s", exc)
            asked = []
        order = asked + [doc.id for doc in documents if doc.id not in asked]
        prompts = [prompt_for(by_id[doc_id]) for doc_id in order[:max(limit, 4)]]
        with self._lock:
            self._cached = (version, prompts)
        return prompts[:limit]


def prompt_for(doc) -> dict:
    title = " ".join((doc.title or doc.id).split())
    if len(title) > PROMPT_TITLE_LIMIT:
        title = title[: PROMPT_TITLE_LIMIT - 1] + "…"
    questions = [q for q in (doc.questions or []) if q and q.strip()]
    return {"title": title, "message": questions[0].strip() if questions else title}


def messages_tab(event) -> bool:
    """Listener matcher: the app's messages tab (not its Home tab) was opened."""
    return (event or {}).get("tab") == "messages"


class LegacyAssistantEvents(Middleware):
    """bolt's `Assistant` middleware, given only assistant_thread_started / _context_changed."""

    def __init__(self, assistant: Assistant):
        self.assistant = assistant

    def process(self, *, req, resp, next):
        event = req.body.get("event") if isinstance(req.body, dict) else None
        if req.body.get("type") == "event_callback" and isinstance(event, dict) and event.get("type") in ASSISTANT_EVENTS:
            return self.assistant.process(req=req, resp=resp, next=next)
        return next()


def legacy_assistant(surface: AgentSurface) -> LegacyAssistantEvents:
    assistant = Assistant(app_name="csbot")
    assistant.thread_started(lazy=[surface.on_thread_started])(ack_now)
    assistant.thread_context_changed(ack_now)  # acknowledged; csbot answers from the KB, not the channel
    return LegacyAssistantEvents(assistant)
