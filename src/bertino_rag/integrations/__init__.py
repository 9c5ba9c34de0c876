"""Integrations with other frameworks, each behind its own extra.

- :mod:`bertino_rag.integrations.langchain` (``pip install 'bertino-rag[langchain]'``):
  ``BertinoEmbeddings``, ``BertinoRetriever`` and ``BertinoVectorStore`` for LangChain.

Nothing is imported here, so importing this package never needs an optional dependency.
"""
