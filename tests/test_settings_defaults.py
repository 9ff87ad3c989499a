"""Every settings default is written once: for one field in one module of core/settings/ (a knob two
sections share reads one constant), and not again as a literal elsewhere in the source tree."""

from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from core.settings import SECTIONS, Settings

REPO = Path(__file__).resolve().parents[1]
SETTINGS_DIR = REPO / "core" / "settings"
SOURCE_PACKAGES = ("core", "models", "retrieval", "store", "serving", "training", "bot")

# One field name, two different knobs: allowed while their defaults differ (checked below).
DIFFERENT_KNOBS = {
    "epochs": "finetune_epochs: passes at ingest; retrain_epochs: per stage, with early stopping",
    "max_steps": "finetune_max_steps bounds a large KB's ingest; retrain_max_steps: no cap per stage",
    "device": 'device: "auto"; retrain_device: "" (the general device)',
}

# The modules that mirror a settings section into their own dataclass: every mirrored field takes its
# default from core.settings, so no literal may appear in its default (None, "not set", aside).
MIRRORS = {
    "retrieval/ranking.py": "DecisionParams",
    "bot/slack/options.py": "SlackOptions",
    "bot/monitoring/spikes.py": "SpikeConfig",
}


def value_key(value) -> tuple:
    """Equal defaults compare equal (20 and 20.0 alike); True is not 1."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ("number", float(value))
    return (type(value).__name__, repr(value))


# ----- the defaults written in core/settings/ ------------------------------------------------------

@dataclass(frozen=True)
class Written:
    where: str  # module.Class
    field: str
    expr: ast.expr
    value: tuple


def settings_modules() -> list[Path]:
    return sorted(SETTINGS_DIR.rglob("*.py"))


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def is_dataclass_def(node: ast.AST) -> bool:
    return isinstance(node, ast.ClassDef) and any(
        ast.unparse(d).split("(")[0] in ("dataclass", "dataclasses.dataclass") for d in node.decorator_list)


def default_expr(value: ast.expr) -> ast.expr:
    """The default in `x: T = default` or `x: T = field(default=..., ...)` / `field(default_factory=...)`."""
    if isinstance(value, ast.Call) and ast.unparse(value.func) in ("field", "dataclasses.field"):
        keywords = {k.arg: k.value for k in value.keywords}
        return keywords.get("default", keywords.get("default_factory"))
    return value


def written_defaults(paths: list[Path]) -> list[Written]:
    """Every dataclass field default written in `paths`, with its value as the class has it."""
    out = []
    for path in paths:
        module = importlib.import_module(module_name(path))
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not is_dataclass_def(node):
                continue
            kind = getattr(module, node.name)
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None:
                    f = kind.__dataclass_fields__[item.target.id]
                    expr = default_expr(item.value)
                    value = value_key(f.default) if f.default is not MISSING else ("factory", ast.unparse(expr))
                    out.append(Written(f"{module.__name__}.{node.name}", item.target.id, expr, value))
    return out


def written_twice(written: list[Written]) -> list[str]:
    """A field name whose default is written in more than one place, unless it is the same constant
    everywhere, or the names are DIFFERENT_KNOBS with different defaults."""
    by_name: dict[str, list[Written]] = defaultdict(list)
    for w in written:
        by_name[w.field].append(w)
    problems = []
    for name, writes in sorted(by_name.items()):
        by_value: dict[tuple, list[Written]] = defaultdict(list)
        for w in writes:
            by_value[w.value].append(w)
        for value, same in by_value.items():
            one_constant = (len({ast.unparse(w.expr) for w in same}) == 1
                            and all(isinstance(w.expr, (ast.Name, ast.Attribute)) for w in same))
            if len(same) > 1 and not one_constant:
                places = ", ".join(w.where for w in same)
                problems.append(f"{name} = {ast.unparse(same[0].expr)} written in {places}: use one constant")
        if len(by_value) > 1 and name not in DIFFERENT_KNOBS:
            problems.append(f"{name} has different defaults in {', '.join(w.where for w in writes)}")
    return problems


def test_no_field_default_is_written_twice_in_the_settings_package():
    assert written_twice(written_defaults(settings_modules())) == []


def test_the_different_knobs_of_one_name_really_differ():
    by_name: dict[str, set] = defaultdict(set)
    for w in written_defaults(settings_modules()):
        by_name[w.field].add(w.value)
    assert {name: len(by_name[name]) for name in DIFFERENT_KNOBS} == {name: 2 for name in DIFFERENT_KNOBS}


def test_the_shared_knobs_read_one_constant():
    from core.settings.training.encoder import FinetuneSettings, RetrainEncoderSettings

    shared = {"batch_size": "BATCH_SIZE", "learning_rate": "LEARNING_RATE", "trainable_layers": "TRAINABLE_LAYERS",
              "seed": "SEED"}
    written = sorted((w.field, ast.unparse(w.expr)) for w in written_defaults(settings_modules()) if w.field in shared)
    assert written == sorted(list(shared.items()) * 2)  # each knob in two classes, both reading one constant
    assert FinetuneSettings().batch_size == RetrainEncoderSettings().batch_size == 32


def test_no_constant_is_defined_in_two_settings_modules():
    where: dict[str, list[str]] = defaultdict(list)
    for path in settings_modules():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) and node.value is not None else []
            for target in targets:
                if isinstance(target, ast.Name) and target.id.isupper():
                    where[target.id].append(module_name(path))
    assert {name: modules for name, modules in where.items() if len(modules) > 1} == {}


def test_the_check_finds_a_default_written_twice():
    source = ("from dataclasses import dataclass\n\n@dataclass\nclass A:\n    seed: int = 13\n\n"
              "@dataclass\nclass B:\n    seed: int = 13\n    epochs: float = 1.0\n\n"
              "@dataclass\nclass C:\n    epochs: float = 2\n    clarify_margin: float = 0.5\n")
    tree = ast.parse(source)
    namespace: dict = {}
    exec(compile(tree, "<duplicates>", "exec"), namespace)
    written = [Written(cls.name, item.target.id, item.value,
                       value_key(namespace[cls.name].__dataclass_fields__[item.target.id].default))
               for cls in tree.body if isinstance(cls, ast.ClassDef) for item in cls.body]
    assert written_twice(written) == ["seed = 13 written in A, B: use one constant"]


# ----- the rest of the source tree ---------------------------------------------------------------

def settings_defaults() -> dict[str, set[tuple]]:
    """{name: {default}} of every knob with a plain default (None is "not set", not a default), by
    its attribute name and by its flat name."""
    out: dict[str, set[tuple]] = defaultdict(set)
    for section, kind in [("", Settings), *SECTIONS.items()]:
        for f in fields(kind):
            if f.default is MISSING or f.default is None:
                continue
            for name in {f.name, f"{section}_{f.name}" if section else f.name}:
                out[name].add(value_key(f.default))
    return out


def literal(expr: ast.expr | None):
    try:
        return value_key(ast.literal_eval(expr)) if expr is not None else None
    except (ValueError, TypeError, SyntaxError):
        return None


def named_defaults(tree: ast.Module):
    """(name, default expression) of parameter defaults, class attributes and module constants."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            yield from ((a.arg, d) for a, d in zip(positional[len(positional) - len(args.defaults):], args.defaults))
            yield from ((a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None)
    for body in [tree.body] + [node.body for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]:
        for node in body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                yield node.target.id, default_expr(node.value)
            elif isinstance(node, ast.Assign):
                yield from ((t.id, node.value) for t in node.targets if isinstance(t, ast.Name))


def copies_in(source: str, defaults: dict[str, set[tuple]]) -> set[str]:
    """Names in `source` given a literal default equal to the settings default of the same name
    (a module constant's name read in lower case)."""
    return {name for name, expr in named_defaults(ast.parse(source))
            if (value := literal(expr)) is not None and value in defaults.get(name.lower(), ())}


def source_files() -> list[Path]:
    return [path for package in SOURCE_PACKAGES for path in sorted((REPO / package).rglob("*.py"))
            if SETTINGS_DIR not in path.parents]


def test_no_module_writes_a_settings_default_again():
    defaults = settings_defaults()
    # A module outside core/settings/ that wants a knob's default reads it from there (SEED,
    # ServingSettings.index_type, ...): a literal copy would drift when the setting changes.
    found = {(path.relative_to(REPO).as_posix(), name) for path in source_files()
             for name in copies_in(path.read_text(encoding="utf-8"), defaults)}
    assert found == set()


def test_the_mirrors_of_a_section_take_every_default_from_settings():
    defaults = settings_defaults()
    knob_names = set(defaults) | {f.name for f in fields(Settings)}
    for path, class_name in MIRRORS.items():
        source = (REPO / path).read_text(encoding="utf-8")
        assert copies_in(source, defaults) == set(), path
        cls = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == class_name)
        literals = {}
        for item in cls.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None):
                continue
            name = item.target.id
            if not any(knob in knob_names for knob in (name, f"{name}_minutes", f"{name}_days")):
                continue
            written = [c.value for c in ast.walk(item.value) if isinstance(c, ast.Constant) and c.value is not None]
            if written:
                literals[name] = written
        assert literals == {}, path


def test_the_check_finds_a_copied_default():
    defaults = settings_defaults()
    source = ("CLARIFY_MARGIN = 0.02\nSLACK_WORKERS = 4\n\ndef decide(x, *, clarify_margin=0.02, max_sources=5):\n"
              "    pass\n\nclass Options:\n    support_min_confidence: float = 0.6\n    answer_mode: str = 'compose'\n")
    assert copies_in(source, defaults) == {"CLARIFY_MARGIN", "SLACK_WORKERS", "clarify_margin",
                                           "support_min_confidence"}
