"""csbot in Slack: answers with 👍/👎 in threads, reactions as votes, corrections, `/csbot` and an
App Home tab. `bot.slack.app.build_app` wires a slack-bolt App whose work goes through the store's
durable inbox (`bot.slack.intake`, `bot.slack.workers`); `bot.slack.server` runs it over HTTP
(waitress) or Socket Mode; docs/slack.md explains the setup."""
