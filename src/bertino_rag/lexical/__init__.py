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

from ..errors import EmptyQueryError, LexicalUnavailableError
from .analyzer import ANALYZER_VERSION, Analyzer, fold_broken_accents
from .bm25 import BM25, lexical_spec, parse_lexical_spec, query_terms
from .sparse import document_vector, mean_length, query_vector, term_index, term_token

__all__ = [
    "ANALYZER_VERSION",
    "BM25",
    "Analyzer",
    "EmptyQueryError",
    "LexicalUnavailableError",
    "document_vector",
    "fold_broken_accents",
    "lexical_spec",
    "mean_length",
    "parse_lexical_spec",
    "query_terms",
    "query_vector",
    "term_index",
    "term_token",
]
