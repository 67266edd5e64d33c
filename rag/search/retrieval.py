"""Query a committed index generation: BM25, vectors, or both fused."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rag.index import store
from rag.index.embeddings import Embedder, load_embedder
from rag.index.tokenizer import Tokenizer
from rag.index.vectors import StoreClosed, VectorStore
from rag.models import Chunk, Hit, RetrievalMode
from rag.search import structure
from rag.search.fusion import rrf
from rag.search.query import Query
from rag.search.rerank import rerank as rerank_hits
from rag.search.snapshot import (
    IndexDamaged,
    IndexNotReady,
    Snapshot,
    deleted_text,
    problems_text,
    rebuild_command,
)
from rag.settings import Settings

log = logging.getLogger("kexie.search")

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


def _older(settings: Settings, m: store.Manifest | None):
    """The manifests of the generations on disk a damaged one falls back to, newest first: those older than
    the one `m` names (newer folders were never committed), or, when the manifest itself is damaged
    (`m` None), every generation that kept a copy of the manifest that committed it."""
    index_dir = settings.index_dir
    for gen in store.generation_names(index_dir):
        if m is not None and gen >= m.generation:
            continue
        try:
            gm = store.generation_manifest(index_dir, gen)
        except store.Damage:
            continue
        if gm is None and m is not None:  # written before generations kept their manifest: the current records
            gm = dataclasses.replace(m, generation=gen)
        if gm is not None and gm.model == settings.embedding_model:
            yield gm


def _fallback_warning(settings: Settings, m: store.Manifest | None, problems: list[store.Problem], gen: str) -> str:
    what = "索引清单 manifest.json " if m is None else f"当前索引 {m.generation} "
    older = "最近一次提交的索引" if m is None else "上一版索引"
    return (f"{what}已损坏（{problems_text(problems)}），暂时使用{older} {gen} 回答，最近的修改可能不在其中。"
            f"请运行 {rebuild_command(settings)} 重建索引")


def _damaged(settings: Settings, m: store.Manifest | None, problems: list[store.Problem]) -> IndexDamaged:
    what = "索引清单 manifest.json " if m is None else f"索引 {m.generation} "
    return IndexDamaged(f"{what}已损坏，磁盘上也没有完好的旧版本：{problems_text(problems)}。"
                        f"请运行 {rebuild_command(settings)} 重建索引", problems)


def _deleted_notice(settings: Settings, m: store.Manifest) -> str:
    """Indexed documents whose files are gone from corpus/ (one stat each): the retriever hides them."""
    corpus = settings.corpus_dir
    if not corpus.is_dir():
        return ""
    return deleted_text(src for src, r in m.files.items() if r.status == "indexed" and not (corpus / src).exists())


def check_index(settings: Settings) -> tuple[store.Manifest | None, str]:
    """The start-up check (app.py, before the assistant is made): (the manifest to serve, a notice for
    people or ''). The manifest is None when there is no index yet. A damaged current generation (or
    manifest) gives the newest intact older generation's manifest and a warning, the way the retriever
    will serve it; with none intact, raises `IndexDamaged` (what is damaged, the command that rebuilds).
    The vector side of an intact current generation is checked against the store, and vectors the store
    lost are planned again so the background filler refills them (`backfill.repair`).

    Files are checked at the "lines" level (sizes, row counts, small files parsed), not parsed chunk by
    chunk: damage found only by the full parse surfaces as `IndexDamaged` at the first search."""
    from rag.index import backfill

    index_dir = settings.index_dir
    try:
        m, problems = store.Manifest.read(index_dir), []
    except store.Damage as e:
        m, problems = None, e.problems
    if m is None and not problems:
        return None, ""
    if m is not None:
        if m.version != store.FORMAT_VERSION or m.model != settings.embedding_model:
            return m, ""  # an older layout is re-indexed by the caller; a model change is refused at query time
        problems = [p for p in store.check_generation(index_dir, m.generation, m, level="lines", all_files=False)
                    if p.part != "vectors"]
        if not problems:
            notes = [backfill.repair(settings), _deleted_notice(settings, m)]
            return m, "\n".join(n for n in notes if n)
    for gm in _older(settings, m):
        if not [p for p in store.check_generation(index_dir, gm.generation, gm, level="lines", all_files=False)
                if p.part != "vectors"]:
            return gm, _fallback_warning(settings, m, problems, gm.generation)
    raise _damaged(settings, m, problems)


@dataclass
class VectorView:
    """What the vector retriever may use for one generation: one space, and the rows still without a vector."""

    model: str
    missing: frozenset[int]
    state: store.VectorState
    # Why the store cannot be trusted for this generation ('' when it can): it does not open, or holds fewer
    # vectors than vectors.json says are stored, or vectors.json is unreadable. Then no row counts as
    # having a vector (BM25 answers, fused fairly) until the filler has planned them again.
    problem: str = ""


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
        self._target = ""  # what the manifest named when `_snap` was loaded (its generation, or a damaged file's key)
        self._failed: tuple[str, IndexNotReady] | None = None  # (target, error): nothing intact for that target
        self._manifest_cache: tuple | None = None
        self._warned: set[str] = set()  # problems already logged (once each, not per query)
        self._view = ""  # alias key for Chroma when another process wrote the current generation
        self._lock = threading.Lock()  # loading a generation
        self._vectors_lock = threading.Lock()
        self._embedder_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------
    def snapshot(self, wait: bool = False) -> Snapshot:
        """The newest committed generation (a cheap manifest read on every call).

        Loading a new generation takes about a second; meanwhile other threads keep answering from the
        one they have (`wait=True` blocks until the new one is loaded). A damaged generation (or manifest)
        is never served: the newest intact older generation on disk answers, with `Snapshot.warning` set
        and a logged warning; with none, `IndexDamaged` says what is damaged and how to rebuild."""
        key, m, damage = self._manifest_state()
        if m is None and damage is None:
            raise IndexNotReady(f"索引不存在：{self.settings.index_dir}。请先运行 kexie index")
        target = m.generation if m is not None else f"damaged:{key}"
        snap = self._snap
        if snap is not None and self._target == target:
            return snap
        failed = self._failed
        if failed is not None and failed[0] == target:
            raise failed[1]
        if m is not None and m.model != self.settings.embedding_model:
            raise IndexNotReady(
                f"索引由嵌入模型“{m.model}”构建，当前设置为“{self.settings.embedding_model}”。"
                "请运行 kexie index 重建索引（向量空间不能混用）"
            )
        if not self._lock.acquire(blocking=wait or snap is None):
            return snap  # another thread is loading the new generation
        try:
            if self._snap is None or self._target != target:
                try:
                    new = self._load(m, damage)
                except IndexNotReady as e:
                    self._failed = (target, e)
                    raise
                # Another process wrote this generation's vectors: this process's cached HNSW cannot see
                # them, so read through a view opened after that commit. Or the base's vectors moved to
                # another collection (an old index rebuilt with an identity). Either way the open store is
                # retired: it closes once the queries still running on it finish.
                foreign = new.manifest.writer != store.writer_id() and not self.settings.chroma_host
                open_kb = self._vectors.kb_id if self._vectors is not None else None
                same = self._snap is not None and self._snap.manifest.generation == new.manifest.generation
                if not same and (foreign or (open_kb is not None and open_kb != new.manifest.kb_id)):
                    with self._vectors_lock:
                        if foreign:
                            self._view = new.manifest.generation
                        old, self._vectors = self._vectors, None
                    if old is not None:
                        old.retire()
                self._snap, self._target, self._failed = new, target, None
            return self._snap
        finally:
            self._lock.release()

    def _load(self, m: store.Manifest | None, damage: store.Damage | None) -> Snapshot:
        """The generation `m` names; if it (or the manifest itself) is damaged, the newest intact older one."""
        s, prev = self.settings, self._snap
        if m is None:
            problems = damage.problems
        else:
            try:
                return self._open(m, prev)
            except store.Damage as e:
                problems = e.problems
        for gm in _older(s, m):
            gen = gm.generation
            if prev is not None and prev.manifest.generation == gen:
                snap = prev
            else:
                try:
                    snap = self._open(gm, prev)
                except store.Damage:
                    continue
            snap = dataclasses.replace(snap, warning=_fallback_warning(s, m, problems, gen))
            log.warning("%s", snap.warning)
            return snap
        if prev is not None and (m is None or prev.manifest.generation != m.generation):
            # Nothing intact on disk, but the generation in memory still answers.
            log.warning("索引已损坏（%s），继续使用内存中的 %s", problems_text(problems), prev.manifest.generation)
            return dataclasses.replace(prev, warning=(
                f"索引已损坏（{problems_text(problems)}），暂时使用内存中的 {prev.manifest.generation} 回答；"
                f"重启后将无法使用。请运行 {rebuild_command(s)} 重建索引"))
        raise _damaged(s, m, problems)

    def _open(self, m: store.Manifest, prev: Snapshot | None) -> Snapshot:
        return Snapshot.load(self.settings.index_dir, prev.tokenizer if prev else None, prev, m, self.settings.corpus_dir)

    @property
    def health(self) -> str:
        """'' when the index answers as it should; otherwise a notice in Chinese for the web page: an older
        generation answers because the current one is damaged, the vector store cannot be trusted (BM25
        answers meanwhile), documents deleted from corpus/ are hidden until the next re-index, or why
        there is no index to answer from."""
        try:
            snap = self.snapshot()
        except IndexNotReady as e:
            return str(e)
        parts = [snap.warning, snap.notice]
        try:
            view = self.vector_view(snap)
            if view.problem:
                parts.append(self._vector_notice(view.problem))
        except Exception as e:  # the notice must not fail the page
            parts.append(f"向量索引状态无法读取（{type(e).__name__}）")
        return "\n".join(p for p in parts if p)

    @staticmethod
    def _vector_notice(problem: str) -> str:
        return f"向量索引不可用（{problem}），检索暂时只用 BM25；运行 kexie index 重新生成缺少的向量"

    def close(self) -> None:
        """Release the vector store (and its alias link); the retriever reopens it if used again."""
        with self._vectors_lock:
            old, self._vectors = self._vectors, None
        if old is not None:
            old.close()

    def loaded_tokenizer(self) -> Tokenizer | None:
        """The tokenizer of the generation in memory, if any (an indexer in this process copies it)."""
        return self._snap.tokenizer if self._snap else None

    def _manifest_state(self) -> tuple[tuple | None, store.Manifest | None, store.Damage | None]:
        """(file key, manifest, damage), parsed again only when the file changed (it is replaced atomically
        on commit). No file: (None, None, None); a damaged one: (key, None, the Damage)."""
        p = self.settings.index_dir / store.MANIFEST
        try:
            st = p.stat()
        except FileNotFoundError:
            return None, None, None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._manifest_cache
        if cached is not None and cached[0] == key:
            return cached
        try:
            state = (key, store.Manifest.read(self.settings.index_dir), None)
        except store.Damage as e:
            state = (key, None, e)
        except FileNotFoundError:  # replaced between stat and read: the next call sees the new one
            return None, None, None
        self._manifest_cache = state
        return state

    def _manifest(self) -> store.Manifest | None:
        """The committed manifest, or the one of the generation being served when that is unreadable."""
        m = self._manifest_state()[1]
        if m is None and self._snap is not None:
            return self._snap.manifest
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
                                                     self._view, kb_id=m.kb_id if m else store.kb_identity(s.index_dir))
                    self._opened_at = time.monotonic()
                vs = self._vectors
        return vs

    def vector_view(self, snap: Snapshot) -> VectorView:
        """The generation's vector space and the rows without a usable vector (cheap: re-read only when the
        generation's vectors.json changes). Vectors another process stored become visible when this
        process reopens its view of Chroma: at most every REOPEN_S seconds, and as soon as they are complete.

        Each time it is re-read the store is checked against vectors.json (one count): a store that does not
        open, or holds fewer vectors than the generation says are stored, or an unreadable vectors.json is a
        `problem`; then every row counts as missing (BM25 answers, fused fairly), never silently none found.
        A view with a problem is looked at again after REOPEN_S seconds even if nothing changed."""
        gen = snap.manifest.generation
        gen_dir = self.settings.index_dir / gen
        try:
            fst = (gen_dir / "vectors.json").stat()
            key = (gen, fst.st_ino, fst.st_mtime_ns, fst.st_size)
        except FileNotFoundError:
            key = (gen, None)
        cached = self._view_cache
        if cached is not None and cached[0] == key and (
                not cached[1].problem or time.monotonic() - cached[2] < self.REOPEN_S):
            return cached[1]
        problem = ""
        try:
            st = store.VectorState.read(gen_dir) or store.VectorState(snap.manifest.model)
        except store.Damage as e:
            problem, st = str(e), store.VectorState(snap.manifest.model)
        with self._vectors_lock:
            foreign = bool(st.writer) and st.writer != store.writer_id() and not self.settings.chroma_host
            old = None
            if st.model != self._served:
                old, self._vectors, self._served = self._vectors, None, st.model
            elif cached is not None and cached[1].problem and cached[0][0] == gen:
                old, self._vectors = self._vectors, None  # look again through a new client (a store set aside)
            elif foreign and self._vectors is not None and self._seen != (st.model, st.done):
                if st.done >= st.total or time.monotonic() - self._opened_at > self.REOPEN_S:
                    old, self._vectors = self._vectors, None
            if old is not None or (foreign and self._vectors is None):
                # The alias is a file name: the model (maybe a path) enters it as a digest.
                tag = hashlib.sha1(st.model.encode()).hexdigest()[:8]
                self._view = f"{gen}-{tag}-{st.done}" if foreign else self._view
            fresh = self._vectors is None
            if fresh:
                self._seen = (st.model, st.done)  # it opens after this read, so it sees at least these
            visible = self._seen[1] if foreign and self._seen[0] == st.model else st.done
        if old is not None:
            old.retire()
        if self._pending[0] != gen:
            self._pending = (gen, store.read_id_list(gen_dir, store.PENDING))
        if not problem:
            problem = self._check_store(snap, st, min(visible, st.done))
            if problem and foreign and not fresh:
                # A view opened before another process's writes may just not see them yet: look again
                # through a view opened now before calling the store short.
                with self._vectors_lock:
                    old, self._vectors = self._vectors, None
                    self._view = f"{gen}-{hashlib.sha1(st.model.encode()).hexdigest()[:8]}-{st.done}-check"
                    self._seen = (st.model, st.done)
                    visible = st.done
                if old is not None:
                    old.retire()
                problem = self._check_store(snap, st, visible)
        if problem:
            missing = frozenset(range(len(snap.chunks)))
            if problem not in self._warned:
                self._warned.add(problem)
                log.warning("%s（%s）", self._vector_notice(problem), self.settings.index_dir)
        else:
            ids = self._pending[1][visible:st.total] if visible < st.total else []
            missing = frozenset(i for cid in ids for i in snap.by_id.get(cid, ()))
        view = VectorView(st.model, missing, st, problem)
        if problem or not (foreign and visible < st.done):  # a reopen is due: look again on the next query
            self._view_cache = (key, view, time.monotonic())
        return view

    def _check_store(self, snap: Snapshot, st: store.VectorState, visible: int) -> str:
        """'' when the store holds what the generation's vector state says is stored (`visible` of its
        pending ids, plus every live id not pending), else why not."""
        if visible < st.total and len(self._pending[1]) < st.total:
            return f"{snap.manifest.generation}/{store.PENDING} 不完整"
        try:
            have = self.vectors.count()
        except Exception as e:  # Chroma itself fails: a truncated chroma.sqlite3, a server that is gone
            return f"向量库无法打开（{type(e).__name__}: {str(e)[:200]}）"
        want = max(0, len(snap.by_id) - max(0, st.total - visible))
        if have < want:
            return f"向量库中只有 {have} 个向量，少于 {snap.manifest.generation}/vectors.json 记录的 {want} 个"
        return ""

    # -- search --------------------------------------------------------------------
    def bm25_ranking(self, snap: Snapshot, query: str, n: int) -> list[tuple[int, float]]:
        return snap.bm25.search(snap.tokenizer.tokens(query), n)

    def vector_ranking(self, snap: Snapshot, query: str, n: int, timings: dict[str, float] | None = None,
                       view: VectorView | None = None, q=None) -> list[tuple[int, float]]:
        view = view or self.vector_view(snap)
        if view.problem:  # the store cannot be trusted for this generation: no vector ranking at all
            return []
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

    def query_vector(self, view: VectorView, query: str | Query, timings: dict[str, float] | None = None):
        if isinstance(query, Query):  # the turn's vector, embedded once whoever asks first
            return query.vector(self.embedder_for(view.model), timings)
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

    def search(self, query: str | Query, k: int | None = None, mode: str | None = None, snap: Snapshot | None = None,
               **filters) -> list[Hit]:
        """The k best chunks, best first (see `retrieve` for the per-stage timings too)."""
        return self.retrieve(query, k, mode, snap, **filters).hits

    def retrieve(self, query: str | Query, k: int | None = None, mode: str | None = None, snap: Snapshot | None = None,
                 documents: list[str] | None = None, effective_on: str | None = None,
                 rerank: bool | None = None) -> Retrieval:
        """Hits and this call's timings. `Hit.score` is the fused (RRF) score in every mode, so it means
        the same thing whichever retrievers ran; each retriever's own score is in bm25_score / vector_score.
        `documents` (file or title names) and `effective_on` (ISO date: the versions in force that day)
        restrict the search. `rerank` (default: the setting, in hybrid mode) reorders the best `rerank_pool` by
        the reader, so hybrid hits are no longer in `score` order. `query`: the turn's `Query` (its analysis and
        vector are reused), or a text analysed here."""
        s = self.settings
        k = k or s.top_k
        mode = RetrievalMode.from_str(mode or s.retrieval_mode)
        # An explicit single retriever (bm25 / vector) keeps its own order; the reader reranks the hybrid one.
        rerank = (s.rerank and mode == RetrievalMode.HYBRID) if rerank is None else rerank
        final_k, k = k, max(k, s.rerank_pool) if rerank else k
        snap = snap or self.snapshot()
        timings: dict[str, float] = {}
        if not snap.chunks or not (query.text if isinstance(query, Query) else query).strip():
            return Retrieval([], timings)
        turn = query if isinstance(query, Query) else snap.query(query)
        query, q = turn.text, turn.analysis
        allowed = None
        if documents:
            allowed = structure.matching_sources(documents, snap.docs)
        if effective_on:
            on = structure.in_force_on(effective_on, snap.docs)
            allowed = on if allowed is None else allowed & on
        n = max(s.candidates, k)
        # A filtered search looks deeper, so the filter does not leave it with too few candidates. Documents
        # deleted from corpus/ but still in this generation (`snap.hidden`) are filtered out the same way.
        hidden = snap.hidden
        depth = n if allowed is None and not hidden else min(len(snap.chunks), n * 10)
        t = time.perf_counter()
        # BM25 matches the content words: a document's name matches every one of its chunks (its title).
        words = structure.content_query(q, snap.docs) if s.structure else query
        bm = self.bm25_ranking(snap, words, depth) if mode in (RetrievalMode.HYBRID, RetrievalMode.BM25) else []
        timings["bm25"] = time.perf_counter() - t
        t = time.perf_counter()
        view = self.vector_view(snap) if mode in (RetrievalMode.HYBRID, RetrievalMode.VECTOR) else None
        qv = self.query_vector(view, turn, timings) if view is not None else None
        vec = self.vector_ranking(snap, query, depth, timings, view, qv) if view is not None else []
        timings["vector"] = time.perf_counter() - t
        if allowed is not None or hidden:
            ok = (lambda src: src not in hidden) if allowed is None else (lambda src: src in allowed and src not in hidden)
            bm = [x for x in bm if ok(snap.chunks[x[0]].source)][:n]
            vec = [x for x in vec if ok(snap.chunks[x[0]].source)][:n]
        adjust = (lambda fused: structure.rerank(fused, snap.chunks, q, snap.docs)) if s.structure else None
        hits = fused_hits(snap.chunks, bm, vec, s, k, mode, adjust, view.missing if view else frozenset())
        if view is not None and view.missing:
            t = time.perf_counter()
            self.score_pending(hits, view, qv, snap)
            timings["score_pending"] = time.perf_counter() - t
        hits = structure.annotate(hits, snap.docs)
        if rerank:
            t = time.perf_counter()
            tiers = structure.Tiers(q, snap.docs) if s.structure else None
            reading = structure.reading_query(q, snap.docs) if s.structure else query
            hits = rerank_hits(self.reader, reading, hits, final_k, s.rerank_weight,
                               [tiers.of(h.chunk) for h in hits] if tiers else None)
            timings["rerank"] = time.perf_counter() - t
        return Retrieval(hits, timings)

    @property
    def reader(self):
        """The reading model (rag.e5.reader.Reader, loaded once per process and path; torch is imported only
        here); ReaderError says why it cannot load."""
        from rag.e5.reader import Reader

        return Reader.shared(self.settings.reader_model or None)
