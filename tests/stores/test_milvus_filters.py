"""MilvusStore filters: reference semantics and injection safety, on Milvus Lite.

Hostile values (quotes, ``" or 1==1 or "``, backslashes, braces, unicode) are stored as
metadata and as ids; filtering and id lookups must match them literally and nothing else.
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip(
    "pymilvus", reason="pymilvus is not installed (pip install 'bertino-rag[milvus]')"
)
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")

from bertino_rag.search.filters import FilterError, matches, parse_filter  # noqa: E402
from bertino_rag.stores.milvus import MilvusStore  # noqa: E402
from bertino_rag.stores.milvus.filters import (  # noqa: E402
    compile_filter,
    ids_filter,
    render_inline,
)
from bertino_rag.types import Document, Stamp  # noqa: E402

HOSTILE = [
    '" or 1==1 or "',
    "' or ''=='",
    'a"b',
    "back\\slash",
    '\\" or true or \\"',
    "{p0}",
    '") or (filter_keys["n:v"] >= 0',
    "città è perché",
    "日本語 🇮🇹",
    "line\nbreak",
    "",
]
TRAPS = [True, False, 1, 1.0, 0, "1", "true", 2.5, -3, None, [1], {"v": 1}]
VALUES = HOSTILE + TRAPS


@pytest.fixture(scope="module")
def store(tmp_path_factory, encoder):
    """One collection: a document per value (field ``v``), hostile ids, one without ``v``."""
    docs = [Document(text=f"Documento numero {i}.", id=f"doc-{i}", metadata={"v": v, "i": i})
            for i, v in enumerate(VALUES)]
    docs += [Document(text=f"Documento ostile {j}.", id=h, metadata={"i": 100 + j})
             for j, h in enumerate(h for h in HOSTILE if h)]
    docs.append(Document(text="Senza campo.", id="no-v", metadata={"w": 1}))
    enc = encoder.encode([d.text for d in docs], kind="document")
    s = MilvusStore(uri=str(tmp_path_factory.mktemp("milvus_filters") / "f.db"), index="FLAT")
    s.open("hostile", Stamp(model=encoder.model_id, full_dim=encoder.full_dim, index_dim=128))
    s.upsert(docs, enc.index, enc.full)
    s.docs, s.enc, s.probe = docs, enc, enc.index[0]
    yield s
    s.drop()
    s.close()


def _found(store, flt) -> list[str]:
    return sorted(h.id for h in store.search(store.probe, k=len(store.docs), filter=flt))


def _expected(store, flt) -> list[str]:
    conditions = parse_filter(flt)
    return sorted(d.id for d in store.docs if matches(d.metadata, conditions))


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v)[:20])
def test_hostile_values_match_literally(store, value):
    for flt in ({"v": value}, {"v": {"$in": [value, "zzz"]}}):
        got = _found(store, flt)
        assert got == _expected(store, flt) == [f"doc-{VALUES.index(value)}"]


@pytest.mark.parametrize(
    "flt",
    [
        {"v": 1}, {"v": True}, {"v": False}, {"v": "1"}, {"v": 1.0}, {"v": 0},
        {"v": {"$in": [1, "true"]}}, {"v": {"$in": [True, 2.5]}},
        {"v": {"$gt": 0}}, {"v": {"$gte": -3, "$lt": 2}}, {"v": {"$lte": 0}},
        {"v": {"$gt": "a"}}, {"v": {"$lt": "b"}}, {"v": {"$gte": "città"}},
        {"v": {"$in": []}}, {"missing": 1}, {"missing": {"$lt": "z"}},
        {"v": {"$gt": 0}, "i": {"$lt": 15}},
    ],
    ids=str,
)
def test_typed_semantics_equal_the_reference(store, flt):
    assert _found(store, flt) == _expected(store, flt)


def test_hostile_ids_get_and_delete_only_themselves(store):
    ids = [h for h in HOSTILE if h]
    got = store.get(ids + ["doc-0"])
    assert [d.id for d in got] == ids + ["doc-0"]
    before = store.count()
    victims = ['" or 1==1 or "', "' or ''=='"]
    store.delete(victims)
    try:
        assert store.count() == before - 2
        assert store.get(victims) == [] and [d.id for d in store.get(["doc-0"])] == ["doc-0"]
    finally:  # restore them for the other tests
        rows = [i for i, d in enumerate(store.docs) if d.id in victims]
        store.upsert([store.docs[i] for i in rows], store.enc.index[rows], store.enc.full[rows])
    assert store.count() == before


def test_lite_id_lookups_read_back_as_the_ids_in_lites_own_parser():
    """On Milvus Lite an id lookup is ``id in [...]`` with the ids written as strings (the form
    Lite answers by primary key): Lite's own parser reads back exactly the hostile ids, as one
    list of string literals, whatever they hold."""
    from milvus_lite.search.filter import parse_expr
    from milvus_lite.search.filter.ast import FieldRef, InOp, StringLit

    ids = [*HOSTILE, "tab\there", "cr\rlf", "\\", '"', "'", "]) or (id != \"\"", "x" * 512]
    tree = parse_expr(ids_filter(ids, templating=False, lite=True)["filter"])
    assert isinstance(tree, InOp) and not tree.negate
    assert isinstance(tree.field, FieldRef) and tree.field.name == "id"
    assert all(isinstance(v, StringLit) for v in tree.values.elements)
    assert [v.value for v in tree.values.elements] == ids
    # servers: templated; other engines without templating: the hex field
    assert ids_filter(ids, templating=True, lite=False) == {"filter": "id in {ids}",
                                                             "filter_params": {"ids": ids}}
    assert re.fullmatch(r'id_hex in \[("[0-9a-f]*"(, )?)*\]',
                        ids_filter(ids, templating=False, lite=False)["filter"])


def test_values_never_enter_the_expression():
    flt = {"v": '" or 1==1 or "', "n": {"$gte": 3, "$lt": 9.5}, "b": {"$in": [True, "x\\"]}}
    compiled = compile_filter(parse_filter(flt))
    assert compiled is not None
    assert "1==1" not in compiled.expr and "x\\" not in compiled.expr
    assert re.fullmatch(r'[\w\s()<>=:"\[\]{}-]*', compiled.expr)
    inline = render_inline(compiled)
    literals = re.findall(r'"([^"]*)"', inline)
    # every quoted literal is a JSON key we wrote or a hex string
    assert all(re.fullmatch(r"[sbne]:\w+|[0-9a-f]*", lit) or lit == "filter_keys"
               for lit in literals), literals


def test_non_finite_filter_numbers_are_refused(store):
    with pytest.raises(FilterError, match="non-finite"):
        store.search(store.probe, k=3, filter={"v": float("nan")})


def test_native_expression_strings_are_refused(store):
    with pytest.raises(TypeError, match="expression strings"):
        store.search(store.probe, k=3, filter='filter_keys["n:i"] > 1')
