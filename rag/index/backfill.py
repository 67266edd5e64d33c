"""Vectors after searchability: a committed generation's missing vectors, filled in batches.

A generation is committed as soon as BM25 can search it (`indexer.commit`). `plan_vectors` decides which
vector space answers it and which chunks still lack a vector there (`gen/pending.txt`); `fill` embeds
them in that order, storing each batch before it advances `VectorState.done`, so a reader never uses a
vector of a half-written batch and a killed run continues where it stopped. A large new base is first
served by the fast encoder (`settings.fast_embedding_model`); `fill` then builds the accurate model's
vectors in that model's own collection and switches the generation to it in one atomic write: each
generation answers from one vector space, never a mix.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from rag.index import store
from rag.index.embeddings import Embedder, load_embedder
from rag.index.faults import fault_point
from rag.index.store import VectorState
from rag.index.vectors import VectorStore
from rag.settings import Settings

log = logging.getLogger("kexie.index")
PENDING, UPGRADE = store.PENDING, store.UPGRADE
Progress = Callable[[str, int, int], None]


class Stores:
    """This base's vector collections by model, opened on first use and closed together. A caller's open
    store (the app's retriever's) is used for its model, so the app's reads see its own writes."""

    def __init__(self, settings: Settings, kb_id: str, given: VectorStore | None = None):
        self.settings, self.kb_id = settings, kb_id
        self._open: dict[str, VectorStore] = {}
        self._given: VectorStore | None = None
        if given is not None and given.kb_id == kb_id and given.acquire():
            self._given = given
            self._open[given.model] = given

    def get(self, model: str) -> VectorStore:
        vs = self._open.get(model)
        if vs is None:
            vs = self._open[model] = open_store(self.settings, model, self.kb_id)
        return vs

    def models(self) -> list[str]:
        s = self.settings
        return [m for m in dict.fromkeys([s.embedding_model, s.fast_embedding_model]) if m]

    def delete(self, ids) -> None:
        """Remove vectors no committed chunk uses, from every space this base keeps."""
        ids = list(ids)
        if ids:
            main = self.get(self.settings.embedding_model)
            there = main.collections()  # never create a collection just to delete from it
            for m in self.models():
                if m in self._open or VectorStore.name_of(m, self.kb_id) in there:
                    self.get(m).delete(ids)

    def drop_other_collections(self) -> None:
        keep = {VectorStore.name_of(m, self.kb_id) for m in self.models()}
        self.get(self.settings.embedding_model).drop_other_collections(keep)

    def close(self) -> None:
        for vs in self._open.values():
            if vs is self._given:
                vs.release()
            else:
                vs.close()
        self._open.clear()

    def __enter__(self) -> "Stores":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# What SQLite and Chroma say when a store's files are damaged (not when it is busy or a server is away).
_DAMAGED = ("malformed", "not a database", "file is encrypted", "database disk image")


def open_store(settings: Settings, model: str, kb_id: str) -> VectorStore:
    """The base's collection for `model`. An embedded store that cannot start because its files are damaged
    (a truncated chroma.sqlite3) is moved aside to chroma.damaged-<time> and a new one opened: `verify` then
    finds the vectors missing and the filler makes them again. Only writers (indexer, filler) open through
    here; a reader that cannot open the store answers from BM25 (retrieval.Retriever.vector_view)."""
    s = settings
    try:
        return VectorStore.open(s.chroma_dir, model, s.chroma_host, s.chroma_port, kb_id=kb_id)
    except Exception as e:
        if s.chroma_host or not any(w in str(e).lower() for w in _DAMAGED):
            raise
        aside = set_aside(s.chroma_dir)
        log.warning("向量库已损坏（%s），已移到 %s，将重新生成向量", e, aside)
        return VectorStore.open(s.chroma_dir, model, s.chroma_host, s.chroma_port, kb_id=kb_id)


def set_aside(chroma_dir: Path) -> Path:
    """Rename a damaged embedded store out of the way (kept for inspection, never deleted here)."""
    aside = chroma_dir.with_name(f"{chroma_dir.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    try:
        os.replace(chroma_dir, aside)
    except FileNotFoundError:  # another writer moved it first
        pass
    return aside


def verify(settings: Settings, stores: Stores, gen_dir: Path) -> str:
    """Re-plan a generation's vectors when its vector side cannot be trusted: vectors.json unreadable,
    pending.txt shorter than it says, or the store holding fewer vectors than vectors.json says are stored
    (a truncated chroma.sqlite3 reopens empty, a store deleted or replaced). Every live chunk the store
    lacks is pending again, so the progress is no longer complete and `fill` makes them. Returns what was
    wrong ('' when nothing). Raises when the store cannot be opened at all. Call with the worker lock held."""
    try:
        st = VectorState.read(gen_dir)
    except store.Damage:
        st = None
    stores.get(st.model if st else settings.embedding_model)  # a store that cannot open: the caller says so
    problems = store.check_vector_state(gen_dir, stores.get)
    if not problems:
        return ""
    text = "；".join(map(str, problems))
    new, pending = _fresh(settings, gen_dir, None, stores, bool(st and st.reembed))
    store.write_id_list(gen_dir, PENDING, pending)
    new.write(gen_dir)
    if new.total:
        log.warning("%s：重新生成缺少的 %d 个向量", text, new.total)
    else:
        log.warning("%s：向量库中向量齐全，已重写 %s/vectors.json", text, gen_dir.name)
    return text


def repair(settings: Settings, vectors: VectorStore | None = None) -> str:
    """At start (app.py, before the assistant opens the store): check the current generation's vector side
    and re-plan what the store lost (`verify`), so the background filler refills it. Skipped when another
    process is filling (it verifies each generation it works on) or the generation itself is damaged (the
    retriever falls back to an older one). Returns a line for people ('' when all is well)."""
    try:
        m = store.Manifest.read(settings.index_dir)
    except store.Damage:
        return ""
    if m is None or not m.generation or not (settings.index_dir / m.generation).is_dir():
        return ""
    data = store.check_generation(settings.index_dir, m.generation, m, level="quick", all_files=False)
    if any(p.part != "vectors" for p in data):
        return ""
    with worker_lock(settings.index_dir, block=False) as mine:
        if not mine:
            return ""
        try:
            with Stores(settings, store.kb_identity(settings.index_dir), vectors) as stores:
                text = verify(settings, stores, settings.index_dir / m.generation)
        except Exception as e:  # the store cannot be opened: BM25 answers, the retriever says why
            log.warning("向量库无法打开：%s", e)
            return f"向量库无法打开（{type(e).__name__}），检索暂时只用 BM25"
    if not text:
        return ""
    st = current_state(settings)
    return f"向量索引有缺失（{text}），正在后台重新生成" if st is not None and not st.complete else f"已修复向量状态（{text}）"


def plan_vectors(settings: Settings, prev_gen: Path | None, gen_dir: Path, new_ids: list[str], dropped: set[str],
                 stores: Stores, rebuild: bool = False) -> tuple[VectorState, list[str]]:
    """The new generation's vector space and its pending ids, at the cost of the change: ids the previous
    generation was still waiting for carry over, new ids are looked up in the store."""
    try:
        prev = VectorState.read(prev_gen) if prev_gen else None
    except store.Damage:  # unreadable: plan afresh (every live chunk checked against the store)
        prev = None
    target, fast = settings.embedding_model, settings.fast_embedding_model
    carried: list[str] = []
    if prev is not None and prev.model in (target, fast) and not rebuild:
        carried = [i for i in store.read_id_list(prev_gen, PENDING)[prev.done:] if i not in dropped]
    unique = list(dict.fromkeys(i for i in new_ids))
    if prev is not None and prev.model in (target, fast) and not rebuild:
        model = prev.model
        # A large upload to a base served by the accurate model goes through the fast one first too.
        if model == target and fast and fast != target:
            missing_target = _missing(stores.get(target), carried + unique)
            if len(missing_target) > settings.fast_above:
                return _fresh(settings, gen_dir, fast, stores, rebuild)
            return VectorState(model, total=len(missing_target)), missing_target
        pending = list(dict.fromkeys(carried + _missing(stores.get(model), unique)))
        st = VectorState(model, total=len(pending))
        if prev.upgrade == target:
            st.upgrade = target  # the upgrade goes on in its own collection; `fill` works out what it lacks
        return st, pending
    return _fresh(settings, gen_dir, None, stores, rebuild)


def _fresh(settings: Settings, gen_dir: Path, model: str | None, stores: Stores, rebuild: bool) -> tuple[VectorState, list[str]]:
    """No usable previous state: every live chunk is checked against the store (first build, rebuild)."""
    ids = list(dict.fromkeys(store.read_segment_ids_live(gen_dir)))
    target, fast = settings.embedding_model, settings.fast_embedding_model
    missing_target = ids if rebuild else _missing(stores.get(target), ids)
    if model is None:
        model = fast if fast and fast != target and len(missing_target) > settings.fast_above else target
    if model == target:
        return VectorState(target, total=len(missing_target), reembed=rebuild), missing_target
    missing = ids if rebuild else _missing(stores.get(model), ids)
    return VectorState(model, total=len(missing), upgrade=target, reembed=rebuild), missing


def _missing(vs: VectorStore, ids: list[str]) -> list[str]:
    present = vs.existing(ids) if ids else set()
    return [i for i in ids if i not in present]


@contextmanager
def worker_lock(index_dir: Path, block: bool):
    """One vector writer per index (the indexer's lock is not taken: a new generation can be committed
    while vectors are filled). Yields False when another process holds it and `block` is false."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / ".vectors.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Embedders:
    """The models `fill` needs, loaded once; a caller's loaded model is used for its name."""

    def __init__(self, settings: Settings, given: Embedder | None = None):
        self.settings = settings
        self._by_name: dict[str, Embedder] = {given.name: given} if given is not None else {}

    def get(self, model: str) -> Embedder:
        if model not in self._by_name:
            s = self.settings
            self._by_name[model] = load_embedder(model, s.embedding_batch_size, s.query_instruction)
        return self._by_name[model]


def fill(settings: Settings, embedder: Embedder | None = None, vectors: VectorStore | None = None,
         progress: Progress | None = None, rep=None, block: bool = True, stop=None) -> VectorState | None:
    """Embed what the current generation lacks until it is complete (or `stop()` is true). Follows new
    generations committed meanwhile: the manifest is read again before every batch, and a batch whose
    generation was replaced (and maybe already removed) is dropped or carried over by the new one's plan.
    Returns the final state; None when another process is filling (with `block=False`), there is no index,
    the base's index folder was deleted, the base was rebuilt under another identity, or the current
    generation is damaged (the retriever falls back to an older one; `kexie index --rebuild` repairs)."""

    index_dir = settings.index_dir
    if not index_dir.is_dir():
        return None
    with worker_lock(index_dir, block) as mine:
        if not mine:
            return None
        embedders = Embedders(settings, embedder)
        kb = store.kb_identity(index_dir)
        with Stores(settings, kb, vectors) as stores:
            cache: dict[str, object] = {}
            started = time.perf_counter()
            filled = 0
            failures = 0
            while True:
                m = _committed(index_dir)
                if m is None:
                    return None
                if kb and m.kb_id and m.kb_id != kb:
                    log.warning("知识库 %s 的索引已重建为新的标识，停止为旧索引生成向量", index_dir)
                    return None
                gen_dir = index_dir / m.generation
                try:
                    if cache.get("gen") != m.generation:
                        cache = {"gen": m.generation, "chunks": None}
                        damaged = [p for p in store.check_generation(index_dir, m.generation, m, level="quick",
                                                                     all_files=False) if p.part != "vectors"]
                        if damaged:
                            log.warning("当前索引 %s 已损坏（%s），停止生成向量；请运行 kexie index --rebuild 重建",
                                        m.generation, "；".join(map(str, damaged)))
                            return None
                        verify(settings, stores, gen_dir)
                    st = VectorState.read(gen_dir)
                    if st is None:
                        return None
                    if stop is not None and stop():
                        return st
                    step = _next_step(settings, gen_dir, st, cache, stores)
                    if step is None:
                        _sweep(stores, gen_dir)
                        if rep is not None:
                            rep.vectors = stores.get(st.model).count()
                        return st
                    model, ids, field = step
                    if not ids:  # pending.txt holds fewer ids than vectors.json counts: plan again
                        raise store.Damage([store.Problem("vectors", f"{gen_dir.name}/{PENDING} 不完整")])
                    batch = ids[: max(settings.embedding_batch_size, 1) * 4]
                    vs = stores.get(model)
                    todo = batch if st.reembed else [i for i in batch if i not in vs.existing(batch)]
                    if todo:
                        texts = _texts(gen_dir, cache, todo)
                        t = time.perf_counter()
                        vecs = embedders.get(model).embed_passages(texts)
                        fault_point("embed")
                        t2 = time.perf_counter()
                        vs.add(todo, vecs)
                        fault_point("chroma")
                        if rep is not None:
                            rep.stages["embed"] = rep.stages.get("embed", 0.0) + t2 - t
                            rep.stages["write_chroma"] = rep.stages.get("write_chroma", 0.0) + time.perf_counter() - t2
                        filled += len(todo)
                        st.rate = filled / max(time.perf_counter() - started, 1e-6)
                    if rep is not None:
                        rep.embedded += len(todo)
                    # Advance only after the batch is stored; a stale generation's state is still advanced
                    # (harmless: readers on the new generation read its own state).
                    setattr(st, field, getattr(st, field) + len(batch))
                    st.writer = store.writer_id()
                    if st.upgrade and field == "upgrade_done" and st.upgrade_done >= st.upgrade_total:
                        # Every live chunk has its accurate vector: switch the generation's space in one write.
                        st = VectorState(st.upgrade, writer=st.writer, rate=st.rate)
                    st.write(gen_dir)
                    failures = 0
                except Exception as e:
                    # The index moved on under this batch (a generation committed and the old one removed,
                    # the base deleted) or a state file went bad: look again rather than die.
                    if not index_dir.is_dir() or not (index_dir / store.MANIFEST).is_file():
                        log.info("知识库 %s 的索引已删除，停止生成向量", index_dir)
                        return None
                    now = _committed(index_dir)
                    cache = {}  # the next pass checks the (new) generation again
                    if now is not None and now.generation != m.generation:
                        continue
                    failures += 1
                    if failures > 3:
                        raise
                    log.warning("生成向量时出错（%s: %s），重新检查索引后继续", type(e).__name__, e)
                    continue
                fault_point("vectors")
                if progress:
                    progress(*progress_args(st))


def _committed(index_dir: Path) -> "store.Manifest | None":
    """The committed manifest, or None (no index, or a damaged manifest: nothing to fill until a rebuild)."""
    try:
        m = store.Manifest.read(index_dir)
    except store.Damage as e:
        log.warning("索引清单已损坏（%s），停止生成向量；请运行 kexie index --rebuild 重建", e)
        return None
    return m if m is not None and m.generation else None


def _next_step(settings: Settings, gen_dir: Path, st: VectorState, cache: dict, stores: Stores):
    """(model, remaining ids, counter field) of the next batch, or None when the generation is complete."""
    if st.done < st.total:
        ids = cache.get("pending") or store.read_id_list(gen_dir, PENDING)
        cache["pending"] = ids
        return st.model, ids[st.done:], "done"
    if st.upgrade:
        if st.upgrade_total == 0:
            # First step of the upgrade: which live chunks the accurate model's collection lacks.
            live = list(dict.fromkeys(store.read_segment_ids_live(gen_dir)))
            todo = _missing(stores.get(st.upgrade), live) if not st.reembed else live
            store.write_id_list(gen_dir, UPGRADE, todo)
            st.upgrade_total, st.upgrade_done = len(todo), 0
            if not todo:
                st.upgrade_total = -1  # nothing to embed: switch now
            st.write(gen_dir)
        if st.upgrade_total < 0 or st.upgrade_done >= st.upgrade_total:
            done = VectorState(st.upgrade, writer=store.writer_id(), rate=st.rate)
            done.write(gen_dir)
            return None
        ids = cache.get("upgrade") or store.read_id_list(gen_dir, UPGRADE)
        cache["upgrade"] = ids
        return st.upgrade, ids[st.upgrade_done:], "upgrade_done"
    return None


def _texts(gen_dir: Path, cache: dict, ids: list[str]) -> list[str]:
    if cache.get("chunks") is None:
        cache["chunks"] = {c.id: c for c in store.read_chunks(gen_dir)}
    by_id = cache["chunks"]
    return [by_id[i].vector_text for i in ids]


def _sweep(stores: Stores, gen_dir: Path) -> None:
    """Once complete: delete leftovers of interrupted runs (vectors of ids no chunk uses)."""
    live = set(store.read_segment_ids_live(gen_dir))
    there = stores.get(stores.settings.embedding_model).collections()
    for m in stores.models():
        if VectorStore.name_of(m, stores.kb_id) not in there:
            continue
        vs = stores.get(m)
        if vs.count() > len(live):
            vs.delete([i for i in vs.all_ids() if i not in live])


def progress_args(st: VectorState) -> tuple[str, int, int]:
    if st.done < st.total:
        return f"生成向量（{st.model}）", st.done, st.total
    if st.upgrade:
        return f"升级向量到 {st.upgrade}", max(st.upgrade_done, 0), max(st.upgrade_total, 0)
    return "生成向量", 1, 1


def describe(st: VectorState | None) -> str:
    """One line for people: 向量索引 63%，预计 41 分钟 (empty when complete or unknown)."""
    if st is None or st.complete:
        return ""
    if st.done < st.total:
        left, total, label = st.total - st.done, st.total, "向量索引"
    else:
        left = max(st.upgrade_total - st.upgrade_done, 0) if st.upgrade_total > 0 else 0
        total, label = max(st.upgrade_total, 0), f"向量索引已可用（{st.model}），正在升级到 {st.upgrade}"
    pct = 100 * (total - left) // total if total > 0 else 0
    eta = f"，预计 {_duration(left / st.rate)}" if st.rate > 0 and left else ""
    stale = time.time() - st.updated_at > 600 and st.updated_at > 0
    return f"{label} {pct}%{eta}" + ("（后台任务未在运行，运行 kexie index --wait 继续）" if stale else "")


def _duration(seconds: float) -> str:
    m = max(1, round(seconds / 60))
    return f"{m // 60} 小时 {m % 60} 分钟" if m >= 60 else f"{m} 分钟"


def start_process(settings: Settings) -> int | None:
    """Fill in a detached process (what `kexie index` leaves running); its output goes to index/vectors.log."""
    import subprocess
    import sys

    st = current_state(settings)
    if st is None or st.complete:
        return None
    env = {**os.environ, "KEXIE_CORPUS_DIR": str(settings.corpus_dir), "KEXIE_INDEX_DIR": str(settings.index_dir),
           "KEXIE_EMBEDDING_MODEL": settings.embedding_model, "KEXIE_FAST_EMBEDDING_MODEL": settings.fast_embedding_model,
           "KEXIE_EMBEDDING_BATCH_SIZE": str(settings.embedding_batch_size)}
    log_path = settings.index_dir / "vectors.log"
    with open(log_path, "ab") as out:
        p = subprocess.Popen([sys.executable, "-m", "rag.cli", "index", "--vectors-only"], env=env, stdout=out,
                             stderr=out, stdin=subprocess.DEVNULL, start_new_session=True, cwd=os.getcwd())
    return p.pid


def current_state(settings: Settings) -> VectorState | None:
    """The current generation's vector state; None when there is none or it cannot be read (a damaged
    manifest or vectors.json: `repair` or the filler plans it again, the retriever says so meanwhile)."""
    try:
        m = store.Manifest.read(settings.index_dir)
        return VectorState.read(settings.index_dir / m.generation) if m and m.generation else None
    except store.Damage:
        return None


def start_thread(settings: Settings, embedder: Embedder | None = None, vectors: VectorStore | None = None):
    """Fill in a daemon thread of this process (the web app: its retriever's model and open store, so its
    queries see each batch at once). None when there is nothing to fill."""
    import threading

    st = current_state(settings)
    if st is None or st.complete:
        return None

    def run() -> None:
        try:
            fill(settings, embedder=embedder, vectors=vectors, block=False)
        except Exception:  # the app keeps answering from BM25 and the vectors it has; the next start goes on
            log.exception("background vector filling stopped")

    t = threading.Thread(target=run, name=f"kexie-vectors-{settings.index_dir.name}", daemon=True)
    t.start()
    return t
