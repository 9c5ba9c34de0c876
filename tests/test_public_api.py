"""The public surface, and optional extras that fail with the install command to run."""

from __future__ import annotations

import builtins
import importlib
import sys

import pytest

import bertino_rag


def test_public_names_import():
    for name in bertino_rag.__all__:
        assert getattr(bertino_rag, name) is not None
    assert bertino_rag.DEFAULT_MODEL == "nickprock/multi-sentence-BERTino"


@pytest.mark.parametrize(
    "module,blocked,extra",
    [
        ("bertino_rag.stores.qdrant", "qdrant_client", "qdrant"),
        ("bertino_rag.stores.milvus", "pymilvus", "milvus"),
        ("bertino_rag.integrations.langchain", "langchain_core", "langchain"),
        ("bertino_rag.serve.app", "fastapi", "serve"),
        ("bertino_rag.serve.client", "httpx", "serve"),
        ("bertino_rag.integrations.mcp", "mcp", "mcp"),
        ("bertino_rag.integrations.llamaindex", "llama_index", "llamaindex"),
        ("bertino_rag.integrations.haystack", "haystack", "haystack"),
    ],
)
def test_missing_extra_names_the_install(monkeypatch, module, blocked, extra):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == blocked or name.startswith(blocked + "."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for mod in list(sys.modules):
        if mod == module or mod == blocked or mod.startswith(blocked + "."):
            monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(importlib, "import_module",
                        lambda name, package=None: fake_import(name))
    with pytest.raises(ImportError, match=rf"pip install 'bertino-rag\[{extra}\]'"):
        mod = real_import(module, fromlist=["_"])
        # modules that import lazily fail when their class is built
        for attr in ("QdrantStore", "MilvusStore", "BertinoEmbeddings"):
            if hasattr(mod, attr):
                getattr(mod, attr)(**({"model": "x"} if attr == "BertinoEmbeddings" else {}))


def test_make_store_specs(tmp_path):
    from bertino_rag.stores import MemoryStore, make_store

    assert isinstance(make_store(None), MemoryStore)
    assert make_store(f"memory:{tmp_path}").root == tmp_path
    with pytest.raises(ValueError, match="unknown store"):
        make_store("redis:localhost")


def test_the_version_is_written_in_one_place():
    import importlib.metadata
    import re
    from pathlib import Path

    import bertino_rag

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]  # no second, hard-coded copy
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "bertino_rag.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", bertino_rag.__version__)
    assert importlib.metadata.version("bertino-rag") == bertino_rag.__version__
