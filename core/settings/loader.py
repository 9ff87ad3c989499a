"""The root of the tree, `Settings`, and its one loader: TOML file, environment, overrides and the
defaults (written in the part modules), each value converted to its field's type."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from core.errors import ConfigError
from core.settings.alerts import AlertSettings
from core.settings.compose import ComposeSettings
from core.settings.general import GeneralSettings, default_home
from core.settings.serving import ServingSettings
from core.settings.slack import SlackSettings
from core.settings.store import StoreSettings, without_password
from core.settings.training import FinetuneSettings, RetrainSettings

SECTIONS: dict[str, type] = {"slack": SlackSettings, "alert": AlertSettings, "finetune": FinetuneSettings,
                             "retrain": RetrainSettings, "compose": ComposeSettings}
SLACK_ENV = {"SLACK_BOT_TOKEN": "bot_token", "SLACK_APP_TOKEN": "app_token", "SLACK_SIGNING_SECRET": "signing_secret"}
_SECRETS = {"bot_token", "app_token", "signing_secret", "api_key"}
# The parts of the general fields, in field order (a dataclass lists its bases' fields last base first).
GENERAL_PARTS = (GeneralSettings, ServingSettings, StoreSettings)


@dataclass
class Settings(StoreSettings, ServingSettings, GeneralSettings):
    """The tree: the general fields (general.py, serving.py, store.py) and the five sections."""

    slack: SlackSettings = field(default_factory=SlackSettings)
    alert: AlertSettings = field(default_factory=AlertSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    retrain: RetrainSettings = field(default_factory=RetrainSettings)
    compose: ComposeSettings = field(default_factory=ComposeSettings)
    config_file: Path | None = None

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def db_path(self) -> Path:
        return self.home / "csbot.sqlite3"

    @classmethod
    def load(cls, env: dict[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read the tree. `overrides` use the flat names (`home=`, `retrain_epochs=`, ...); None
        values are ignored (an unset command-line flag)."""
        env = dict(os.environ if env is None else env)
        general = {f.name: f for f in fields(cls) if f.name not in SECTIONS and f.name != "config_file"}
        values: dict[str, Any] = {}
        parts: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        unknown: list[str] = []

        def put(key: str, value: Any) -> None:
            if key in general:
                values[key] = value
                return
            section, _, name = key.partition("_")
            if section in SECTIONS and name in _field_names(SECTIONS[section]):
                parts[section][name] = value
            else:
                unknown.append(key)

        config_file = _find_config_file(env)
        if config_file is not None:
            for key, value in _read_toml(config_file).items():
                if key in SECTIONS and isinstance(value, dict):
                    for name, item in value.items():
                        put(f"{key}_{name}", item)
                else:
                    put(key, value)
        for name in general:
            if f"CSBOT_{name.upper()}" in env:
                values[name] = env[f"CSBOT_{name.upper()}"]
        for section, kind in SECTIONS.items():
            for name in _field_names(kind):
                key = f"CSBOT_{section.upper()}_{name.upper()}"
                if key in env:
                    parts[section][name] = env[key]
        for slack_name, name in SLACK_ENV.items():
            if env.get(slack_name):
                parts["slack"][name] = env[slack_name]
        if env.get("OPENAI_API_KEY") and "api_key" not in parts["compose"]:
            parts["compose"]["api_key"] = env["OPENAI_API_KEY"]
        for key, value in overrides.items():
            if value is not None:
                put(key, value)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(sorted(unknown))} in {config_file or 'overrides'}")
        values.setdefault("home", default_home(env))
        converted = {name: _convert(name, _hints(cls)[name], value) for name, value in values.items()}
        for section, kind in SECTIONS.items():
            hints = _hints(kind)
            converted[section] = kind(**{name: _convert(f"{section}_{name}", hints[name], value)
                                         for name, value in parts[section].items()})
        converted["config_file"] = config_file
        return cls(**converted)

    def __post_init__(self):
        for part in GENERAL_PARTS:
            problems = part.problems(self)
            if problems:
                raise ConfigError(f"setting {problems[0]}")

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some fields changed, by their flat names (`finetune_epochs=0`, `home=...`)."""
        direct = {k: v for k, v in changes.items() if k in {f.name for f in fields(self)}}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            if key in direct:
                continue
            section, _, name = key.partition("_")
            if section not in SECTIONS or name not in _field_names(SECTIONS[section]):
                raise ConfigError(f"unknown setting {key}")
            nested.setdefault(section, {})[name] = value
        for section, items in nested.items():
            direct[section] = dataclasses.replace(getattr(self, section), **items)
        return dataclasses.replace(self, **direct)

    def to_dict(self) -> dict:
        """Every setting by its flat name (secrets left out), e.g. for `--dry-run` reports."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECTIONS:
                out.update({f"{f.name}_{k}": v for k, v in asdict(value).items() if k not in _SECRETS})
            elif f.name == "database_url":
                out[f.name] = without_password(value)
            elif f.name != "user_hash_salt":
                out[f.name] = str(value) if isinstance(value, Path) else value
        return out


def _field_names(kind: type) -> set[str]:
    return {f.name for f in fields(kind)}


def _hints(kind: type) -> dict[str, Any]:
    # Each part's annotations resolve in its own module (a part class may live anywhere in the package).
    return get_type_hints(kind)


def _find_config_file(env: dict[str, str]) -> Path | None:
    if env.get("CSBOT_CONFIG"):
        path = Path(env["CSBOT_CONFIG"])
        if not path.is_file():
            raise ConfigError(f"CSBOT_CONFIG points at {path}, which is not a file")
        return path
    for candidate in (Path("csbot.toml"), Path(env.get("CSBOT_HOME") or default_home(env)) / "csbot.toml"):
        if candidate.is_file():
            return candidate
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    return dict(data.get("csbot", data))


def _convert(name: str, annotation: Any, value: Any) -> Any:
    """Convert a TOML or environment value to the field's type."""
    optional = type(None) in get_args(annotation)
    base = next((a for a in get_args(annotation) if a is not type(None)), annotation)
    if get_origin(annotation) is None:
        base = annotation
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    try:
        if base is Path:
            return Path(value)
        if base is bool:
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() in ("1", "true", "yes", "on")
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if base is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: cannot read {value!r} as {base.__name__}") from exc
