"""The layers read one way (docs/architecture.md): each package imports only the ones below it, and
the Slack front end's contracts are met by the real engine and store."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Lowest first; a package may import only packages listed before it.
LAYERS = ["core", "models", "retrieval", "store", "serving", "training", "bot"]
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "retrieval": {"core"},
    "store": {"core"},
    "serving": {"core", "models", "retrieval"},
    "training": {"core", "models", "retrieval", "store", "serving"},
    "bot": {"core", "models", "retrieval", "store", "serving", "training"},
}
# The one exemption: training/retrain.py is the file cron runs (`python training/retrain.py`, kept
# where deployments call it); it only calls the command line in bot/commands/retrain.py. No other
# file of a lower layer may import bot, and that file may import nothing else from above.
UPWARD_EXEMPT = {("training/retrain.py", "bot")}


def imports_of(package: str) -> dict[str, list[str]]:
    """{imported package: [file:line, ...]} for every import of one of ours, module- or function-level."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if (path.relative_to(REPO).as_posix(), top) in UPWARD_EXEMPT:
                    continue
                if top in LAYERS and top != package:
                    found.setdefault(top, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


@pytest.mark.parametrize("package", LAYERS)
def test_each_package_imports_only_the_layers_below_it(package):
    wrong = {top: where for top, where in imports_of(package).items() if top not in ALLOWED[package]}
    assert wrong == {}


def test_the_exempt_cron_entry_is_a_shim_over_the_bot_command():
    # The exemption stays true to its word: the file imports exactly the bot command it names.
    tree = ast.parse((REPO / "training" / "retrain.py").read_text(encoding="utf-8"))
    bot_imports = [node.module for node in ast.walk(tree)
                   if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bot"]
    assert bot_imports == ["bot.commands.retrain"]


def test_no_two_packages_import_each_other():
    graph = {package: set(imports_of(package)) for package in LAYERS}
    assert [(a, b) for a in LAYERS for b in graph[a] if a in graph[b]] == []


def test_the_domain_packages_never_import_the_app():
    # The issue's own check: `grep -rnE "^\s*(from|import) bot\b" models retrieval training` finds nothing.
    for package in ("models", "retrieval", "training", "serving", "store", "core"):
        assert "bot" not in imports_of(package), package


def test_the_real_engine_and_store_meet_the_slack_contracts(demo_home):
    from bot.slack.contracts import AnswerEngine, SlackStore
    from core.settings import Settings
    from serving.engine import Engine
    from store import Store

    settings = Settings.load(env={}, home=demo_home)
    engine = Engine(settings)
    with Store.from_settings(settings) as store:
        assert isinstance(engine, AnswerEngine) and isinstance(store, SlackStore)
        for protocol, real in ((AnswerEngine, Engine), (SlackStore, Store)):
            for name, member in vars(protocol).items():
                if callable(member) and not name.startswith("_"):
                    wanted = set(inspect.signature(member).parameters) - {"self", "provenance", "fields"}
                    have = set(inspect.signature(getattr(real, name)).parameters)
                    assert wanted <= have, (real.__name__, name, wanted - have)
    catalogue = engine.catalogue()
    assert catalogue.model_version == engine.model_version and catalogue.intents == sorted(catalogue.intents)
    assert catalogue.article("reset-password").title and catalogue.article("no-such-article") is None


def module_imports() -> dict[str, set[str]]:
    """{module: the project modules it imports}, module- and function-level, typing-only imports included."""
    modules = {}
    for package in LAYERS:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                subs = [f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in modules]
                found = subs if len(subs) == len(node.names) else [node.module, *subs]
            else:
                continue
            graph[name].update(m for m in found if m in modules and m != name)
    return graph


def test_no_files_import_each_other_in_a_loop():
    graph = module_imports()
    loops = []
    for start in graph:  # a depth-first walk from each module back to itself
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    loops.append(path)
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    assert loops == []
