"""The command line on a new user's path (issue 28): the collection's stamp decides how it is
searched, a missing collection or an unreachable server is one line before any model loads."""

from __future__ import annotations

import importlib
import importlib.util
import json
import time

import pytest

from bertino_rag.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def docs(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "roma", "text": "Roma è la capitale d\'Italia."}\n'
                    '{"id": "po", "text": "Il Po attraversa la pianura padana."}\n',
                    encoding="utf-8")
    return path


def test_search_opens_the_collection_as_it_was_built(tmp_path, docs, minilm_path, capsys):
    store = f"memory:{tmp_path / 'idx'}"
    code, _, err = run(capsys, "index", docs, "--model", minilm_path, "--store", store,
                       "--hybrid", "--dim", "64", "--no-rescore", "--quiet")
    assert code == 0, err
    # before: a stamp mismatch unless --hybrid --dim 64 --no-rescore were given again
    code, out, err = run(capsys, "search", "capitale", "--model", minilm_path, "--store", store,
                         "--json", "--mode", "lexical")
    assert code == 0, err
    assert [h["id"] for h in json.loads(out)] == ["roma"]
    code, out, err = run(capsys, "search", "fiume della pianura", "--model", minilm_path,
                         "--store", store, "--json", "-k", "1")
    assert code == 0 and json.loads(out)[0]["id"] == "po", err
    # a flag that asks for something else is still a mismatch, naming what was built
    code, _, err = run(capsys, "search", "Roma", "--model", minilm_path, "--store", store,
                       "--dim", "128")
    assert code == 2 and "--dim 64 --no-rescore --hybrid" in err


def test_no_rescore_is_a_search_option_and_named_in_mismatches(tmp_path, docs, minilm_path,
                                                              capsys):
    store = f"memory:{tmp_path / 'idx'}"
    assert run(capsys, "index", docs, "--model", minilm_path, "--store", store,
               "--quiet")[0] == 0
    code, out, err = run(capsys, "search", "capitale d'Italia", "--model", minilm_path,
                         "--store", store, "--no-rescore", "--json", "-k", "1")
    assert code == 0 and json.loads(out)[0]["id"] == "roma", err
    code, _, err = run(capsys, "index", docs, "--model", minilm_path, "--store", store,
                       "--no-rescore", "--quiet")
    assert code == 2 and "without --no-rescore" in err, err


def test_a_missing_collection_is_reported_before_the_model_loads(tmp_path, docs, minilm_path,
                                                                 capsys):
    store = f"memory:{tmp_path / 'idx'}"
    assert run(capsys, "index", docs, "--model", minilm_path, "--store", store,
               "--quiet")[0] == 0
    started = time.perf_counter()
    # a model path that does not exist: loading it would be the error if it came first
    code, _, err = run(capsys, "search", "Roma", "--model", tmp_path / "no-model",
                       "--store", store, "--collection", "bertin")
    assert code == 2 and "'bertin' does not exist" in err and "'bertino'" in err
    assert len(err.strip().splitlines()) == 1 and time.perf_counter() - started < 5


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_a_refused_connection_is_one_line_at_once(tmp_path, capsys, monkeypatch):
    if importlib.util.find_spec("qdrant_client") is None:
        pytest.skip("qdrant-client is not installed")
    monkeypatch.setenv("QDRANT_API_KEY", "SEKRET")
    started = time.perf_counter()
    # before: the model loaded, then four retries with backoff and a client warning (41 s)
    code, _, err = run(capsys, "search", "Roma", "--model", tmp_path / "no-model", "--store",
                       "qdrant:http://127.0.0.1:1")
    took = time.perf_counter() - started
    lines = [x for x in err.strip().splitlines()
             if x != "warning: Api key is used with an insecure connection."]  # the client's
    assert code == 2 and len(lines) == 1, err
    assert "cannot reach Qdrant at http://127.0.0.1:1" in err and "Connection refused" in err
    assert "retries" not in err and "SEKRET" not in err and took < 5


def test_a_lone_surrogate_query_is_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "search", "\ud800 Roma", "--model", tmp_path / "no-model",
                       "--store", f"memory:{tmp_path}")
    assert code == 2 and "lone surrogate" in err and len(err.strip().splitlines()) == 1


def test_ctrl_c_while_indexing_is_one_line_and_keeps_what_was_written(
        tmp_path, minilm_path, capsys, monkeypatch):
    cli = importlib.import_module("bertino_rag.cli.main")
    from bertino_rag.encoder import Encoder

    path = tmp_path / "d.txt"
    path.write_text("\n".join(f"Frase numero {i} sul fiume Po." for i in range(20)),
                    encoding="utf-8")
    store = f"memory:{tmp_path / 'idx'}"
    make = cli._retriever

    def small_batches(*args, **kwargs):
        r = make(*args, **kwargs)
        r.write_batch_size = 4
        return r

    calls = {"n": 0}
    encode = Encoder.encode

    def interrupted(self, texts, *args, kind="document", **kwargs):
        if kind == "document":
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return encode(self, texts, *args, kind=kind, **kwargs)

    monkeypatch.setattr(cli, "_retriever", small_batches)
    monkeypatch.setattr(Encoder, "encode", interrupted)
    code, _, err = run(capsys, "index", path, "--lines", "--model", minilm_path,
                       "--store", store, "--quiet")
    assert code == 130 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted; 8 entries" in lines[0], err
    assert "run the same command again to finish" in lines[0]
    monkeypatch.setattr(Encoder, "encode", encode)
    code, out, err = run(capsys, "index", path, "--lines", "--model", minilm_path,
                         "--store", store, "--quiet", "--json")
    assert code == 0 and json.loads(out)["count"] == 20, err


def test_grouped_hits_name_their_chunks_not_the_group_size(tmp_path, squad_slice, minilm_path,
                                                          capsys):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(d, ensure_ascii=False)
                              for d in squad_slice["docs"][:3]), encoding="utf-8")
    store = f"memory:{tmp_path / 'idx'}"
    code, _, err = run(capsys, "index", path, "--model", minilm_path, "--store", store,
                       "--max-tokens", "48", "--quiet")
    assert code == 0, err
    query = squad_slice["queries"][0]
    common = ["search", query, "--model", minilm_path, "--store", store, "--group-by",
              "document", "-k", "3"]
    code, out, err = run(capsys, *common, "--json")
    assert code == 0, err
    hits = json.loads(out)
    assert any(len(h["chunks"]) > 1 for h in hits)
    code, out, _ = run(capsys, *common)
    assert "matching chunks" not in out  # before: "3 matching chunks" on every document
    for rank, hit in enumerate(hits, 1):
        at = [c.rsplit("#", 1)[-1].split("-")[0] for c in hit["chunks"]]
        line = next(x for x in out.splitlines() if x.startswith(f"{rank:>2}. "))
        assert f"chunk{'s' if len(at) > 1 else ''} {', '.join(at)}" in line, (line, at)


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_serve_opens_the_collection_as_it_was_built(tmp_path, docs, minilm_path, capsys,
                                                    monkeypatch):
    pytest.importorskip("uvicorn")
    import uvicorn

    store = f"memory:{tmp_path / 'idx'}"
    assert run(capsys, "index", docs, "--model", minilm_path, "--store", store, "--hybrid",
               "--dim", "64", "--quiet")[0] == 0
    served = {}

    def fake_run(app, **kwargs):  # the app as uvicorn would get it, not served
        retriever = app.state.service.retriever
        served.update(dim=retriever.dim, lexical=retriever.store.has_lexical,
                      count=retriever.count())
        retriever.close()

    monkeypatch.setattr(uvicorn, "run", fake_run)
    code, _, err = run(capsys, "serve", "--model", minilm_path, "--store", store)
    assert code == 0, err
    assert served == {"dim": 64, "lexical": True, "count": 2}
    # a refused connection: one line, before the model loads
    code, _, err = run(capsys, "serve", "--model", tmp_path / "no-model", "--store",
                       "qdrant:http://127.0.0.1:1")
    assert code == 2 and "cannot reach Qdrant" in err


def test_mcp_read_only_names_a_missing_collection_before_the_model_loads(tmp_path, docs,
                                                                         minilm_path, capsys):
    pytest.importorskip("mcp")
    store = f"memory:{tmp_path / 'idx'}"
    assert run(capsys, "index", docs, "--model", minilm_path, "--store", store,
               "--quiet")[0] == 0
    code, _, err = run(capsys, "mcp", "--read-only", "--model", tmp_path / "no-model",
                       "--store", store, "--collection", "manca")
    assert code == 2 and "'manca' does not exist" in err and "'bertino'" in err
