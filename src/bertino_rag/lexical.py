"""Lexical search: one text analyzer (Italian by default) and the BM25 formula every store uses.

"Lexical" must mean the same thing on every store, so the analysis lives here, once, and the
collection's :class:`~bertino_rag.types.Stamp` records :attr:`Analyzer.spec`: a collection
indexed with one analyzer is never queried with another (the stamp check refuses it).

Analysis of a text, in order:

1. repair of broken accents: UTF-8 read as Latin-1/cp1252, with the ``Ã`` lead byte often
   turned into ``à`` by a later accent fix (squad-it has ``Amazà´nica`` for ``Amazônica``,
   ``àˆ`` for ``È``, ``cosà¬`` for ``così``). No library repairs the ``à`` variant (ftfy fixes
   ``Ã´`` only), hence the small rule in :func:`fold_broken_accents`. It runs before NFKC,
   which would turn the ``´`` into a space and ``³`` into ``3``;
2. Unicode NFKC (ligatures, full-width forms, non-breaking spaces become plain characters);
3. lowercasing;
4. tokens: runs of letters, or numbers (``7.000.000`` is one token, ``7000000``; ``1,1`` stays
   ``1,1``); every apostrophe (``'``, ``’``, ``‘``, ``ʼ``, backtick, acute accent) separates
   tokens, which splits elisions: ``dell'acqua`` gives ``dell`` and ``acqua``;
5. stopwords: the Snowball list of the language (shipped by bm25s), plus the elided particles
   (``d``, ``quest``...) that the list lacks, in both accent spellings (``perché``/``perchè``);
6. the Snowball stemmer of the language (PyStemmer); numbers are not stemmed.

BM25 is the Lucene variant with bm25s's defaults (``k1=1.5``, ``b=0.75``): the same scores as
``bm25s.BM25(method="lucene")``, and the IDF that Qdrant's ``Modifier.IDF`` applies.

Stores without a vocabulary table (Qdrant, Qdrant Edge, Milvus) address a term by
:func:`term_index`, and sparse-vector stores hold each document as :func:`document_vector`:
the BM25 term-frequency part, with the IDF applied by the engine at query time.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from ._deps import require

__all__ = [
    "BM25",
    "Analyzer",
    "EmptyQueryError",
    "LexicalUnavailableError",
    "document_vector",
    "fold_broken_accents",
    "mean_length",
    "query_vector",
    "term_index",
    "term_token",
]

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


class LexicalUnavailableError(ValueError):
    """Lexical or hybrid search asked of a collection built without the lexical index."""


class EmptyQueryError(ValueError):
    """A lexical query with no searchable term left after analysis (stopwords, punctuation)."""


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


@dataclass(frozen=True)
class BM25:
    """The BM25 formula (Lucene variant) on corpus statistics the store keeps up to date."""

    k1: float = 1.5
    b: float = 0.75

    def __post_init__(self) -> None:
        if not (self.k1 >= 0 and 0 <= self.b <= 1):
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={self.k1}, b={self.b}")

    @property
    def spec(self) -> str:
        return f"bm25-lucene/k1={self.k1:g}/b={self.b:g}"

    @staticmethod
    def idf(df: np.ndarray | float, n_docs: int) -> Any:
        """``log(1 + (N - df + 0.5) / (df + 0.5))``, as bm25s (Lucene) and Qdrant compute it."""
        return np.log1p((n_docs - np.asarray(df, dtype=np.float64) + 0.5)
                        / (np.asarray(df, dtype=np.float64) + 0.5))

    def tf_part(self, tf: np.ndarray, doc_len: np.ndarray, avg_len: float) -> np.ndarray:
        """The saturated term frequency, ``tf / (tf + k1 (1 - b + b dl / avgdl))``."""
        avg = avg_len if avg_len > 0 else 1.0
        return tf / (tf + self.k1 * (1.0 - self.b + self.b * doc_len / avg))


def lexical_spec(analyzer: Analyzer, bm25: BM25) -> str:
    """What the stamp records for a lexical index: the analyzer and the BM25 parameters."""
    return f"{analyzer.spec};{bm25.spec}"


def parse_lexical_spec(spec: str) -> tuple[Analyzer, BM25]:
    """The analyzer and BM25 parameters a stamp's ``lexical`` field names."""
    try:
        analyzer_spec, bm25_spec = spec.split(";")
        name, k1, b = bm25_spec.split("/")
        if name != "bm25-lucene":
            raise ValueError(name)
        bm25 = BM25(k1=float(k1.removeprefix("k1=")), b=float(b.removeprefix("b=")))
    except ValueError as err:
        raise ValueError(
            f"lexical index {spec!r} is not one this version of bertino-rag knows; "
            "re-index the collection with recreate=True"
        ) from err
    return Analyzer.from_spec(analyzer_spec), bm25


def query_terms(analyzer: Analyzer, queries: Sequence[str]) -> list[list[str]]:
    """The distinct terms of each query, in first-seen order."""
    return [list(dict.fromkeys(analyzer.terms(q))) for q in queries]


# ---------------------------------------------------------------------- sparse vectors
@lru_cache(maxsize=1 << 18)
def term_index(term: str) -> int:
    """The sparse-vector dimension of a term: the first 4 bytes of its BLAKE2b digest, an
    unsigned 32-bit int (the index type of Qdrant's and Milvus's sparse vectors).

    A hash needs no vocabulary shared between processes. Two terms collide with probability
    2**-32 per pair: about one pair in a vocabulary of 90,000 terms, where they count as one
    term (their document frequencies add up).
    """
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "little")


def term_token(term: str) -> str:
    """:func:`term_index` as a word (``t`` and 8 hex digits) that any word tokenizer keeps
    whole: how a pre-analyzed text reaches an engine that tokenizes it again (Milvus BM25)."""
    return f"t{term_index(term):08x}"


def mean_length(counts: Sequence[dict[str, int]]) -> float:
    """The mean length in terms of analyzed documents (the ``avgdl`` a sparse store fixes)."""
    if not counts:
        return 0.0
    return float(sum(sum(c.values()) for c in counts)) / len(counts)


def _by_index(counts: dict[str, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for term, c in counts.items():
        i = term_index(term)
        out[i] = out.get(i, 0) + c
    return out


def document_vector(counts: dict[str, int], bm25: BM25, avgdl: float
                    ) -> tuple[list[int], list[float]]:
    """A document as a sparse vector ``(indices, values)``: per term, the BM25 term-frequency
    part :meth:`BM25.tf_part` with the length normalization of ``avgdl``, fixed when written.

    The dot product with :func:`query_vector`, with each dimension weighted by
    :meth:`BM25.idf` (Qdrant's ``Modifier.IDF``, live document frequencies), is the document's
    BM25 score; it equals the exact score when ``avgdl`` is the collection's mean length.
    """
    tf = _by_index(counts)
    if not tf:
        return [], []
    indices = sorted(tf)
    length = float(sum(counts.values()))
    values = bm25.tf_part(np.asarray([tf[i] for i in indices], dtype=np.float64),
                          np.float64(length), avgdl)
    return indices, [float(v) for v in values]


def query_vector(terms: Sequence[str]) -> tuple[list[int], list[float]]:
    """A query's distinct terms as a sparse vector: weight 1 per term (a repeated term counts
    once, as in :func:`query_terms`)."""
    indices = sorted({term_index(t) for t in terms})
    return indices, [1.0] * len(indices)
