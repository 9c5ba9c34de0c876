"""MemoryStore's binary first stage (``first_stage="binary"``): sign codes searched by Hamming
distance, their nearest candidates scored exactly, on real MiniLM vectors of squad-it-dev."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from bertino_rag.errors import StoreCorruptionError
from bertino_rag.stores import MemoryStore
from bertino_rag.stores.memory.binary import _lookup, _nearest, asymmetric, hamming, sign_codes
from bertino_rag.testing.conformance import StoreConformance
from bertino_rag.types import Document, Stamp


class TestMemoryBinaryRealVectors(StoreConformance):
    """The whole store contract with the binary first stage: with more candidates than
    documents (the default, 2,000, on the slice) every result equals the exact store's."""

    @pytest.fixture
    def corpus(self, encoder, squad_slice, slice_vectors) -> dict:
        return {"model": encoder.model_id, "full_dim": encoder.full_dim,
                "docs": squad_slice["docs"], "queries": squad_slice["queries"],
                "doc_vectors": slice_vectors["docs"], "query_vectors": slice_vectors["queries"]}

    @pytest.fixture
    def make_store(self):
        store = MemoryStore(first_stage="binary")
        return lambda: store


# ------------------------------------------------------------------------------- the codes


@pytest.mark.parametrize("dim", [64, 100, 128, 256])
def test_hamming_counts_the_differing_signs(dim):
    rng = np.random.default_rng(dim)
    x = rng.standard_normal((300, dim)).astype(np.float32)
    codes = sign_codes(x)
    query = np.ascontiguousarray(sign_codes(x[:1]).T)[0]
    want = ((x > 0) != (x[:1] > 0)).sum(axis=1)
    assert np.array_equal(hamming(codes, query), want)
    rows = np.array([5, 2, 299])
    assert np.array_equal(hamming(codes, query, rows), want[rows])


@pytest.mark.parametrize("dim", [100, 128])
def test_asymmetric_score_is_the_query_dot_the_signs(dim):
    rng = np.random.default_rng(dim)
    x = rng.standard_normal((200, dim)).astype(np.float32)
    q = rng.standard_normal(dim).astype(np.float32)
    rows = np.array([7, 0, 199, 50])
    want = np.where(x[rows] > 0, 1.0, -1.0) @ q
    bits = 64 * -(-dim // 64)
    got = asymmetric(sign_codes(x), rows, _lookup(q, bits))
    # the padding bits (zero in the code) meet zero query dims: no contribution
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_nearest_takes_exactly_count_across_segments_and_never_a_dead_row():
    a = np.array([3, 1, 2, 2, 129, 0], dtype=np.uint8)  # 129: a dead row (128 bits)
    b = np.array([2, 1, 5], dtype=np.uint8)
    picked = _nearest([a, b], 4, 128)
    assert [p.tolist() for p in picked] == [[1, 2, 5], [1]]  # of the ties at 2, the first
    everything = _nearest([a, b], 100, 128)
    assert [p.tolist() for p in everything] == [[0, 1, 2, 3, 5], [0, 1, 2]]


# ----------------------------------------------------------------- results on real vectors


def _write(store, docs, vectors, batch=None):
    stamp = Stamp(model="minilm", full_dim=vectors.full.shape[1], index_dim=128)
    store.open("c", stamp)
    batch = batch or max(len(docs), 1)
    for s in range(0, len(docs), batch):
        store.upsert(docs[s:s + batch], vectors.index[s:s + batch], vectors.full[s:s + batch])
    return store


@pytest.fixture
def real(squad_slice, slice_vectors):
    docs = [Document(text=d["text"], id=d["id"], metadata=d["metadata"])
            for d in squad_slice["docs"]]
    return docs, slice_vectors["docs"], slice_vectors["queries"]


def _two_stage(store, queries, k=10, rescore_k=20):
    return [[h.id for h in store.search(queries.index[i], k=k, full_vector=queries.full[i],
                                        rescore_k=rescore_k)] for i in range(len(queries.index))]


def test_more_candidates_find_more_of_the_exact_two_stage_top_10(real):
    """Real embeddings cut to 128 dims: the sign codes rank the exact two-stage top 10 high
    but coarsely on this slice of 177 paragraphs of three articles (all alike); every step up
    in candidates finds more, and 7/8 of them find all but a rare one.
    ``benchmarks/bench_1m.py`` measures the same at a million points."""
    docs, vectors, queries = real
    n = len(docs)
    exact = _two_stage(_write(MemoryStore(), docs, vectors, batch=40), queries)
    recalls = []
    for count in (n // 8, n // 2, 7 * n // 8):
        store = _write(MemoryStore(first_stage="binary", binary_candidates=count), docs,
                       vectors, batch=40)
        got = _two_stage(store, queries)
        recalls.append(np.mean([len(set(g) & set(e)) / len(e)
                                for g, e in zip(got, exact, strict=True)]))
    assert recalls[0] < recalls[1] < recalls[2], recalls
    assert recalls[2] >= 0.99, recalls


def test_scores_are_the_exact_scores_of_the_documents_found(real):
    docs, vectors, queries = real
    exact = _write(MemoryStore(), docs, vectors)
    binary = _write(MemoryStore(first_stage="binary", binary_candidates=len(docs) // 4),
                    docs, vectors)
    for i in range(10):
        want = {h.id: h.score for h in exact.search(queries.index[i], k=len(docs))}
        for hit in binary.search(queries.index[i], k=10):
            assert hit.score == pytest.approx(want[hit.id], abs=1e-6)


def test_deleted_and_filtered_out_documents_are_never_candidates(real):
    docs, vectors, queries = real
    store = _write(MemoryStore(first_stage="binary", binary_candidates=10), docs, vectors,
                   batch=50)
    first = [h.id for h in store.search(queries.index[0], k=10)]
    store.delete(first[:5])
    again = [h.id for h in store.search(queries.index[0], k=10)]
    assert len(again) == 10 and not set(again) & set(first[:5])
    title = docs[0].metadata["title"]
    hits = store.search(queries.index[0], k=10, filter={"title": title})
    assert hits and all(h.metadata["title"] == title for h in hits)


# --------------------------------------------------------------------------- on disk


def test_codes_are_written_with_each_segment_and_checksummed(tmp_path, real):
    docs, vectors, queries = real
    store = _write(MemoryStore(tmp_path, first_stage="binary", binary_candidates=30), docs,
                   vectors, batch=20)  # several writes: merged segments get codes too
    want = [h.id for h in store.search(queries.index[0], k=10)]
    store.close()
    folder = tmp_path / "c"
    db = sqlite3.connect(folder / "meta.sqlite")
    rows = db.execute("SELECT seg, sign_crc, sign_size FROM segments").fetchall()
    db.close()
    assert rows and all(crc is not None and size is not None for _, crc, size in rows)
    signs = sorted(folder.glob("seg-*.sign.npy"))
    assert len(signs) == len(rows)
    reopened = _write(MemoryStore(tmp_path, first_stage="binary", binary_candidates=30), [],
                      vectors)
    assert [h.id for h in reopened.search(queries.index[0], k=10)] == want
    reopened.close()
    raw = bytearray(signs[0].read_bytes())
    raw[-1] ^= 0xFF
    signs[0].write_bytes(bytes(raw))
    with pytest.raises(StoreCorruptionError, match=r"sign\.npy fails its checksum"):
        _write(MemoryStore(tmp_path, first_stage="binary"), [], vectors)
    exact = _write(MemoryStore(tmp_path), [], vectors)  # the exact stage never reads them
    assert exact.count() == len(docs)
    exact.close()
    signs[0].unlink()
    with pytest.raises(StoreCorruptionError, match=r"sign\.npy is missing"):
        _write(MemoryStore(tmp_path, first_stage="binary"), [], vectors)


def test_a_collection_written_without_codes_is_searched_with_codes(tmp_path, real):
    docs, vectors, queries = real
    _write(MemoryStore(tmp_path), docs, vectors).close()
    assert not list((tmp_path / "c").glob("*.sign.npy"))
    exact = _write(MemoryStore(tmp_path), [], vectors)
    want = [[h.id for h in exact.search(queries.index[i], k=10)] for i in range(5)]
    exact.close()
    binary = _write(MemoryStore(tmp_path, first_stage="binary"), [], vectors)
    got = [[h.id for h in binary.search(queries.index[i], k=10)] for i in range(5)]
    assert got == want  # 2,000 candidates: more than the slice holds


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"first_stage": "hnsw"}, "first_stage='hnsw' is not one of 'exact', 'binary'"),
    ({"binary_candidates": 0}, "binary_candidates"),
])
def test_bad_options_are_refused_at_construction(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        MemoryStore(**kwargs)
