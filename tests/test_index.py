"""The FAISS index owner: exact and approximate indexes, atomic save, clear errors on bad files."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.index import Entry, IndexError_, VectorIndex


def unit_vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def entries(n: int) -> list[Entry]:
    return [Entry(f"doc{i}", "chunk", f"text {i}") for i in range(n)]


@pytest.mark.parametrize("kind, n", [("flat", 300), ("hnsw", 2000), ("ivf", 3000)])
def test_each_index_type_finds_the_query_vector_itself(kind, n):
    vectors = unit_vectors(n)
    index = VectorIndex.build(vectors, entries(n), encoder="e", encoder_version="1", index_type=kind)
    scores, positions = index.search(vectors[:50], 5)
    assert (positions[:, 0] == np.arange(50)).mean() >= 0.9
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-4)
    assert index.meta["type"] == kind


def test_auto_takes_exact_search_for_small_and_hnsw_for_large_kbs():
    small = VectorIndex.build(unit_vectors(100), entries(100), encoder="e", encoder_version="1")
    large = VectorIndex.build(unit_vectors(600), entries(600), encoder="e", encoder_version="1", hnsw_min_vectors=500)
    assert (small.meta["type"], large.meta["type"]) == ("flat", "hnsw")


def test_save_replaces_atomically_and_load_checks_the_encoder(tmp_path):
    folder = tmp_path / "index"
    VectorIndex.build(unit_vectors(10), entries(10), encoder="e", encoder_version="1").save(folder)
    VectorIndex.build(unit_vectors(20, seed=1), entries(20), encoder="e", encoder_version="2").save(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # no temp or old folders left
    loaded = VectorIndex.load(folder, expect_encoder_version="2")
    assert len(loaded) == 20 and loaded.entries[3] == Entry("doc3", "chunk", "text 3")
    with pytest.raises(IndexError_, match="built by encoder 2, not 1"):
        VectorIndex.load(folder, expect_encoder_version="1")


def test_corrupt_or_missing_index_files_are_clear_errors(tmp_path):
    folder = tmp_path / "index"
    VectorIndex.build(unit_vectors(10), entries(10), encoder="e", encoder_version="1").save(folder)
    (folder / "faiss.index").write_bytes(b"garbage")
    with pytest.raises(IndexError_, match="corrupt"):
        VectorIndex.load(folder)
    (folder / "faiss.index").unlink()
    with pytest.raises(IndexError_, match="missing faiss.index"):
        VectorIndex.load(folder)
