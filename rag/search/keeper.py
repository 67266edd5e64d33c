"""One object owns a knowledge base's index while the app runs: re-index → commit → the retriever answers
from the new generation → missing vectors filled in the background → the status line staff see. The page,
the app's start-up and base creation all go through it; the CLI, which holds no retriever, indexes with
`index_corpus` and fills in a detached process (`kexie index`)."""

from __future__ import annotations

import logging
import threading
import time

from rag.index import backfill
from rag.index.indexer import IndexReport, Progress, index_corpus
from rag.search.retrieval import Retriever

log = logging.getLogger("kexie.index")


class IndexKeeper:
    """A base's re-index, one at a time (questions keep reading the committed generation meanwhile)."""

    def __init__(self, retriever: Retriever):
        self.retriever = retriever
        self._lock = threading.Lock()
        self._filler: threading.Thread | None = None

    @property
    def settings(self):
        return self.retriever.settings

    def reindex(self, progress: Progress | None = None, fill: bool = True) -> IndexReport:
        """Index what changed with what the app already holds (its model, open Chroma store and loaded
        dictionary); returns once the retriever answers from the new generation, then vectors fill behind
        (`fill=False`: not started, for benchmarks that time the re-index alone)."""
        with self._lock:
            r = self.retriever
            try:
                vectors = r.vectors
            except Exception as e:  # a store that cannot open: the indexer opens its own (a damaged one is set aside)
                log.warning("向量库无法打开（%s），索引时重新打开", e)
                vectors = None
            rep = index_corpus(r.settings, progress=progress, embedder=r.embedder, vectors=vectors,
                               tokenizer=r.loaded_tokenizer(), wait=False)
            t = time.perf_counter()
            r.snapshot(wait=True)
            rep.stages["reload"] = time.perf_counter() - t
            rep.seconds += rep.stages["reload"]
            rep.searchable_seconds = rep.seconds
        if fill:
            self.fill_vectors()
        return rep

    def fill_vectors(self) -> str:
        """Fill the missing vectors in a background thread unless one already does; the progress line
        ("" when nothing is missing)."""
        with self._lock:
            if self._filler is None or not self._filler.is_alive():
                r = self.retriever
                self._filler = backfill.start_thread(self.settings, r.embedder, r.vectors)
        return self.vector_line()

    def vector_line(self) -> str:
        return backfill.describe(backfill.current_state(self.settings))

    def status(self) -> str:
        """What the 知识库 tab shows: vector progress, and the retriever's notice when it serves an older
        generation or hides deleted files."""
        line = self.vector_line() or "向量索引已完成"
        health = self.retriever.health
        return f"{line}\n\n注意：{health}" if health else line
