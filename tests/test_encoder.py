"""Encoder: one pass gives what sentence-transformers' own truncation gives, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from bertino_rag import Encoder, TruncationWarning
from bertino_rag.encoder import DEFAULT_MODEL, MODEL_ENV, matryoshka_slice, resolve_model

TEXTS = [
    "Leonardo da Vinci dipinse la Gioconda, conservata al Louvre.",
    "La pizza margherita nasce a Napoli.",
    "Il Colosseo è il più grande anfiteatro romano.",
]


@pytest.mark.parametrize("dim", [384, 256, 128, 64])
def test_one_pass_equals_sentence_transformers_truncation(minilm_path, encoder, dim):
    reference = SentenceTransformer(minilm_path, device="cpu", truncate_dim=dim)
    want = reference.encode(TEXTS, normalize_embeddings=True)
    got = encoder.encode(TEXTS, dim=dim)
    np.testing.assert_allclose(got.index, want, atol=1e-5)
    full = SentenceTransformer(minilm_path, device="cpu").encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(got.full, full, atol=1e-5)
    assert got.index.shape == (3, dim) and got.full.shape == (3, 384)


def test_truncated_vectors_are_unit_norm(encoder):
    out = encoder.encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(out.index, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out.full, axis=1), 1.0, atol=1e-5)


def test_matryoshka_slice_renormalizes():
    v = np.array([[3.0, 4.0, 12.0]], dtype=np.float32)
    np.testing.assert_allclose(matryoshka_slice(v, 2), [[0.6, 0.8]], atol=1e-6)


@pytest.mark.parametrize("dim,msg", [(0, "positive"), (-5, "positive"), (385, "larger than")])
def test_bad_dim(minilm_path, encoder, dim, msg):
    with pytest.raises(ValueError, match=msg):
        Encoder(minilm_path, dim=dim, sentence_transformer=encoder.model)
    with pytest.raises(ValueError, match=msg):
        encoder.encode(TEXTS, dim=dim)


def test_long_documents_are_reported(encoder):
    long_text = "La storia di Roma antica è lunga e complessa. " * 200
    with pytest.warns(TruncationWarning, match=r"1 of 2 document texts.*256 tokens"):
        out = encoder.encode([TEXTS[0], long_text])
    assert out.n_truncated == 1
    assert encoder.count_truncated([TEXTS[0]]) == 0


@pytest.mark.parametrize("bad,msg", [(["ok", "  "], "position 1 is empty"),
                                     (["ok", None], "position 1 is NoneType")])
def test_bad_texts(encoder, bad, msg):
    with pytest.raises(ValueError, match=msg):
        encoder.encode(bad)
    with pytest.raises(ValueError, match="non-empty"):
        encoder.encode_query("   ")


def test_model_resolution(monkeypatch):
    monkeypatch.delenv(MODEL_ENV, raising=False)
    assert resolve_model(None) == DEFAULT_MODEL
    monkeypatch.setenv(MODEL_ENV, "/models/mio")
    assert resolve_model(None) == "/models/mio"
    assert resolve_model("altro/modello") == "altro/modello"


def test_unloadable_model_names_it(tmp_path):
    missing = tmp_path / "no-model-here"
    with pytest.raises(
        OSError, match=r"could not load the model .*no-model-here.*BERTINO_RAG_MODEL"
    ):
        Encoder(str(missing))


def test_env_model_is_used(monkeypatch, minilm_path):
    monkeypatch.setenv(MODEL_ENV, minilm_path)
    enc = Encoder(dim=64)
    assert enc.name == minilm_path and enc.full_dim == 384
    assert enc.model_id.startswith("model@") and enc.model_id == Encoder(minilm_path).model_id


def test_local_model_id_tells_weights_apart(tmp_path):
    from bertino_rag.encoder import model_id_of

    for name, payload in (("a", b"x" * 10), ("b", b"y" * 10)):
        (tmp_path / name / "m").mkdir(parents=True)
        (tmp_path / name / "m" / "model.safetensors").write_bytes(payload)
    assert model_id_of(str(tmp_path / "a" / "m")) != model_id_of(str(tmp_path / "b" / "m"))
    assert model_id_of("nickprock/multi-sentence-BERTino") == "nickprock/multi-sentence-BERTino"
