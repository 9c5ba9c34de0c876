"""Token-aware chunking with the real MiniLM tokenizer: budgets, boundaries, offsets."""

from __future__ import annotations

import itertools
import json

import pytest

from bertino_rag.indexing.chunking import Chunker, split_sentences
from tests.conftest import SQUAD


def sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in split_sentences(text)]


def test_italian_sentences_survive_abbreviations_numbers_and_dates():
    text = (
        "Il sig. Rossi abita in via Roma n. 5, vicino al negozio di frutta, verdura ecc. "
        "e al bar. Secondo l'art. 3 del d.lgs. 50/2016 la gara è valida. "
        "Il 12.03.2020 è arrivato alle 10.30. G. Verdi nacque nel 1813. "
        "Costava 3.500 euro, cfr. pag. 12 del rapporto. Davvero? Sì! «Andiamo» disse."
    )
    assert sentences(text) == [
        ("Il sig. Rossi abita in via Roma n. 5, vicino al negozio di frutta, verdura ecc. "
         "e al bar."),
        "Secondo l'art. 3 del d.lgs. 50/2016 la gara è valida.",
        "Il 12.03.2020 è arrivato alle 10.30.",
        "G. Verdi nacque nel 1813.",
        "Costava 3.500 euro, cfr. pag. 12 del rapporto.",
        "Davvero?",
        "Sì!",
        "«Andiamo» disse.",
    ]


@pytest.fixture(scope="module")
def chunker(encoder):
    return Chunker.for_encoder(encoder)


def test_default_budget_is_what_the_model_reads(encoder, chunker):
    # all-MiniLM-L6-v2 reads 256 tokens, [CLS] and [SEP] included
    assert encoder.max_seq_length == 256
    assert chunker.max_tokens == 254
    with pytest.raises(ValueError, match="exceeds what the model reads"):
        Chunker.for_encoder(encoder, max_tokens=300)


def test_bad_settings(encoder):
    tok = encoder.model.tokenizer
    with pytest.raises(ValueError, match="max_tokens must be an int >= 8"):
        Chunker(tok, 4)
    with pytest.raises(ValueError, match="less than half"):
        Chunker(tok, 100, overlap=50)
    with pytest.raises(ValueError, match="overlap must be a non-negative int"):
        Chunker(tok, 100, overlap=-1)


def test_short_text_is_one_chunk(chunker):
    [c] = chunker.split("  Roma è la capitale d'Italia.  \n")
    assert (c.text, c.start, c.end, c.index) == ("Roma è la capitale d'Italia.", 2, 30, 0)


def test_paragraphs_pack_up_to_the_budget_and_break_at_blank_lines(encoder):
    para = "La città di Firenze è il capoluogo della Toscana."
    n = Chunker(encoder.model.tokenizer, 1000).count_tokens([para])[0]
    chunker = Chunker(encoder.model.tokenizer, 3 * n + 1)
    text = "\n\n".join(f"{para} ({i})" for i in range(7))
    chunks = chunker.split(text)
    # three paragraphs of n+3 tokens do not fit in 3n+1; two do
    assert [c.text.count("\n\n") for c in chunks] == [1, 1, 1, 0]
    assert all(text[c.start:c.end] == c.text for c in chunks)
    assert chunks[0].text.endswith("(1)") and chunks[1].text.startswith(para + " (2)")


def test_long_paragraph_is_cut_at_sentences_with_overlap(encoder):
    tok = encoder.model.tokenizer
    text = " ".join(f"Questa è la frase numero {i} del paragrafo lungo." for i in range(60))
    plain = Chunker(tok, 64).split(text)
    assert len(plain) > 5
    assert all(c.text.endswith(".") and c.text.startswith("Questa") for c in plain)
    assert all(c.n_tokens <= 64 for c in plain)
    # contiguous, no overlap: each chunk starts right after the previous one
    assert all(b.start > a.end and not text[a.end:b.start].strip()
               for a, b in itertools.pairwise(plain))
    over = Chunker(tok, 64, overlap=20).split(text)
    assert len(over) > len(plain)
    for a, b in itertools.pairwise(over):
        assert b.start < a.end  # the next chunk repeats the previous one's last sentence
        assert a.text.endswith(text[b.start:a.end])
    assert all(c.n_tokens <= 64 for c in over)


def test_a_50000_character_line_without_punctuation_is_never_truncated(encoder, chunker):
    words = ["parola", "lunghissima", "senza", "punteggiatura", "alcuna", "città"]
    text = " ".join(words[i % 6] + str(i) for i in range(6000))
    assert len(text) > 50_000 and "." not in text
    chunks = chunker.split(text)
    assert all(c.n_tokens <= chunker.max_tokens for c in chunks)
    assert encoder.count_truncated([c.text for c in chunks]) == 0
    # cut at word boundaries: every chunk starts and ends with a whole word
    assert all(c.text.split()[0] in text.split() and c.text.split()[-1] in text.split()
               for c in chunks)
    assert "".join(c.text + " " for c in chunks).strip() == text
    # one "word" of 60,000 letters and digits is cut at token boundaries
    blob = "".join(f"x{i}y" for i in range(15000))
    parts = chunker.split(blob)
    assert "".join(p.text for p in parts) == blob
    assert encoder.count_truncated([p.text for p in parts]) == 0


def test_deterministic_and_the_squad_articles_fit(encoder, chunker):
    if not SQUAD.exists():
        pytest.skip("squad-it-dev not found")
    with open(SQUAD / "corpus.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    articles: dict[str, list[str]] = {}
    for row in rows:
        articles.setdefault(row["title"], []).append(row["text"])
    docs = ["\n\n".join(p) for p in list(articles.values())[:4]]
    first = chunker.split_many(docs)
    assert first == chunker.split_many(docs)
    texts = [c.text for cs in first for c in cs]
    assert encoder.count_truncated(texts) == 0
    lengths = encoder.token_lengths(texts)
    assert max(lengths) <= encoder.max_seq_length
    # packed: the median chunk fills most of the budget
    assert sorted(lengths)[len(lengths) // 2] > 0.6 * encoder.max_seq_length
    for doc, cs in zip(docs, first, strict=True):
        assert all(doc[c.start:c.end] == c.text for c in cs)
        assert [c.index for c in cs] == list(range(len(cs)))


def test_each_text_is_tokenized_once_and_its_counts_are_exact(encoder, monkeypatch):
    """WordPiece splits words first: a chunk cut at white space has exactly the tokens the
    document's one tokenization counted, so chunks are not tokenized again to check them, and
    indexing reuses the chunker's counts instead of tokenizing every chunk to sort and count
    it. On every article of squad-it-dev, at two budgets, the counts equal a fresh
    tokenization of each chunk."""
    from bertino_rag import Retriever

    if not SQUAD.exists():
        pytest.skip("squad-it-dev not found")
    with open(SQUAD / "corpus.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    articles: dict[str, list[str]] = {}
    for row in rows:
        articles.setdefault(row["title"], []).append(row["text"])
    docs = ["\n\n".join(p) for p in articles.values()]
    for budget in (64, 200):
        small = Chunker.for_encoder(encoder, max_tokens=budget)
        assert small._splits_words_first
        calls: list[int] = []
        real = small._tokenize
        monkeypatch.setattr(small, "_tokenize", lambda texts, offsets, calls=calls, real=real: (
            calls.append(len(texts)), real(texts, offsets))[1])
        chunks = [c for cs in small.split_many(docs) for c in cs]
        assert calls == [len(docs)]  # the documents, once; no chunk tokenized again
        monkeypatch.undo()
        assert [c.n_tokens for c in chunks] == small.count_tokens([c.text for c in chunks])
        assert max(c.n_tokens for c in chunks) <= budget
    # indexing: the documents are tokenized by the chunker, the chunks by the forward pass
    r = Retriever(dim=128, encoder=encoder, chunking=64)
    measured: list[str] = []
    real_lengths = encoder.token_lengths
    monkeypatch.setattr(encoder, "token_lengths",
                        lambda texts: (measured.extend(texts), real_lengths(texts))[1])
    r.index([{"id": "a", "text": docs[0]}, {"id": "b", "text": "Roma è la capitale."}])
    assert measured == []  # every written text's length came from the chunker
    assert r.last_index_report.n_chunks > 1
