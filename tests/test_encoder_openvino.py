"""OpenVINO backend: float and static int8 against torch, calibration, caching, errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from bertino_rag import Encoder, Retriever
from bertino_rag.encoder import backends as _backends

from .conftest import float_and_int8

HAS_OPENVINO = all(
    importlib.util.find_spec(m) is not None for m in ("openvino", "nncf", "optimum.intel")
)
needs_openvino = pytest.mark.skipif(
    not HAS_OPENVINO, reason="openvino, nncf or optimum-intel not installed (bertino-rag[openvino])"
)


@pytest.fixture(scope="module")
def cache_root(backend_cache) -> Path:
    return backend_cache


@pytest.fixture(scope="module")
def ov_encoders(minilm_path, cache_root):
    """Float and int8 OpenVINO encoders of the packaged MiniLM, exported offline to a temp cache."""
    if not HAS_OPENVINO:
        pytest.skip("openvino, nncf or optimum-intel not installed (bertino-rag[openvino])")
    return float_and_int8(minilm_path, cache_root, "openvino")


@pytest.fixture(scope="module")
def texts(squad_slice) -> list[str]:
    return [d["text"] for d in squad_slice["docs"]][:32]


@needs_openvino
def test_float_openvino_matches_torch(encoder, ov_encoders, texts):
    fp, _ = ov_encoders
    ref = encoder.encode(texts[:16], warn_truncation=False)
    got = fp.encode(texts[:16], warn_truncation=False)
    assert np.sum(ref.full * got.full, axis=1).min() > 0.99
    assert np.sum(ref.index * got.index, axis=1).min() > 0.99
    assert fp.model_id == encoder.model_id  # same model, so the same collections


@needs_openvino
def test_int8_is_close_and_keeps_the_top_k(encoder, ov_encoders, squad_slice, texts):
    _, int8 = ov_encoders
    ref_d = encoder.encode(texts, warn_truncation=False)
    q_d = int8.encode(texts, warn_truncation=False)
    cos = np.sum(ref_d.full * q_d.full, axis=1)
    assert 0.98 < cos.mean() < 1.0, cos.mean()  # quantized, and close
    queries = squad_slice["queries"][:40]
    ref_q, q_q = encoder.encode(queries, kind="query"), int8.encode(queries, kind="query")
    k = 10
    ref_top = np.argsort(-(ref_q.index @ ref_d.index.T), axis=1)[:, :k]
    int8_top = np.argsort(-(q_q.index @ q_d.index.T), axis=1)[:, :k]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(ref_top, int8_top, strict=True)])
    assert overlap >= 0.85, overlap


@needs_openvino
def test_int8_questions_do_not_depend_on_their_batch(encoder, ov_encoders, squad):
    """With bf16 float parts, 32 of these 300 questions fell below a cosine of 0.98 to torch
    (down to 0.63) when encoded in batches, though each was right alone."""
    _, int8 = ov_encoders
    questions = list(squad.queries.values())[:300]
    ref = encoder.encode(questions, kind="query").full
    got = int8.encode(questions, kind="query").full
    cos = np.sum(ref * got, axis=1)
    assert cos.min() > 0.98, cos.min()
    for i in np.argsort(cos)[:3]:
        alone = int8.encode([questions[i]], kind="query").full[0]
        assert float(alone @ got[i]) > 0.999


@needs_openvino
def test_int8_graph_quantizes_all_but_the_ffn_down_projections(ov_encoders):
    import openvino as ov

    fp, int8 = ov_encoders
    assert Path(int8.backend_file).name.startswith("openvino_model_qint8_")
    assert Path(int8.backend_file).with_suffix(".bin").exists()
    model = ov.Core().read_model(int8.backend_file)
    matmuls = [op for op in model.get_ops() if op.get_type_name() == "MatMul"]
    assert len(matmuls) == 36  # 6 layers x (Q, K, V, attention output, FFN up, FFN down)

    def weight_type(op) -> str:
        node = op.input(1).get_source_output().get_node()
        while node.get_type_name() != "Constant":  # int8 weights: Constant -> Convert -> Multiply
            node = node.input(0).get_source_output().get_node()
        return str(node.get_element_type())

    def reads_int8_activations(op) -> bool:
        return op.input(0).get_source_output().get_node().get_type_name() == "FakeQuantize"

    float_names = set(_backends._gelu_fed_matmuls(ov.Core().read_model(fp.backend_file)))
    assert len(float_names) == 6  # the FFN down-projection of each layer
    for op in matmuls:
        name = op.get_friendly_name()
        if name in float_names:
            assert weight_type(op) == "<Type: 'float32'>" and not reads_int8_activations(op), name
        else:
            assert weight_type(op) == "<Type: 'int8_t'>" and reads_int8_activations(op), name
    # float parts run in fp32 next to int8 ones (bf16 there distorted short texts)
    assert int8.model.transformers_model.ov_config["INFERENCE_PRECISION_HINT"] == "f32"


@needs_openvino
def test_calibration_set_names_its_own_cached_model(
    minilm_path, ov_encoders, cache_root, monkeypatch
):
    _, default = ov_encoders
    monkeypatch.setenv("BERTINO_RAG_CACHE", str(cache_root))
    calibration = [
        "Quanti abitanti ha Torino?",
        "Il Po attraversa la Pianura Padana da ovest a est prima di sfociare nell'Adriatico.",
        "La garanzia copre i difetti di fabbricazione per ventiquattro mesi dalla consegna.",
        "Come si rinnova il passaporto?",
    ]
    custom = Encoder(minilm_path, dim=128, backend="openvino", quantize="int8",
                     calibration=calibration)
    assert custom.backend_file != default.backend_file
    assert Path(custom.backend_file).parent == Path(default.backend_file).parent
    mtime = Path(custom.backend_file).stat().st_mtime_ns

    def no_quantize(*args, **kwargs):
        raise AssertionError("the cached int8 model should have been loaded")

    monkeypatch.setattr(_backends, "_quantize_openvino", no_quantize)
    again = Encoder(minilm_path, dim=128, backend="openvino", quantize="int8",
                    calibration=tuple(calibration))
    assert again.backend_file == custom.backend_file
    assert Path(again.backend_file).stat().st_mtime_ns == mtime
    text = ["La pizza margherita nasce a Napoli."]
    np.testing.assert_allclose(again.encode(text).full, custom.encode(text).full, atol=1e-6)
    with pytest.raises(AssertionError, match="cached int8 model"):  # a new set is quantized
        Encoder(minilm_path, backend="openvino", quantize="int8", calibration=calibration[:2])


@needs_openvino
def test_threads_and_precision_reach_openvino(minilm_path, ov_encoders, cache_root, monkeypatch):
    fp, _ = ov_encoders
    assert fp.model.transformers_model.ov_config["INFERENCE_NUM_THREADS"] == 1
    monkeypatch.setenv("BERTINO_RAG_CACHE", str(cache_root))
    f32 = Encoder(minilm_path, backend="openvino", threads=1,
                  model_kwargs={"ov_config": {"INFERENCE_PRECISION_HINT": "f32"}})
    config = f32.model.transformers_model.ov_config
    assert config["INFERENCE_NUM_THREADS"] == 1 and config["INFERENCE_PRECISION_HINT"] == "f32"
    text = ["Il Colosseo si trova a Roma."]
    assert float(np.sum(f32.encode(text).full * fp.encode(text).full)) > 0.999


def test_default_calibration_set_is_shipped():
    texts = _backends.default_calibration_texts()
    assert len(texts) >= 100
    assert all(t == t.strip() and t for t in texts)
    assert any(len(t.split()) > 120 for t in texts)  # passages, not only short sentences
    assert any(t.endswith("?") for t in texts)  # and questions


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"backend": "openvino", "quantize": "int8", "calibration": "un testo"},
         "calibration must be a sequence of texts"),
        ({"backend": "openvino", "quantize": "int8", "calibration": []}, "calibration is empty"),
        ({"backend": "openvino", "quantize": "int8", "calibration": ["ok", "  "]},
         "calibration text at position 1 is empty"),
        ({"backend": "openvino", "calibration": ["ok"]}, "calibration is only used with"),
        ({"backend": "onnx", "quantize": "int8", "calibration": ["ok"]},
         "calibration is only used with"),
        ({"backend": "openvino", "quantize": "avx2"}, "quantize must be None or 'int8'"),
    ],
)
def test_bad_openvino_arguments(minilm_path, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        Encoder(minilm_path, **kwargs)


def test_retriever_passes_calibration_on(minilm_path):
    with pytest.raises(ValueError, match="calibration is only used with"):
        Retriever(dim=128, model=minilm_path, calibration=["Roma è la capitale d'Italia."])


def test_missing_openvino_names_what_to_install(minilm_path, monkeypatch):
    real = _backends._has
    monkeypatch.setattr(_backends, "_has", lambda m: False if m == "nncf" else real(m))
    with pytest.raises(ImportError, match=r"bertino-rag\[openvino\]"):
        Encoder(minilm_path, backend="openvino")


def test_long_calibration_is_sampled_evenly():
    texts = [f"testo numero {i}" for i in range(1000)]
    kept = _backends.check_calibration(iter(texts))
    assert len(kept) == _backends.MAX_CALIBRATION
    assert kept[0] == texts[0] and kept[-1] != texts[299]  # spread over the whole list
    assert len(set(kept)) == len(kept)
    assert _backends.check_calibration(texts[:5]) == texts[:5]
    digest = _backends.calibration_digest(kept, 256)
    assert digest == _backends.calibration_digest(list(kept), 256)
    assert digest != _backends.calibration_digest(kept, 128)
    assert digest != _backends.calibration_digest(kept[:-1], 256)


@pytest.fixture(scope="module")
def tiny_distilbert(tmp_path_factory, minilm_path) -> str:
    """A 2-layer DistilBERT (BERTino's architecture) with random weights, as a
    sentence-transformers folder (mean pooling)."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    raw = tmp_path_factory.mktemp("tiny-distilbert-raw")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=2,
                              hidden_dim=64, max_position_embeddings=128)
    torch.manual_seed(0)
    DistilBertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=128)
    pooling = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    folder = tmp_path_factory.mktemp("tiny-distilbert")
    SentenceTransformer(modules=[word, pooling], device="cpu").save(str(folder))
    return str(folder)


@needs_openvino
def test_int8_on_a_distilbert(tiny_distilbert, backend_cache, monkeypatch):
    import openvino as ov

    monkeypatch.setenv("BERTINO_RAG_CACHE", str(backend_cache))
    fp = Encoder(tiny_distilbert, dim=16, backend="openvino")
    int8 = Encoder(tiny_distilbert, dim=16, backend="openvino", quantize="int8")
    assert Path(fp.backend_file).is_relative_to(tiny_distilbert)  # a writable local model
    float_names = _backends._gelu_fed_matmuls(ov.Core().read_model(fp.backend_file))
    assert len(float_names) == 2 and all("lin2" in n for n in float_names)  # ffn.lin2
    texts = ["Il Colosseo si trova a Roma.", "La pizza margherita nasce a Napoli nel 1889."]
    ref, got = fp.encode(texts), int8.encode(texts)
    assert got.index.shape == (2, 16) and got.full.shape == (2, 32)
    assert np.sum(ref.full * got.full, axis=1).min() > 0.9


@needs_openvino
def test_bad_calibration_fails_before_any_export(minilm_path, tmp_path, monkeypatch):
    monkeypatch.setenv("BERTINO_RAG_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="calibration is empty"):
        _backends.load_sentence_transformer(
            minilm_path, backend="openvino", quantize="int8", calibration=[]
        )
    assert not (tmp_path / "cache").exists()


def test_calibration_inputs_fill_the_token_types_an_xlmr_tokenizer_lacks():
    """e5's XLM-R tokenizer gives no token_type_ids and the BERT graph reads them: zeros of the
    input's shape, int64, batch of one; inputs the graph lacks are dropped."""
    from bertino_rag.encoder.backends import calibration_inputs

    xlmr = [{"input_ids": [0, 5585, 2], "attention_mask": [1, 1, 1]}]
    got = calibration_inputs({"input_ids", "attention_mask", "token_type_ids"}, xlmr)[0]
    assert sorted(got) == ["attention_mask", "input_ids", "token_type_ids"]
    assert got["token_type_ids"].shape == got["input_ids"].shape == (1, 3)
    assert got["token_type_ids"].dtype == np.int64 and not got["token_type_ids"].any()
    bert = [{"input_ids": [1, 2], "attention_mask": [1, 1], "token_type_ids": [0, 1]}]
    got = calibration_inputs({"input_ids", "attention_mask"}, bert)[0]
    assert sorted(got) == ["attention_mask", "input_ids"]  # DistilBERT's graph: no types
    kept = calibration_inputs({"input_ids", "token_type_ids"}, bert)[0]["token_type_ids"]
    assert kept.tolist() == [[0, 1]]  # a tokenizer's own types are kept
