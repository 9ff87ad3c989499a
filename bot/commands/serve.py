"""`csbot serve --socket` or `csbot serve --http PORT`: run the Slack bot (see docs/slack.md).

Socket Mode needs SLACK_BOT_TOKEN and SLACK_APP_TOKEN (xapp-, with connections:write) and no
public URL. HTTP mode needs SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET and serves POST
/slack/events (events, interactivity and the slash command) and GET /healthz on PORT.
SIGTERM / SIGINT stop it gracefully (exit 0): acknowledged work not finished within
`slack_stop_grace_seconds` stays in the inbox and resumes at the next start.
"""

from __future__ import annotations

import logging
from urllib.error import URLError

from core.errors import UserError
from core.output import out


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="run the Slack bot (Socket Mode or HTTP)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--socket", action="store_true", help="Socket Mode (SLACK_BOT_TOKEN, SLACK_APP_TOKEN)")
    mode.add_argument("--http", type=int, metavar="PORT", help="HTTP mode on PORT (SLACK_SIGNING_SECRET)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on in HTTP mode (default 127.0.0.1, this machine only: put a "
                   "reverse proxy in front, or give --host 0.0.0.0 to listen on every interface)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=run)


def _drop_token_unused_warning(record: logging.LogRecord) -> bool:
    return "`token` will be unused" not in record.getMessage()


def check_credentials(settings, *, socket_mode: bool) -> None:
    missing = []
    if not settings.slack.bot_token:
        missing.append("SLACK_BOT_TOKEN")
    if socket_mode and not settings.slack.app_token:
        missing.append("SLACK_APP_TOKEN")
    if not socket_mode and not settings.slack.signing_secret:
        missing.append("SLACK_SIGNING_SECRET")
    if missing:
        raise UserError(f"set {' and '.join(missing)} (see docs/slack.md)")
    if socket_mode and not str(settings.slack.app_token).startswith("xapp-"):
        raise UserError("SLACK_APP_TOKEN must be an app-level token (xapp-...) with connections:write")


def restore_workspace(app, store) -> None:
    """A bot token that passes auth.test at start means the app is installed again there."""
    try:
        team = app.client.auth_test().get("team_id")
    except Exception as exc:  # noqa: BLE001 - bolt reports a bad token on the first request
        logging.getLogger("csbot.slack").warning("auth.test at start failed: %s", exc)
        return
    if team and store.inbox.restore(team):
        logging.getLogger("csbot.slack").warning("workspace %s answers auth.test again: posting there again", team)


def run(args) -> int:
    from core.settings import Settings

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.load()
    socket_mode = bool(args.socket)
    check_credentials(settings, socket_mode=socket_mode)

    from slack_bolt.error import BoltError

    from bot.runtime import open_engine
    from bot.slack.app import build_app
    from bot.slack.server import serve_http, serve_socket_mode
    from store import Store

    engine = open_engine(settings)
    store = Store.from_settings(settings)
    # bolt warns that `token` is unused whenever SLACK_BOT_TOKEN is set, since we hand it a client
    # that already carries the token: that is what we want, so the warning is noise.
    logging.getLogger("csbot.slack.bolt").addFilter(_drop_token_unused_warning)
    try:
        sdk_log = logging.getLogger("slack_sdk")
        level = sdk_log.level
        sdk_log.setLevel(logging.CRITICAL)  # a failed start is reported below in one line, not per retry
        try:
            app = build_app(settings, engine, store)
        except BoltError as exc:  # e.g. auth.test rejected the bot token
            raise UserError(f"Slack refused the bot token: {exc}") from exc
        except (URLError, OSError, TimeoutError) as exc:  # auth.test could not reach the Web API
            reason = getattr(exc, "reason", None) or exc
            raise UserError(f"cannot reach the Slack API at {settings.slack.api_url} ({reason}); check the "
                            "network, or CSBOT_SLACK_API_URL") from exc
        finally:
            sdk_log.setLevel(level)
        restore_workspace(app, store)
        if socket_mode:
            out(f"csbot serving model {engine.model_version} over Socket Mode (Ctrl-C stops)", flush=True)
            serve_socket_mode(app, app_token=settings.slack.app_token)
        else:
            out(f"csbot serving model {engine.model_version} on http://{args.host}:{args.http}/slack/events"
                  " (Ctrl-C stops)", flush=True)
            serve_http(app, port=args.http, host=args.host, signing_secret=settings.slack.signing_secret,
                       threads=app.workers.config.http_threads)
    finally:
        store.close()
    return 0
