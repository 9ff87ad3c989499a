"""Large knowledge-base inputs and progress that tells the truth: an article over `max_article_bytes`
is one error line and changes nothing; an ingest whose stderr is not a terminal prints its real
stages as plain lines, and `--json` stdout stays JSON Lines. The real CLI in subprocesses."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time

import pytest

from core.output import Progress
from serving.versions import VersionStore
from tests.conftest import REPO

STAGE_PREFIX = "csbot ingest: "


def csbot(*args, env=None):
    return subprocess.run([sys.executable, "-m", "bot.cli", *map(str, args)], env=env or dict(os.environ),
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def stage_lines(stderr: str) -> list[str]:
    """The plain progress lines of a piped ingest (not its log or notes)."""
    return [line[len(STAGE_PREFIX):] for line in stderr.splitlines()
            if line.startswith(STAGE_PREFIX) and not line.startswith(STAGE_PREFIX + "error")]


def wait_for(predicate, seconds: float = 20.0) -> None:
    """Poll until `predicate()` holds (a thread's output), failing after `seconds`."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# ----- Progress (core/output.py) --------------------------------------------------------------------

def test_progress_off_a_terminal_prints_each_stage_and_a_heartbeat_as_plain_lines():
    pipe = io.StringIO()
    with Progress("parsing", stream=pipe, heartbeat=0.02, name="csbot test") as progress:
        progress.stage("encoding 1,234 chunks")
        wait_for(lambda: "still encoding" in pipe.getvalue())
        progress.stage("encoding 1,234 chunks")  # the same stage again prints nothing
        progress.stage("building the index")
        wait_for(lambda: "still building" in pipe.getvalue())
    lines = pipe.getvalue().splitlines()
    encoding = lines.index("csbot test: encoding 1,234 chunks…")
    building = lines.index("csbot test: building the index…")
    assert lines.count("csbot test: encoding 1,234 chunks…") == 1 and encoding < building
    beats = [i for i, line in enumerate(lines)
             if re.fullmatch(r"csbot test: … still encoding 1,234 chunks \(\d+s\)", line)]
    assert beats and encoding < beats[0] < building
    assert any(re.fullmatch(r"csbot test: … still building the index \(\d+s\)", line) for line in lines[building:])
    assert re.fullmatch(r"csbot test: done after \d+s", lines[-1])
    assert "\r" not in pipe.getvalue() and "\x1b" not in pipe.getvalue()


def test_progress_is_silent_with_quiet_and_says_nothing_for_work_that_never_staged():
    quiet, early = io.StringIO(), io.StringIO()
    with Progress("parsing", stream=quiet, quiet=True, heartbeat=0.01) as progress:
        progress.stage("encoding 3 chunks")
        time.sleep(0.05)
    with pytest.raises(ValueError):  # bad input found while parsing: its error line is all the user gets
        with Progress("parsing", stream=early, heartbeat=60):
            raise ValueError("bad row")
    assert quiet.getvalue() == "" and early.getvalue() == ""


def test_progress_on_a_terminal_redraws_its_line_with_the_stage():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    with Progress("parsing", stream=tty, interval=0.01) as progress:
        progress.stage("encoding 12 chunks")
        wait_for(lambda: "encoding 12 chunks ·" in tty.getvalue())
    # the final line names the work as a whole, not its last stage
    assert re.search(r"\r\x1b\[Kparsing: done in \d+\.\ds\n$", tty.getvalue()), tty.getvalue()


# ----- the CLI ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_an_article_over_the_limit_is_one_line_and_the_served_model_stays(home, tmp_path):
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "returns.md").write_text("# Returns\n\nSend it back within 30 days.\n")
    dump = kb / "export-dump.md"
    dump.write_text("# Everything\n\n" + ("A paragraph of an exported dump. " * 40 + "\n\n") * 1600)
    assert dump.stat().st_size > 2_000_000  # the default limit
    store = VersionStore(home / "models")
    before = (store.champion().name, sorted(p.name for p in (home / "models").iterdir()))
    proc = csbot("ingest", kb, "--json")
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line == (f"csbot ingest: error: {dump}: file of {dump.stat().st_size:,} bytes "
                    f"({dump.stat().st_size / 1e6:.1f} MB), over the limit of 2,000,000 bytes (2.0 MB) per "
                    "article (setting max_article_bytes): split it into smaller articles")
    assert (store.champion().name, sorted(p.name for p in (home / "models").iterdir())) == before


@pytest.mark.slow
def test_a_jsonl_row_over_the_limit_is_one_line_with_its_file_and_line(home, tmp_path):
    rows = [{"title": "Returns", "answer": "Send it back within 30 days."},
            {"title": "Everything", "answer": "An exported dump. " * 400}]
    kb = tmp_path / "kb.jsonl"
    kb.write_text("".join(json.dumps(row) + "\n" for row in rows))
    champion = VersionStore(home / "models").champion().name
    proc = csbot("ingest", kb, env={**os.environ, "CSBOT_MAX_ARTICLE_BYTES": "5000"})
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"csbot ingest: error: {kb}:2: row of 7,2") and "over the limit of 5,000 bytes" in line
    assert VersionStore(home / "models").champion().name == champion


@pytest.mark.slow
def test_a_piped_ingest_prints_its_real_stages_and_never_claims_to_fine_tune(helpcentre_home):
    # The fixture ran `csbot ingest --json` with stderr piped, default settings: a KB without example
    # questions, so the encoder was not fine-tuned.
    [report] = [json.loads(line) for line in (helpcentre_home / "ingest.json").read_text().splitlines()]
    assert report["built"] is True and any(n.startswith("not fine-tuned") for n in report["notes"])
    stderr = (helpcentre_home / "ingest.err").read_text()
    stages = stage_lines(stderr)
    counts = VersionStore(helpcentre_home / "models").champion().meta["counts"]
    chunks = sum(1 for line in stages if line.startswith("encoding "))
    assert stages[0] == "loading the encoder…" and chunks == 1, stderr
    assert f"encoding {counts['index_entries']:,} texts (" in stderr
    for stage in ("building the index of", "training the intent classifier…", "tuning the answer thresholds…",
                  "saving the version…", f"promoting {report['version']}…"):
        assert any(line.startswith(stage) for line in stages), (stage, stderr)
    assert not any("fine-tun" in line for line in stages), stderr
    assert stages[-1].startswith("done after ")
    assert "\r" not in stderr and "\x1b" not in stderr


@pytest.mark.slow
def test_a_build_that_fine_tunes_says_so_and_quiet_prints_no_stages(tmp_path):
    rows = [{"id": "reset", "title": "Reset your password", "answer": "Use the Forgot password link.",
             "questions": ["I forgot my password", "reset my password", "password reset link"]},
            {"id": "track", "title": "Track an order", "answer": "Open Orders and click Track.",
             "questions": ["where is my order", "track my parcel", "order status"]}]
    kb = tmp_path / "kb.jsonl"
    kb.write_text("".join(json.dumps(row) + "\n" for row in rows))
    env = {**os.environ, "CSBOT_HOME": str(tmp_path / "home"), "CSBOT_FINETUNE_EPOCHS": "1"}
    proc = csbot("ingest", kb, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["built"] is True and len(proc.stdout.splitlines()) == 1
    stages = stage_lines(proc.stderr)
    assert stages[0] == "fine-tuning the encoder on 8 titles and questions…", proc.stderr
    assert (tmp_path / "home" / "models").is_dir()
    quiet = csbot("ingest", kb, "--json", "--force", "--quiet", env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["built"] is True and stage_lines(quiet.stderr) == []
