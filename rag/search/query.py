"""One question of one turn: its text, its analysis and its embeddings, each computed once and passed to
retrieval, answer scoring and FAQ matching."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rag.search.question import Question


@dataclass
class Query:
    text: str  # the standalone question (a follow-up already rewritten)
    analysis: Question  # with the corpus's places and document names
    _vectors: dict[str, object] = field(default_factory=dict, repr=False)

    def vector(self, embedder, timings: dict[str, float] | None = None):
        """The question's embedding by this model, computed on first use (`timings["embed_query"]` then)."""
        if embedder.name not in self._vectors:
            t = time.perf_counter()
            self._vectors[embedder.name] = embedder.embed_query(self.text)
            if timings is not None:
                timings["embed_query"] = time.perf_counter() - t
        return self._vectors[embedder.name]
