"""The LlamaIndex retriever and embedding model, run through llama-index-core's own classes
(``retrieve``/``aretrieve``, ``VectorStoreIndex``, ``MetadataFilters``) on the real MiniLM."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import VectorStoreIndex  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    MetadataFilter,
    MetadataFilters,
)

from bertino_rag import MemoryStore, Retriever  # noqa: E402
from bertino_rag.errors import FilterError  # noqa: E402
from bertino_rag.integrations.llamaindex import (  # noqa: E402
    BertinoEmbedding,
    BertinoRetriever,
    filter_of,
)


@pytest.fixture
def indexed(encoder, squad_slice, tmp_path):
    r = Retriever(dim=128, encoder=encoder, store=MemoryStore(path=tmp_path / "idx"))
    r.index(squad_slice["docs"][:8])  # long paragraphs: some are stored as chunks
    yield r
    r.close()


def _view(nodes):
    return [(n.node.node_id, round(n.score, 5)) for n in nodes]


async def test_retriever_returns_the_hits_as_nodes(indexed, squad_slice):
    question = squad_slice["queries"][1]
    li = BertinoRetriever(indexed, k=4)
    nodes = li.retrieve(question)
    hits = indexed.search(question, 4)
    assert _view(nodes) == [(h.id, round(h.score, 5)) for h in hits]
    for node, hit in zip(nodes, hits, strict=True):
        assert node.node.get_content() == hit.text
        assert node.node.metadata == hit.metadata
        # a chunk names its document as the node's source
        assert node.node.ref_doc_id == hit.metadata.get("doc_id")
    assert any(n.node.ref_doc_id is not None for n in nodes)
    assert _view(await li.aretrieve(question)) == _view(nodes)

    grouped = BertinoRetriever(indexed, k=3, group_by="document").retrieve(question)
    expected = indexed.search(question, 3, group_by="document")
    assert _view(grouped) == [(h.id, round(h.score, 5)) for h in expected]
    assert [n.node.metadata.get("chunk_ids") for n in grouped] == [
        [c.id for c in h.chunks] or None for h in expected]


def test_metadata_filters_are_translated(indexed, squad_slice):
    question = squad_slice["queries"][0]
    title = squad_slice["docs"][0]["metadata"]["title"]
    lte = MetadataFilters(filters=[MetadataFilter(key="para", value=2, operator="<=")])
    assert filter_of(lte) == {"para": {"$lte": 2}}
    nodes = BertinoRetriever(indexed, k=5, filter=lte).retrieve(question)
    assert nodes and all(n.node.metadata["para"] <= 2 for n in nodes)
    assert _view(nodes) == [(h.id, round(h.score, 5))
                            for h in indexed.search(question, 5, {"para": {"$lte": 2}})]

    either = MetadataFilters(filters=[MetadataFilter(key="para", value=[0, 5], operator="in"),
                                      MetadataFilter(key="title", value=title, operator="!=")],
                             condition=FilterCondition.OR)
    assert filter_of(either) == {"$or": [{"para": {"$in": [0, 5]}},
                                         {"title": {"$ne": title}}]}
    assert filter_of({"para": 1}) == {"para": 1}
    with pytest.raises(FilterError, match="'text_match' on 'title' has no bertino-rag"):
        BertinoRetriever(indexed, filter=MetadataFilters(filters=[
            MetadataFilter(key="title", value="x", operator="text_match")]))
    with pytest.raises(FilterError, match="condition 'not'"):
        filter_of(MetadataFilters(filters=[MetadataFilter(key="a", value=1)],
                                  condition=FilterCondition.NOT))
    with pytest.raises(ValueError, match="unknown operator"):  # the library's own message
        BertinoRetriever(indexed, filter={"para": {"$near": 1}}).retrieve(question)


def test_hybrid_passes_through(encoder, squad_slice, tmp_path):
    pytest.importorskip("bm25s")
    r = Retriever(dim=128, encoder=encoder, store=MemoryStore(path=tmp_path / "h"),
                  hybrid=True)
    r.index(squad_slice["docs"][:12])
    question = squad_slice["queries"][2]
    for mode in ("hybrid", "lexical", "dense"):
        nodes = BertinoRetriever(r, k=3, mode=mode).retrieve(question)
        assert _view(nodes) == [(h.id, round(h.score, 5))
                                for h in r.search(question, 3, mode=mode)]
    r.close()


async def test_embedding_with_matryoshka_dim_in_a_vector_store_index(encoder):
    emb = BertinoEmbedding(encoder=encoder, dim=64)
    texts = ["La pizza margherita nasce a Napoli.", "Il Po sfocia nel mare Adriatico.",
             "Leonardo dipinse la Gioconda."]
    vectors = np.asarray(emb.get_text_embedding_batch(texts))
    np.testing.assert_allclose(vectors, encoder.encode(texts, dim=64).index, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    query = emb.get_query_embedding("Dove nasce la pizza?")
    np.testing.assert_allclose(query, encoder.encode_query("Dove nasce la pizza?", dim=64)
                               .index[0], atol=1e-6)
    assert await emb.aget_query_embedding("Dove nasce la pizza?") == pytest.approx(query)
    assert emb.model_name == encoder.model_id and emb.dim == 64

    index = VectorStoreIndex([TextNode(id_=f"t{i}", text=t) for i, t in enumerate(texts)],
                             embed_model=emb)
    top = index.as_retriever(similarity_top_k=1).retrieve("Quale fiume sfocia nell'Adriatico?")
    assert top[0].node.node_id == "t1"

    with pytest.raises(ValueError, match="larger than the output"):
        BertinoEmbedding(encoder=encoder, dim=1000)
