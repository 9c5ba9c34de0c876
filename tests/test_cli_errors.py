"""The command line on a new user's mistakes: one clear line, a non-zero exit, nothing lost."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from bertino_rag.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def built(tmp_path_factory, squad_slice, minilm_path):
    """A persisted 20-document index built by the CLI, once per module."""
    tmp = tmp_path_factory.mktemp("cli-index")
    jsonl = tmp / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps(d, ensure_ascii=False)
                               for d in squad_slice["docs"][:20]), encoding="utf-8")
    assert main(["index", str(jsonl), "--model", minilm_path, "--store",
                 f"memory:{tmp / 'idx'}", "--quiet"]) == 0
    return tmp / "idx"


@pytest.fixture
def index(built, tmp_path):
    """A copy of the built index for one test."""
    shutil.copytree(built, tmp_path / "idx")
    return f"memory:{tmp_path / 'idx'}"


def _count(capsys, store, minilm_path):
    code, out, err = run(capsys, "search", "foresta", "--model", minilm_path, "--store", store,
                         "--json", "-k", "50")
    assert code == 0, err
    return len(json.loads(out))


def test_recreate_with_a_missing_or_bad_input_keeps_the_index(tmp_path, index, minilm_path,
                                                             capsys):
    before = _count(capsys, index, minilm_path)
    code, _, err = run(capsys, "index", tmp_path / "missing.jsonl", "--model", minilm_path,
                       "--store", index, "--recreate")
    assert code == 2 and "missing.jsonl" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "uno"}\n{"text": "due", "metadata": {"v": NaN}}\n',
                   encoding="utf-8")
    code, _, err = run(capsys, "index", bad, "--model", minilm_path, "--store", index,
                       "--recreate")
    assert code == 2 and "position 1" in err and "finite" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    code, _, err = run(capsys, "index", empty, "--model", minilm_path, "--store", index,
                       "--recreate")
    assert code == 1 and "nothing was changed" in err
    code, _, err = run(capsys, "index", bad, "--model", tmp_path / "no-model", "--store", index,
                       "--recreate")
    assert code == 2
    assert before > 0 and _count(capsys, index, minilm_path) == before  # all still there


def test_recreate_that_fails_mid_index_keeps_the_old_index(tmp_path, index, minilm_path,
                                                           capsys, monkeypatch):
    from bertino_rag.stores.memory import folder as memory_module

    before = _count(capsys, index, minilm_path)
    docs = tmp_path / "new.jsonl"
    docs.write_text("".join(json.dumps({"text": f"nuovo documento {i}"}) + "\n"
                            for i in range(3)), encoding="utf-8")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(memory_module.np, "save", full_disk)
    code, _, err = run(capsys, "index", docs, "--model", minilm_path, "--store", index,
                       "--recreate", "--quiet")
    monkeypatch.undo()
    assert code == 2 and "disk full" in err
    assert _count(capsys, index, minilm_path) == before  # the old index is whole
    code, _, err = run(capsys, "index", docs, "--model", minilm_path, "--store", index,
                       "--recreate", "--quiet")
    assert code == 0, err
    assert _count(capsys, index, minilm_path) == 3


def test_duplicate_ids_are_named(tmp_path, minilm_path, capsys):
    docs = tmp_path / "dup.jsonl"
    docs.write_text('{"id": 7, "text": "sette"}\n{"id": "7", "text": "altro sette"}\n',
                    encoding="utf-8")
    code, _, err = run(capsys, "index", docs, "--model", minilm_path, "--store",
                       f"memory:{tmp_path / 'i'}", "--quiet")
    assert code == 2 and "positions 0 and 1 have the same id '7'" in err


def test_path_traversal_in_collection_is_refused(tmp_path, minilm_path, capsys):
    docs = tmp_path / "d.txt"
    docs.write_text("uno\n", encoding="utf-8")
    code, _, err = run(capsys, "index", docs, "--model", minilm_path, "--store",
                       f"memory:{tmp_path / 'root'}", "--collection", "../v", "--quiet")
    assert code == 2 and "invalid collection name '../v'" in err
    assert not (tmp_path / "v").exists()


def test_search_never_creates_and_lists_the_collections(tmp_path, index, minilm_path, capsys):
    code, _, err = run(capsys, "search", "x", "--model", minilm_path, "--store",
                       f"memory:{tmp_path / 'typo'}")
    assert code == 2 and "no such folder or file" in err and "typo" in err
    assert not (tmp_path / "typo").exists()
    code, _, err = run(capsys, "search", "x", "--model", minilm_path, "--store", index,
                       "--collection", "bertin")
    assert code == 2 and "'bertin' does not exist" in err and "'bertino'" in err
    assert not (tmp_path / "idx" / "bertin").exists()


def test_stamp_mismatch_says_what_the_collection_was_built_with(index, minilm_path, capsys):
    code, _, err = run(capsys, "search", "x", "--model", minilm_path, "--store", index,
                       "--dim", "64")
    assert code == 2 and "was built with" in err and "--dim 128" in err
    assert "recreate" not in err.lower()


def test_stamp_advice_names_the_hybrid_option(tmp_path, index, minilm_path, capsys):
    docs = tmp_path / "d.jsonl"
    docs.write_text('{"text": "Roma è la capitale."}\n', encoding="utf-8")
    store = index.replace("idx", "idx2")
    code, _, err = run(capsys, "index", docs, "--model", minilm_path, "--store", store,
                       "--hybrid", "--quiet")
    assert code == 0, err
    # the collection's stamp decides: hybrid without the flag (--help says so)
    code, out, err = run(capsys, "search", "roma", "--model", minilm_path, "--store", store,
                         "--json")
    assert code == 0 and json.loads(out)[0]["text"] == "Roma è la capitale.", err
    code, _, err = run(capsys, "index", docs, "--model", minilm_path, "--store", store,
                       "--quiet")
    assert code == 2 and "was built with --dim 128 --hybrid" in err
    assert "--model" not in err  # the model is the same
    code, _, err = run(capsys, "search", "roma", "--model", minilm_path, "--store", index,
                       "--mode", "lexical")
    assert code == 2 and "was indexed without --hybrid" in err and "--mode dense" in err
    code, _, err = run(capsys, "index", docs, "--model", minilm_path, "--store", index,
                       "--hybrid", "--quiet")
    assert code == 2 and "index into it without --hybrid" in err and "--recreate" in err


def test_bad_filters_are_reported_before_the_model_loads(tmp_path, capsys):
    missing_model = tmp_path / "no-such-model"  # loading it would fail: the filter fails first
    for flt, message in [("x", "--filter is not valid JSON"),
                         ('["a"]', "--filter must be a JSON object, got a JSON list"),
                         ('{"a": {"$regex": "x"}}', "unknown operator '$regex'")]:
        code, _, err = run(capsys, "search", "q", "--model", missing_model, "--filter", flt,
                           "--store", f"memory:{tmp_path}")
        assert code == 2 and message in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_in_ram_store_warns_that_nothing_is_kept(tmp_path, minilm_path, capsys):
    docs = tmp_path / "d.txt"
    docs.write_text("uno\ndue\n", encoding="utf-8")
    code, _, err = run(capsys, "index", docs, "--model", minilm_path, "--store", "memory",
                       "--quiet")
    assert code == 0 and "throws it away" in err and "memory:DIR" in err


def test_milvus_path_without_db_is_one_line(tmp_path, capsys):
    if importlib.util.find_spec("pymilvus") is None:
        pytest.skip("pymilvus is not installed")
    code, _, err = run(capsys, "search", "q", "--store", "milvus:./m", "--model",
                       tmp_path / "none")
    assert code == 2 and "neither a Milvus Lite file" in err
    assert len(err.strip().splitlines()) == 1


def test_unreachable_qdrant_server_is_one_line(tmp_path, minilm_path, capsys, monkeypatch):
    if importlib.util.find_spec("qdrant_client") is None:
        pytest.skip("qdrant-client is not installed")
    from bertino_rag.stores import qdrant

    monkeypatch.setattr(qdrant.QdrantStore, "_retry_base", 0.01, raising=False)
    monkeypatch.setenv("QDRANT_API_KEY", "SEKRET")
    code, _, err = run(capsys, "search", "q", "--model", minilm_path, "--store",
                       "qdrant:http://127.0.0.1:1")
    lines = [x for x in err.strip().splitlines() if not x.startswith("warning:")]
    assert code == 2 and len(lines) == 1, err
    assert "cannot reach Qdrant at http://127.0.0.1:1" in lines[0] and "SEKRET" not in err


def test_unreachable_milvus_server_is_one_line(tmp_path, minilm_path, capsys, monkeypatch):
    if importlib.util.find_spec("pymilvus") is None:
        pytest.skip("pymilvus is not installed")
    monkeypatch.setenv("MILVUS_TOKEN", "SEKRET")
    code, _, err = run(capsys, "search", "q", "--model", minilm_path, "--store",
                       "milvus:http://127.0.0.1:1")
    lines = [x for x in err.strip().splitlines() if not x.startswith("warning:")]
    assert code == 2 and len(lines) == 1, err
    assert "cannot reach Milvus at http://127.0.0.1:1" in lines[0] and "SEKRET" not in err


def test_latin1_input_is_detected_and_read(tmp_path, minilm_path, capsys):
    docs = tmp_path / "latino.txt"
    docs.write_bytes("prima riga\nperché no, disse il cavaliere.\n".encode("latin-1"))
    store = f"memory:{tmp_path / 'i'}"
    code, out, err = run(capsys, "index", docs, "--model", minilm_path, "--store", store,
                         "--quiet", "--lines", "--json")
    assert code == 0 and json.loads(out)["count"] == 2, err
    code, out, _ = run(capsys, "search", "perché", "--model", minilm_path, "--store", store,
                       "--json", "-k", "2")
    assert code == 0 and any("perché no" in h["text"] for h in json.loads(out))


def test_beir_corpus_file_keeps_its_title_for_filters(tmp_path, minilm_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "title": "Roma", "text": "Il Colosseo è a Roma."}\n'
                      '{"_id": "b", "title": "Napoli", "text": "La pizza nasce a Napoli."}\n',
                      encoding="utf-8")
    store = f"memory:{tmp_path / 'i'}"
    assert run(capsys, "index", corpus, "--model", minilm_path, "--store", store,
               "--quiet")[0] == 0
    code, out, _ = run(capsys, "search", "monumento", "--model", minilm_path, "--store", store,
                       "--filter", '{"title": "Roma"}', "--json")
    hits = json.loads(out)
    assert code == 0 and [h["id"] for h in hits] == ["a"]
    assert hits[0]["metadata"]["title"] == "Roma"


def test_cli_warnings_are_one_line_without_python_source(tmp_path, minilm_path, capsys):
    docs = tmp_path / "lungo.txt"
    docs.write_text(" ".join(["parola"] * 600) + "\nbreve\n", encoding="utf-8")
    code, _, err = run(capsys, "index", docs, "--model", minilm_path, "--store",
                       f"memory:{tmp_path / 'i'}", "--quiet", "--lines", "--no-chunking")
    assert code == 0 and "warning: 1 of 2 documents are longer" in err
    assert "cli.py" not in err and "retriever.index(" not in err


def test_recreate_keeps_the_index_when_a_chunk_breaks_the_store_limit(tmp_path, minilm_path,
                                                                      capsys):
    store = f"milvus:{tmp_path / 'm.db'}"
    good = tmp_path / "roma.txt"
    good.write_text("Roma è la capitale d'Italia.", encoding="utf-8")
    code, _, err = run(capsys, "index", good, "--model", minilm_path, "--store", store,
                       "--quiet")
    assert code == 0, err
    # 80,000 bytes the model reads as one unknown token: one chunk, over Milvus's 65,535
    blob = tmp_path / "blob.txt"
    blob.write_text("è" * 40_000, encoding="utf-8")
    code, _, err = run(capsys, "index", blob, "--model", minilm_path, "--store", store,
                       "--quiet", "--recreate")
    assert code == 2 and "nothing was changed" in err and "80000 bytes of text" in err
    assert str(blob) in err
    code, out, _ = run(capsys, "search", "capitale", "--model", minilm_path, "--store", store,
                       "--json")
    assert code == 0 and [h["text"] for h in json.loads(out)] == ["Roma è la capitale d'Italia."]


def test_eval_problems_are_reported_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import sys

    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "text": "uno"}\n', encoding="utf-8")
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "uno?"}\n', encoding="utf-8")
    (beir / "qrels").mkdir()
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n",
                                             encoding="utf-8")
    missing_model = tmp_path / "no-such-model"  # loading it would fail: the check comes first
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    code, _, err = run(capsys, "eval", beir, "--model", missing_model, "--plot",
                       tmp_path / "p.png", "--quiet")
    assert code == 2 and "matplotlib is not installed" in err
    assert "pip install 'bertino-rag[eval]'" in err and "no-such-model" not in err
    monkeypatch.delitem(sys.modules, "matplotlib")
    code, _, err = run(capsys, "eval", beir, "--model", missing_model, "--json",
                       tmp_path / "no" / "dir" / "r.json", "--quiet")
    assert code == 2 and "--json" in err and "does not exist" in err
    assert "no-such-model" not in err
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    code, _, err = run(capsys, "eval", beir, "--model", missing_model, "--store",
                       f"milvus:{tmp_path / 'm.db'}", "--quiet")
    assert code == 2 and "bertino-rag[milvus]" in err and "no-such-model" not in err
