"""migrate(): memory <-> Qdrant Edge <-> Qdrant local <-> Milvus Lite, with ids, texts,
metadata and both vectors; stamps checked; resumable; counts verified; the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertino_rag.stores import MemoryStore, StoreError
from bertino_rag.stores.migrate import MigrationError, migrate
from bertino_rag.testing.conformance import same_ranking
from bertino_rag.types import Document, Stamp, StampMismatchError


@pytest.fixture
def stamp(encoder):
    return Stamp(model=encoder.model_id, full_dim=encoder.full_dim, index_dim=128)


@pytest.fixture
def source(tmp_path, stamp, squad_slice, slice_vectors):
    docs = [Document(text=d["text"], id=d["id"], metadata=d["metadata"])
            for d in squad_slice["docs"]]
    vec = slice_vectors["docs"]
    spec = f"memory:{tmp_path / 'memory'}"
    store = MemoryStore(tmp_path / "memory")
    store.open("docs", stamp)
    store.upsert(docs, vec.index, vec.full)
    store.close()
    return spec, docs, vec


def _specs(tmp_path):
    specs = [f"qdrant-edge:{tmp_path / 'edge'}"]
    try:
        import qdrant_client  # noqa: F401

        specs.append(f"qdrant:{tmp_path / 'qdrant'}")
    except ImportError:
        pass
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401

        specs.append(f"milvus:{tmp_path / 'milvus.db'}")
    except ImportError:
        pass
    return specs


def _contents(spec, collection):
    from bertino_rag.stores import make_store

    store = make_store(spec)
    store.open_existing(collection)
    out = {}
    for b in store.export(batch_size=64):
        for i, d in enumerate(b.documents):
            out[d.id] = (d.text, d.metadata, b.vectors[i], b.full_vectors[i])
    store.close()
    return out


def test_round_trip_through_every_store(tmp_path, source, slice_vectors):
    pytest.importorskip("qdrant_edge")
    spec, docs, vec = source
    chain = [spec, *_specs(tmp_path), f"memory:{tmp_path / 'back'}"]
    for a, b in zip(chain, chain[1:], strict=False):
        report = migrate(a, b, "docs")
        assert report.written == len(docs) and report.skipped == 0
        assert report.source_count == report.destination_count == len(docs)
    back = _contents(chain[-1], "docs")
    assert sorted(back) == sorted(d.id for d in docs)
    for i, d in enumerate(docs):
        text, metadata, index, full = back[d.id]
        assert (text, metadata) == (d.text, d.metadata)
        np.testing.assert_allclose(index, vec.index[i], atol=1e-5)
        np.testing.assert_array_equal(full, vec.full[i].astype(np.float16).astype(np.float32))
    # the copy searches like the original (exact stores at both ends)
    q = slice_vectors["queries"]
    first, last = MemoryStore(tmp_path / "memory"), MemoryStore(tmp_path / "back")
    first.open_existing("docs")
    last.open_existing("docs")
    for qi in range(0, 40, 4):
        want = first.search(q.index[qi], k=5, full_vector=q.full[qi], rescore_k=30)
        got = last.search(q.index[qi], k=5, full_vector=q.full[qi], rescore_k=30)
        same_ranking([h.id for h in got], [h.score for h in got], [h.id for h in want],
                     [h.score for h in want], tol=1e-5)


def test_stamp_mismatch_is_refused_before_any_write(tmp_path, source, stamp):
    spec, docs, vec = source
    other = MemoryStore(tmp_path / "dest")
    other.open("docs", Stamp(model=stamp.model, full_dim=stamp.full_dim, index_dim=64))
    other.upsert(docs[:2], vec.index[:2, :64], vec.full[:2])
    other.close()
    with pytest.raises(StampMismatchError, match="index_dim"):
        migrate(spec, f"memory:{tmp_path / 'dest'}", "docs")
    again = MemoryStore(tmp_path / "dest")
    again.open_existing("docs")
    assert again.count() == 2


def test_resumes_after_a_crash_without_duplicates(tmp_path, source, monkeypatch):
    pytest.importorskip("qdrant_edge")
    from bertino_rag.stores.qdrant.edge import QdrantEdgeStore

    spec, docs, _ = source
    dest = QdrantEdgeStore(tmp_path / "edge")
    calls = {"n": 0}
    real = dest.upsert

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise StoreError("disk gone (simulated crash)")
        return real(*args, **kwargs)

    monkeypatch.setattr(dest, "upsert", crashing)
    with pytest.raises(StoreError, match="simulated"):
        migrate(spec, dest, "docs", batch_size=40)
    dest.close()
    report = migrate(spec, f"qdrant-edge:{tmp_path / 'edge'}", "docs", batch_size=40)
    assert report.skipped == 80 and report.written == len(docs) - 80
    assert report.destination_count == len(docs)
    # a third run has nothing left to write
    report = migrate(spec, f"qdrant-edge:{tmp_path / 'edge'}", "docs", batch_size=40)
    assert report.written == 0 and report.skipped == len(docs)
    report = migrate(spec, f"qdrant-edge:{tmp_path / 'edge'}", "docs", overwrite=True)
    assert report.written == len(docs) and report.destination_count == len(docs)


def test_changed_documents_are_rewritten_and_counts_verified(tmp_path, source, stamp):
    spec, docs, vec = source
    dest = MemoryStore(tmp_path / "dest")
    dest.open("docs", stamp)
    stale = Document(text="vecchio testo", id=docs[0].id, metadata=docs[0].metadata)
    dest.upsert([stale], vec.index[:1], vec.full[:1])
    dest.close()
    report = migrate(spec, f"memory:{tmp_path / 'dest'}", "docs")
    assert report.written == len(docs) and report.skipped == 0
    check = MemoryStore(tmp_path / "dest")
    check.open_existing("docs")
    assert check.get([docs[0].id])[0].text == docs[0].text
    check.upsert([Document(text="in più", id="extra")], vec.index[:1], vec.full[:1])
    check.close()
    with pytest.raises(MigrationError, match=f"holds {len(docs) + 1} documents"):
        migrate(spec, f"memory:{tmp_path / 'dest'}", "docs")


def test_missing_source_and_bad_arguments(tmp_path, source):
    spec, _, _ = source
    with pytest.raises(StoreError, match="no collection 'nope'"):
        migrate(spec, f"memory:{tmp_path / 'x'}", "nope")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="batch_size"):
        migrate(spec, f"memory:{tmp_path / 'x'}", "docs", batch_size=0)
    store = MemoryStore(tmp_path / "memory")
    with pytest.raises(ValueError, match="same collection"):
        migrate(store, store, "docs")


def test_cli(tmp_path, source, capsys):
    pytest.importorskip("qdrant_edge")
    from bertino_rag.cli import main

    spec, docs, _ = source
    dest = f"qdrant-edge:{tmp_path / 'edge'}"
    assert main(["migrate", "--from", spec, "--to", dest, "--collection", "docs",
                 "--to-collection", "copia", "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["written"] == len(docs) and report["destination_count"] == len(docs)
    assert report["to_collection"] == "copia"
    assert main(["migrate", "--from", spec, "--to", dest, "--collection", "nope",
                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "'nope' does not exist" in err and "'docs'" in err and "Migrating" not in err
    # a source folder that is not there: said so, before any progress bar, nothing created
    assert main(["migrate", "--from", f"memory:{tmp_path / 'nothere'}", "--to", dest]) == 1
    err = capsys.readouterr().err
    assert "--from" in err and "no such folder" in err and "Migrating" not in err
    assert not (tmp_path / "nothere").exists()


def test_hybrid_collection_moves_with_its_lexical_index(tmp_path, stamp, squad_slice,
                                                        slice_vectors):
    """A hybrid collection copied from MemoryStore to Qdrant Edge keeps its stamp (analyzer
    included) and answers lexical queries with the source's BM25 ranking."""
    from dataclasses import replace

    from bertino_rag.lexical import BM25, Analyzer, lexical_spec
    from bertino_rag.stores import make_store

    lex = replace(stamp, lexical=lexical_spec(Analyzer(), BM25()))
    docs = [Document(text=d["text"], id=d["id"], metadata=d["metadata"])
            for d in squad_slice["docs"]]
    vec = slice_vectors["docs"]
    src = MemoryStore(tmp_path / "memory")
    src.open("docs", lex)
    src.upsert(docs, vec.index, vec.full)
    src.close()
    report = migrate(f"memory:{tmp_path / 'memory'}", f"qdrant-edge:{tmp_path / 'edge'}",
                     "docs", batch_size=len(docs))
    assert report.destination_count == len(docs)
    src, dst = MemoryStore(tmp_path / "memory"), make_store(f"qdrant-edge:{tmp_path / 'edge'}")
    try:
        assert dst.open_existing("docs") == lex
        src.open_existing("docs")
        for query in squad_slice["queries"][:8]:
            want, got = src.lexical_search(query, k=5), dst.lexical_search(query, k=5)
            same_ranking([h.id for h in got], [h.score for h in got], [h.id for h in want],
                         [h.score for h in want], tol=1e-3)
    finally:
        src.close()
        dst.close()
