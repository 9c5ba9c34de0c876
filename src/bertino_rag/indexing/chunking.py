"""Token-aware chunking: documents cut into pieces the encoder reads whole.

A chunk is sized in the encoder's own tokens: at most ``max_tokens`` (default: the model's
``max_seq_length`` minus its special tokens and document prompt), so no chunk is ever truncated.
A text is cut at paragraph boundaries (blank lines) first; a paragraph longer than the budget
at sentence boundaries; a sentence longer than the budget (a 50,000-character line without
punctuation) at word boundaries, and a "word" longer than the budget at token boundaries.
Consecutive pieces are then packed greedily up to the budget, so chunks are as large as the
model reads and break where the text does. ``overlap`` repeats the last sentences of a chunk
(up to that many tokens) at the start of the next one.

Each text is tokenized once, with offsets (the fast tokenizer), and every piece is measured
on those offsets: sizing costs one tokenizer pass, not one per candidate. Every finished chunk
is tokenized again on its own and, in the rare case where its tokens differ from the count
(a cut inside a word), cut further: the guarantee is checked, not assumed.

Chunks are exact slices of the text (``text[start:end]``), so their character offsets point
into the original document. The same text and settings always give the same chunks.

Sentence splitting is written here, not taken from a library: pysbd (the one maintained
splitter with Italian rules) splits after "n." and "art." followed by a number and needs
minutes for a 170,000-character text, and NLTK's punkt needs a model download. The rule: a
sentence ends at ``.``, ``!``, ``?`` or ``…`` (with closing quotes or brackets) followed by
white space and an upper-case letter, a digit or an opening quote, unless the word before the
period is a known Italian abbreviation (``ecc.``, ``sig.``, ``art.``, ``n.``, ``pag.``,
month names...), a single letter (an initial), or holds an inner period (``d.lgs.``, ``a.C.``,
``S.p.A.``), and not between two numbers.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..validation import non_negative_int

if TYPE_CHECKING:
    from ..encoder import TextEncoder

__all__ = ["Chunk", "Chunker", "split_sentences"]

#: Italian abbreviations that end with a period inside a sentence (lower case, no final dot)
ABBREVIATIONS = frozenset({
    "ecc", "etc", "sig", "sigg", "sigra", "sig.ra", "sig.na", "sig.ri", "dott", "dott.ssa",
    "dr", "prof", "prof.ssa", "ing", "avv", "arch", "geom", "rag", "mons", "on", "egr", "gent",
    "spett", "ill", "rev", "fra", "sr", "sra", "jr", "mr", "mrs", "ms", "st", "gen", "col",
    "cap", "magg", "ten", "serg", "cav", "comm", "gr", "uff", "art", "artt", "n", "nn", "nr",
    "num", "pag", "pagg", "p", "pp", "cfr", "es", "ca", "vol", "voll", "fig", "figg", "tab",
    "tabb", "cit", "op", "ibid", "sec", "secc", "s", "ss", "sg", "sgg", "v", "vd", "vs", "tel",
    "fax", "cod", "cost", "lett", "par", "cc", "c", "cca", "feb", "mar", "apr", "mag", "giu",
    "lug", "ago", "sett", "ott", "nov", "dic", "lun", "mer", "gio", "ven", "sab", "dom",
    "fr",
})

_PARAGRAPH = re.compile(r"\n[ \t\f\v\r]*\n\s*")
_SENTENCE_END = re.compile(
    r"[.!?…]+[\"'»”’)\]]*(?=\s+[\"'«“‘(\[]?[A-ZÀ-ÖØ-Ý0-9])"
)
_PREV_WORD = re.compile(r"([\w.]+)$")


def _is_boundary(text: str, start: int, end: int, lo: int) -> bool:
    """Whether the punctuation at ``text[start:end]`` ends a sentence (see the module doc)."""
    mark = text[start:end]
    if not mark.startswith(".") or mark.startswith(".."):
        return True  # ! ? … and ellipses always end a sentence here
    prev = _PREV_WORD.search(text, lo, start)
    if prev is None:
        return True
    word = prev.group(1)
    if word.replace(".", "").isdigit():  # a number, a date, a time: 1813. 12.03.2020. 10.30.
        nxt = text[end:].lstrip()[:1]
        return not nxt.isdigit()  # not between two numbers: "1. 2." in a list, "pag. 12. 13"
    if "." in word.strip("."):
        return False  # d.lgs. a.C. S.p.A. sig.ra
    if len(word) == 1 and word.isalpha():
        return False  # an initial: G. Verdi; or n. / s. / p.
    return word.lower() not in ABBREVIATIONS


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` of ``text[start:end]``, white space trimmed."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    begin = start
    for m in _SENTENCE_END.finditer(text, start, end):
        if _is_boundary(text, m.start(), m.end(), begin):
            spans.append((begin, m.end()))
            begin = m.end()
    spans.append((begin, end))
    return [s for s in (_trim(text, a, b) for a, b in spans) if s[0] < s[1]]


def _trim(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def _at_space(text: str, a: int, b: int) -> bool:
    """Whether ``text[a:b]`` starts and ends at white space (or the text's ends)."""
    return (a == 0 or text[a - 1].isspace()) and (b == len(text) or text[b].isspace())


def _paragraphs(text: str) -> list[tuple[int, int]]:
    spans, begin = [], 0
    for m in _PARAGRAPH.finditer(text):
        spans.append((begin, m.start()))
        begin = m.end()
    spans.append((begin, len(text)))
    return [s for s in (_trim(text, a, b) for a, b in spans) if s[0] < s[1]]


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: ``document[start:end] == text``; ``index`` counts from 0."""

    text: str
    start: int
    end: int
    index: int
    n_tokens: int


@dataclass(frozen=True)
class _Piece:
    start: int
    end: int
    n_tokens: int
    #: last piece of a paragraph (the next piece starts a new paragraph)
    hard: bool = False


class Chunker:
    """Cut texts into chunks of at most ``max_tokens`` tokens of ``tokenizer``.

    Args:
        tokenizer: a Hugging Face fast tokenizer (the encoder's own: ``encoder.tokenizer``).
        max_tokens: the budget per chunk, special tokens excluded.
        overlap: tokens of trailing sentences repeated at the start of the next chunk (whole
            sentences only; 0: none). Must be less than half of ``max_tokens``.

    Use :meth:`for_encoder` to size chunks to what an encoder reads.

    Example:
        >>> chunker = Chunker.for_encoder(encoder, overlap=32)  # doctest: +SKIP
        >>> [c.text for c in chunker.split(article)]  # doctest: +SKIP
    """

    def __init__(self, tokenizer: Any, max_tokens: int, overlap: int = 0) -> None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 8:
            raise ValueError(f"max_tokens must be an int >= 8, got {max_tokens!r}")
        overlap = non_negative_int(overlap, "overlap")
        if overlap * 2 >= max_tokens:
            raise ValueError(
                f"overlap ({overlap}) must be less than half of max_tokens ({max_tokens})"
            )
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                "token-aware chunking needs a fast (Rust) Hugging Face tokenizer, which gives "
                f"character offsets; got {type(tokenizer).__name__}"
            )
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.overlap = overlap

    @classmethod
    def for_encoder(
        cls, encoder: TextEncoder, max_tokens: int | None = None, overlap: int = 0
    ) -> Chunker:
        """A chunker sized to what ``encoder`` (a :class:`~bertino_rag.encoder.TextEncoder`)
        reads.

        ``max_tokens`` defaults to the model's ``max_seq_length`` minus its special tokens and
        the document prompt; a larger value is refused (those chunks would be truncated).
        """
        tokenizer = encoder.tokenizer
        if tokenizer is None or encoder.max_seq_length is None:
            raise ValueError(
                f"token-aware chunking needs the encoder's tokenizer and sequence length; "
                f"{encoder!r} has none: pass chunking=False (documents stored whole) or a "
                "Chunker built on a tokenizer"
            )
        limit = int(encoder.max_seq_length) - tokenizer.num_special_tokens_to_add(pair=False)
        prompt = encoder.prompt("document")
        if prompt:
            limit -= len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if max_tokens is None:
            max_tokens = limit
        elif isinstance(max_tokens, int) and max_tokens > limit:
            raise ValueError(
                f"max_tokens={max_tokens} exceeds what the model reads ({limit} tokens of "
                f"{encoder.max_seq_length}, less special tokens and prompt): such chunks "
                "would be truncated"
            )
        return cls(tokenizer, max_tokens, overlap)

    # ------------------------------------------------------------------ public
    def split(self, text: str) -> list[Chunk]:
        """The chunks of one text, in order."""
        return self.split_many([text])[0]

    def split_many(self, texts: Sequence[str]) -> list[list[Chunk]]:
        """The chunks of each text (one tokenizer call for all of them)."""
        texts = list(texts)
        if not texts:
            return []
        enc = self._tokenize(texts, offsets=True)
        out = []
        for text, offsets in zip(texts, enc["offset_mapping"], strict=True):
            starts = [a for a, b in offsets if b > a]
            ends = [b for a, b in offsets if b > a]
            if len(starts) <= self.max_tokens:  # fits: the whole text, as it was measured
                a, b = _trim(text, 0, len(text))
                out.append([Chunk(text[a:b], a, b, 0, len(starts))] if a < b else [])
                continue
            spans = self._pack(self._pieces(text, starts, ends))
            out.append(self._verified(text, spans))
        return out

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text as the encoder sees it, special tokens excluded."""
        return [len(ids) for ids in self._tokenize(list(texts), offsets=False)["input_ids"]]

    # ------------------------------------------------------------------ internals
    def _tokenize(self, texts: list[str], offsets: bool) -> Any:
        return self.tokenizer(
            texts, add_special_tokens=False, truncation=False, verbose=False,
            return_offsets_mapping=offsets, return_attention_mask=False,
            return_token_type_ids=False,
        )

    def _pieces(self, text: str, starts: list[int], ends: list[int]) -> list[_Piece]:
        """Paragraphs that fit; else their sentences that fit; else word-boundary windows."""

        def n_tokens(a: int, b: int) -> int:
            return bisect_left(starts, b) - bisect_left(starts, a)

        pieces: list[_Piece] = []
        for pa, pb in _paragraphs(text):
            n = n_tokens(pa, pb)
            if n <= self.max_tokens:
                pieces.append(_Piece(pa, pb, n))
            else:
                for sa, sb in split_sentences(text, pa, pb):
                    m = n_tokens(sa, sb)
                    if m <= self.max_tokens:
                        pieces.append(_Piece(sa, sb, m))
                    else:
                        pieces.extend(self._windows(text, starts, ends, sa, sb))
            if pieces:
                last = pieces[-1]
                pieces[-1] = _Piece(last.start, last.end, last.n_tokens, hard=True)
        return pieces

    def _windows(
        self, text: str, starts: list[int], ends: list[int], a: int, b: int
    ) -> list[_Piece]:
        """Cut an over-long sentence into windows of at most ``max_tokens`` tokens, each ending
        at a word boundary when the window has one."""
        i, stop = bisect_left(starts, a), bisect_left(starts, b)
        out = []
        while i < stop:
            j = min(i + self.max_tokens, stop)
            if j < stop:
                # the last token boundary in the window that follows white space
                k, floor = j, i + max(1, self.max_tokens // 2)
                while k > floor and not (starts[k] > ends[k - 1]):
                    k -= 1
                if k > floor:
                    j = k
            out.append(_Piece(starts[i], ends[j - 1], j - i))
            i = j
        return out

    def _pack(self, pieces: list[_Piece]) -> list[tuple[int, int, int]]:
        """Greedy packing of consecutive pieces into (start, end, n_tokens) spans; the next
        span starts with the trailing pieces (up to ``overlap`` tokens) of the previous one."""
        spans: list[tuple[int, int, int]] = []
        current: list[_Piece] = []
        total = 0
        for piece in pieces:
            if current and total + piece.n_tokens > self.max_tokens:
                spans.append((current[0].start, current[-1].end, total))
                carried: list[_Piece] = []
                kept = 0
                for prev in reversed(current):
                    if kept + prev.n_tokens > self.overlap or prev.hard:
                        break  # never carry a sentence across a paragraph break
                    carried.insert(0, prev)
                    kept += prev.n_tokens
                if kept + piece.n_tokens > self.max_tokens:
                    carried, kept = [], 0
                current, total = carried, kept
            current.append(piece)
            total += piece.n_tokens
        if current:
            spans.append((current[0].start, current[-1].end, total))
        return spans

    @cached_property
    def _splits_words_first(self) -> bool:
        """Whether the tokenizer cuts text at white space (and punctuation) before anything
        else and has no token for white space itself (BERT's WordPiece): then a span cut at
        white space has exactly the tokens the document's tokenization gave it."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        pre = getattr(backend, "pre_tokenizer", None)
        return type(pre).__name__ == "BertPreTokenizer"

    def _verified(self, text: str, spans: list[tuple[int, int, int]]) -> list[Chunk]:
        """Chunks whose own tokenization fits the budget; a span that does not is cut again
        with a smaller budget (only cuts inside a word can make it grow). A span cut at white
        space is not tokenized again where the tokenizer splits words first: its count from
        the document's one tokenization is exact (``tests/test_chunking.py`` checks it on
        squad-it-dev)."""
        again = [i for i, (a, b, _) in enumerate(spans)
                 if not (self._splits_words_first and _at_space(text, a, b))]
        measured: dict[int, int] = {}
        if again:
            measured = dict(zip(again, self.count_tokens([text[spans[i][0]:spans[i][1]]
                                                          for i in again]), strict=True))
        counts = [measured.get(i, n) for i, (_, _, n) in enumerate(spans)]
        chunks: list[Chunk] = []
        for (a, b, _), n in zip(spans, counts, strict=True):
            if n <= self.max_tokens:
                chunks.append(Chunk(text[a:b], a, b, len(chunks), n))
                continue
            # the sub-chunker verifies its own chunks against its smaller budget
            budget = self.max_tokens - max(1, n - self.max_tokens)
            if budget < 8:
                raise RuntimeError(f"cannot cut text[{a}:{b}] into chunks that fit")
            parts = Chunker(self.tokenizer, budget).split(text[a:b])
            for p in parts:
                chunks.append(Chunk(p.text, a + p.start, a + p.end, len(chunks), p.n_tokens))
        return chunks
