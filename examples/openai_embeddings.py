"""The official `openai` client pointed at `bertino-rag serve`: OpenAI-compatible embeddings
with Matryoshka truncation, from a model that runs on your machine.

    python examples/openai_embeddings.py                    # nickprock/multi-sentence-BERTino
    python examples/openai_embeddings.py --model PATH       # any sentence-transformers model
    python examples/openai_embeddings.py --url http://127.0.0.1:8000   # a service already up

Without --url the script starts `bertino-rag serve` on a free port of 127.0.0.1, waits for its
readiness probe, and uses nothing but the `openai` client: it lists the served model, embeds a
few Italian passages and a question at two Matryoshka sizes (`dimensions=`), ranks the passages
by cosine similarity, shows how close the 128-d ranking is to the full one, and shows the
service's answer to a size the model was not trained for. Then it stops the service. Any other
OpenAI client works the same way: base URL `http://HOST:PORT/v1`, any API key (the service's
own, when it has one). Offline it falls back to the packaged all-MiniLM-L6-v2 with a notice.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import numpy as np
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rag_langchain import DOCUMENTS  # noqa: E402
from rag_service import service_model, start_service, wait_ready  # noqa: E402

from bertino_rag.serve.client import BertinoClient  # noqa: E402


def ranking(client: openai.OpenAI, model: str, question: str, dims: int | None) -> list[tuple]:
    """The passages by cosine similarity to ``question``, best first (vectors are unit)."""
    extra = {} if dims is None else {"dimensions": dims}
    texts = [d["text"] for d in DOCUMENTS]
    passages = client.embeddings.create(model=model, input=texts, **extra)
    query = client.embeddings.create(model=model, input=question,
                                     extra_body={"input_type": "query"}, **extra)
    matrix = np.asarray([d.embedding for d in passages.data])
    scores = matrix @ np.asarray(query.data[0].embedding)
    order = np.argsort(-scores)
    print(f"  {matrix.shape[1]} dims, {passages.usage.prompt_tokens} tokens embedded")
    return [(DOCUMENTS[i]["id"], float(scores[i])) for i in order]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", default="Chi ha dipinto la Gioconda e dove si trova?")
    parser.add_argument("--model", default=None, help="embedding model the service loads")
    parser.add_argument("--url", default=None, help="use a running service instead")
    args = parser.parse_args(argv)

    proc = None
    url = args.url
    if url is None:
        proc, url = start_service(service_model(args.model), 128)
    try:
        with BertinoClient(url, timeout=300) as probe:
            wait_ready(probe, proc)
        key = os.environ.get("BERTINO_RAG_API_KEY") or "not-needed"
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key)
        model = client.models.list().data[0]
        print(f"service {url}/v1 serves {model.id} ({model.model_extra.get('dimensions')} "
              f"dims; Matryoshka: {model.model_extra.get('matryoshka_dimensions')})\n")
        print(f"Domanda: {args.question}")
        full = ranking(client, model.id, args.question, None)
        cut = ranking(client, model.id, args.question, 128)
        print("\n  rank  full vector              128 dims")
        for n, ((a, sa), (b, sb)) in enumerate(zip(full, cut, strict=True), 1):
            print(f"  {n:>4}  {a:<16} {sa:.3f}   {b:<16} {sb:.3f}")
        same = sum(a == b for (a, _), (b, _) in zip(full[:3], cut[:3], strict=True))
        print(f"\n  the top 3 agree at {same} of 3 positions")
        try:
            client.embeddings.create(model=model.id, input="Ciao", dimensions=100)
        except openai.BadRequestError as err:
            print(f"\ndimensions=100 -> HTTP {err.status_code}: {err.body['message']}")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
