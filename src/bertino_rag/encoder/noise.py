"""A false warning of transformers 4.57.3+ about local non-Mistral tokenizers, filtered out.

transformers 4.57.3 to 4.57.x checks every *local* tokenizer folder for the Mistral regex bug
and, when the folder's ``config.json`` was written by one of those same versions, warns
"The tokenizer you are loading from '...' with an incorrect regex pattern" whatever the model
type. Every model saved here (an ``export-e5`` folder, a fine-tuned model, a trained reranker)
is saved by the installed transformers, so each load would print it. The filter drops the
record only when the folder it names holds a ``config.json`` whose ``model_type`` is not one of
the Mistral family the check exists for; any other record passes untouched.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

_LOGGER = "transformers.tokenization_utils_base"
_MISTRAL_TYPES = frozenset({"mistral", "mistral3", "voxtral", "ministral", "pixtral"})
_FOLDER = re.compile(
    r"The tokenizer you are loading from '(?P<path>[^']+)' with an incorrect regex"
)


class _NotMistralRegexWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        found = _FOLDER.match(str(record.msg))
        if found is None:
            return True
        try:
            config = json.loads((Path(found["path"]) / "config.json").read_text("utf-8"))
        except (OSError, ValueError):
            return True
        return config.get("model_type") in _MISTRAL_TYPES


def install() -> None:
    """Adds the filter once to transformers' tokenizer logger (idempotent)."""
    logger = logging.getLogger(_LOGGER)
    if not any(isinstance(f, _NotMistralRegexWarning) for f in logger.filters):
        logger.addFilter(_NotMistralRegexWarning())
