"""Integrations with other frameworks, each behind its own extra.

- :mod:`bertino_rag.integrations.langchain` (``pip install 'bertino-rag[langchain]'``):
  ``BertinoEmbeddings``, ``BertinoRetriever`` and ``BertinoVectorStore`` for LangChain.
- :mod:`bertino_rag.integrations.llamaindex` (``[llamaindex]``): ``BertinoRetriever`` and
  ``BertinoEmbedding`` for LlamaIndex.
- :mod:`bertino_rag.integrations.haystack` (``[haystack]``): ``BertinoRetriever``,
  ``BertinoTextEmbedder`` and ``BertinoDocumentEmbedder`` components for Haystack.
- :mod:`bertino_rag.integrations.mcp` (``[mcp]``): the Model Context Protocol server of
  ``bertino-rag mcp``.

Each translates the framework's calls onto a :class:`~bertino_rag.retriever.Retriever` (or
its encoder). Nothing is imported here, so importing this package never needs an optional
dependency.
"""
