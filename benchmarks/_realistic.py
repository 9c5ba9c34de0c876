"""Realistic embeddings at a million points: real MiniLM vectors of Italian text plus measured
local noise (issue 30). A corpus of a million real-text embeddings is out of reach on these
machines (MiniLM encodes ~23 passages/s on 2 cores: 12 hours), so:

- **seeds**: real vectors, the packaged MiniLM's full (384-d) embeddings of squad-it-dev's
  sentence windows (one and two consecutive sentences of each paragraph), encoded once and
  cached (``--windows`` of them; with none, the paragraphs themselves);
- **generated points**: each one a seed ``s`` moved part of the way towards one of its 10
  nearest seeds ``t`` (``s + u (t - s)``, ``u`` uniform in [0, 0.5]) plus Gaussian noise with
  the per-dimension spread of the seeds' *local residuals* (each seed minus the mean of its 10
  nearest seeds), scaled by ``noise``, then normalized. The points fill the neighbourhoods of
  real text rather than the whole sphere, so a graph or a binary code meets the cluster
  structure of real embeddings (random unit vectors, all distances alike, are the worst case
  of both, ``docs/benchmarks.md``);
- **planted**: the 1,128 squad-it-dev paragraphs themselves, real vectors under their own ids,
  and the questions as queries, so NDCG@10 is measured with the data set's relevance among
  the generated points. Generated points near a planted paragraph are near-duplicates of its
  sentences: harder distractors than a real corpus would hold, so that NDCG is a lower bound;
  with :func:`held_apart` (``bench_1m.py --held-apart``) the seeds come from half the articles
  and the questions from the other half, so that a question's paragraph is planted among
  realistic points of other text and NDCG@10 measures what the approximate stages lose.

The noise scale is calibrated so that generated points are as close to their nearest neighbour
as real ones: half the seeds generate as many points as the other half holds, and the median
nearest-neighbour cosine similarity of the generated set is matched to the held-out real set's
(:func:`calibrate`); :func:`check` reports both distributions and the recall@10 of a
binary (sign code) first stage on both (``bench_1m.py --check``).

The index vector is the full vector's first 128 dims, renormalized (Matryoshka truncation),
as the library computes it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from _indexing_common import minilm, squad_minilm_vectors

DIM = 128
NEIGHBOURS = 10


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def index_of(full: np.ndarray) -> np.ndarray:
    """The index vectors of full vectors: the first ``DIM`` dims, renormalized."""
    return normalize(np.asarray(full[:, :DIM], dtype=np.float32))


def sentence_windows(paragraphs: list[str]) -> list[str]:
    """Every sentence and every two consecutive sentences of each paragraph (not the whole
    paragraph), of at least 30 characters."""
    return [w for w, _ in sourced_windows(paragraphs)]


def sourced_windows(paragraphs: list[str]) -> list[tuple[str, int]]:
    """:func:`sentence_windows`, each with the position of its paragraph."""
    out = []
    for p, text in enumerate(paragraphs):
        sents = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]
        for width in (1, 2):
            for i in range(len(sents) - width + 1):
                window = " ".join(sents[i:i + width])
                if len(window) >= 30 and window != text.strip():
                    out.append((window, p))
    return out


def held_apart(doc_ids: list[str]) -> tuple[set[str], set[str]]:
    """squad-it-dev's articles (ids ``Article#n``) split in two: every other one by title
    seeds the generated points, the rest hold the questions, so that a question's paragraph
    is planted among realistic points of other articles, not among variations of its own
    sentences (``bench_1m.py --held-apart``)."""
    titles = sorted({d.rsplit("#", 1)[0] for d in doc_ids})
    return set(titles[1::2]), set(titles[0::2])


def squad_data(path: Path) -> dict[str, Any]:
    """squad-it-dev's paragraphs and questions, MiniLM full vectors (cached in ``path``, the
    file ``bench_edge.py`` shares)."""
    beir, doc_ids, qids, docs, queries = squad_minilm_vectors(path)
    return {"beir": beir, "doc_ids": doc_ids, "qids": qids, "docs": normalize(docs),
            "queries": normalize(queries),
            "qrels": {q: beir.qrels[q] for q in qids},
            "texts": [beir.corpus[d]["text"] for d in doc_ids]}


def window_vectors(cache: Path, count: int, texts: list[str],
                   keep: set[int] | None = None) -> np.ndarray:
    """The first ``count`` sentence windows (in a fixed shuffled order), encoded once; with
    ``keep``, only those of these paragraph positions among them."""
    if count <= 0:
        return np.zeros((0, 384), dtype=np.float32)
    path = cache / "squad_windows_minilm.npy"
    windows = sentence_windows(texts)
    order = np.random.default_rng(0).permutation(len(windows))
    count = min(count, len(windows))
    have = np.load(path) if path.exists() else np.zeros((0, 384), dtype=np.float32)
    if len(have) < count:
        from bertino_rag import Encoder

        enc = Encoder(minilm(), dim=DIM, device="cpu")
        todo = [windows[i] for i in order[len(have):count]]
        print(f"encoding {len(todo)} sentence windows once (MiniLM, ~23/s), cached in {path}",
              flush=True)
        new = enc.encode(todo, warn_truncation=False).full
        have = np.concatenate([have, np.asarray(new, dtype=np.float32)])
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, have)
    if keep is not None:
        sources = [p for _, p in sourced_windows(texts)]
        have = have[[i for i in range(count) if sources[order[i]] in keep]]
        return normalize(have)
    return normalize(have[:count])


def neighbours(x: np.ndarray, k: int = NEIGHBOURS, block: int = 2048) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    """The ``k`` nearest other rows of ``x`` (cosine) and their similarities, best first."""
    idx = np.zeros((len(x), k), dtype=np.int64)
    sims = np.zeros((len(x), k), dtype=np.float32)
    for s in range(0, len(x), block):
        scores = x[s:s + block] @ x.T
        scores[np.arange(len(scores)), np.arange(s, s + len(scores))] = -np.inf
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        got = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-got, axis=1)
        idx[s:s + block] = np.take_along_axis(top, order, axis=1)
        sims[s:s + block] = np.take_along_axis(got, order, axis=1)
    return idx, sims


class Generator:
    """Points around real seeds (see the module docstring)."""

    def __init__(self, seeds: np.ndarray, noise: float = 1.0):
        self.seeds = normalize(seeds)
        self.near, _ = neighbours(self.seeds)
        residuals = self.seeds - self.seeds[self.near].mean(axis=1)
        self.spread = residuals.std(axis=0).astype(np.float32)
        self.noise = noise

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        i = rng.integers(0, len(self.seeds), n)
        j = self.near[i, rng.integers(0, self.near.shape[1], n)]
        u = rng.uniform(0.0, 0.5, (n, 1)).astype(np.float32)
        eps = rng.standard_normal((n, self.seeds.shape[1]), dtype=np.float32)
        return normalize(self.seeds[i] + u * (self.seeds[j] - self.seeds[i])
                         + self.noise * self.spread * eps)


def _median_nn(x: np.ndarray) -> float:
    return float(np.median(neighbours(x, 1)[1][:, 0]))


def calibrate(seeds: np.ndarray, steps: int = 8) -> float:
    """The noise scale whose generated points (from half the seeds, as many as the other half)
    have the held-out real half's median nearest-neighbour similarity (bisection)."""
    rng = np.random.default_rng(1)
    order = rng.permutation(len(seeds))
    half_a, half_b = seeds[order[: len(seeds) // 2]], seeds[order[len(seeds) // 2:]]
    want = _median_nn(half_b)
    lo, hi = 0.0, 4.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        got = _median_nn(Generator(half_a, mid).sample(len(half_b), np.random.default_rng(2)))
        lo, hi = (mid, hi) if got > want else (lo, mid)
    return (lo + hi) / 2


def check(seeds: np.ndarray, noise: float, queries: np.ndarray, candidates: float = 0.05
          ) -> dict[str, Any]:
    """Generated against held-out real vectors at the same size: quantiles of the
    nearest-neighbour similarity, and the recall@10 (against exact search at the index dim)
    of a sign-code first stage keeping ``candidates`` of the points, on both sets."""
    rng = np.random.default_rng(1)
    order = rng.permutation(len(seeds))
    half_a, half_b = seeds[order[: len(seeds) // 2]], seeds[order[len(seeds) // 2:]]
    gen = Generator(half_a, noise).sample(len(half_b), np.random.default_rng(3))
    out: dict[str, Any] = {"points": len(half_b), "noise": round(noise, 3)}
    for name, x in (("real", half_b), ("generated", gen)):
        nn = neighbours(x, 1)[1][:, 0]
        out[f"{name}_nn_similarity_p10_p50_p90"] = [round(float(v), 3)
                                                    for v in np.percentile(nn, [10, 50, 90])]
        idx = index_of(x)
        q = index_of(queries)
        codes = idx > 0
        keep = max(10, int(candidates * len(x)))
        recalls = []
        for qi in range(len(q)):
            exact = set(np.argsort(-(idx @ q[qi]))[:10].tolist())
            ham = (codes != (q[qi] > 0)).sum(axis=1)
            cand = np.argsort(ham, kind="stable")[:keep]
            got = set(cand[np.argsort(-(idx[cand] @ q[qi]))[:10]].tolist())
            recalls.append(len(got & exact) / 10)
        out[f"{name}_binary_recall@10_at_{candidates:.0%}"] = round(float(np.mean(recalls)), 4)
    return out
