"""``bertino-rag eval --modes ... --json``: one encoding, one report holding every mode
(issue 28: the report was written before the modes ran, and the corpus encoded twice)."""

from __future__ import annotations

import collections
import importlib.util
import json

import pytest

from bertino_rag.cli import main
from bertino_rag.encoder import Encoder

from .conftest import SQUAD


def test_eval_modes_encode_once_and_report_every_mode(tmp_path, minilm_path, capsys,
                                                      monkeypatch):
    if not SQUAD.exists():
        pytest.skip(f"squad-it-dev not found at {SQUAD}")
    seen: collections.Counter[tuple[str, str]] = collections.Counter()
    real = Encoder.encode_full

    def counted(self, texts, *args, kind="document", **kwargs):
        seen.update((kind, t) for t in texts)
        return real(self, texts, *args, kind=kind, **kwargs)

    monkeypatch.setattr(Encoder, "encode_full", counted)
    report, md = tmp_path / "report.json", tmp_path / "report.md"
    plot = ["--plot", str(tmp_path / "p.png")] if importlib.util.find_spec("matplotlib") else []
    code = main(["eval", str(SQUAD), "--model", minilm_path, "--dims", "128", "--rescore-k",
                 "none", "--max-queries", "8", "--max-docs", "16", "--latency-queries", "0",
                 "--modes", "dense,lexical,hybrid", "--json", str(report), "--markdown",
                 str(md), *plot])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert seen and max(seen.values()) == 1, seen.most_common(3)  # before: every text twice
    data = json.loads(report.read_text(encoding="utf-8"))
    assert [(m["mode"], m["dim"]) for m in data["modes"]] == [
        ("dense", 128), ("lexical", None), ("hybrid", 128)]
    assert all(0 <= m["ndcg@10"] <= 1 for m in data["modes"])
    assert data["modes"][2]["fusion"]["method"] in ("minmax", "rrf")
    assert "dim_128" in data["configurations"]
    assert "## Search modes" in md.read_text(encoding="utf-8")
    phases = [x for x in captured.err.splitlines() if x.startswith("eval: ")]
    assert len(phases) == 3 and "search modes" in phases[2], captured.err
