"""The text analyzer of lexical search (Italian by default): see :mod:`bertino_rag.lexical`."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .._deps import require

__all__ = ["ANALYZER_VERSION", "Analyzer", "fold_broken_accents"]

#: the version of the analysis rules; bump it when a change would give other tokens
ANALYZER_VERSION = 1

# bm25s.stopwords constants per language (Snowball lists) and PyStemmer's algorithm names
_LANGUAGES = {
    "italian": "STOPWORDS_ITALIAN",
    "english": "STOPWORDS_EN",
    "french": "STOPWORDS_FRENCH",
    "german": "STOPWORDS_GERMAN",
    "spanish": "STOPWORDS_SPANISH",
    "portuguese": "STOPWORDS_PORTUGUESE",
    "dutch": "STOPWORDS_DUTCH",
}
# elided forms (the part before an apostrophe) that Snowball's Italian list lacks
_ELIDED_IT = ("d", "m", "t", "s", "v", "n", "quest", "quell", "ch", "nessun", "qualcun")

# A broken accent: the UTF-8 lead byte 0xC3 shown as "Ã" (or "à") followed by a continuation
# byte shown as a Latin-1/cp1252 character. Excluded second characters, because they follow a
# real "à" in Italian text: no-break space, « » ° · and the cp1252 quotes and dashes.
_CONT = "".join(chr(c) for c in range(0x80, 0xC0) if c not in (0xA0, 0xAB, 0xBB, 0xB0, 0xB7))
_CONT += "ˆ‰Š‹ŒŽšœžŸ€"
_BROKEN = re.compile(f"[Ãà]([{re.escape(_CONT)}])")
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+")
_THOUSANDS = re.compile(r"^\d{1,3}(?:\.\d{3})+$")


def _cont_byte(ch: str) -> int:
    code = ord(ch)
    if code < 0x100:
        return code
    return ch.encode("cp1252")[0]


def fold_broken_accents(text: str) -> str:
    """Repair accented letters broken by a UTF-8 → Latin-1/cp1252 round trip.

    >>> fold_broken_accents("Floresta Amazà´nica, cosà¬, àˆ")
    'Floresta Amazônica, così, È'
    """
    if "Ã" not in text and "à" not in text:
        return text

    def repair(m: re.Match[str]) -> str:
        try:
            return bytes([0xC3, _cont_byte(m.group(1))]).decode("utf-8")
        except (UnicodeDecodeError, UnicodeEncodeError):
            return m.group(0)

    return _BROKEN.sub(repair, text)


def _accent_variants(word: str) -> set[str]:
    acute_to_grave = str.maketrans("áéíóú", "àèìòù")
    grave_to_acute = str.maketrans("àèìòù", "áéíóú")
    return {word, word.translate(acute_to_grave), word.translate(grave_to_acute)}


@dataclass(frozen=True)
class Analyzer:
    """Text → terms, for indexing and for queries alike.

    Args:
        language: Snowball language of the stopwords and the stemmer (``"italian"``).
        stopwords: drop the language's stopwords.
        stemmer: reduce words to their Snowball stem (``gatti`` → ``gatt``).
        fold_accents: repair broken accents (see :func:`fold_broken_accents`).

    Example:
        >>> Analyzer().terms("Dell'acqua e dei gatti, nel 2012")  # doctest: +SKIP
        ['acqu', 'gatt', '2012']
    """

    language: str = "italian"
    stopwords: bool = True
    stemmer: bool = True
    fold_accents: bool = True

    def __post_init__(self) -> None:
        if self.language not in _LANGUAGES:
            raise ValueError(
                f"unsupported analyzer language {self.language!r}; choose one of "
                f"{sorted(_LANGUAGES)}"
            )
        if self.stemmer:
            self._stemmer  # noqa: B018 - fails now, with the extra to install, when missing
        if self.stopwords:
            self._stopwords  # noqa: B018

    @property
    def spec(self) -> str:
        """A stable description, recorded in the collection stamp."""
        parts = [
            f"v{ANALYZER_VERSION}",
            self.language,
            "nfkc",
            "fold" if self.fold_accents else "nofold",
            "lower",
            "stop" if self.stopwords else "nostop",
            "stem" if self.stemmer else "nostem",
        ]
        return "/".join(parts)

    @classmethod
    def from_spec(cls, spec: str) -> Analyzer:
        """The analyzer a stamp describes."""
        parts = spec.split("/")
        if len(parts) != 7 or parts[0] != f"v{ANALYZER_VERSION}":
            raise ValueError(
                f"analyzer {spec!r} is not one this version of bertino-rag knows "
                f"(v{ANALYZER_VERSION}); re-index the collection with recreate=True"
            )
        return cls(
            language=parts[1],
            fold_accents=parts[3] == "fold",
            stopwords=parts[5] == "stop",
            stemmer=parts[6] == "stem",
        )

    @cached_property
    def _stemmer(self) -> Any:
        stemmer_mod = require("Stemmer", "lexical")
        return stemmer_mod.Stemmer(self.language)

    @cached_property
    def _stopwords(self) -> frozenset[str]:
        if not self.stopwords:
            return frozenset()
        words = getattr(require("bm25s.stopwords", "lexical"), _LANGUAGES[self.language])
        extra = _ELIDED_IT if self.language == "italian" else ()
        return frozenset(v for w in (*words, *extra) for v in _accent_variants(w))

    def terms(self, text: str) -> list[str]:
        """The terms of ``text``, in order (repeated terms repeated)."""
        if self.fold_accents:  # before NFKC, which would turn "´" into a space and "³" into "3"
            text = fold_broken_accents(text)
        text = unicodedata.normalize("NFKC", text)
        stop = self._stopwords
        words: list[str] = []
        numbers: dict[int, str] = {}
        for tok in _TOKEN.findall(text.lower()):
            if tok[0].isdigit():
                numbers[len(words)] = tok.replace(".", "") if _THOUSANDS.match(tok) else tok
                words.append("")
            elif tok not in stop:
                words.append(tok)
        if not self.stemmer:
            return [numbers.get(i, w) for i, w in enumerate(words)]
        stems = self._stemmer.stemWords(words)
        return [numbers.get(i, s) for i, s in enumerate(stems)]

    def counts(self, text: str) -> dict[str, int]:
        """Term frequencies of ``text``."""
        return dict(Counter(self.terms(text)))

    def counts_batch(self, texts: Iterable[str]) -> list[dict[str, int]]:
        return [self.counts(t) for t in texts]
