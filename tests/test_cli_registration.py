"""How the command line is put together: every subcommand registered explicitly, one encoder
argument group shared by every subcommand that loads a model, a missing extra named when its
subcommand runs."""

from __future__ import annotations

import sys

import pytest

from bertino_rag.cli import build_parser, main

ENCODER_FLAGS = ["--model", "some/model", "--backend", "onnx", "--quantize", "int8",
                 "--calibration", "calib.txt", "--batch-size", "8", "--device", "cpu"]
ENCODER_VALUES = {"model": "some/model", "backend": "onnx", "quantize": "int8",
                  "calibration": "calib.txt", "batch_size": 8, "device": "cpu"}


def _subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)


def test_every_subcommand_is_registered():
    assert _subcommands() == {"index", "search", "eval", "train", "export-e5", "serve",
                              "migrate", "mcp"}


@pytest.mark.parametrize("argv", [["index", "docs"], ["search", "query"], ["serve"],
                                  ["eval", "beir"]])
def test_every_model_loading_subcommand_reads_the_same_encoder_flags(argv):
    args = build_parser().parse_args([*argv, *ENCODER_FLAGS])
    assert {k: getattr(args, k) for k in ENCODER_VALUES} == ENCODER_VALUES
    defaults = build_parser().parse_args(argv)
    assert (defaults.model, defaults.backend, defaults.quantize, defaults.batch_size,
            defaults.device) == (None, "torch", None, None, None)


def test_bad_batch_size_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search", "q", "--batch-size", "0"])
    assert "expected a positive integer, got '0'" in capsys.readouterr().err


def test_a_broken_subcommand_module_fails_loudly(monkeypatch):
    # None in sys.modules makes the import raise ImportError: it used to be swallowed, and
    # `bertino-rag eval` silently vanished from the command line.
    monkeypatch.setitem(sys.modules, "bertino_rag.cli.eval", None)
    with pytest.raises(ImportError):
        build_parser()


def test_a_missing_extra_is_named_when_its_subcommand_runs(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert "serve" in _subcommands()
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bertino-rag serve: error: uvicorn is not installed")
    assert "pip install 'bertino-rag[serve]'" in err
    assert len(err.strip().splitlines()) == 1


def test_a_missing_train_extra_is_named_when_train_runs(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "datasets", None)
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert "bertino-rag train: error: datasets is not installed" in err
    assert "pip install 'bertino-rag[train]'" in err
