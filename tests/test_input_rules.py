"""One rule per input mistake, the same error from every entry point (issue 28: lone
surrogates, blank and control-only texts, empty ids, ``delete(None)``, a zero query vector)."""

from __future__ import annotations

import numpy as np
import pytest

from bertino_rag import MemoryStore, Retriever
from bertino_rag.types import Document, to_documents
from bertino_rag.validation import check_documents, check_ids, check_text


@pytest.fixture
def retriever(encoder, tmp_path):
    r = Retriever(dim=128, store=MemoryStore(path=tmp_path / "idx"), encoder=encoder,
                  chunking=False)
    r.index([{"id": "roma", "text": "Roma è la capitale d'Italia."},
             {"id": "1", "text": "Milano è in Lombardia."}])
    yield r
    r.close()


@pytest.mark.parametrize("text, message", [
    ("abc\ud800", r"lone surrogate '\\ud800' at character 3"),
    ("\x00", "empty text"),
    ("\x00 \u200b\t", "empty text"),
    ("   ", "empty text"),
    (3, "text of type int"),
    (None, r"no text \(None\)"),
])
def test_one_text_rule(text, message):
    with pytest.raises(ValueError, match=message):
        check_text(text, "x")


def test_documents_without_ids_name_the_surrogate_and_refuse_blank_text():
    # before: a bare UnicodeEncodeError from hashing the text into an id
    with pytest.raises(ValueError, match=r"position 1: the text .*lone surrogate .* character 3"):
        to_documents(["ok", "abc\ud800"])
    with pytest.raises(ValueError, match="position 0 has empty text"):
        to_documents(["\x00"])
    # before: an empty id was silently replaced by a hash of the text
    with pytest.raises(ValueError, match="position 0 has an empty id"):
        to_documents([{"id": "", "text": "Testo."}])
    assert to_documents(["Città\x00 vera"])[0].text == "Città\x00 vera"  # words around a NUL
    # the stores' own check (Documents built by hand reach it directly)
    with pytest.raises(ValueError, match="position 1 has an empty id"):
        check_documents([Document(text="a", id="a"), Document(text="b", id="")])


def test_search_names_a_lone_surrogate_before_encoding(retriever):
    # before: the tokenizer's TypeError (a 500 through serve)
    with pytest.raises(ValueError, match=r"the query: the text .*lone surrogate '\\ud800' at "
                                         "character 0"):
        retriever.search("\ud800 Roma")
    with pytest.raises(ValueError, match="query at position 1: the text .*lone surrogate"):
        retriever.search_batch(["Roma", "Roma \udfff"])
    with pytest.raises(ValueError, match="the query has empty text"):
        retriever.search("\x00")
    assert retriever.search("capitale d'Italia", k=1)[0].id == "roma"


def test_delete_and_get_check_their_ids(retriever):
    for call in (retriever.delete, retriever.get):
        with pytest.raises(ValueError, match=r"takes an id or a list of ids \(str\), got NoneType"):
            call(None)
        with pytest.raises(ValueError, match="id at position 1 is a float"):
            call(["roma", 1.5])
    assert [d.id for d in retriever.get([1])] == ["1"]  # an int id is its decimal string
    retriever.delete(1)
    assert retriever.count() == 1
    assert check_ids("roma", "delete") == ["roma"]


def test_an_all_zero_query_vector_is_refused(retriever):
    with pytest.raises(ValueError, match="all zeros"):
        retriever.search_by_vector(np.zeros(retriever.encoder.full_dim))
    vec = retriever.encoder.encode(["capitale d'Italia"], kind="query").full[0]
    assert retriever.search_by_vector(vec, k=1)[0].id == "roma"
