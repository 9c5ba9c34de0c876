"""Document normalization: accepted shapes, deterministic ids, errors naming the position."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from bertino_rag.types import Document, dedupe, doc_id_for, to_documents


@dataclass
class LcDoc:  # the shape of a LangChain Document
    page_content: str
    metadata: dict = field(default_factory=dict)
    id: str | None = None


def test_accepted_shapes():
    docs = to_documents([
        "Roma è la capitale.",
        {"text": "Milano è in Lombardia.", "id": "mi", "metadata": {"regione": "Lombardia"}},
        LcDoc("Napoli è in Campania.", {"regione": "Campania"}),
        Document(text="Torino", id="to"),
    ])
    assert [d.id for d in docs][1:2] == ["mi"]
    assert docs[0].id == doc_id_for("Roma è la capitale.")
    assert docs[2].metadata == {"regione": "Campania"}
    assert docs[3].id == "to"


def test_ids_are_deterministic_and_integers_become_strings():
    a = to_documents(["testo"])[0]
    b = to_documents([{"text": "testo"}])[0]
    assert a.id == b.id
    assert to_documents([{"text": "x", "id": 7}])[0].id == "7"


@pytest.mark.parametrize(
    "bad,msg",
    [
        (["ok", ""], "position 1 has empty text"),
        (["ok", "ok2", "   \n"], "position 2 has empty text"),
        ([None], "position 0 is None"),
        ([42], "position 0 has unsupported type int"),
        ([{"id": "x"}], "position 0 is a dict without a 'text' key"),
        ([{"text": 3}], "position 0 has text of type int"),
        ([{"text": "a", "metadata": ["x"]}], "position 0 has metadata of type list"),
        ([LcDoc(None)], "position 0 has no text"),  # type: ignore[arg-type]
    ],
)
def test_bad_documents_name_their_position(bad, msg):
    with pytest.raises(ValueError, match=msg):
        to_documents(bad)


def test_dedupe_keeps_last():
    docs = to_documents([{"text": "a", "id": "1"}, {"text": "b", "id": "1"}, {"text": "c"}])
    out = dedupe(docs)
    assert [d.text for d in out] == ["b", "c"]
