"""Bad input to reranking: a clear error before anything is searched, or a defined result."""

from __future__ import annotations

import numpy as np
import pytest

from bertino_rag import Retriever
from bertino_rag.errors import RerankerError
from bertino_rag.rerank import RankReranker, as_reranker
from bertino_rag.rerank.cross_encoder import CrossEncoderReranker, check_cross_encoder


class Fixed:
    """A reranker returning what it is told (to test what the stage accepts)."""

    def __init__(self, scores):
        self.scores = scores
        self.calls = 0

    def score_pairs(self, queries, texts):
        self.calls += 1
        return self.scores(len(texts)) if callable(self.scores) else self.scores


@pytest.fixture(scope="module")
def retriever(encoder, squad_slice):
    r = Retriever(dim=128, encoder=encoder, hybrid=True)
    r.index(squad_slice["docs"][:12])
    return r


def test_rerank_top_below_k_is_refused_before_the_query_is_encoded(retriever, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("encoded")

    monkeypatch.setattr(retriever.encoder, "encode_query", boom)
    with pytest.raises(ValueError, match=r"rerank_top=3 is below k=5.*raise rerank_top"):
        retriever.search("Chi?", k=5, reranker=Fixed([]), rerank_top=3)
    with pytest.raises(ValueError, match="rerank_top must be a positive int"):
        retriever.search("Chi?", k=5, reranker=Fixed([]), rerank_top=0)
    with pytest.raises(ValueError, match="pass a reranker with it"):
        retriever.search("Chi?", k=5, rerank_top=30)


def test_default_rerank_top_widens_to_k(retriever):
    request = retriever.request(k=50, reranker=Fixed([]))
    assert request.rerank_top == 50
    assert retriever.request(k=5, reranker=Fixed([])).rerank_top == 20


class Weighted(Fixed):
    """A fixed reranker with a share of the final score."""

    def __init__(self, scores, weight):
        super().__init__(scores)
        self.weight = weight


def test_a_weight_below_one_blends_the_reranker_with_the_retrieval_order(retriever):
    q = "Quale foresta copre il bacino amazzonico?"
    plain = retriever.search(q, k=6)

    def reverse(n):  # a reranker that turns the retrieval order upside down
        return list(range(n))

    alone = retriever.search(q, k=6, reranker=Weighted(reverse, 1.0), rerank_top=6)
    assert [h.id for h in alone] == [h.id for h in plain][::-1]
    mostly_retrieval = retriever.search(q, k=6, reranker=Weighted(reverse, 0.1), rerank_top=6)
    assert mostly_retrieval[0].id == plain[0].id  # the blend is not the reranker's order
    scores = [h.rerank_score for h in mostly_retrieval]
    assert scores == sorted(scores, reverse=True) and 0.0 <= min(scores) <= max(scores) <= 1.0
    retrieval = {h.id: h.score for h in plain}  # Hit.score stays the retrieval score
    assert all(h.score == pytest.approx(retrieval[h.id]) for h in mostly_retrieval)


def test_blend_scales_each_side_within_the_query():
    from bertino_rag.search.rerank import blend

    rerank, retrieval = np.array([10.0, 0.0, 5.0]), np.array([0.2, 0.9, 0.3])
    np.testing.assert_allclose(blend(rerank, retrieval, 1.0), rerank)
    np.testing.assert_allclose(blend(rerank, retrieval, 0.5),
                               [0.5 * 1 + 0.5 * 0.0, 0.5 * 0 + 0.5 * 1.0, 0.5 * 0.5 + 0.5 * 1 / 7])
    np.testing.assert_allclose(blend(np.array([3.0]), np.array([0.5]), 0.5), [0.0])  # one: ties


@pytest.mark.parametrize("weight", [0, -0.5, 1.5, float("nan"), "0.5", True])
def test_a_weight_outside_0_1_is_refused_before_anything_loads(weight, retriever):
    with pytest.raises(ValueError, match=r"weight must be a number in \(0, 1\]"):
        CrossEncoderReranker("/nessuna/cartella", weight=weight)  # refused before the folder
    with pytest.raises(ValueError, match=r"weight must be a number in \(0, 1\]"):
        retriever.request(k=2, reranker=Weighted(lambda n: [0.0] * n, weight))  # no search


def test_a_stored_weight_is_the_default_and_a_broken_one_a_clear_error(cross_encoder_path,
                                                                       tmp_path):
    import shutil

    from bertino_rag.rerank.cross_encoder import WEIGHT_FILE

    folder = tmp_path / "reranker"
    shutil.copytree(cross_encoder_path, folder, ignore=shutil.ignore_patterns("onnx",
                                                                               "openvino"))
    assert CrossEncoderReranker(str(folder)).weight == 1.0  # no file: its order alone
    (folder / WEIGHT_FILE).write_text('{"weight": 0.3}', encoding="utf-8")
    assert CrossEncoderReranker(str(folder)).weight == 0.3
    assert as_reranker(str(folder), weight=0.7).weight == 0.7
    (folder / WEIGHT_FILE).write_text('{"weight": 3}', encoding="utf-8")
    with pytest.raises(RerankerError, match=r"does not hold a reranker weight.*weight= "):
        CrossEncoderReranker(str(folder))


def test_storing_a_weight_is_whole_or_nothing(tmp_path, monkeypatch):
    import os

    from bertino_rag.rerank.cross_encoder import WEIGHT_FILE, store_weight, stored_weight

    store_weight(tmp_path, {"weight": 0.7, "curve": {"0.7": {"ndcg@10": 0.9}}})
    assert stored_weight(str(tmp_path)) == 0.7
    # a weight the reader would refuse is never written, and the stored one stays
    for bad in ({"weight": 0}, {"weight": "0.5"}, {"curve": {}}):
        with pytest.raises(ValueError, match="weight"):
            store_weight(tmp_path, bad)
    assert stored_weight(str(tmp_path)) == 0.7

    def crash(*args):  # the process dies between writing the new file and renaming it
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        store_weight(tmp_path, {"weight": 0.3})
    monkeypatch.undo()
    assert stored_weight(str(tmp_path)) == 0.7  # the previous weight, readable
    store_weight(tmp_path, {"weight": 0.3})  # the leftover temporary is no obstacle
    assert stored_weight(str(tmp_path)) == 0.3
    assert sorted(p.name for p in tmp_path.iterdir()) == [WEIGHT_FILE]


def test_an_embedding_model_is_refused_as_a_reranker(minilm_path, encoder, tmp_path):
    with pytest.raises(RerankerError, match=r"not a cross-encoder.*BertModel.*train --task "
                                            r"rerank"):
        check_cross_encoder(minilm_path)
    with pytest.raises(RerankerError, match="not a cross-encoder"):
        Retriever(dim=128, encoder=encoder, reranker=minilm_path)
    with pytest.raises(RerankerError, match="embedding model"):
        as_reranker(encoder)
    with pytest.raises(RerankerError, match="cannot rerank with a int"):
        as_reranker(3)
    with pytest.raises(RerankerError, match="no config.json"):
        check_cross_encoder(str(tmp_path))
    with pytest.raises(RerankerError, match="not declared"):
        check_cross_encoder(f"{minilm_path}/1_Pooling")  # a config.json that is no model's


def test_a_classifier_with_several_labels_is_refused(minilm_path):
    from sentence_transformers import CrossEncoder

    with pytest.raises(RerankerError, match="3 labels"):
        as_reranker(CrossEncoder(minilm_path, num_labels=3, device="cpu"))


@pytest.mark.parametrize("scores, match", [
    (lambda n: [0.5] * (n - 1), "scores for"),
    (lambda n: [float("nan")] * n, "NaN or infinite"),
    (lambda n: ["a"] * n, "not numbers"),
])
def test_bad_scores_raise_before_any_hit_is_returned(retriever, scores, match):
    with pytest.raises(RerankerError, match=match):
        retriever.search_batch(["Amazzonia", "foresta"], k=2, reranker=Fixed(scores))


def test_no_candidates_is_an_empty_result_without_scoring(retriever):
    fixed = Fixed(lambda n: [0.0] * n)
    assert retriever.search("Amazzonia", k=3, filter={"title": "nessuno"},
                            reranker=fixed) == []
    assert fixed.calls == 0


def test_search_by_vector_does_not_rerank(retriever):
    vec = retriever.encoder.encode_query("Amazzonia", dim=128).full[0]
    with pytest.raises(ValueError, match="use search"):
        retriever.search_by_vector(vec, k=2, reranker=Fixed([]))
    rr = Retriever(dim=128, encoder=retriever.encoder, store=retriever.store,
                   collection=retriever.collection, hybrid=True, reranker=Fixed([]))
    hits = rr.search_by_vector(vec, k=2)  # the retriever's reranker does not apply
    assert len(hits) == 2 and all(h.rerank_score is None for h in hits)


def test_a_rank_method_serves_as_a_reranker(retriever, cross_encoder):
    class ByRank:  # the CrossEncoder.rank layout: dicts, best first
        def rank(self, query, texts):
            s = cross_encoder.score_pairs([query] * len(texts), texts)
            return sorted(({"corpus_id": i, "score": float(v)} for i, v in enumerate(s)),
                          key=lambda d: -d["score"])

    wrapped = as_reranker(ByRank())
    assert isinstance(wrapped, RankReranker)
    qs = ["Quale foresta copre il bacino amazzonico?", "Amazzonia in inglese"]
    a = retriever.search_batch(qs, k=3, reranker=wrapped, rerank_top=8)
    b = retriever.search_batch(qs, k=3, reranker=cross_encoder, rerank_top=8)
    assert [[h.id for h in r] for r in a] == [[h.id for h in r] for r in b]


def test_the_query_is_kept_whole_and_long_passages_lose_their_end(cross_encoder):
    half = cross_encoder.max_length // 2
    short = "Chi dipinse la Gioconda?"
    assert cross_encoder._query(short) == short
    long_query = "Chi dipinse la Gioconda " * 100
    cut = cross_encoder._query(long_query)
    n = len(cross_encoder._tokenizer(cut, add_special_tokens=False)["input_ids"])
    assert long_query.startswith(cut) and n == half
    passage = "Leonardo da Vinci dipinse la Gioconda a Firenze. " * 40  # past the window
    s = cross_encoder.score_pairs([short, short, long_query],
                                  [passage, passage + " coda " * 50, passage])
    assert s[0] == pytest.approx(s[1], abs=1e-5)  # only the passage's end was cut
    assert np.isfinite(s).all()


def test_loaded_cross_encoder_and_folder_score_alike(cross_encoder_path, cross_encoder):
    from sentence_transformers import CrossEncoder

    loaded = as_reranker(CrossEncoder(cross_encoder_path, device="cpu"))
    assert isinstance(loaded, CrossEncoderReranker)
    pairs = (["Chi dipinse la Gioconda?"] * 2, ["Leonardo la dipinse.", "La pizza è buona."])
    assert loaded.score_pairs(*pairs) == pytest.approx(cross_encoder.score_pairs(*pairs))


def test_reranker_options_and_backends_are_checked(cross_encoder_path):
    with pytest.raises(ValueError, match="unknown reranker backend"):
        CrossEncoderReranker(cross_encoder_path, backend="tf")
    with pytest.raises(ValueError, match="quantize='int8', backend='onnx'"):
        CrossEncoderReranker(cross_encoder_path, quantize="int8")
    with pytest.raises(ValueError, match="backend='openvino' \\(static int8\\)"):
        CrossEncoderReranker(cross_encoder_path, backend="openvino", quantize="int4")
    with pytest.raises(ValueError, match="apply to a cross-encoder"):
        as_reranker(Fixed([]), batch_size=4)


@pytest.mark.slow
def test_onnx_rerankers_score_as_torch_does(cross_encoder_path, cross_encoder, squad_slice):
    q = squad_slice["queries"][0]
    texts = [d["text"] for d in squad_slice["docs"][:12]]
    want = cross_encoder.score_pairs([q] * len(texts), texts)
    fp32 = CrossEncoderReranker(cross_encoder_path, backend="onnx", device="cpu")
    assert fp32.score_pairs([q] * len(texts), texts) == pytest.approx(want, abs=1e-4)
    int8 = CrossEncoderReranker(cross_encoder_path, backend="onnx", quantize="int8",
                                device="cpu")
    got = int8.score_pairs([q] * len(texts), texts)
    assert np.abs(got - want).max() < 0.05  # int8 rounding moves scores a little
    # one pair per pass (dynamic int8 scales by the whole batch): a pair scores the same alone
    assert (fp32.batch_size, int8.batch_size) == (32, 1)
    alone = [int8.score_pairs([q], [t])[0] for t in texts]
    np.testing.assert_allclose(alone, got, atol=1e-6)
    from bertino_rag.encoder.backends import cpu_quantize_config, quantized_onnx_file

    onnx = sorted(p.name for p in (__import__("pathlib").Path(cross_encoder_path)
                                   / "onnx").iterdir())
    assert "model.onnx" in onnx  # cached, and the int8 model under this CPU's preset
    assert quantized_onnx_file(cpu_quantize_config()) in onnx


@pytest.mark.slow
def test_the_openvino_reranker_orders_as_torch_does(cross_encoder_path, cross_encoder,
                                                   squad_slice):
    """OpenVINO (bf16 where the CPU has it, else fp32): scores close to torch's, the same
    order, 32 pairs per pass (no per-pass quantization scale), the export cached."""
    pytest.importorskip("optimum.intel")
    from pathlib import Path

    q = squad_slice["queries"][0]
    texts = [d["text"] for d in squad_slice["docs"][:12]]
    want = cross_encoder.score_pairs([q] * len(texts), texts)
    ov = CrossEncoderReranker(cross_encoder_path, backend="openvino", device="cpu")
    assert ov.batch_size == 32
    got = ov.score_pairs([q] * len(texts), texts)
    ranks = [np.argsort(np.argsort(x)) for x in (got, want)]
    assert np.corrcoef(*ranks)[0, 1] > 0.95, (got, want)
    assert np.abs(got - want).max() < 0.1 * (want.max() - want.min() + 1e-9)
    assert (Path(cross_encoder_path) / "openvino" / "openvino_model.xml").is_file()


@pytest.mark.slow
def test_the_openvino_int8_reranker_orders_as_torch_does(cross_encoder_path, cross_encoder,
                                                        squad_slice):
    """Static int8 OpenVINO: calibrated once on the shipped Italian pairs, cached under their
    digest and reused, 32 pairs per pass (static scales), the order of torch's scores."""
    pytest.importorskip("optimum.intel")
    from pathlib import Path

    q = squad_slice["queries"][0]
    texts = [d["text"] for d in squad_slice["docs"][:12]]
    want = cross_encoder.score_pairs([q] * len(texts), texts)
    int8 = CrossEncoderReranker(cross_encoder_path, backend="openvino", quantize="int8",
                                device="cpu")
    assert int8.batch_size == 32
    got = int8.score_pairs([q] * len(texts), texts)
    ranks = [np.argsort(np.argsort(x)) for x in (got, want)]
    assert np.corrcoef(*ranks)[0, 1] > 0.9, (got, want)
    assert int(np.argmax(got)) == int(np.argmax(want))
    made = sorted((Path(cross_encoder_path) / "openvino").glob("openvino_model_qint8_*.xml"))
    assert len(made) == 1 and made[0].with_suffix(".bin").is_file()
    stamp = made[0].stat().st_mtime_ns
    again = CrossEncoderReranker(cross_encoder_path, backend="openvino", quantize="int8",
                                 device="cpu")  # the cached model, not a second calibration
    assert made[0].stat().st_mtime_ns == stamp
    np.testing.assert_allclose(again.score_pairs([q] * len(texts), texts), got, atol=1e-6)


def test_calibration_pairs_are_questions_with_passages():
    from bertino_rag.encoder.backends import default_calibration_texts
    from bertino_rag.rerank.cross_encoder import calibration_pairs

    pairs = calibration_pairs()
    questions = {t for t in default_calibration_texts() if t.endswith("?")}
    assert {q for q, _ in pairs} == questions and len(set(pairs)) == 2 * len(questions)
    assert all(not p.endswith("?") for _, p in pairs)
    assert len({p for _, p in pairs}) > len(questions)  # not one passage for every question


@pytest.mark.parametrize("group_by", [None, "document"])
def test_the_model_runs_outside_the_stores_snapshot(retriever, group_by):
    """A write made while the reranker scores completes (the store's lock is not held)."""
    import threading

    done: list[bool] = []

    def scores(n):
        t = threading.Thread(target=lambda: (retriever.store.delete(["nessuno"]),
                                             done.append(True)))
        t.start()
        t.join(timeout=20)
        return [0.0] * n

    hits = retriever.search("Amazzonia", k=2, reranker=Fixed(scores), group_by=group_by)
    assert done == [True] and len(hits) == 2
