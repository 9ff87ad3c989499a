"""The one owner of a version's search indexes: build, save atomically, load, search.

An index folder holds `faiss.index`, `entries.jsonl` (one row per vector: doc_id, kind, text,
section), `lexical.sqlite3` (the FTS5/BM25 index over the same entries, retrieval/lexical.py) and
`meta.json` (encoder name and version that built it, dimension, index type, count). Vectors are
L2-normalised sentence embeddings, so inner product = cosine similarity. Folders written before
the lexical index existed load without it (dense search only).

Index type "auto" takes exact search (IndexFlatIP) below `hnsw_min_vectors` and HNSW above; "ivf"
is available for very large KBs. Writes go to a temporary sibling folder that replaces the target
with one rename, so readers never see a half-written index.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from core.errors import UserError
from core.settings import SEED, ServingSettings
from retrieval.lexical import LEXICAL_FILE, LexicalIndex, write_lexical

# faiss only takes its BLAS path when n_queries * dim >= this; small batches are ~5x faster with it.
faiss.cvar.distance_compute_blas_threshold = 2


LEARNED = "learned"  # the entry kind of a labelled question learned from feedback


@dataclass(frozen=True)
class Entry:
    doc_id: str
    kind: str  # "title", "heading", "question", "chunk", or "learned" (a labelled question from feedback)
    text: str
    section: str = ""  # the id of the article section it belongs to ("" = the article as a whole)


class IndexError_(UserError):
    """The index is missing, corrupt, or was built by another encoder."""


class VectorIndex:
    def __init__(self, index: faiss.Index, entries: list[Entry], meta: dict, lexical: LexicalIndex | None = None):
        self.index = index
        self.entries = entries
        self.meta = meta
        self.lexical = lexical  # set once saved and loaded (the FTS5 file lives in the folder)

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def build(cls, vectors: np.ndarray, entries: list[Entry], *, encoder: str, encoder_version: str,
              index_type: str = ServingSettings.index_type, hnsw_min_vectors: int = ServingSettings.hnsw_min_vectors,
              seed: int = SEED) -> "VectorIndex":
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(vectors) != len(entries):
            raise ValueError("one entry per vector")
        if len(vectors) == 0:
            raise UserError("cannot build an index over an empty knowledge base")
        n, dim = vectors.shape
        kind = index_type
        if kind == "auto":
            kind = "hnsw" if n >= hnsw_min_vectors else "flat"
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.hnsw.efSearch = 64
        elif kind == "ivf":
            nlist = max(1, min(4096, int(4 * np.sqrt(n))))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = vectors[np.random.default_rng(seed).permutation(n)[: max(nlist * 40, 10_000)]]
            index.train(sample)
            index.nprobe = max(1, nlist // 16)
        else:
            raise UserError(f"unknown index type {index_type!r}; use auto, flat, hnsw or ivf")
        index.add(vectors)
        meta = {"encoder": encoder, "encoder_version": encoder_version, "dim": dim, "type": kind, "count": n}
        return cls(index, list(entries), meta)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores (cosine) and entry positions, each (n_queries, k); missing hits have position -1."""
        k = max(1, min(k, len(self.entries)))
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def lexical_search(self, text: str, k: int) -> list[tuple[int, float]]:
        """BM25 hits (entry position, score) for one message; [] when the folder has no lexical index."""
        return self.lexical.search(text, k) if self.lexical is not None else []

    def save(self, folder: Path) -> None:
        """Write the index to `folder`, replacing any previous one with a single rename."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            faiss.write_index(self.index, str(tmp / "faiss.index"))
            with open(tmp / "entries.jsonl", "w", encoding="utf-8") as fh:
                for entry in self.entries:
                    fh.write(json.dumps(asdict(entry), ensure_ascii=False) + "\n")
            write_lexical(tmp / LEXICAL_FILE, [entry.text for entry in self.entries])
            (tmp / "meta.json").write_text(json.dumps({**self.meta, "lexical": "fts5"}, indent=2))
            for name in ("faiss.index", "entries.jsonl", "meta.json", LEXICAL_FILE):
                with open(tmp / name, "rb") as fh:
                    os.fsync(fh.fileno())
            if folder.exists():
                old = folder.with_name(f".{folder.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                folder.rename(old)
                tmp.rename(folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, folder: Path, *, expect_encoder_version: str | None = None) -> "VectorIndex":
        folder = Path(folder)
        for name in ("meta.json", "entries.jsonl", "faiss.index"):
            if not (folder / name).is_file():
                raise IndexError_(f"index at {folder} is missing {name}; run `csbot ingest`")
        try:
            meta = json.loads((folder / "meta.json").read_text())
            entries = [Entry(**json.loads(line)) for line in (folder / "entries.jsonl").read_text(encoding="utf-8").splitlines()]
            index = faiss.read_index(str(folder / "faiss.index"))
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            raise IndexError_(f"index at {folder} is corrupt ({exc}); re-run `csbot ingest`") from exc
        if index.ntotal != len(entries) or index.ntotal != meta.get("count"):
            raise IndexError_(f"index at {folder} is inconsistent: {index.ntotal} vectors, {len(entries)} entries")
        if expect_encoder_version and meta.get("encoder_version") != expect_encoder_version:
            raise IndexError_(
                f"index at {folder} was built by encoder {meta.get('encoder_version')}, "
                f"not {expect_encoder_version}; rebuild it with `csbot ingest`"
            )
        lexical = None
        if (folder / LEXICAL_FILE).is_file():
            try:
                lexical = LexicalIndex(folder / LEXICAL_FILE)
            except Exception as exc:  # sqlite3.Error and friends: the folder is damaged
                raise IndexError_(f"lexical index at {folder} is corrupt ({exc}); re-run `csbot ingest`") from exc
        elif meta.get("lexical"):
            raise IndexError_(f"index at {folder} is missing {LEXICAL_FILE}; run `csbot ingest`")
        return cls(index, entries, meta, lexical)
