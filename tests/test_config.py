"""Settings: defaults, TOML file, environment precedence, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.settings import DEFAULT_ENCODER, ConfigError, Settings


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings.load(env={"HOME": "/home/ann"})
    assert s.home == Path("/home/ann/.local/share/csbot") and s.encoder == DEFAULT_ENCODER
    assert s.confidence_threshold is None and s.keep_versions == 5
    assert s.db_path == Path("/home/ann/.local/share/csbot/csbot.sqlite3") and s.slack.api_url == "https://slack.com/api/"


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
    assert s.slack.bot_token == "xoxb-1" and s.slack.api_url == "http://127.0.0.1:9/api/"
    assert "xoxb" not in repr(s)


def test_bad_values_and_files_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="chunk_words: cannot read 'many' as int"):
        Settings.load(env={"CSBOT_CHUNK_WORDS": "many"})
    with pytest.raises(ConfigError, match=r"setting batch_threads must be 0 \(one per core\) or more"):
        Settings.load(env={"CSBOT_BATCH_THREADS": "-1"})
    assert Settings.load(env={"CSBOT_BATCH_THREADS": "3"}).batch_threads == 3
    (tmp_path / "csbot.toml").write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="unknown setting.*colour"):
        Settings.load(env={})
    (tmp_path / "csbot.toml").write_text("home = \n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        Settings.load(env={})
    with pytest.raises(ConfigError, match="not a file"):
        Settings.load(env={"CSBOT_CONFIG": str(tmp_path / "nope.toml")})


def test_sections_read_from_tables_flat_names_env_and_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "csbot.toml").write_text(
        'slack_workers = 2\nfinetune_epochs = 0\n'
        '[slack]\nsupport_channels = "C1,C2"\n'
        '[alert]\nwindow_minutes = 30\n'
        '[retrain]\nmethod = "lora"\nepochs = 3\n')
    s = Settings.load(env={"CSBOT_SLACK_WORKERS": "6", "CSBOT_FINETUNE_MAX_STEPS": "10"}, retrain_epochs=5)
    assert (s.slack.workers, s.slack.support_channels, s.alert.window_minutes) == (6, "C1,C2", 30.0)
    assert (s.finetune.epochs, s.finetune.max_steps, s.retrain.method, s.retrain.epochs) == (0.0, 10, "lora", 5.0)
    assert s.slack.http_threads == 8 and s.retrain.min_new_examples == 20  # untouched knobs keep their default


def test_unknown_and_bad_section_knobs_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "csbot.toml").write_text("[retrain]\nmin_new_exampels = 5\n")
    with pytest.raises(ConfigError, match="unknown setting.*retrain_min_new_exampels"):
        Settings.load(env={})
    (tmp_path / "csbot.toml").unlink()
    with pytest.raises(ConfigError, match="slack_workers: cannot read 'four' as int"):
        Settings.load(env={"CSBOT_SLACK_WORKERS": "four"})
    with pytest.raises(ConfigError, match="finetune settings: loss must be one of"):
        Settings.load(env={"CSBOT_FINETUNE_LOSS": "hinge"})
    with pytest.raises(ConfigError, match="retrain_epochs: cannot read"):
        Settings.load(env={}, retrain_epochs="a lot")


def test_replace_and_to_dict_use_the_flat_names_and_leave_secrets_out(tmp_path):
    s = Settings.load(env={"SLACK_BOT_TOKEN": "xoxb-secret"}, home=tmp_path)
    changed = s.replace(finetune_epochs=0, retrain_method="lora", home=tmp_path / "other")
    assert (changed.finetune.epochs, changed.retrain.method, changed.home) == (0, "lora", tmp_path / "other")
    assert (s.finetune.epochs, s.retrain.method) == (2, "full")  # the original is unchanged
    with pytest.raises(ConfigError, match="unknown setting retrain_nope"):
        s.replace(retrain_nope=1)
    flat = s.to_dict()
    assert flat["retrain_min_new_examples"] == 20 and flat["slack_workers"] == 4 and flat["home"] == str(tmp_path)
    assert "xoxb-secret" not in str(flat) and "slack_bot_token" not in flat


def test_the_answering_thread_limit_reaches_torch_faiss_and_blas(tmp_path):
    import faiss
    import numpy  # noqa: F401 - its OpenBLAS must be loaded for threadpoolctl to see it
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    from core.runtime import limit_threads

    def blas_threads():
        return sorted({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"})

    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    try:
        torch.set_num_threads(2)
        faiss.omp_set_num_threads(2)
        threadpool_limits(limits=2, user_api="blas")
        assert blas_threads() == [2]
        limit_threads(Settings.load(env={}, home=tmp_path, torch_threads=1))
        assert (torch.get_num_threads(), faiss.omp_get_max_threads(), blas_threads()) == (1, 1, [1])
        faiss.omp_set_num_threads(2)
        limit_threads(Settings.load(env={}, home=tmp_path, torch_threads=0))  # 0 leaves the libraries alone
        assert faiss.omp_get_max_threads() == 2  # (FAISS's OpenBLAS is its OpenMP build: it follows)
    finally:
        torch.set_num_threads(before[0])
        faiss.omp_set_num_threads(before[1])
        threadpool_limits(limits=os.cpu_count(), user_api="blas")
