"""Query a committed index generation: BM25, vectors, or both fused."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rag.index import store
from rag.index.bm25 import BM25Index
from rag.index.embeddings import Embedder, load_embedder
from rag.index.tokenizer import Tokenizer
from rag.index.vectors import StoreClosed, VectorStore
from rag.ingest.metadata import DocMeta
from rag.models import Chunk, Hit, RetrievalMode
from rag.search import structure
from rag.search.fusion import rrf
from rag.search.question import analyze
from rag.search.structure import DocInfo
from rag.settings import Settings


@dataclass
class Retrieval:
    """One search's hits and the seconds each stage took (per call: concurrent searches never share)."""

    hits: list[Hit]
    timings: dict[str, float]


def fused_hits(chunks: list[Chunk], bm: list[tuple[int, float]], vec: list[tuple[int, float]], s: Settings, k: int,
               mode: RetrievalMode, adjust: Callable[[list[tuple[int, float]]], list[tuple[int, float]]] | None = None,
               no_vector: frozenset[int] = frozenset()) -> list[Hit]:
    """The k best of the BM25 and vector rankings ((chunk index, score), best first) fused by weighted RRF,
    each hit with both retrievers' ranks and scores (None where one did not return it). `adjust` re-orders
    the fused ranking before the cut (document structure: `structure.rerank`).

    `no_vector`: chunks whose vectors are still being made. They cannot be in the vector ranking, so in
    hybrid mode their BM25 term stands for both (scaled by the total weight over BM25's): a chunk found by
    BM25 alone is ranked as if the vector retriever had agreed, not pushed below every chunk both found."""
    bm_rank = {i: (r, sc) for r, (i, sc) in enumerate(bm, 1)}
    vec_rank = {i: (r, sc) for r, (i, sc) in enumerate(vec, 1)}
    runs = {RetrievalMode.HYBRID: [(bm, s.bm25_weight), (vec, s.vector_weight)],
            RetrievalMode.BM25: [(bm, s.bm25_weight)], RetrievalMode.VECTOR: [(vec, s.vector_weight)]}[mode]
    fused = rrf([[i for i, _ in ranking] for ranking, _ in runs], k=s.rrf_k, weights=[w for _, w in runs])
    if no_vector and mode == RetrievalMode.HYBRID and s.bm25_weight > 0:
        scale = (s.bm25_weight + s.vector_weight) / s.bm25_weight
        fused = sorted(((i, sc * scale if i in no_vector else sc) for i, sc in fused), key=lambda x: -x[1])
    if adjust is not None:
        fused = adjust(fused)
    hits = []
    for rank, (i, score) in enumerate(fused[:k], 1):
        b, v = bm_rank.get(i), vec_rank.get(i)
        hits.append(Hit(chunks[i], score, b[0] if b else None, v[0] if v else None, b[1] if b else None,
                        v[1] if v else None, rank))
    return hits


class IndexNotReady(Exception):
    """No usable index: str() tells the user what to run."""


@dataclass
class Snapshot:
    """One immutable generation loaded into memory."""

    manifest: store.Manifest
    chunks: list[Chunk]
    bm25: BM25Index
    tokenizer: Tokenizer
    by_id: dict[str, list[int]] = field(default_factory=dict)
    places: frozenset[str] = frozenset()  # the corpus's place names (answer scoring)
    docs: dict[str, DocInfo] = field(default_factory=dict)  # per source: metadata, version, names
    documents: frozenset[str] = frozenset()  # the corpus's policy document names, as questions name them
    segments: dict[str, list[Chunk]] = field(default_factory=dict)  # every row of each segment, by segment id

    @classmethod
    def load(cls, index_dir: Path, base_tokenizer: Tokenizer | None = None, previous: "Snapshot | None" = None) -> "Snapshot":
        """`previous`: the generation in memory; its segments (chunks, BM25) are shared, not read again,
        so loading a one-file change costs that file."""
        m = store.Manifest.read(index_dir)
        if m is None or not m.generation:
            raise IndexNotReady(f"索引不存在：{index_dir}。请先运行 kexie index")
        gen = index_dir / m.generation
        if not (gen / "segments.json").is_file():  # a layout from before segments
            raise IndexNotReady(f"索引格式已更新：{index_dir}。请运行 kexie index 重建索引")
        known = previous.segments if previous is not None else {}
        layout = store.read_segments(gen)
        segs = {seg.id: known.get(seg.id) or store.read_segment_chunks(gen, seg.id) for seg in layout}
        chunks = store.live_rows(layout, segs.__getitem__)
        by_id: dict[str, list[int]] = {}
        for i, c in enumerate(chunks):
            by_id.setdefault(c.id, []).append(i)
        docs = structure.documents({s: DocMeta.from_dict(r.meta) for s, r in m.files.items() if r.status == "indexed"},
                                   chunks)
        bm25 = BM25Index.load(gen / "bm25", previous.bm25 if previous is not None else None)
        return cls(m, chunks, bm25, Tokenizer.reuse(store.read_user_words(gen), base_tokenizer), by_id,
                   frozenset(store.read_places(gen)), docs, frozenset().union(*(d.names for d in docs.values())), segs)


@dataclass
class VectorView:
    """What the vector retriever may use for one generation: one space, and the rows still without a vector."""

    model: str
    missing: frozenset[int]
    state: store.VectorState


class Retriever:
    """Hybrid retriever over the current generation; reloads when a re-index commits a new one."""

    REOPEN_S = 30.0  # how often at most a reader reopens its view to see another process's new vectors

    def __init__(self, settings: Settings, embedder: Embedder | None = None):
        self.settings = settings
        # A given model serves its own space; one of another name (a test double) stands for the configured model.
        self._embedders: dict[str, Embedder] = {}
        if embedder is not None:
            name = getattr(embedder, "name", "")
            self._embedders[name if name == settings.fast_embedding_model else settings.embedding_model] = embedder
        self._vectors: VectorStore | None = None
        self._served = settings.embedding_model  # the vector space of the current generation
        self._seen = ("", -1)  # (model, done) when the open view was opened: what it can see
        self._opened_at = 0.0
        self._view_cache: tuple | None = None
        self._pending: tuple[str, list[str]] = ("", [])
        self._pending_vectors: dict[tuple[str, str], object] = {}  # (model, chunk id) -> vector embedded at query time
        self._snap: Snapshot | None = None
        self._manifest_cache: tuple | None = None
        self._view = ""  # alias key for Chroma when another process wrote the current generation
        self._lock = threading.Lock()  # loading a generation
        self._vectors_lock = threading.Lock()
        self._embedder_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------
    def snapshot(self, wait: bool = False) -> Snapshot:
        """The newest committed generation (a cheap manifest read on every call).

        Loading a new generation takes about a second; meanwhile other threads keep answering from the
        one they have (`wait=True` blocks until the new one is loaded)."""
        m = self._manifest()
        if m is None:
            raise IndexNotReady(f"索引不存在：{self.settings.index_dir}。请先运行 kexie index")
        snap = self._snap
        if snap is not None and snap.manifest.generation == m.generation:
            return snap
        if m.model != self.settings.embedding_model:
            raise IndexNotReady(
                f"索引由嵌入模型“{m.model}”构建，当前设置为“{self.settings.embedding_model}”。"
                "请运行 kexie index 重建索引（向量空间不能混用）"
            )
        if not self._lock.acquire(blocking=wait or snap is None):
            return snap  # another thread is loading the new generation
        try:
            if self._snap is None or self._snap.manifest.generation != m.generation:
                new = Snapshot.load(self.settings.index_dir, self._snap.tokenizer if self._snap else None, self._snap)
                # Another process wrote this generation's vectors: this process's cached HNSW cannot see
                # them, so read through a view opened after that commit. Or the base's vectors moved to
                # another collection (an old index rebuilt with an identity). Either way the open store is
                # retired: it closes once the queries still running on it finish.
                foreign = new.manifest.writer != store.writer_id() and not self.settings.chroma_host
                open_kb = self._vectors.kb_id if self._vectors is not None else None
                if foreign or (open_kb is not None and open_kb != new.manifest.kb_id):
                    with self._vectors_lock:
                        if foreign:
                            self._view = new.manifest.generation
                        old, self._vectors = self._vectors, None
                    if old is not None:
                        old.retire()
                self._snap = new
            return self._snap
        finally:
            self._lock.release()

    def close(self) -> None:
        """Release the vector store (and its alias link); the retriever reopens it if used again."""
        with self._vectors_lock:
            old, self._vectors = self._vectors, None
        if old is not None:
            old.close()

    def loaded_tokenizer(self) -> Tokenizer | None:
        """The tokenizer of the generation in memory, if any (an indexer in this process copies it)."""
        return self._snap.tokenizer if self._snap else None

    def _manifest(self) -> store.Manifest | None:
        """The manifest, parsed again only when the file changed (it is replaced atomically on commit)."""
        p = self.settings.index_dir / store.MANIFEST
        try:
            st = p.stat()
        except FileNotFoundError:
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._manifest_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        m = store.Manifest.read(self.settings.index_dir)
        self._manifest_cache = (key, m)
        return m

    @property
    def embedder(self) -> Embedder:
        """The configured (accurate) model; `embedder_for` gives the one a generation's vectors need."""
        return self.embedder_for(self.settings.embedding_model)

    def embedder_for(self, model: str) -> Embedder:
        e = self._embedders.get(model)
        if e is None:
            with self._embedder_lock:
                e = self._embedders.get(model)
                if e is None:
                    s = self.settings
                    e = self._embedders[model] = load_embedder(model, s.embedding_batch_size, s.query_instruction)
        return e

    @property
    def vectors(self) -> VectorStore:
        """The open store of the current generation's vector space."""
        vs = self._vectors
        if vs is None:
            # Opening Chroma from several threads at once races inside chromadb: one opener.
            with self._vectors_lock:
                if self._vectors is None:
                    s, m = self.settings, self._manifest()
                    self._vectors = VectorStore.open(s.chroma_dir, self._served, s.chroma_host, s.chroma_port,
                                                     self._view, kb_id=m.kb_id if m else "")
                    self._opened_at = time.monotonic()
                vs = self._vectors
        return vs

    def vector_view(self, snap: Snapshot) -> VectorView:
        """The generation's vector space and the rows without a usable vector (cheap: re-read only when the
        generation's vectors.json changes). Vectors another process stored become visible when this
        process reopens its view of Chroma: at most every REOPEN_S seconds, and as soon as they are complete."""
        gen = snap.manifest.generation
        gen_dir = self.settings.index_dir / gen
        try:
            fst = (gen_dir / "vectors.json").stat()
            key = (gen, fst.st_ino, fst.st_mtime_ns, fst.st_size)
        except FileNotFoundError:
            key = (gen, None)
        cached = self._view_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        st = store.VectorState.read(gen_dir) or store.VectorState(snap.manifest.model)
        with self._vectors_lock:
            foreign = bool(st.writer) and st.writer != store.writer_id() and not self.settings.chroma_host
            old = None
            if st.model != self._served:
                old, self._vectors, self._served = self._vectors, None, st.model
            elif foreign and self._vectors is not None and self._seen != (st.model, st.done):
                if st.done >= st.total or time.monotonic() - self._opened_at > self.REOPEN_S:
                    old, self._vectors = self._vectors, None
            if old is not None or (foreign and self._vectors is None):
                # The alias is a file name: the model (maybe a path) enters it as a digest.
                tag = hashlib.sha1(st.model.encode()).hexdigest()[:8]
                self._view = f"{gen}-{tag}-{st.done}" if foreign else self._view
            if self._vectors is None:
                self._seen = (st.model, st.done)  # it opens after this read, so it sees at least these
            visible = self._seen[1] if foreign and self._seen[0] == st.model else st.done
        if old is not None:
            old.retire()
        if self._pending[0] != gen:
            self._pending = (gen, store.read_id_list(gen_dir, store.PENDING))
        ids = self._pending[1][visible:st.total] if visible < st.total else []
        missing = frozenset(i for cid in ids for i in snap.by_id.get(cid, ()))
        view = VectorView(st.model, missing, st)
        if not (foreign and visible < st.done):  # a reopen is due: look again on the next query
            self._view_cache = (key, view)
        return view

    # -- search --------------------------------------------------------------------
    def bm25_ranking(self, snap: Snapshot, query: str, n: int) -> list[tuple[int, float]]:
        return snap.bm25.search(snap.tokenizer.tokens(query), n)

    def vector_ranking(self, snap: Snapshot, query: str, n: int, timings: dict[str, float] | None = None,
                       view: VectorView | None = None, q=None) -> list[tuple[int, float]]:
        view = view or self.vector_view(snap)
        if q is None:
            q = self.query_vector(view, query, timings)
        # A batch being written may hold pending ids: ask for enough to drop them and keep n.
        k = min(n + 10 + min(len(view.missing), 256), len(snap.by_id))
        try:
            found = self.vectors.query(q, k)
        except StoreClosed:  # a newer view replaced the store between picking it up and querying it
            found = self.vectors.query(q, k)
        out: list[tuple[int, float]] = []
        # Chroma may hold vectors of an uncommitted or newer generation, or of a batch not yet
        # committed: keep only ours, and only those the generation's state says are stored.
        for cid, sim in found:
            for i in snap.by_id.get(cid, ()):
                if i not in view.missing:
                    out.append((i, sim))
        return out[:n]

    def query_vector(self, view: VectorView, query: str, timings: dict[str, float] | None = None):
        t = time.perf_counter()
        q = self.embedder_for(view.model).embed_query(query)
        if timings is not None:
            timings["embed_query"] = time.perf_counter() - t
        return q

    def score_pending(self, hits: list[Hit], view: VectorView, q, snap: Snapshot) -> None:
        """Give the returned passages that have no stored vector yet their cosine to the query, embedded now
        (at most k passages, each once per process): the answer's features then see how close a new
        document is to the question, as they will once its vector is stored. Ranks are left as fused."""
        todo = [h for h in hits if h.vector_score is None and any(i in view.missing for i in snap.by_id.get(h.chunk.id, ()))]
        if not todo:
            return
        cache = self._pending_vectors
        new = [h.chunk for h in todo if (view.model, h.chunk.id) not in cache]
        if new:
            for c, v in zip(new, self.embedder_for(view.model).embed_passages([c.vector_text for c in new])):
                cache[(view.model, c.id)] = v
            while len(cache) > 4096:  # bounded: the oldest go first
                cache.pop(next(iter(cache)))
        for h in todo:
            h.vector_score = float(cache[(view.model, h.chunk.id)] @ q)

    def search(self, query: str, k: int | None = None, mode: str | None = None, snap: Snapshot | None = None,
               **filters) -> list[Hit]:
        """The k best chunks, best first (see `retrieve` for the per-stage timings too)."""
        return self.retrieve(query, k, mode, snap, **filters).hits

    def retrieve(self, query: str, k: int | None = None, mode: str | None = None, snap: Snapshot | None = None,
                 documents: list[str] | None = None, effective_on: str | None = None) -> Retrieval:
        """Hits and this call's timings. `Hit.score` is the fused (RRF) score in every mode, so it means
        the same thing whichever retrievers ran; each retriever's own score is in bm25_score / vector_score.
        `documents` (file or title names) and `effective_on` (ISO date: the versions in force that day)
        restrict the search."""
        s = self.settings
        k = k or s.top_k
        mode = RetrievalMode.from_str(mode or s.retrieval_mode)
        snap = snap or self.snapshot()
        timings: dict[str, float] = {}
        if not snap.chunks or not query.strip():
            return Retrieval([], timings)
        allowed = None
        if documents:
            allowed = structure.matching_sources(documents, snap.docs)
        if effective_on:
            on = structure.in_force_on(effective_on, snap.docs)
            allowed = on if allowed is None else allowed & on
        n = max(s.candidates, k)
        # A filtered search looks deeper, so the filter does not leave it with too few candidates.
        depth = n if allowed is None else min(len(snap.chunks), n * 10)
        q = analyze(query, documents=snap.documents)
        t = time.perf_counter()
        # BM25 matches the content words: a document's name matches every one of its chunks (its title).
        words = structure.content_query(q, snap.docs) if s.structure else query
        bm = self.bm25_ranking(snap, words, depth) if mode in (RetrievalMode.HYBRID, RetrievalMode.BM25) else []
        timings["bm25"] = time.perf_counter() - t
        t = time.perf_counter()
        view = self.vector_view(snap) if mode in (RetrievalMode.HYBRID, RetrievalMode.VECTOR) else None
        qv = self.query_vector(view, query, timings) if view is not None else None
        vec = self.vector_ranking(snap, query, depth, timings, view, qv) if view is not None else []
        timings["vector"] = time.perf_counter() - t
        if allowed is not None:
            bm = [x for x in bm if snap.chunks[x[0]].source in allowed][:n]
            vec = [x for x in vec if snap.chunks[x[0]].source in allowed][:n]
        adjust = (lambda fused: structure.rerank(fused, snap.chunks, q, snap.docs)) if s.structure else None
        hits = fused_hits(snap.chunks, bm, vec, s, k, mode, adjust, view.missing if view else frozenset())
        if view is not None and view.missing:
            t = time.perf_counter()
            self.score_pending(hits, view, qv, snap)
            timings["score_pending"] = time.perf_counter() - t
        return Retrieval(structure.annotate(hits, snap.docs), timings)
