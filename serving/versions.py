"""Model versions under `CSBOT_HOME/models/`: the one owner of that layout, of every file inside a
version folder, and of the champion pointer.

    models/
      CHAMPION                 text file: the served version's name (replaced atomically)
      <version>/
        meta.json              parent, created, code revision, encoder, counts, metrics
        kb.jsonl               the knowledge base the version was built from
        training_examples.jsonl  labelled feedback questions it was trained on (later builds replay them)
        intent_head.npz        intent classifier head
        sentiment_head.npz     sentiment head (over the shared encoder pass)
        sentiment_model.npz    the fine-tuned sentiment model (LoRA + head, models/sentiment_model.py),
                               when the build was set to serve it (`sentiment_model`); it then labels
                               sentiment instead of the head
        sentiment_onnx/        that model exported to ONNX fp32 and int8 (models/sentiment_onnx.py);
                               meta.json "sentiment" says which runtime serves it and why
        encoder/               fine-tuned encoder (absent when the version uses the base encoder)
        onnx/                  the encoder exported to ONNX fp32 and int8 (models/onnx_export.py), absent
                               when the version was built for torch only; meta.json "runtime" says which
                               runtime serves it and why (training/export.py)
        index/                 FAISS index built with the served runtime's encoder
        composer/              LoRA adapter on the composer model (peft), when a retrain trained one;
                               meta.json "composer" holds the gate's verdict (approved or not)

Nothing else names these files: builders write a version through a `VersionDraft`
(`VersionStore.draft()`, then `draft.commit(meta)`), and the engine, the gate and the retrain read
one through `ModelVersion` (`documents()`, `examples()`, `load_index()`, `load_intent_head()`,
`load_sentiment()`, `encoder_dir`, `sentiment_head_path`, `sentiment_model_path`) — the `save_pretrained` /
`from_pretrained` idea for the whole bundle.

A version folder is written under a temporary name and renamed into place when complete, so a
crash never leaves a half-written version that looks real. `promote` flips CHAMPION with one
`os.replace` (given `expect_champion`, only if the champion is still the one the caller built on);
a version's `meta.json` names its parent (the version it was built from), which `rollback` serves.
`prune` keeps the champion, its parent and the newest N versions (the `keep_versions` setting, 5 by
default) and deletes the rest.

With a model store (`model_store = "s3://bucket/prefix"`, docs/scale-out.md) the store is the truth
and `models/` its local cache of the same layout: builds still draft and commit here; `promote`
publishes the version (serving/model_store.py: its blobs by content, then its manifest) and moves the
store's CHAMPION last, compared against the store's pointer; `champion_stamp` is one HEAD of that
pointer; `get` fetches a version the cache lacks (every file checked, assembled under `.fetching-*`
and renamed into place); `describe` reads a version's manifest without fetching it; `prune` and
`delete` remove manifests, the blobs no kept version references and the cached copies; `push`
publishes a home's existing versions. Every caller makes its store with
`VersionStore.from_settings(settings)`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from core.errors import UserError
from retrieval.kb import Document
from models.onnx_files import MANIFEST

CHAMPION_FILE = "CHAMPION"
HISTORY_FILE = "promotions.jsonl"
META_FILE = "meta.json"
KB_FILE = "kb.jsonl"
EXAMPLES_FILE = "training_examples.jsonl"
INTENT_HEAD_FILE = "intent_head.npz"
SENTIMENT_HEAD_FILE = "sentiment_head.npz"
SENTIMENT_MODEL_FILE = "sentiment_model.npz"
SENTIMENT_ONNX_DIR = "sentiment_onnx"
ENCODER_DIR = "encoder"
ONNX_DIR = "onnx"
COMPOSER_DIR = "composer"  # a LoRA adapter on the composer model (peft), when a retrain trained one
INDEX_DIR = "index"
STORE_RECORDS = ".store"  # with a model store: the manifests of the versions cached or published here


class VersionError(UserError):
    pass


ANY = object()  # promote's `expect_champion` default: whatever the champion is


@dataclass
class TrainingExample:
    """A labelled question beyond the KB's own examples (feedback, corrections, clarifying picks)."""

    text: str
    intent: str
    origin: str = "feedback"
    doc_id: str | None = None  # the article it was confirmed or corrected to, when known
    section: str | None = None  # the section a 👍 confirmed (its id); None: the build files it by similarity

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class ModelVersion:
    """One committed version folder, read through the methods below (never by file name).

    `files` is set on a version described from the model store's manifest without being fetched
    (`VersionStore.describe`): its checks for a file read the manifest, and its paths name where the
    local cache would keep them. `VersionStore.get` gives a version whose files are on disk."""

    name: str
    path: Path
    meta: dict
    files: frozenset[str] | None = None

    def _has_file(self, rel: str) -> bool:
        return rel in self.files if self.files is not None else (self.path / rel).is_file()

    def _has_dir(self, rel: str) -> bool:
        if self.files is not None:
            return any(f.startswith(rel + "/") for f in self.files)
        return (self.path / rel).is_dir()

    @property
    def encoder_dir(self) -> Path | None:
        """The version's own fine-tuned encoder folder, or None when it serves the base encoder."""
        return self.path / ENCODER_DIR if self._has_dir(ENCODER_DIR) else None

    @property
    def encoder_name(self) -> str:
        """The encoder to load: the version's own fine-tuned folder, else the configured base."""
        return str(self.encoder_dir) if self.encoder_dir else self.meta["encoder"]

    @property
    def onnx_dir(self) -> Path | None:
        """The ONNX export of the version's encoder, or None when it has none."""
        return self.path / ONNX_DIR if self._has_file(f"{ONNX_DIR}/{MANIFEST}") else None

    @property
    def composer_dir(self) -> Path | None:
        """The composer's LoRA adapter a retrain trained for this version (peft format), or None: the
        configured composer model serves as it is."""
        return self.path / COMPOSER_DIR if self._has_file(f"{COMPOSER_DIR}/adapter_config.json") else None

    @property
    def composer(self) -> dict:
        """The gate's verdict on this version's composer (meta "composer"): {"approved": bool, ...};
        {} when no retrain has judged one. `answer_mode = auto` composes only when approved."""
        return dict(self.meta.get("composer") or {})

    @property
    def runtime(self) -> str:
        """The encoder runtime the build chose for this version (torch, onnx or onnx-int8)."""
        return (self.meta.get("runtime") or {}).get("served", "torch")

    @property
    def base_encoder(self) -> str | None:
        """The configured encoder the version was built from (its fine-tuning started there)."""
        return self.meta.get("encoder")

    @property
    def parent(self) -> str | None:
        return self.meta.get("parent")

    @property
    def sentiment_head_path(self) -> Path:
        return self.path / SENTIMENT_HEAD_FILE

    @property
    def sentiment_model_path(self) -> Path | None:
        """The fine-tuned sentiment model's artefact, when the version serves one (else the head labels)."""
        return self.path / SENTIMENT_MODEL_FILE if self._has_file(SENTIMENT_MODEL_FILE) else None

    @property
    def sentiment_onnx_dir(self) -> Path | None:
        """The sentiment model's ONNX export (complete: its manifest is there), or None."""
        from models.sentiment_onnx import MANIFEST

        return self.path / SENTIMENT_ONNX_DIR if self._has_file(f"{SENTIMENT_ONNX_DIR}/{MANIFEST}") else None

    @property
    def sentiment_runtime(self) -> str:
        """The runtime the build chose for the sentiment model (torch when it has no export)."""
        return (self.meta.get("sentiment") or {}).get("served", "torch")

    def documents(self) -> list[Document]:
        """The knowledge base the version was built from."""
        return [Document.from_dict(row) for row in _read_jsonl(self.path / KB_FILE, self.name)]

    def examples(self) -> list[TrainingExample]:
        """Labelled examples the version was trained on beyond its KB (carried over by later builds)."""
        path = self.path / EXAMPLES_FILE
        return [TrainingExample(**row) for row in _read_jsonl(path, self.name)] if path.is_file() else []

    def load_index(self):
        """The FAISS + lexical index, checked to have been built by this version's encoder."""
        from retrieval.index import VectorIndex

        return VectorIndex.load(self.path / INDEX_DIR, expect_encoder_version=self.meta.get("encoder_version"))

    def load_intent_head(self):
        from models.heads import SoftmaxHead

        return SoftmaxHead.load(self.path / INTENT_HEAD_FILE)

    def load_sentiment(self, runtime: str | None = None, *, threads: int = 0, workers: int = 0):
        """What labels sentiment for this version: the fine-tuned model when it has one (on `runtime`,
        default the build's choice: torch, onnx or onnx-int8), else the head over the encoder pass.
        `threads`, `workers`: as OnnxSentiment's."""
        from models.sentiment import SentimentModel

        if self.sentiment_model_path is None:
            return SentimentModel.load(str(self.sentiment_head_path))
        runtime = runtime or self.sentiment_runtime
        if runtime == "torch" or self.sentiment_onnx_dir is None:
            from models.sentiment_model import FineTunedSentiment

            return FineTunedSentiment.load(self.sentiment_model_path)
        from models.sentiment_onnx import OnnxSentiment

        return OnnxSentiment(self.sentiment_onnx_dir, "int8" if runtime == "onnx-int8" else "fp32", threads=threads,
                             workers=workers)


class VersionDraft:
    """A version being built, in a temporary folder under the versions root; `commit` names it and
    moves it into place (complete, fsynced), `discard` removes it. As a context manager it is
    discarded when the block raises."""

    def __init__(self, versions: "VersionStore", path: Path):
        self.versions = versions
        self.path = Path(path)

    def __enter__(self) -> "VersionDraft":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is not None:
            self.discard()

    @property
    def encoder_dir(self) -> Path:
        """Where the version's own encoder goes (fine-tuning writes there, or `copy_encoder`)."""
        return self.path / ENCODER_DIR

    @property
    def has_encoder(self) -> bool:
        return self.encoder_dir.is_dir()

    @property
    def onnx_dir(self) -> Path:
        """Where the encoder's ONNX export goes (training/export.py writes it)."""
        return self.path / ONNX_DIR

    @property
    def composer_dir(self) -> Path:
        """Where a retrain's composer adapter goes (training/compose_train.py writes it)."""
        return self.path / COMPOSER_DIR

    def copy_composer(self, source: Path) -> None:
        """Carry the parent's composer adapter into this version (a retrain that did not train one)."""
        shutil.copytree(source, self.composer_dir)

    def copy_encoder(self, source: Path) -> None:
        shutil.copytree(source, self.encoder_dir)

    def save_index(self, index) -> None:
        index.save(self.path / INDEX_DIR)

    def load_index(self):
        from retrieval.index import VectorIndex

        return VectorIndex.load(self.path / INDEX_DIR)

    def save_intent_head(self, head) -> None:
        head.save(self.path / INTENT_HEAD_FILE)

    def save_sentiment_head(self, source: Path) -> None:
        shutil.copyfile(source, self.path / SENTIMENT_HEAD_FILE)

    def save_sentiment_model(self, source: Path) -> Path:
        """Copy the fine-tuned sentiment model's artefact in; returns where it now lies."""
        shutil.copyfile(source, self.path / SENTIMENT_MODEL_FILE)
        return self.path / SENTIMENT_MODEL_FILE

    @property
    def sentiment_onnx_dir(self) -> Path:
        """Where the sentiment model's ONNX export goes (training/export.py writes it)."""
        return self.path / SENTIMENT_ONNX_DIR

    def save_documents(self, documents: list[Document]) -> None:
        _write_jsonl(self.path / KB_FILE, (doc.to_dict() for doc in documents))

    def save_examples(self, examples: list[TrainingExample]) -> None:
        if examples:
            _write_jsonl(self.path / EXAMPLES_FILE, (ex.to_dict() for ex in examples))

    def commit(self, meta: dict) -> ModelVersion:
        return self.versions.commit(self.path, meta)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def code_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class VersionStore:
    """The model versions: under `root` (CSBOT_HOME/models) alone, or, with a model store (`remote`, a
    serving.model_store.ModelBucket), published there and cached under `root` (module doc). Make one
    with `VersionStore.from_settings(settings)`."""

    def __init__(self, root: Path, remote=None):
        self.root = Path(root)
        self.remote = remote
        self._manifests: dict[str, dict] = {}  # a published manifest never changes under its name

    @classmethod
    def from_settings(cls, settings) -> "VersionStore":
        """The versions `settings` name: CSBOT_HOME/models, or the `model_store` with that folder as its
        local cache (boto3 is imported only then)."""
        if not settings.model_store:
            return cls(settings.models_dir)
        from serving.model_store import ModelBucket

        return cls(settings.models_dir, ModelBucket(settings.model_store))

    @property
    def location(self) -> str:
        """Where the versions are published: the store's URL, or the local folder."""
        return self.remote.url if self.remote is not None else str(self.root)

    # ----- reading -------------------------------------------------------------------------
    def local_names(self) -> list[str]:
        """The complete version folders on this disk, oldest first: every version without a model store;
        with one, the cached ones and those built here."""
        if not self.root.is_dir():
            return []
        return sorted((p.name for p in self.root.iterdir()
                       if p.is_dir() and not p.name.startswith(".") and (p / META_FILE).is_file()), key=_age_key)

    def names(self) -> list[str]:
        """Every version, oldest first; with a model store, the published ones and those built here and
        never published (a cached copy of a version the store has deleted is left out)."""
        local = self.local_names()
        if self.remote is None:
            return local
        records = self._records()
        return sorted(set(self.remote.names()) | {n for n in local if n not in records}, key=_age_key)

    def get(self, name: str) -> ModelVersion:
        """The version, its files on this disk: with a model store, fetched into the cache first when
        it is not there (every file checked against its manifest)."""
        if self.remote is not None and not (self.root / name / META_FILE).is_file():
            self._fetch(name)
        return self._read(name)

    def describe(self, name: str) -> ModelVersion:
        """The version's metadata and file list, without fetching it (listings, retention); a described
        version's files are read through `get`."""
        if self.remote is None or (self.root / name / META_FILE).is_file():
            return self._read(name)
        manifest = self._manifest(name)
        if manifest is None:
            raise VersionError(f"no model version {name!r} in {self.remote.url}")
        return ModelVersion(name, self.root / name, manifest["meta"], frozenset(manifest["files"]))

    def _read(self, name: str) -> ModelVersion:
        path = self.root / name
        try:
            meta = json.loads((path / META_FILE).read_text())
        except FileNotFoundError as exc:
            raise VersionError(f"no model version {name!r} in {self.location}") from exc
        except (OSError, ValueError) as exc:
            raise VersionError(f"model version {name!r} has unreadable metadata: {exc}") from exc
        return ModelVersion(name, path, meta)

    def champion_name(self) -> str | None:
        if self.remote is not None:
            return self.remote.champion()[0]
        return self._local_champion()

    def _local_champion(self) -> str | None:
        try:
            name = (self.root / CHAMPION_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        return name or None

    def champion(self) -> ModelVersion:
        name = self.champion_name()
        if name is None:
            push = " (or `csbot models push` from a home that has one)" if self.remote is not None else ""
            raise VersionError(f"no model yet in {self.location}: run `csbot ingest PATH` first{push}")
        return self.get(name)

    def champion_stamp(self) -> tuple | None:
        """Cheap change detector for hot reload: (mtime_ns, inode) of the CHAMPION file (flipped by
        rename); with a model store, one HEAD of its pointer (the engine asks at most every
        reload_check_seconds)."""
        if self.remote is not None:
            return self.remote.champion_stamp()
        try:
            st = (self.root / CHAMPION_FILE).stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ino)

    def footprint(self, names: list[str]) -> dict:
        """{"bytes": {name: N}, "own_bytes": {name: N}, "disk_bytes": N, "store_bytes": N or None,
        "published": {name, ...}}: each version's bytes and the part no other of `names` shares (what
        deleting it frees), the bytes on this disk (a hard-linked file once) and, with a model store,
        the bytes it holds for `names` (each blob once) and which of them it has."""
        disk = freed_by_removing(self.root / n for n in self.local_names())
        manifests = {n: self._manifest(n) for n in names} if self.remote is not None else {}
        sizes: dict[str, int] = {}
        holders: dict[str, int] = {}
        for manifest in filter(None, manifests.values()):
            shas = {e["sha256"]: e["size"] for e in manifest["files"].values()}
            sizes.update(shas)
            for sha in shas:
                holders[sha] = holders.get(sha, 0) + 1
        total, own = {}, {}
        for name in names:
            manifest = manifests.get(name)
            if manifest is None:  # on this disk only
                total[name], own[name] = folder_bytes(self.root / name), freed_by_removing([self.root / name])
                continue
            shas = {e["sha256"] for e in manifest["files"].values()}
            total[name] = sum(e["size"] for e in manifest["files"].values())
            own[name] = sum(sizes[sha] for sha in shas if holders[sha] == 1)
        return {"bytes": total, "own_bytes": own, "disk_bytes": disk,
                "store_bytes": sum(sizes.values()) if self.remote is not None else None,
                "published": {n for n, m in manifests.items() if m is not None}}

    # ----- writing -------------------------------------------------------------------------
    def draft(self) -> VersionDraft:
        """A fresh temporary folder to build a version in; `VersionDraft.commit` gives it its name."""
        self.root.mkdir(parents=True, exist_ok=True)
        return VersionDraft(self, Path(tempfile.mkdtemp(prefix=".building-", dir=self.root)))

    def commit(self, tmp: Path, meta: dict) -> ModelVersion:
        """Name the built folder, write its metadata and move it into place (not yet champion, and with a
        model store not yet published: `promote` publishes)."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        name = f"v{stamp}"
        suffix = 1
        while (self.root / name).exists() or (self.remote is not None and self.remote.has(name)):
            suffix += 1
            name = f"v{stamp}-{suffix}"
        meta = {**meta, "version": name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "code_revision": meta.get("code_revision") or code_revision()}
        _write_atomic(tmp / META_FILE, json.dumps(meta, indent=2, sort_keys=True))
        _fsync_tree(tmp)
        tmp.rename(self.root / name)
        return ModelVersion(name, self.root / name, meta)

    def promote(self, name: str, reason: str = "promote", *, expect_champion=ANY) -> ModelVersion:
        """Serve `name`. With `expect_champion` (a version name, or None for "no champion yet"), a
        compare-and-set: raises VersionError and changes nothing when the champion is another one, so
        a writer never promotes over a champion it did not build on. The compare and the flip are one
        step only while the caller holds the home's writer lock (training/lock.py), or, with a model
        store that takes conditional writes, through the pointer's ETag. With a model store the
        version is published first (when it is not yet), and the store's pointer moves last."""
        if self.remote is not None:
            return self._promote_published(name, reason, expect_champion)
        version = self.get(name)
        previous = self.champion_name()
        _check_expected(name, previous, expect_champion)
        self._point_local(name, previous, reason)
        return version

    def _promote_published(self, name: str, reason: str, expect_champion) -> ModelVersion:
        published = self.remote.has(name)
        if not published and not (self.root / name / META_FILE).is_file():
            raise VersionError(f"no model version {name!r} in {self.remote.url} or under {self.root}")
        previous, etag = self.remote.champion()
        _check_expected(name, previous, expect_champion)
        if not published:
            self.publish(name)
        record = self.remote.record_promotion({"time": time.time(), "champion": name, "previous": previous,
                                               "reason": reason})
        conditional = expect_champion is not ANY
        if not self.remote.set_champion(name, etag=etag if conditional else None,
                                        expect_present=previous is not None or not conditional):
            self.remote.forget_promotion(record)
            raise VersionError(_moved(name, self.remote.champion()[0], previous))
        if (self.root / name / META_FILE).is_file():
            self._point_local(name, previous, reason)  # the cache's pointer follows the moves made here
        return self.describe(name)

    def _point_local(self, name: str, previous: str | None, reason: str) -> None:
        _write_atomic(self.root / CHAMPION_FILE, name + "\n")
        with open(self.root / HISTORY_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"time": time.time(), "champion": name, "previous": previous, "reason": reason}) + "\n")

    def rollback(self) -> ModelVersion:
        """Serve the champion's parent (the version it was built from). Always goes back: rolling
        back twice serves the grandparent, never the version rolled back from."""
        name = self.champion_name()
        if name is None:
            raise VersionError(f"no model yet in {self.location}: nothing to roll back")
        current = self.describe(name)
        if not current.parent:
            raise VersionError(f"{current.name} has no parent version to roll back to")
        if current.parent not in self.names():
            raise VersionError(f"{current.name}'s parent {current.parent} is no longer kept (pruned); "
                               f"`csbot models promote VERSION` serves another one")
        return self.promote(current.parent, reason=f"rollback from {current.name}", expect_champion=current.name)

    # ----- the model store -----------------------------------------------------------------
    def publish(self, name: str) -> dict:
        """Upload a version built here to the model store: the blobs the store lacks, then its manifest
        (nothing when it is published already). Returns {"version", "already", "uploaded_blobs",
        "uploaded_bytes", ...}."""
        if self.remote is None:
            raise VersionError("no model store is set: model_store = \"s3://BUCKET/PREFIX\" (CSBOT_MODEL_STORE)")
        if self.remote.has(name):
            return {"version": name, "already": True, "uploaded_blobs": 0, "uploaded_bytes": 0}
        version = self._read(name)
        report = self.remote.publish(name, version.path, version.meta)
        self._remember(report.pop("manifest"))
        return {**report, "already": False}

    def push(self) -> dict:
        """Publish every version on this disk, and this home's champion when the store has none yet (a
        team that started on one host moves to the store). Running it again uploads nothing."""
        report = {"store": self.location, "pushed": [], "already": [], "uploaded_blobs": 0, "uploaded_bytes": 0}
        for name in self.local_names():
            result = self.publish(name)
            report["already" if result["already"] else "pushed"].append(name)
            report["uploaded_blobs"] += result["uploaded_blobs"]
            report["uploaded_bytes"] += result["uploaded_bytes"]
        local, champion = self._local_champion(), self.remote.champion()[0]
        report["local_champion"], report["champion_set"] = local, False
        if champion is None and local in report["pushed"] + report["already"]:
            self.promote(local, reason="push", expect_champion=None)
            champion, report["champion_set"] = local, True
        report["champion"] = champion
        return report

    def _manifest(self, name: str) -> dict | None:
        if name not in self._manifests:
            manifest = self.remote.manifest(name)
            if manifest is None:
                return None
            self._manifests[name] = manifest
        return self._manifests[name]

    def _fetch(self, name: str) -> None:
        """Assemble a published version in a temporary folder of the cache, checked, then rename it into
        place: a refused or interrupted fetch leaves nothing that looks like a version."""
        manifest = self._manifest(name)
        if manifest is None:
            raise VersionError(f"no model version {name!r} in {self.remote.url}")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetching-", dir=self.root))
        try:
            self.remote.fetch(manifest, tmp, self._cached_blobs())
            _fsync_tree(tmp)
            try:
                tmp.rename(self.root / name)
            except OSError:  # another process fetched it meanwhile
                if not (self.root / name / META_FILE).is_file():
                    raise
            self._remember(manifest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _remember(self, manifest: dict) -> None:
        """Keep a published version's manifest beside the cache (its files can be hard-linked into the
        next fetch; a cached version the store no longer lists is then known for stale)."""
        (self.root / STORE_RECORDS).mkdir(parents=True, exist_ok=True)
        _write_atomic(self.root / STORE_RECORDS / f"{manifest['version']}.json", json.dumps(manifest))
        self._manifests[manifest["version"]] = manifest

    def _records(self) -> set[str]:
        folder = self.root / STORE_RECORDS
        return {p.stem for p in folder.glob("*.json")} if folder.is_dir() else set()

    def _cached_blobs(self) -> dict[str, Path]:
        """{sha256: a file of a cached version with that content}."""
        found: dict[str, Path] = {}
        for name in self._records():
            try:
                files = json.loads((self.root / STORE_RECORDS / f"{name}.json").read_text())["files"]
            except (OSError, ValueError, KeyError):
                continue
            for rel, entry in files.items():
                if (self.root / name / rel).is_file():
                    found.setdefault(entry["sha256"], self.root / name / rel)
        return found

    # ----- retention -----------------------------------------------------------------------
    def protected(self, keep: int, names: list[str] | None = None) -> set[str]:
        """The versions `prune(keep)` keeps: the champion, its parent (the rollback target) and the
        newest `keep` versions."""
        names = self.names() if names is None else names
        kept = set(names[-keep:]) if keep > 0 else set()
        champion = self.champion_name()
        if champion in names:
            kept.add(champion)
            parent = self.describe(champion).parent
            if parent in names:
                kept.add(parent)
        return kept

    def prune(self, keep: int, *, dry_run: bool = False) -> dict:
        """Delete every version but the champion, its parent and the newest `keep`.

        Returns {"kept": [...], "removed": [...], "freed_bytes": N} (N: what this disk gets back,
        `freed_by_removing`); with a model store also "store_freed_bytes" (its blobs no kept version
        references) and "uncached" (cached copies of versions the store no longer has, removed too)."""
        if keep < 0:
            raise VersionError(f"keep must be 0 or more, not {keep}")
        names = self.names()
        kept = self.protected(keep, names)
        removed = [name for name in names if name not in kept]
        stale = [n for n in self.local_names() if n not in names] if self.remote is not None else []
        local = set(self.local_names())
        freed = freed_by_removing(self.root / n for n in removed + stale if n in local)  # hard links to kept ones stay
        report = {"kept": sorted(kept), "removed": removed, "freed_bytes": freed}
        if self.remote is not None:
            report["uncached"] = stale
            footprint = self.footprint(names)
            report["store_freed_bytes"] = footprint["store_bytes"] - self.footprint(sorted(kept))["store_bytes"]
        if not dry_run:
            collected = self._remove_versions(removed)
            for name in stale:
                self._remove(name)
            if self.remote is not None:
                report["store_freed_bytes"] = collected["bytes"]
        return report

    def delete(self, name: str) -> None:
        """Remove one version that is not the champion (from the model store too, with the blobs only
        it held)."""
        if name == self.champion_name():
            raise VersionError(f"{name} is the champion; promote another version first")
        self.describe(name)
        self._remove_versions([name])

    def discard(self, name: str) -> bool:
        """Remove a never-served candidate if it is still there and not the champion (no error
        otherwise); returns whether it was removed."""
        if name == self.champion_name():
            return False
        if self.remote is not None and self.remote.has(name):
            self._remove_versions([name])
            return True
        if not (self.root / name).is_dir():
            return False
        return self._remove(name)

    def _remove_versions(self, names: list[str]) -> dict:
        """Delete versions: from the model store first (their manifests, then the blobs no remaining
        version references), then from this disk. Returns the store's {"blobs", "bytes"} freed."""
        collected = {"blobs": 0, "bytes": 0}
        if self.remote is not None and names:
            manifests = {n: self._manifest(n) for n in names}
            published = [n for n, m in manifests.items() if m is not None]
            released = {e["sha256"] for n in published for e in manifests[n]["files"].values()}
            if published:
                self.remote.delete_versions(published)
            collected = self.remote.collect_garbage(released)
        for name in names:
            self._remove(name)
        return collected

    def _remove(self, name: str) -> bool:
        # Renamed first so a half-deleted folder never looks like a version.
        (self.root / STORE_RECORDS / f"{name}.json").unlink(missing_ok=True)
        self._manifests.pop(name, None)
        doomed = self.root / f".deleting-{name}"
        try:
            (self.root / name).rename(doomed)
        except OSError:
            return False
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def history(self) -> list[dict]:
        if self.remote is not None:
            return self.remote.history()
        try:
            lines = (self.root / HISTORY_FILE).read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def clean_partial(self) -> int:
        """Remove folders left by builds, fetches or deletions that died (SIGKILL); returns how many."""
        removed = 0
        if self.root.is_dir():
            for pattern in (".building-*", ".fetching-*", ".deleting-*"):
                for path in self.root.glob(pattern):
                    shutil.rmtree(path, ignore_errors=True)
                    removed += 1
        return removed


def _check_expected(name: str, current: str | None, expect_champion) -> None:
    if expect_champion is not ANY and current != expect_champion:
        raise VersionError(_moved(name, current, expect_champion))


def _moved(name: str, current: str | None, expected: str | None) -> str:
    return (f"the champion changed while {name} was being made: it is {current or 'none'}, not "
            f"{expected or 'none'}; {name} was not promoted")


def _age_key(name: str) -> tuple:
    """Oldest first: `v20261125-110238` < `v20261125-110238-2` < `v20261125-110238-10`."""
    m = re.fullmatch(r"(v\d{8}-\d{6})(?:-(\d+))?", name)
    if m is None:
        return (name, 0)
    return (m.group(1), int(m.group(2) or 1))


def folder_bytes(root: Path) -> int:
    """Bytes of the files under `root` (apparent size: a file hard-linked from another version counts
    here too; `freed_by_removing` counts what deleting takes off the disk)."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def freed_by_removing(folders) -> int:
    """Bytes that deleting `folders` gives back to the disk: each file once, and only when every hard
    link to it is inside them (builds hard-link unchanged exports from earlier versions:
    training/export.py), so a file still linked from a kept version frees nothing."""
    links: dict[tuple[int, int], list[int]] = {}
    for folder in folders:
        for path in Path(folder).rglob("*"):
            if path.is_file() and not path.is_symlink():
                stat = path.stat()
                entry = links.setdefault((stat.st_dev, stat.st_ino), [0, stat.st_nlink, stat.st_size])
                entry[0] += 1
    return sum(size for seen, nlink, size in links.values() if seen >= nlink)


def _read_jsonl(path: Path, version: str) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as exc:
        raise VersionError(f"model version {version!r}: cannot read {path.name}: {exc}") from exc


def _write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


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
