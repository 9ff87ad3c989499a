"""Settings: defaults, TOML file, environment precedence, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import DEFAULT_ENCODER, ConfigError, Settings


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings.load(env={"HOME": "/home/ann"})
    assert s.home == Path("/home/ann/.local/share/csbot") and s.encoder == DEFAULT_ENCODER
    assert s.confidence_threshold is None and s.keep_versions == 5
    assert s.db_path == Path("/home/ann/.local/share/csbot/csbot.sqlite3") and s.slack_api_url == "https://slack.com/api/"


def test_default_home_does_not_depend_on_the_current_folder(tmp_path, monkeypatch):
    env = {"HOME": "/home/ann", "XDG_DATA_HOME": "/data/ann"}
    monkeypatch.chdir(tmp_path)
    first = Settings.load(env=env).home
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert Settings.load(env=env).home == first == Path("/data/ann/csbot")
    # The XDG spec ignores a relative XDG_DATA_HOME; CSBOT_HOME always wins.
    assert Settings.load(env={"HOME": "/home/ann", "XDG_DATA_HOME": "rel"}).home == Path("/home/ann/.local/share/csbot")
    assert Settings.load(env={**env, "CSBOT_HOME": "/srv/csbot"}).home == Path("/srv/csbot")


def test_the_test_suite_never_uses_the_real_default_home():
    import os

    assert os.environ.get("CSBOT_HOME"), "tests/conftest.py must set CSBOT_HOME"
    assert Settings.load().home == Path(os.environ["CSBOT_HOME"])
    assert not str(Settings.load().home).startswith(str(Path.home() / ".local"))


def test_env_overrides_toml_and_slack_names_are_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "csbot.toml").write_text('home = "/srv/csbot"\nchunk_words = 80\nconfidence_threshold = 0.4\n')
    s = Settings.load(env={"CSBOT_CHUNK_WORDS": "64", "SLACK_BOT_TOKEN": "xoxb-1",
                           "CSBOT_SLACK_API_URL": "http://127.0.0.1:9/api/"})
    assert s.home == Path("/srv/csbot") and s.chunk_words == 64 and s.confidence_threshold == 0.4
    assert s.slack_bot_token == "xoxb-1" and s.slack_api_url == "http://127.0.0.1:9/api/"
    assert "xoxb" not in repr(s)


def test_bad_values_and_files_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="chunk_words: cannot read 'many' as int"):
        Settings.load(env={"CSBOT_CHUNK_WORDS": "many"})
    (tmp_path / "csbot.toml").write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="unknown setting.*colour"):
        Settings.load(env={})
    (tmp_path / "csbot.toml").write_text("home = \n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        Settings.load(env={})
    with pytest.raises(ConfigError, match="not a file"):
        Settings.load(env={"CSBOT_CONFIG": str(tmp_path / "nope.toml")})
