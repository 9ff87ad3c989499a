"""The correction modal's submission: the right section of the answered article, another article, an
intent or answer text for a 👎 answer.

The ack validates (at least one of them, shown as an inline error otherwise) and closes the modal; the
lazy part stores the correction as the user's "down" vote (origin "modal", event id `view:<view id>`):
a picked section is stored as the correction's article (its id names both, `doc#section`) unless another
article was picked; the article's intent is filled in when only an article or section was picked; it
confirms privately in the thread.
"""

from __future__ import annotations

from bot.slack import ids
from bot.slack.handlers import Deps, log, may_vote
from bot.slack.handlers.feedback_buttons import modal_context
from core.errors import UserError
from core.text import clean_text

MISSING = "Pick the right section, article or intent, or write the right answer."


def read_correction(view: dict) -> dict:
    values = (view.get("state") or {}).get("values") or {}

    def selected(block, action):
        option = ((values.get(block) or {}).get(action) or {}).get("selected_option") or {}
        return option.get("value") or None

    text = ((values.get(ids.CORRECTION_TEXT_BLOCK) or {}).get(ids.CORRECTION_TEXT) or {}).get("value")
    doc_id = selected(ids.CORRECTION_ARTICLE_BLOCK, ids.CORRECTION_ARTICLE)
    section = selected(ids.CORRECTION_SECTION_BLOCK, ids.CORRECTION_SECTION)
    if section and (doc_id is None or doc_id == section.partition("#")[0]):
        doc_id = section  # another part of the answered article (another article picked wins)
    return {"doc_id": doc_id,
            "intent": selected(ids.CORRECTION_INTENT_BLOCK, ids.CORRECTION_INTENT),
            "answer_text": clean_text(text).strip() or None}  # a training target: as the engine reads text


class CorrectionModal:
    def __init__(self, deps: Deps):
        self.deps = deps

    def ack(self, ack, view) -> None:
        if not any(read_correction(view).values()):
            ack(response_action="errors", errors={ids.CORRECTION_TEXT_BLOCK: MISSING})
        else:
            ack()

    def on_submit(self, body, view, client) -> None:
        correction = read_correction(view)
        context = modal_context(view)
        answer_id, user = context.get("answer_id"), (body.get("user") or {}).get("id")
        if not any(correction.values()) or not answer_id or not user:  # no user: nobody to count it for
            return
        if not may_vote(self.deps.store, answer_id, user, context.get("channel")):
            log.info("correction for %s from %s ignored: that user could not see the answer", answer_id, user)
            return
        if correction["doc_id"] and not correction["intent"]:
            doc = self.deps.engine.catalogue().article(correction["doc_id"].partition("#")[0])
            correction["intent"] = doc.label if doc else None
        try:
            result = self.deps.store.record_vote(answer_id, "down", user=user, origin="modal",
                                                 event_id=f"view:{view.get('id')}", **correction)
        except UserError as exc:
            log.info("correction for %s rejected: %s", answer_id, exc)
            return
        channel = context.get("channel")
        if result.status == "stored" and channel and user:
            try:
                client.chat_postEphemeral(channel=channel, user=user, thread_ts=context.get("thread_ts"),
                                          text="Thanks! Your correction is saved and will be used at the next retrain.")
            except Exception as exc:  # noqa: BLE001 - the correction is stored; the thank-you is optional
                log.info("could not confirm the correction to %s: %s", user, exc)
