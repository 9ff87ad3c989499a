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
# The exemptions: scripts run by their documented paths (cron's `python training/retrain.py`, the
# docs' `python training/train_sentiment.py`, `python training/train_sentiment_model.py` and
# `python -m models.onnx_export`), kept where deployments and readers call them. Each is a shim whose
# only import of the app, made when it runs as __main__, is its own command line in bot/commands/.
# No other file of a lower layer may import bot, and these may import nothing else from above.
SHIMS = {
    "training/retrain.py": "bot.commands.retrain",
    "training/train_sentiment.py": "bot.commands.train_sentiment",
    "training/train_sentiment_model.py": "bot.commands.train_sentiment_model",
    "models/onnx_export.py": "bot.commands.onnx_export",
}
UPWARD_EXEMPT = {(path, "bot") for path in SHIMS}


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


def _is_main_guard(node) -> bool:
    """`if __name__ == "__main__":`"""
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and len(test.comparators) == 1 and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def _bot_imports(nodes) -> list[str]:
    found = []
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found += [alias.name for alias in sub.names if alias.name.split(".")[0] == "bot"]
            elif isinstance(sub, ast.ImportFrom) and sub.module and sub.module.split(".")[0] == "bot":
                found.append(sub.module)
    return found


@pytest.mark.parametrize("path", sorted(SHIMS))
def test_each_exempt_script_is_a_shim_over_its_bot_command(path):
    # The exemption stays true to its word: the file imports exactly the bot command it names, and
    # only under its top-level `if __name__ == "__main__":`, so importing the module never loads the app.
    body = ast.parse((REPO / path).read_text(encoding="utf-8")).body
    guards = [node for node in body if _is_main_guard(node)]
    assert len(guards) == 1
    assert _bot_imports(guards) == [SHIMS[path]]
    assert _bot_imports([node for node in body if node is not guards[0]]) == []


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
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if path.relative_to(REPO).as_posix() in SHIMS:
            # A shim's `__main__` block runs only when the file is the script, never when it is
            # imported as `name`, so its import of its bot command is no edge of `name` (the bot
            # command importing the shim's module makes no loop).
            tree.body = [node for node in tree.body if not _is_main_guard(node)]
        for node in ast.walk(tree):
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
