"""RAG in LangChain with bertino-rag: Italian documents -> retriever -> prompt -> chat model.

The chat model is any OpenAI-compatible endpoint, read from the environment:

    OPENAI_BASE_URL   e.g. http://localhost:11434/v1 (Ollama), http://localhost:8000/v1 (vLLM);
                      default https://api.openai.com/v1 when only the key is set
    OPENAI_API_KEY    the key, if the endpoint needs one
    OPENAI_MODEL      the model name (default gpt-4o-mini)

``langchain-openai`` is used when it is installed; otherwise the script calls
``/chat/completions`` itself with the standard library. With no endpoint set, it prints the
retrieved passages and the exact prompt it would send.

Usage:
    pip install 'bertino-rag[langchain]'
    python examples/rag_langchain.py --question "Chi ha dipinto la Gioconda?"
    python examples/rag_langchain.py --model path/to/model --docs corpus.jsonl --question "..."
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from operator import itemgetter
from typing import Any

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import (
    Runnable,
    RunnableLambda,
    RunnableParallel,
    RunnablePassthrough,
)

from bertino_rag import Retriever
from bertino_rag.data import iter_documents

# examples/_offline.py, found also when the script is run by runpy or from elsewhere
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _offline import load_encoder  # noqa: E402

DOCUMENTS = [
    {"id": "gioconda", "metadata": {"fonte": "arte"},
     "text": "La Gioconda è un dipinto a olio su tavola di Leonardo da Vinci, realizzato tra il "
             "1503 e il 1519 e conservato al Museo del Louvre di Parigi."},
    {"id": "cappella-sistina", "metadata": {"fonte": "arte"},
     "text": "Michelangelo Buonarroti affrescò la volta della Cappella Sistina, in Vaticano, tra "
             "il 1508 e il 1512, su incarico di papa Giulio II."},
    {"id": "pizza", "metadata": {"fonte": "cucina"},
     "text": "La pizza margherita nacque a Napoli: secondo la tradizione fu preparata nel 1889 "
             "in onore della regina Margherita di Savoia."},
    {"id": "risotto", "metadata": {"fonte": "cucina"},
     "text": "Il risotto alla milanese si prepara con riso, brodo, burro, midollo e zafferano, "
             "che gli dà il caratteristico colore giallo."},
    {"id": "po", "metadata": {"fonte": "geografia"},
     "text": "Il Po è il fiume più lungo d'Italia: nasce dal Monviso e, dopo 652 chilometri, "
             "sfocia nel mare Adriatico formando un ampio delta."},
    {"id": "etna", "metadata": {"fonte": "geografia"},
     "text": "L'Etna, in Sicilia, è il vulcano attivo più alto d'Europa; le sue eruzioni sono "
             "frequenti e il suo cratere supera i 3.300 metri di altezza."},
    {"id": "dante", "metadata": {"fonte": "letteratura"},
     "text": "Dante Alighieri scrisse la Divina Commedia, un poema in terzine diviso in tre "
             "cantiche: Inferno, Purgatorio e Paradiso."},
    {"id": "galileo", "metadata": {"fonte": "scienza"},
     "text": "Galileo Galilei perfezionò il cannocchiale e nel 1610 osservò i quattro satelliti "
             "maggiori di Giove, oggi detti satelliti galileiani."},
]

PROMPT = ChatPromptTemplate.from_messages([
    ("system",
     "Sei un assistente che risponde in italiano usando solo i passaggi forniti. "
     "Cita i passaggi usati con il loro numero, per esempio [1]. Se la risposta non è nei "
     "passaggi, dillo."),
    ("human", "Passaggi:\n{context}\n\nDomanda: {question}"),
])


def format_docs(docs: list[Document]) -> str:
    """Numbered passages, as the prompt shows them."""
    return "\n\n".join(f"[{n}] {d.page_content}" for n, d in enumerate(docs, 1))


def to_prompt_input(x: dict[str, Any]) -> dict[str, str]:
    """The prompt's variables from the retrieved passages and the question."""
    return {"context": format_docs(x["docs"]), "question": x["question"]}


def _role(message: BaseMessage) -> str:
    return {"human": "user", "ai": "assistant", "system": "system"}.get(message.type, "user")


def http_chat_model(base_url: str, api_key: str | None, model: str, timeout: float = 120.0
                    ) -> Runnable:
    """A chat model over ``POST {base_url}/chat/completions``, with the standard library."""
    url = base_url.rstrip("/") + "/chat/completions"

    def call(prompt: Any) -> AIMessage:
        messages = prompt.to_messages() if hasattr(prompt, "to_messages") else prompt
        body = json.dumps({
            "model": model,
            "messages": [{"role": _role(m), "content": m.content} for m in messages],
            "temperature": 0,
        }).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                reply = json.load(response)
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:500]
            raise RuntimeError(f"{url} answered HTTP {err.code}: {detail}") from err
        except urllib.error.URLError as err:
            raise RuntimeError(f"cannot reach {url}: {err.reason}") from err
        try:
            return AIMessage(content=reply["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError) as err:
            raise RuntimeError(f"{url} returned an unexpected reply: {str(reply)[:500]}") from err

    return RunnableLambda(call, name="OpenAICompatibleChat")


def chat_model_from_env() -> tuple[Runnable, str] | None:
    """The chat model the environment points at, and a description; ``None`` if none."""
    base_url = os.environ.get("OPENAI_BASE_URL", "").strip()
    api_key = os.environ.get("OPENAI_API_KEY", "").strip() or None
    if not base_url and not api_key:
        return None
    base_url = base_url or "https://api.openai.com/v1"
    model = os.environ.get("OPENAI_MODEL", "").strip() or "gpt-4o-mini"
    try:
        from langchain_openai import ChatOpenAI
    except ImportError:
        return http_chat_model(base_url, api_key, model), f"{model} at {base_url} (stdlib HTTP)"
    llm = ChatOpenAI(model=model, base_url=base_url, api_key=api_key or "none", temperature=0)
    return llm, f"{model} at {base_url} (langchain-openai)"


def build_chain(retriever: Runnable) -> tuple[Runnable, tuple[Runnable, str] | None]:
    """One chain: retrieve once, keep the passages, build the prompt, and ask the chat model
    configured in the environment (when there is one); also returns that model."""
    rag = RunnableParallel(docs=retriever, question=RunnablePassthrough()).assign(
        prompt=RunnableLambda(to_prompt_input) | PROMPT
    )
    chat = chat_model_from_env()
    if chat is not None:
        rag = rag.assign(answer=itemgetter("prompt") | chat[0] | StrOutputParser())
    return rag, chat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", default="Chi ha dipinto la Gioconda e dove si trova?")
    parser.add_argument("--model", default=None,
                        help="embedding model (hub id or folder); default $BERTINO_RAG_MODEL or "
                             "nickprock/multi-sentence-BERTino")
    parser.add_argument("--docs", default=None,
                        help=".txt/.jsonl file or BEIR folder (default: a few built-in passages)")
    parser.add_argument("--dim", type=int, default=128, help="Matryoshka dimension searched")
    parser.add_argument("--k", type=int, default=3, help="passages given to the model")
    args = parser.parse_args(argv)

    docs = list(iter_documents(args.docs)) if args.docs else DOCUMENTS
    encoder = load_encoder(args.model, args.dim)
    retriever = Retriever(dim=encoder.dim, encoder=encoder)
    retriever.index(docs)
    lc_retriever = retriever.as_langchain(k=args.k)

    rag, chat = build_chain(lc_retriever)

    print(f"Domanda: {args.question}\n")
    try:
        result = rag.invoke(args.question)
    except RuntimeError as err:
        print(f"errore: {err}", file=sys.stderr)
        return 1
    print(f"Passaggi recuperati ({retriever.encoder.model_id}, {encoder.dim} dim, "
          f"{retriever.count()} documenti):")
    for n, doc in enumerate(result["docs"], 1):
        print(f"  [{n}] score={doc.metadata['score']:.3f} id={doc.id}: {doc.page_content}")
    print()
    if chat is None:
        print("Prompt che verrebbe inviato al modello:")
        for message in result["prompt"].to_messages():
            print(f"--- {_role(message)}\n{message.content}")
        print("---\n")
        print("Nessun modello di chat configurato. Per generare la risposta imposta "
              "OPENAI_BASE_URL (un endpoint compatibile OpenAI, es. http://localhost:11434/v1), "
              "OPENAI_API_KEY se serve e OPENAI_MODEL, poi rilancia lo script.")
        return 0
    print(f"Modello: {chat[1]}")
    print(f"Risposta:\n{result['answer']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
