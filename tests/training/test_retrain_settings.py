"""The retrain is configured from csbot.toml and the environment, through `python training/retrain.py`
(one settings tree, core/settings/): a knob set there changes what the run does and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import good_feedback

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def dry_run(home: Path, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CSBOT_")}
    proc = subprocess.run([sys.executable, "training/retrain.py", "--dry-run", "--json"], cwd=REPO, text=True,
                          capture_output=True, env={**clean, "CSBOT_HOME": str(home), **env}, timeout=300)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr  # --json: one JSON line on stdout
    return json.loads(lines[0])


def test_a_retrain_knob_in_csbot_toml_changes_the_dry_run(tiny_home):
    from core.settings import Settings
    from store import Store

    with Store.from_settings(Settings.load(env={}, home=tiny_home)) as store:
        good_feedback(store)
    default = dry_run(tiny_home)
    assert default["status"] == "dry-run" and default["config"]["min_new_examples"] == 20, default["message"]

    (tiny_home / "csbot.toml").write_text("[retrain]\nmin_new_examples = 100000\nmax_seq_length = 48\n")
    configured = dry_run(tiny_home)
    assert configured["config"]["min_new_examples"] == 100000 and configured["config"]["max_seq_length"] == 48
    assert configured["status"] != "dry-run" and "fewer than min_new_examples=100000" in configured["message"]

    # The flat name in the file, and the environment above the file, work the same way.
    (tiny_home / "csbot.toml").write_text("retrain_min_new_examples = 100000\n")
    assert "min_new_examples=100000" in dry_run(tiny_home)["message"]
    from_env = dry_run(tiny_home, CSBOT_RETRAIN_MIN_NEW_EXAMPLES="5")
    assert from_env["status"] == "dry-run" and from_env["config"]["min_new_examples"] == 5


def test_a_bad_retrain_knob_in_csbot_toml_is_one_line_and_exit_2(tiny_home):
    (tiny_home / "csbot.toml").write_text("[retrain]\nmethod = \"qlora\"\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CSBOT_")}
    proc = subprocess.run([sys.executable, "training/retrain.py", "--dry-run", "--json"], cwd=REPO, text=True,
                          capture_output=True, env={**clean, "CSBOT_HOME": str(tiny_home)}, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["retrain: error: retrain settings: method must be full or lora, not 'qlora'"]
