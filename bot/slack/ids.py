"""Every Block Kit action id, block id and callback id csbot uses, in one place.

Listeners in bot/slack/app.py match on these; bot/slack/blocks.py puts them on the elements.
Changing a value breaks the buttons on messages already posted, so treat them as a stable API.
"""

# Slack's native feedback buttons (a `feedback_buttons` element in a `context_actions` block) under
# every answer: one action id, the clicked button's value is FEEDBACK_UP/DOWN_PREFIX + answer id.
FEEDBACK_ACTIONS_BLOCK = "csbot_feedback_actions"
FEEDBACK = "csbot_feedback_buttons"
FEEDBACK_UP_PREFIX = "up:"
FEEDBACK_DOWN_PREFIX = "down:"

# The classic 👍/👎 buttons answers carried before (the button value is the answer id): no longer
# posted, still handled for the messages that have them.
FEEDBACK_BLOCK = "csbot_feedback"
VOTE_UP = "csbot_vote_up"
VOTE_DOWN = "csbot_vote_down"

# A clarifying question ("Did you mean: A · B"): one button per article, action ids
# CLARIFY_PICK_PREFIX + position (bolt matches them with CLARIFY_PICK_PATTERN); the value is
# JSON {"a": answer id, "d": doc id, "s": section id}.
CLARIFY_BLOCK = "csbot_clarify"
CLARIFY_PICK_PREFIX = "csbot_clarify_pick_"
CLARIFY_PICK_PATTERN = r"^csbot_clarify_pick_\d+$"

# The correction modal opened by 👎.
CORRECTION_MODAL = "csbot_correction"
CORRECTION_ARTICLE_BLOCK = "csbot_correction_article"
CORRECTION_ARTICLE = "csbot_correction_article_select"
CORRECTION_SECTION_BLOCK = "csbot_correction_section"
CORRECTION_SECTION = "csbot_correction_section_select"
CORRECTION_INTENT_BLOCK = "csbot_correction_intent"
CORRECTION_INTENT = "csbot_correction_intent_select"
CORRECTION_TEXT_BLOCK = "csbot_correction_text"
CORRECTION_TEXT = "csbot_correction_text_input"

# Message metadata on every answer the bot posts (maps a Slack message back to its answer id).
ANSWER_EVENT_TYPE = "csbot_answer"

# Status shown in an agent thread / DM while the engine works (assistant.threads.setStatus).
WORKING_STATUS = "Searching the help centre…"

# The slash command.
SLASH_COMMAND = "/csbot"

# Sentiment monitoring: the "Correct sentiment" message shortcut and its modal.
CORRECT_SENTIMENT_SHORTCUT = "csbot_correct_sentiment"
SENTIMENT_MODAL = "csbot_sentiment_correction"
SENTIMENT_LABEL_BLOCK = "csbot_sentiment_label"
SENTIMENT_LABEL = "csbot_sentiment_label_choice"
