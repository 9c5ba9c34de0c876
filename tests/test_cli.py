"""The bertino-rag command line: index and search on the persistent embedded store."""

from __future__ import annotations

import importlib.util
import json

import pytest

from bertino_rag.cli import main


@pytest.fixture
def corpus(tmp_path, squad_slice):
    txt = tmp_path / "docs.txt"
    txt.write_text(
        "Leonardo da Vinci dipinse la Gioconda.\n\nLa pizza margherita nasce a Napoli.\n",
        encoding="utf-8",
    )
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps(d, ensure_ascii=False)
                               for d in squad_slice["docs"][:20]), encoding="utf-8")
    return txt, jsonl


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_index_then_search_txt(tmp_path, corpus, minilm_path, capsys):
    store = f"memory:{tmp_path / 'idx'}"
    code, out, _ = run(capsys, "index", corpus[0], "--model", minilm_path, "--store", store,
                       "--quiet", "--json", "--lines")
    assert code == 0
    summary = json.loads(out)
    assert summary["indexed"] == 2 and summary["count"] == 2
    code, out, _ = run(capsys, "search", "Chi ha dipinto la Gioconda?", "--model", minilm_path,
                       "--store", store, "-k", "1", "--json")
    assert code == 0
    hits = json.loads(out)
    assert len(hits) == 1 and "Gioconda" in hits[0]["text"]
    code, out, _ = run(capsys, "search", "pizza", "--model", minilm_path, "--store", store)
    assert code == 0 and " 1. [" in out and "Napoli" in out


def test_jsonl_metadata_and_filter(tmp_path, corpus, minilm_path, capsys):
    store = f"memory:{tmp_path / 'idx'}"
    assert run(capsys, "index", corpus[1], "--model", minilm_path, "--store", store, "--dim", "64",
               "--quiet")[0] == 0
    code, out, _ = run(capsys, "search", "foresta", "--model", minilm_path, "--store", store,
                       "--dim", "64", "--json", "--filter", '{"para": {"$lt": 3}}', "-k", "10")
    hits = json.loads(out)
    assert code == 0 and hits and all(h["metadata"]["para"] < 3 for h in hits)


def test_beir_folder(tmp_path, squad_slice, minilm_path, capsys):
    folder = tmp_path / "beir"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text("\n".join(
        json.dumps({"_id": d["id"], "title": d["metadata"]["title"], "text": d["text"]},
                   ensure_ascii=False) for d in squad_slice["docs"][:5]), encoding="utf-8")
    store = f"memory:{tmp_path / 'idx'}"
    code, out, _ = run(capsys, "index", folder, "--model", minilm_path, "--store", store,
                       "--quiet", "--json", "--no-rescore")
    summary = json.loads(out)
    assert code == 0 and summary["indexed"] == 5
    # paragraphs longer than the model reads are stored as chunks
    assert summary["count"] == summary["chunks"] >= 5


def test_mismatch_is_a_clear_error(tmp_path, corpus, minilm_path, capsys):
    store = f"memory:{tmp_path / 'idx'}"
    run(capsys, "index", corpus[0], "--model", minilm_path, "--store", store, "--quiet")
    code, _, err = run(capsys, "search", "pizza", "--model", minilm_path, "--store", store,
                       "--dim", "64")
    assert code == 2 and "index_dim: collection has 128, requested 64" in err
    code, _, err = run(capsys, "index", tmp_path / "missing.txt", "--model", minilm_path,
                       "--store", store)
    assert code == 2 and "missing.txt" in err


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("openvino", "nncf", "optimum.intel")),
    reason="openvino, nncf or optimum-intel not installed (bertino-rag[openvino])",
)
def test_search_with_an_int8_openvino_encoder(tmp_path, corpus, minilm_path, backend_cache,
                                              monkeypatch, capsys):
    monkeypatch.setenv("BERTINO_RAG_CACHE", str(backend_cache))
    store = f"memory:{tmp_path / 'idx'}"
    code, _, _ = run(capsys, "index", corpus[0], "--model", minilm_path, "--store", store,
                     "--quiet")
    assert code == 0
    # the index was built on torch; the int8 OpenVINO encoder of the same model searches it
    code, out, _ = run(capsys, "search", "Chi ha dipinto la Gioconda?", "--model", minilm_path,
                       "--store", store, "-k", "1", "--json", "--backend", "openvino",
                       "--quantize", "int8")
    assert code == 0
    assert "Gioconda" in json.loads(out)[0]["text"]


def test_quantize_needs_a_backend(tmp_path, corpus, minilm_path, capsys):
    code, _, err = run(capsys, "search", "pizza", "--model", minilm_path,
                       "--store", f"memory:{tmp_path / 'idx'}", "--quantize", "int8")
    assert code == 2 and "quantize='int8' needs backend='onnx'" in err


def test_index_a_folder_of_documents(tmp_path, minilm_path, capsys):
    from tests.test_loaders import write_docx, write_pdf

    docs = tmp_path / "articoli"
    (docs / "sub").mkdir(parents=True)
    long_text = "\n\n".join(
        f"Il paragrafo {i} racconta la storia di Firenze, dei Medici e del Rinascimento, "
        "quando la città divenne il centro dell'arte europea." for i in range(30))
    (docs / "firenze.txt").write_text(long_text, encoding="utf-8")
    (docs / "sub" / "pagina.html").write_text(
        "<html><head><title>Venezia</title></head><body><p>Venezia è costruita su "
        "centinaia di isole della laguna.</p></body></html>", encoding="utf-8")
    write_pdf(docs / "roma.pdf", ["Roma è la capitale d'Italia.", "Il Colosseo è a Roma."])
    write_docx(docs / "sub" / "napoli.docx", ["Napoli è famosa per la pizza."])
    (docs / "vuoto.txt").write_bytes(b"")
    store = f"memory:{tmp_path / 'idx'}"
    code, out, err = run(capsys, "index", docs, "--model", minilm_path, "--store", store,
                         "--quiet", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["indexed"] == 4 and summary["chunked"] == 1 and summary["truncated"] == 0
    assert summary["count"] == summary["chunks"] == summary["written"]
    assert summary["skipped"] == [{"path": str(docs / "vuoto.txt"),
                                   "reason": "the file is empty"}]
    assert f"skipped {docs / 'vuoto.txt'}: the file is empty" in err
    code, out, _ = run(capsys, "index", docs, "--model", minilm_path, "--store", store,
                       "--quiet", "--json")
    again = json.loads(out)
    assert again["written"] == 0 and again["unchanged"] == summary["count"]

    para = "Il paragrafo 3 racconta la storia di Firenze, dei Medici e del Rinascimento"
    code, out, _ = run(capsys, "search", para, "--model", minilm_path,
                       "--store", store, "-k", "1")
    assert code == 0 and f"({docs / 'firenze.txt'}, chunk " in out
    code, out, _ = run(capsys, "search", "Il Colosseo è a Roma.", "--model", minilm_path,
                       "--store", store, "-k", "1", "--json")
    [hit] = json.loads(out)
    assert hit["metadata"]["source"] == str(docs / "roma.pdf") and hit["metadata"]["page"] == 1
    code, out, _ = run(capsys, "search", para, "--model", minilm_path,
                       "--store", store, "-k", "2", "--group-by", "document", "--json")
    hits = json.loads(out)
    assert hits[0]["id"] == str(docs / "firenze.txt") and len(hits[0]["chunks"]) >= 2
    assert len({h["id"] for h in hits}) == 2

    code, _, err = run(capsys, "index", docs, "--model", minilm_path, "--store", store,
                       "--quiet", "--on-error", "raise")
    assert code == 2 and f"{docs / 'vuoto.txt'}: the file is empty" in err
    code, out, _ = run(capsys, "index", docs, "--model", minilm_path, "--store", store,
                       "--quiet", "--json", "--include", "*.pdf")
    assert json.loads(out)["indexed"] == 1
