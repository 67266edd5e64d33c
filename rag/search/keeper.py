"""One object owns a knowledge base's index: re-index → commit → the retriever answers from the new
generation → missing vectors filled in the background → the status line staff see. The page, the app's
start-up, base creation and `kexie index` all go through it. In the app it holds the base's retriever
(vectors fill in a thread); the CLI's holds none (nothing to reload; vectors fill in a detached process,
or in the foreground with `wait_for_vectors`)."""

from __future__ import annotations

import logging
import threading
import time

from rag.index import backfill
from rag.index.indexer import IndexReport, Progress, index_corpus
from rag.index.store import VectorState
from rag.search.retrieval import Retriever
from rag.settings import Settings

log = logging.getLogger("kexie.index")


class IndexKeeper:
    """A base's re-index, one at a time (questions keep reading the committed generation meanwhile)."""

    def __init__(self, retriever: Retriever | None = None, settings: Settings | None = None):
        if retriever is None and settings is None:
            raise ValueError("IndexKeeper needs a retriever or settings")
        self.retriever = retriever
        self.settings: Settings = retriever.settings if retriever is not None else settings
        self._lock = threading.Lock()
        self._filler: threading.Thread | None = None
        self.process: int | None = None  # the detached filler's pid (no retriever)

    def reindex(self, progress: Progress | None = None, fill: bool = True, rebuild: bool = False) -> IndexReport:
        """Index what changed with what the app already holds (its model, open Chroma store and loaded
        dictionary); returns once the retriever answers from the new generation, then vectors fill behind
        (`fill=False`: not started, for benchmarks that time the re-index alone, and the CLI's --wait)."""
        with self._lock:
            r = self.retriever
            if r is None:
                rep = index_corpus(self.settings, rebuild=rebuild, progress=progress, wait=False)
                if fill:
                    self.process = backfill.start_process(self.settings)
                return rep
            try:
                vectors = r.vectors
            except Exception as e:  # a store that cannot open: the indexer opens its own (a damaged one is set aside)
                log.warning("向量库无法打开（%s），索引时重新打开", e)
                vectors = None
            rep = index_corpus(r.settings, rebuild=rebuild, progress=progress, embedder=r.embedder, vectors=vectors,
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
        """Fill the missing vectors in a background thread unless one already does (no retriever: in a
        detached process, `self.process`); the progress line ("" when nothing is missing)."""
        with self._lock:
            if self.retriever is None:
                self.process = backfill.start_process(self.settings)
            elif self._filler is None or not self._filler.is_alive():
                r = self.retriever
                self._filler = backfill.start_thread(self.settings, r.embedder, r.vectors)
        return self.vector_line()

    def wait_for_vectors(self, progress: Progress | None = None) -> tuple[int, VectorState | None]:
        """Fill the missing vectors here and now (`kexie index --wait`): how many were embedded, and the final
        state. Another worker may be filling: this blocks until it is done, then finishes whatever is left."""
        rep = IndexReport()
        final = backfill.fill(self.settings, progress=progress, rep=rep)
        return rep.embedded, final or backfill.current_state(self.settings)

    def vector_state(self) -> VectorState | None:
        return backfill.current_state(self.settings)

    def vector_line(self) -> str:
        return backfill.describe(backfill.current_state(self.settings))

    def status(self) -> str:
        """What the 知识库 tab shows: vector progress, and the retriever's notice when it serves an older
        generation or hides deleted files."""
        line = self.vector_line() or "向量索引已完成"
        health = self.retriever.health if self.retriever is not None else ""
        return f"{line}\n\n注意：{health}" if health else line
