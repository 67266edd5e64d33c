"""The hybrid retriever as a LangChain `BaseRetriever`, so users can compose it in their own chains."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from rag.search.retrieval import Retriever


class KexieRetriever(BaseRetriever):
    """`KexieRetriever(retriever=Retriever(settings), k=5, mode="hybrid").invoke("问题")`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    retriever: Any
    k: int = 5
    mode: str = "hybrid"

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        r: Retriever = self.retriever
        docs = []
        for h in r.search(query, self.k, self.mode):
            meta = h.to_json()
            meta.pop("text")
            meta["id"] = h.chunk.id
            docs.append(Document(page_content=h.chunk.text, metadata=meta))
        return docs
