"""Model versions under `CSBOT_HOME/models/`: the one owner of that layout and of the champion pointer.

    models/
      CHAMPION                 text file: the served version's name (replaced atomically)
      <version>/
        meta.json              parent, created, code revision, encoder, counts, metrics
        kb.jsonl               the knowledge base the version was built from
        intent_head.npz        intent classifier head
        sentiment_head.npz     sentiment head
        encoder/               fine-tuned encoder (absent when the version uses the base encoder)
        index/                 FAISS index built with this version's encoder

A version folder is written under a temporary name and renamed into place when complete, so a
crash never leaves a half-written version that looks real. `promote` flips CHAMPION with one
`os.replace`; the previous champion is kept in `meta.json` of the new one for `rollback`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bot.errors import UserError

CHAMPION_FILE = "CHAMPION"
HISTORY_FILE = "promotions.jsonl"


class VersionError(UserError):
    pass


@dataclass
class ModelVersion:
    name: str
    path: Path
    meta: dict

    @property
    def encoder_name(self) -> str:
        """The encoder to load: the version's own fine-tuned folder, else the configured base."""
        if (self.path / "encoder").is_dir():
            return str(self.path / "encoder")
        return self.meta["encoder"]

    @property
    def parent(self) -> str | None:
        return self.meta.get("parent")


def code_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class VersionStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    # ----- reading -------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").is_file())

    def get(self, name: str) -> ModelVersion:
        path = self.root / name
        try:
            meta = json.loads((path / "meta.json").read_text())
        except FileNotFoundError as exc:
            raise VersionError(f"no model version {name!r} under {self.root}") from exc
        except (OSError, ValueError) as exc:
            raise VersionError(f"model version {name!r} has unreadable metadata: {exc}") from exc
        return ModelVersion(name, path, meta)

    def champion_name(self) -> str | None:
        try:
            name = (self.root / CHAMPION_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        return name or None

    def champion(self) -> ModelVersion:
        name = self.champion_name()
        if name is None:
            raise VersionError(f"no model yet under {self.root}: run `csbot ingest PATH` first")
        return self.get(name)

    def champion_stamp(self) -> tuple[int, int] | None:
        """Cheap change detector for hot reload: (mtime_ns, inode) of the CHAMPION file (flipped by rename)."""
        try:
            st = (self.root / CHAMPION_FILE).stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ino)

    # ----- writing -------------------------------------------------------------------------
    def new_build_dir(self) -> Path:
        """A fresh temporary folder to build a version in; `commit` gives it its name."""
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".building-", dir=self.root))

    def commit(self, tmp: Path, meta: dict) -> ModelVersion:
        """Name the built folder, write its metadata and move it into place (not yet champion)."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        name = f"v{stamp}"
        suffix = 1
        while (self.root / name).exists():
            suffix += 1
            name = f"v{stamp}-{suffix}"
        meta = {**meta, "version": name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "code_revision": meta.get("code_revision") or code_revision()}
        _write_atomic(tmp / "meta.json", json.dumps(meta, indent=2, sort_keys=True))
        _fsync_tree(tmp)
        tmp.rename(self.root / name)
        return ModelVersion(name, self.root / name, meta)

    def promote(self, name: str, reason: str = "promote") -> ModelVersion:
        version = self.get(name)
        previous = self.champion_name()
        _write_atomic(self.root / CHAMPION_FILE, name + "\n")
        with open(self.root / HISTORY_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"time": time.time(), "champion": name, "previous": previous, "reason": reason}) + "\n")
        return version

    def rollback(self) -> ModelVersion:
        """Make the previous champion the champion again."""
        current = self.champion()
        for record in reversed(self.history()):
            if record.get("champion") == current.name and record.get("previous"):
                return self.promote(record["previous"], reason=f"rollback from {current.name}")
        if current.parent and current.parent in self.names():
            return self.promote(current.parent, reason=f"rollback from {current.name}")
        raise VersionError(f"{current.name} has no earlier version to roll back to")

    def history(self) -> list[dict]:
        try:
            lines = (self.root / HISTORY_FILE).read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def clean_partial(self) -> int:
        """Remove folders left by builds that died (SIGKILL); returns how many."""
        removed = 0
        if self.root.is_dir():
            for path in self.root.glob(".building-*"):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
