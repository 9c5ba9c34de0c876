"""Training data: pairs, the dev split by source document, hard-negative mining, STS resampling."""

from __future__ import annotations

import json

import pytest

from bertino_rag.data import StsPair, load_sts
from bertino_rag.training.data import load_pairs, mine_negatives, split_by_source, sts_dataset
from tests.conftest import STSB


def test_squad_pairs_group_by_article(small_beir):
    data = load_pairs(small_beir)
    assert len(data.pairs) == 160
    for p in data.pairs:
        assert p.source == p.doc_id.split("#")[0]
    assert len(data.source_names()) == 4


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_dev_split_shares_no_article_with_training(squad, fraction):
    from tests.conftest import SQUAD

    full = load_pairs(SQUAD)
    train, dev = split_by_source(full, fraction, seed=7)
    train_sources = {p.source for p in train.pairs} | set(train.sources.values())
    dev_sources = {p.source for p in dev.pairs} | set(dev.sources.values())
    assert train_sources and dev_sources and not train_sources & dev_sources
    assert not set(train.corpus) & set(dev.corpus)
    assert not set(train.queries) & set(dev.queries)
    # every paragraph of a dev article is in the dev corpus, also those no question hits
    for doc_id, src in full.sources.items():
        assert (doc_id in dev.corpus) == (src in dev_sources)
    assert len(dev) >= fraction * len(full.pairs)
    assert len(train) + len(dev) == len(full.pairs)


def test_split_needs_two_sources(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps({"query": f"q{i}", "positive": "p", "source": "one"})
                              for i in range(4)), encoding="utf-8")
    with pytest.raises(ValueError, match="at least two"):
        split_by_source(load_pairs(path), 0.2)


def test_csv_and_jsonl_pairs(tmp_path):
    (tmp_path / "p.csv").write_text("query,positive,source\nChi?,Lui.,a\nDove?,Qui.,b\n",
                                    encoding="utf-8")
    data = load_pairs(tmp_path / "p.csv")
    assert [(p.query, data.corpus[p.doc_id], p.source) for p in data.pairs] == [
        ("Chi?", "Lui.", "a"), ("Dove?", "Qui.", "b")]
    (tmp_path / "bad.jsonl").write_text('{"question": "Chi?"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="row 1"):
        load_pairs(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError):
        load_pairs(tmp_path / "none.jsonl")


def test_miner_never_returns_a_positive(tiny_bert, small_beir, tmp_path):
    from sentence_transformers import SentenceTransformer

    data = load_pairs(small_beir)
    train, _ = split_by_source(data, 0.25)
    # a query with two relevant paragraphs: neither may come back as its negative
    first = train.pairs[0]
    other = next(p for p in train.pairs if p.doc_id != first.doc_id)
    from bertino_rag.training.data import Pair

    train.pairs.append(Pair(first.query_id, first.query, other.doc_id, other.source))
    model = SentenceTransformer(tiny_bert, device="cpu")
    model.max_seq_length = 32
    mined = mine_negatives(train, model, num_negatives=2, range_min=0, range_max=20,
                           relative_margin=None, verbose=False)
    positives: dict[str, set[str]] = {}
    for p in train.pairs:
        positives.setdefault(p.query, set()).add(train.corpus[p.doc_id])
    assert mined.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    assert len(mined) >= 0.9 * len(train.pairs)
    for row in mined:
        assert row["positive"] in positives[row["anchor"]]
        for neg in (row["negative_1"], row["negative_2"]):
            assert neg not in positives[row["anchor"]]
            assert neg in train.corpus.values()
        assert row["negative_1"] != row["negative_2"]


def test_sts_resampling_reaches_the_size():
    if not STSB.exists():
        pytest.skip("stsb-it not found")
    pairs = load_sts(STSB / "dev.csv")
    n = len(pairs)
    for size in (100, n, 2 * n + 17):
        ds = sts_dataset(pairs, size, seed=1)
        assert len(ds) == size
        assert 0.0 <= min(ds["score"]) and max(ds["score"]) <= 1.0
    bigger = sts_dataset(pairs, 2 * n + 17, seed=1)
    # every pair kept at least twice when upsampling
    counts: dict[tuple[str, str], int] = {}
    for a, b in zip(bigger["sentence1"], bigger["sentence2"], strict=True):
        counts[(a, b)] = counts.get((a, b), 0) + 1
    assert min(counts.values()) >= 2
    smaller = sts_dataset(pairs, 100, seed=1)
    pairs_kept = set(zip(smaller["sentence1"], smaller["sentence2"], strict=True))
    assert len(pairs_kept) == 100  # no repeats


def test_sts_scores_outside_the_scale_are_rejected():
    with pytest.raises(ValueError, match="outside"):
        sts_dataset([StsPair("a", "b", 4.0), StsPair("c", "d", 7.0)], 2)
    assert sts_dataset([StsPair("a", "b", 4.0)], None)["score"] == [0.8]
