"""Settings: defaults, TOML file, environment precedence, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import DEFAULT_ENCODER, ConfigError, Settings


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings.load(env={})
    assert s.home == Path(".csbot") and s.encoder == DEFAULT_ENCODER and s.confidence_threshold is None
    assert s.db_path == Path(".csbot/csbot.sqlite3") and s.slack_api_url == "https://slack.com/api/"


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
