"""A process killed while it re-indexes edited, chunked documents: merely opening the collection
again leaves every document with exactly one whole version. Each document's old chunks are
deleted as soon as its new version is whole; the documents whose writes the kill interrupted
are repaired at open from the intent record the call wrote before their window's first write
(roll back to the old version, whole because its chunks are deleted only after the new ones
are written). MemoryStore, Qdrant Edge and Qdrant local folders, the packaged MiniLM, a SIGKILL
at a deterministic write (the child patches the store's write to kill itself); Milvus Lite
too."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bertino_rag import MemoryStore, Retriever
from tests._texts import SENTENCES

SRC = str(Path(__file__).parents[1] / "src")


def articles(version: int) -> list[dict]:
    """Six articles of a few chunks each (at 40 tokens); every chunk changes between
    versions (the version is in the text and in the metadata)."""
    out = []
    for a in range(6):
        text = "\n\n".join(f"Versione {version}, parte {p} dell'articolo {a}. "
                           + " ".join(SENTENCES[(a + p) % 6:(a + p) % 6 + 1] * 2)
                           for p in range(3))
        out.append({"id": f"art{a}", "text": text, "metadata": {"version": version}})
    return out


def _versions(store: Any) -> dict[str, dict[int, int]]:
    """How many chunks of each version each article has stored."""
    found: dict[str, dict[int, int]] = {}
    for batch in store.export(batch_size=100):
        for d in batch.documents:
            counts = found.setdefault(d.metadata["doc_id"], {})
            counts[d.metadata["version"]] = counts.get(d.metadata["version"], 0) + 1
    return found


def _store(kind: str, root: Path | None) -> Any:
    if kind == "memory" or root is None:
        return MemoryStore(path=root)
    if kind == "qdrant-edge":
        from bertino_rag.stores import QdrantEdgeStore

        return QdrantEdgeStore(path=root)
    if kind == "milvus":
        from bertino_rag.stores.milvus import MilvusStore

        return MilvusStore(uri=str(root / "bertino.db"))
    from bertino_rag.stores import QdrantStore

    return QdrantStore(path=root)


def _retriever(minilm_path: str, root: Path | None, kind: str = "memory") -> Retriever:
    from bertino_rag.encoder import Encoder

    return Retriever(dim=128, encoder=Encoder(minilm_path, dim=128, device="cpu"),
                     store=_store(kind, root), chunking={"max_tokens": 40})


def _index(r: Retriever, version: int) -> None:
    # windows of two articles, writes of four chunks: an article's chunks span writes
    r.index(articles(version), batch_size=4, window=2)


MODULES = {"qdrant-edge": ["qdrant_edge"], "qdrant": ["qdrant_client"],
           "milvus": ["pymilvus", "milvus_lite"]}


@pytest.mark.parametrize("kind", ["memory", *(pytest.param(k, marks=pytest.mark.slow)
                                              for k in MODULES)])
def test_opening_after_a_kill_mid_edit_leaves_one_whole_version(minilm_path, tmp_path, kind):
    if not all(importlib.util.find_spec(m) for m in MODULES.get(kind, [])):
        pytest.skip(f"{kind} is not installed")
    whole = _retriever(minilm_path, None)
    _index(whole, 1)
    old = {a: counts[1] for a, counts in _versions(whole.store).items()}  # chunks of v1
    _index(whole, 2)
    sizes = {a: counts[2] for a, counts in _versions(whole.store).items()}  # chunks of v2
    whole.close()
    r = _retriever(minilm_path, tmp_path, kind)
    _index(r, 1)
    r.close()
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        sys.path.insert(0, {SRC!r})
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from tests.test_chunked_edit_kill import _index, _retriever
        r = _retriever({minilm_path!r}, Path({str(tmp_path)!r}), {kind!r})
        real, calls = r.store.write_checked, [0]
        def write(*args):
            calls[0] += 1
            if calls[0] == 5:  # the first two articles written, the next two in progress
                os.kill(os.getpid(), signal.SIGKILL)
            real(*args)
        r.store.write_checked = write
        _index(r, 2)
    """)
    done = subprocess.run([sys.executable, "-c", script], timeout=600, capture_output=True,
                          text=True, cwd=str(Path(__file__).parents[1]))
    assert done.returncode == -9, done.stderr[-3000:]
    reader = _retriever(minilm_path, tmp_path, kind)  # opening repairs
    versions = _versions(reader.store)
    reader.close()
    new = [a for a, c in versions.items() if c.get(2) == sizes[a]]
    assert sorted(new) == ["art0", "art1"], versions  # their new versions were whole ...
    for a, counts in versions.items():  # ... and every article has one whole version
        assert counts == ({2: sizes[a]} if a in new else {1: old[a]}), (a, counts)
    again = _retriever(minilm_path, tmp_path, kind)
    _index(again, 2)  # the same call again finishes, and removes the old chunks
    assert _versions(again.store) == {a: {2: n} for a, n in sizes.items()}
    again.close()
