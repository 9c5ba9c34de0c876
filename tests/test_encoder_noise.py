"""transformers 4.57.3+'s false "incorrect regex pattern" warning on local non-Mistral folders."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import bertino_rag.encoder  # noqa: F401  (installs the filter)
from bertino_rag.encoder.noise import _NotMistralRegexWarning

MESSAGE = ("The tokenizer you are loading from '{}' with an incorrect regex pattern: "
           "https://huggingface.co/mistralai/... You should set the `fix_mistral_regex=True` flag")


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("transformers.tokenization_utils_base", logging.WARNING, __file__, 1,
                             msg, None, None)


def _folder(tmp_path: Path, model_type: str) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    return tmp_path


def test_the_warning_is_dropped_for_a_bert_folder_and_kept_for_mistral(tmp_path: Path) -> None:
    f = _NotMistralRegexWarning()
    (tmp_path / "b").mkdir()
    (tmp_path / "m").mkdir()
    assert not f.filter(_record(MESSAGE.format(_folder(tmp_path / "b", "bert"))))
    assert f.filter(_record(MESSAGE.format(_folder(tmp_path / "m", "mistral"))))
    # A folder without a readable config, and every other record, pass untouched.
    assert f.filter(_record(MESSAGE.format(tmp_path / "nothing")))
    assert f.filter(_record("some other warning"))

