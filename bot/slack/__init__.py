"""csbot in Slack: answers with 👍/👎 in threads, reactions as votes, corrections, `/csbot` and an
App Home tab. `bot.slack.app.build_app` wires a slack-bolt App; `bot.slack.server` runs it over
HTTP (WSGI) or Socket Mode; docs/slack.md explains the setup."""
