"""Encoder backends: ONNX fp32 and int8 against torch, export caching, threads, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bertino_rag import Encoder
from bertino_rag.encoder import backends as _backends

from .conftest import float_and_int8

pytest.importorskip("onnxruntime")
pytest.importorskip("optimum.onnxruntime")


@pytest.fixture(scope="module")
def cache_root(backend_cache) -> Path:
    return backend_cache


@pytest.fixture(scope="module")
def onnx_encoders(minilm_path, cache_root):
    """fp32 and int8 ONNX encoders of the packaged MiniLM, exported offline into a temp cache."""
    return float_and_int8(minilm_path, cache_root, "onnx")


@pytest.fixture(scope="module")
def texts(squad_slice) -> list[str]:
    return [d["text"] for d in squad_slice["docs"]][:32]


def test_site_packages_model_is_cached_in_user_dir(minilm_path, onnx_encoders, cache_root):
    fp32, int8 = onnx_encoders
    if "site-packages" not in minilm_path:
        pytest.skip("the packaged MiniLM is not installed in site-packages here")
    assert not (Path(minilm_path) / "onnx").exists()  # installed packages are never written
    for enc in (fp32, int8):
        assert enc.backend_file is not None
        assert Path(enc.backend_file).is_relative_to(cache_root / "onnx")
        assert Path(enc.backend_file).exists()
    preset = _backends.cpu_quantize_config()
    assert Path(int8.backend_file).name == _backends.quantized_onnx_file(preset)
    assert Path(int8.backend_file).name.endswith(f"int8_{preset}.onnx")


def test_model_id_is_the_source_models(minilm_path, onnx_encoders, encoder):
    fp32, int8 = onnx_encoders
    assert fp32.model_id == int8.model_id == encoder.model_id
    assert fp32.name == minilm_path


def test_fp32_onnx_matches_torch(encoder, onnx_encoders, texts):
    fp32, _ = onnx_encoders
    ref = encoder.encode(texts[:16], warn_truncation=False)
    got = fp32.encode(texts[:16], warn_truncation=False)
    cos = np.sum(ref.full * got.full, axis=1)
    assert cos.min() > 0.99, cos.min()
    assert np.sum(ref.index * got.index, axis=1).min() > 0.99


def test_int8_keeps_the_top_k(encoder, onnx_encoders, squad_slice, texts):
    _, int8 = onnx_encoders
    docs = texts  # 32 paragraphs of one article: close neighbours, a demanding ranking
    queries = squad_slice["queries"][:40]
    ref_d = encoder.encode(docs, warn_truncation=False)
    q_d = int8.encode(docs, warn_truncation=False)
    ref_q, q_q = encoder.encode(queries, kind="query"), int8.encode(queries, kind="query")
    cos = np.sum(ref_d.full * q_d.full, axis=1)
    assert cos.mean() > 0.97, cos.mean()  # int8 is an approximation, not a copy
    k = 10
    ref_top = np.argsort(-(ref_q.index @ ref_d.index.T), axis=1)[:, :k]
    int8_top = np.argsort(-(q_q.index @ q_d.index.T), axis=1)[:, :k]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(ref_top, int8_top, strict=True)])
    assert overlap >= 0.8, overlap


@pytest.mark.parametrize(("backend", "quantize", "size"), [
    ("torch", None, 32), ("onnx", None, 32), ("onnx", "int8", 1), ("onnx", "avx2", 1),
    ("openvino", None, 32), ("openvino", "int8", 32)])
def test_only_dynamic_int8_runs_one_text_per_pass(backend, quantize, size):
    assert _backends.default_batch_size(backend, quantize) == size


def test_int8_vectors_do_not_depend_on_the_batch(minilm_path, onnx_encoders, cache_root, texts,
                                                 monkeypatch):
    """Dynamic int8 scales a pass's activations by the whole padded batch: one text per pass
    gives a text the same vector alone and among others. A chosen batch size is kept."""
    fp32, int8 = onnx_encoders
    assert (fp32.batch_size, int8.batch_size) == (32, 1)
    together = int8.encode(texts[:8], warn_truncation=False).full
    alone = np.concatenate([int8.encode([t], warn_truncation=False).full for t in texts[:8]])
    np.testing.assert_allclose(alone, together, atol=1e-6)
    monkeypatch.setenv("BERTINO_RAG_CACHE", str(cache_root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    chosen = Encoder(minilm_path, dim=128, backend="onnx", quantize="int8", batch_size=8)
    assert chosen.batch_size == 8
    batched = chosen.encode(texts[:8], warn_truncation=False).full
    assert not np.allclose(batched, together, atol=1e-6)  # the effect the default avoids


def test_cached_export_is_reused_offline(minilm_path, onnx_encoders, cache_root, monkeypatch):
    fp32, int8 = onnx_encoders
    before = {p: Path(p).stat().st_mtime_ns for p in (fp32.backend_file, int8.backend_file)}
    monkeypatch.setenv("BERTINO_RAG_CACHE", str(cache_root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_export(*args, **kwargs):
        raise AssertionError("the cached export should have been loaded")

    monkeypatch.setattr(_backends, "_export", no_export)
    monkeypatch.setattr(_backends, "_quantize", no_export)
    again = Encoder(minilm_path, dim=128, backend="onnx", quantize="int8")
    assert again.backend_file == int8.backend_file
    assert {p: Path(p).stat().st_mtime_ns for p in before} == before
    out = again.encode(["Il Colosseo si trova a Roma."])
    np.testing.assert_allclose(out.full, int8.encode(["Il Colosseo si trova a Roma."]).full)


def test_cache_goes_next_to_a_writable_local_model(tmp_path, minilm_path, monkeypatch):
    writable = tmp_path / "my-model"
    writable.mkdir()
    folder, in_place = _backends.backend_cache_dir(str(writable), "onnx")
    assert (folder, in_place) == (writable, True)
    monkeypatch.setenv("BERTINO_RAG_CACHE", str(tmp_path / "cache"))
    folder, in_place = _backends.backend_cache_dir(minilm_path, "onnx")
    assert not in_place and folder.parent == tmp_path / "cache" / "onnx"
    folder, in_place = _backends.backend_cache_dir("nickprock/multi-sentence-BERTino", "onnx")
    assert folder == tmp_path / "cache" / "onnx" / "nickprock--multi-sentence-BERTino"


def test_onnx_threads_reach_the_session(onnx_encoders):
    fp32, _ = onnx_encoders
    session = fp32.model.transformers_model.model
    options = session.get_session_options()
    assert options.intra_op_num_threads == 1
    # idle threads sleep rather than spin unless $BERTINO_RAG_ORT_SPIN=1 (shared CPUs)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"backend": "torch", "quantize": "int8"}, "quantize='int8' needs backend='onnx'"),
        ({"backend": "onnx", "quantize": "int4"}, "quantize must be None, 'int8'"),
        ({"backend": "tensorrt"}, "backend must be one of torch, onnx, openvino"),
        ({"threads": 0}, "threads must be a positive int"),
    ],
)
def test_bad_backend_arguments(minilm_path, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        Encoder(minilm_path, **kwargs)


def test_bad_threads_env(minilm_path, monkeypatch):
    monkeypatch.setenv("BERTINO_RAG_THREADS", "many")
    with pytest.raises(ValueError, match=r"\$BERTINO_RAG_THREADS must be a positive int"):
        Encoder(minilm_path, backend="onnx")


def test_quantized_file_names_are_sentence_transformers_own():
    """The int8 file is where sentence-transformers writes it for every preset (optimum's
    avx2 preset quantizes weights to uint8, the others to int8)."""
    names = {p: _backends.quantized_onnx_file(p) for p in _backends.QUANTIZE_CONFIGS}
    assert names == {"avx512_vnni": "model_qint8_avx512_vnni.onnx",
                     "avx512": "model_qint8_avx512.onnx", "avx2": "model_quint8_avx2.onnx",
                     "arm64": "model_qint8_arm64.onnx"}


def test_quantize_preset_matches_this_cpu():
    preset = _backends.cpu_quantize_config()
    assert preset in _backends.QUANTIZE_CONFIGS
    flags = _backends._cpu_flags()
    if "avx512_vnni" in flags:
        assert preset == "avx512_vnni"
