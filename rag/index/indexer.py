"""Incremental indexing: scan corpus/, chunk what changed, embed only unseen chunks, commit a new generation."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from rag.index import store
from rag.index.bm25 import BM25Index
from rag.ingest.chunking import CHUNKER_VERSION, chunk_document, document_title, is_regulation
from rag.ingest.cleaning import paragraphs
from rag.index.embeddings import Embedder, load_embedder
from rag.ingest.metadata import DocMeta, apply_sidecar, extract, read_sidecar, sidecar_path
from rag.ingest.loaders import SUPPORTED, LoadError, Skipped, load, walk_corpus
from rag.models import Chunk
from rag.ingest.places import gazetteer
from rag.settings import Settings
from rag.index.store import FileRecord, Manifest
from rag.index.tokenizer import Tokenizer, quoted_terms, signature
from rag.index.vectors import VectorStore

log = logging.getLogger("kexie.index")
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class IndexReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    unchanged: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    warned: dict[str, list[str]] = field(default_factory=dict)  # indexed, with something repaired or ignored
    chunks: int = 0
    embedded: int = 0
    vectors: int = 0
    rebuilt: str = ""  # why a full rebuild happened, if it did
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    generation: str = ""

    @property
    def changes(self) -> int:
        return len(self.added) + len(self.changed) + len(self.removed) + len(self.renamed)


@contextmanager
def index_lock(index_dir: Path):
    """One writer at a time per index; readers never take it."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fault_point(stage: str) -> None:
    """Crash-safety tests set KEXIE_FAULT=<stage> to SIGKILL the indexer exactly here."""
    if os.environ.get("KEXIE_FAULT") == stage:
        os.kill(os.getpid(), signal.SIGKILL)


def sha1_file(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def scan_corpus(corpus_dir: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Files to consider (source -> path) and files skipped outright (source -> reason)."""
    files: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    root = corpus_dir.resolve()
    for source, p in walk_corpus(corpus_dir):
        if p.is_symlink():
            target = p.resolve()
            if not target.is_relative_to(root):
                skipped[source] = "符号链接指向语料目录之外，已忽略"
                continue
        if not p.is_file():
            skipped[source] = "不是普通文件"
            continue
        if p.suffix.lower() not in SUPPORTED:
            skipped[source] = f"不支持的文件类型：{p.suffix.lower() or '无扩展名'}"
            continue
        files[source] = p
    return files, skipped


class Chunked(NamedTuple):
    chunks: list[Chunk]
    warnings: list[str]
    scanned_pages: list[int]
    meta: DocMeta


def chunk_file(path: Path, source: str, settings: Settings, stages: dict[str, float] | None = None) -> Chunked:
    """Load, clean and chunk one file, and read what it says about itself (its metadata, corrected by
    its `.meta.toml` sidecar); adds each step's seconds to `stages`."""
    stages = {} if stages is None else stages
    with timed(stages, "load"):
        doc = load(path, source, ocr=settings.ocr)
    with timed(stages, "clean"):
        paras = paragraphs(doc.pages, pdf=path.suffix.lower() == ".pdf")
    with timed(stages, "chunk"):
        chunks = chunk_document(paras, source, settings.chunk_size, settings.chunk_overlap)
        meta = extract(paras, source, document_title(paras, source), is_regulation(paras))
    if not chunks:
        raise Skipped("文件中没有可索引的文字")
    warnings = list(doc.warnings)
    try:
        meta = apply_sidecar(meta, read_sidecar(path))
    except ValueError as e:  # a broken sidecar must not cost the document: index it, say why the fix was ignored
        warnings.append(f"{e}，已忽略")
    return Chunked(chunks, warnings, doc.scanned_pages, meta)


@contextmanager
def timed(stages: dict[str, float], name: str):
    """Add the block's wall time to stages[name]."""
    t = time.perf_counter()
    try:
        yield
    finally:
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - t


@dataclass
class Previous:
    """What the last committed generation offers for reuse (empty on a first run or a full rebuild)."""

    manifest: Manifest | None
    gen_dir: Path | None
    full: bool  # rebuild everything: no previous generation, or its model/format/chunking differ
    same_rules: bool  # its stored tokens were made by today's tokenizer rules
    chunks: list[Chunk] = field(default_factory=list)
    tokens: dict[str, list[str]] = field(default_factory=dict)
    words: list[str] = field(default_factory=list)

    @property
    def files(self) -> dict[str, FileRecord]:
        return self.manifest.files if self.manifest and not self.full else {}


@dataclass
class Plan:
    """The next generation's contents: a record per file and every chunk, in source order."""

    records: dict[str, FileRecord]
    chunks: list[Chunk]
    up_to_date: bool  # identical to the previous generation: nothing to commit


def index_corpus(
    settings: Settings,
    rebuild: bool = False,
    embedder: Embedder | None = None,
    progress: Progress | None = None,
    max_file_mb: int = 100,
    vectors: VectorStore | None = None,
    tokenizer: Tokenizer | None = None,
) -> IndexReport:
    """Bring the index in line with the corpus directory. Safe to interrupt at any point.

    plan (scan, chunk what changed) -> embed what is missing -> build BM25 -> commit a generation.
    A long-running app passes what it already holds: `vectors`, its retriever's open store (so its
    reads see its own writes), and `tokenizer`, a loaded jieba to copy instead of loading a new one."""
    t0 = time.perf_counter()
    rep = IndexReport()
    with index_lock(settings.index_dir):
        prev = read_previous(settings, rebuild, rep)
        plan = plan_generation(settings, prev, rep, max_file_mb, progress)
        kb = store.kb_identity(settings.index_dir, create=True)
        # A caller's store is used only if it is this base's collection and still open (a reader may have
        # retired it, or it is an index from before bases had ids): otherwise open our own.
        own = vectors is None or vectors.kb_id != kb or not vectors.acquire()
        vs = open_vectors(settings) if own else vectors
        try:
            _apply(settings, plan, prev, vs, embedder, tokenizer, rep, rebuild, progress)
        finally:
            if own:  # release Chroma's handles
                vs.close()
            else:
                vs.release()
    rep.seconds = time.perf_counter() - t0
    return rep


def _apply(settings: Settings, plan: Plan, prev: Previous, vs: VectorStore, embedder: Embedder | None,
           tokenizer: Tokenizer | None, rep: IndexReport, rebuild: bool, progress: Progress | None) -> None:
    live = {c.id for c in plan.chunks}
    if plan.up_to_date:
        # Nothing to commit; still finish a clean-up that an interrupted run may have left.
        rep.vectors = collect_garbage(vs, live)
        rep.generation = prev.manifest.generation
        return
    dim = embed_missing(settings, plan.chunks, prev, vs, embedder, rep, rebuild, progress)
    tokens, tok, bm25 = build_bm25(plan.chunks, prev, tokenizer, rep, progress)
    rep.generation = commit(settings, plan, tokens, tok, bm25, prev, dim, rep, vs.kb_id)
    rep.vectors = collect_garbage(vs, live)
    if prev.full:
        vs.drop_other_collections()
    store.remove_stale_generations(settings.index_dir, rep.generation)


def read_previous(settings: Settings, rebuild: bool, rep: IndexReport) -> Previous:
    """The committed generation and whether it can be reused (sets `rep.rebuilt` when not)."""
    m = store.Manifest.read(settings.index_dir)
    if m and not rebuild:
        if m.version != store.FORMAT_VERSION:
            rep.rebuilt = "索引格式已更新"
        elif m.model != settings.embedding_model:
            rep.rebuilt = f"嵌入模型已从“{m.model}”改为“{settings.embedding_model}”，向量空间不同"
        elif (m.chunk_size, m.chunk_overlap) != (settings.chunk_size, settings.chunk_overlap):
            rep.rebuilt = "分块参数已改变"
        if rep.rebuilt:
            log.warning("%s，正在重建索引…", rep.rebuilt)
    elif rebuild:
        rep.rebuilt = "按要求重建"
    full = bool(rep.rebuilt) or m is None
    gen_dir = settings.index_dir / m.generation if m and m.generation else None
    prev = Previous(m, gen_dir, full, bool(m) and m.tokenizer == signature())
    if gen_dir and not full:
        with timed(rep.stages, "read_previous"):
            prev.chunks = store.read_chunks(gen_dir)
            prev.tokens = store.read_tokens(gen_dir) if prev.same_rules else {}
            prev.words = store.read_user_words(gen_dir)
    return prev


def plan_generation(settings: Settings, prev: Previous, rep: IndexReport, max_file_mb: int,
                    progress: Progress | None) -> Plan:
    """Scan the corpus, chunk new and changed files, keep the chunks of unchanged ones."""
    t = time.perf_counter()
    prev_files = prev.files
    by_source: dict[str, list[Chunk]] = {}
    for c in prev.chunks:
        by_source.setdefault(c.source, []).append(c)
    files, rep.skipped = scan_corpus(settings.corpus_dir)
    hashes: dict[str, str] = {}
    for source, path in files.items():
        try:
            size = path.stat().st_size
            if size > max_file_mb * 2**20:  # never read a file that will be refused anyway
                rep.skipped[source] = f"文件过大（{size / 2**20:.0f} MB，上限 {max_file_mb} MB）"
                continue
            hashes[source] = sha1_file(path)
            side = sidecar_path(path)
            if side.is_file():  # a corrected sidecar re-reads its document
                hashes[source] = hashlib.sha1((hashes[source] + sha1_file(side)).encode()).hexdigest()
        except OSError as e:
            rep.failed[source] = "没有读取权限" if isinstance(e, PermissionError) else f"无法读取：{e}"
    gone_by_hash = {r.sha1: s for s, r in prev_files.items() if s not in files and r.status == "indexed"}
    m = prev.manifest
    rechunk = m is not None and m.chunker != CHUNKER_VERSION
    if rechunk and prev_files:
        log.warning("分块规则已更新，重新分块所有文件（未变的段落沿用已有向量）")
    records: dict[str, FileRecord] = {}
    new_chunks: dict[str, list[Chunk]] = {}
    seen_hash: dict[str, str] = {}
    todo = [s for s in files if s in hashes]
    for n, source in enumerate(todo, 1):
        if progress:
            progress("读取与分块", n, len(todo))
        path, digest = files[source], hashes[source]
        old = prev_files.get(source)
        if digest in seen_hash:
            rep.skipped[source] = f"与 {seen_hash[digest]} 内容完全相同，未重复索引"
            continue
        seen_hash[digest] = source
        if old and old.sha1 == digest and not needs_reprocess(old, m, settings) and not rechunk:
            records[source] = old
            if old.status == "indexed":
                new_chunks[source] = by_source.get(source, [])
            elif old.status == "failed":  # still failing: keep saying so in every summary
                rep.failed[source] = old.reason
            else:
                rep.skipped[source] = old.reason
            rep.unchanged += 1
            continue
        size = path.stat().st_size
        rec = FileRecord(source=source, sha1=digest, size=size, indexed_at=time.time())
        try:
            if size > max_file_mb * 2**20:
                raise Skipped(f"文件过大（{size / 2**20:.0f} MB，上限 {max_file_mb} MB）")
            chunks, rec.warnings, rec.scanned_pages, meta = chunk_file(path, source, settings, rep.stages)
            rec.meta = meta.to_dict()
            if rec.warnings:
                rep.warned[source] = rec.warnings
            new_chunks[source] = chunks
            rec.chunks = len(chunks)
            rec.ocr_pages = len({c.page for c in chunks if c.ocr})
            if old and old.status == "indexed":
                rep.changed.append(source)
            elif digest in gone_by_hash:
                rep.renamed.append((gone_by_hash.pop(digest), source))
            else:
                rep.added.append(source)
        except LoadError as e:
            rec.status, rec.reason = ("skipped" if isinstance(e, Skipped) else "failed"), str(e)
            if old and old.status == "indexed" and source in by_source:
                # Never lose what was indexed: keep the last good version of a file that broke.
                new_chunks[source] = by_source[source]
                # The new hash is recorded so the next run does not retry the same broken bytes.
                rec = FileRecord(**{**old.__dict__, "sha1": digest, "reason": f"{e}（保留上次成功索引的版本）"})
                rec.status = "indexed"
            (rep.skipped if isinstance(e, Skipped) else rep.failed)[source] = str(e)
        except Exception as e:  # a loader bug must not stop the other files
            log.exception("unexpected error loading %s", source)
            rec.status, rec.reason = "failed", f"处理出错（{type(e).__name__}: {e}）"
            rep.failed[source] = rec.reason
        records[source] = rec
    for source, reason in rep.skipped.items():
        records.setdefault(source, FileRecord(source=source, status="skipped", reason=reason))
    for source, reason in rep.failed.items():
        records.setdefault(source, FileRecord(source=source, status="failed", reason=reason))
    renamed_from = {a for a, _ in rep.renamed}
    rep.removed = sorted(s for s, r in prev_files.items() if s not in files and r.status == "indexed" and s not in renamed_from)
    chunks = [c for s in sorted(new_chunks) for c in new_chunks[s]]
    rep.chunks = len(chunks)
    rep.stages["scan"] = time.perf_counter() - t - sum(rep.stages.get(k, 0.0) for k in ("load", "clean", "chunk"))
    settled = all(prev_files.get(s) is not None and prev_files[s].status != "indexed" for s in [*rep.failed, *rep.skipped])
    up_to_date = (m is not None and not prev.full and prev.same_rules and not rechunk and rep.changes == 0 and settled
                  and m.ocr == settings.ocr)
    return Plan(records, chunks, up_to_date)


def needs_reprocess(old: FileRecord, m: Manifest | None, settings: Settings) -> bool:
    """An unchanged file is read again when OCR was switched on and it has pages a scan left empty
    (or it was skipped or failed as a scan), or switched off and it has OCR'd pages."""
    if m is None or m.ocr == settings.ocr:
        return False
    if settings.ocr:
        return old.status != "indexed" or bool(old.scanned_pages)
    return old.ocr_pages > 0 or old.status != "indexed"


def embed_missing(settings: Settings, chunks: list[Chunk], prev: Previous, vs: VectorStore, embedder: Embedder | None,
                  rep: IndexReport, rebuild: bool, progress: Progress | None) -> int:
    """Embed chunks whose vectors are not stored yet (content-addressed ids); returns the vector dim."""
    known = {c.id for c in prev.chunks}
    unique: dict[str, Chunk] = {}
    for c in chunks:
        unique.setdefault(c.id, c)
    candidates = [i for i in unique if i not in known]
    # An explicit --rebuild re-embeds everything; otherwise stored vectors of identical text are reused.
    with timed(rep.stages, "write_chroma"):  # asking the store what it holds counts as writing
        present = vs.existing(candidates) if candidates and not rebuild else set()
    missing = [i for i in candidates if i not in present]
    if missing:
        with timed(rep.stages, "embed"):
            embedder = embedder or load_embedder(settings.embedding_model, settings.embedding_batch_size, settings.query_instruction)
        step = max(settings.embedding_batch_size, 1) * 4
        for i in range(0, len(missing), step):
            ids = missing[i : i + step]
            with timed(rep.stages, "embed"):
                vecs = embedder.embed_passages([unique[x].vector_text for x in ids])
            fault_point("embed")
            with timed(rep.stages, "write_chroma"):
                vs.add(ids, vecs)  # written per batch, so an interrupted run keeps its progress
            fault_point("chroma")
            if progress:
                progress("生成向量", min(i + step, len(missing)), len(missing))
    rep.embedded = len(missing)
    m = prev.manifest
    return getattr(embedder, "dim", 0) or (m.dim if m else 0)


def build_bm25(chunks: list[Chunk], prev: Previous, tokenizer: Tokenizer | None, rep: IndexReport,
               progress: Progress | None) -> tuple[list[list[str]], Tokenizer, BM25Index]:
    """Tokenise (reusing stored tokens of unchanged text) and build the BM25 index."""
    t = time.perf_counter()
    words = quoted_terms(c.text for c in chunks)
    tok = Tokenizer.reuse(words, tokenizer)
    changed_words = set(words) ^ set(prev.words)
    tokens: list[list[str]] = []
    for n, c in enumerate(chunks, 1):
        cached = prev.tokens.get(c.token_key)
        if cached is None or (changed_words and any(w in c.text for w in changed_words)):
            cached = tok.tokens(c.index_text)
        tokens.append(cached)
        if progress and n % 500 == 0:
            progress("分词", n, len(chunks))
    rep.stages["tokenize"] = time.perf_counter() - t
    with timed(rep.stages, "build_bm25"):
        bm25 = BM25Index.build(tokens)
    return tokens, tok, bm25


def commit(settings: Settings, plan: Plan, tokens: list[list[str]], tok: Tokenizer, bm25: BM25Index, prev: Previous,
           dim: int, rep: IndexReport, kb_id: str) -> str:
    """Write the generation's files, then the manifest: the atomic switch readers see. `kb_id` is the
    identity of the collection the vectors were written to."""
    with timed(rep.stages, "places"):
        # Decisions made with the same dictionary stay valid.
        reuse = prev.gen_dir and not prev.full and prev.same_rules and set(tok.user_words) == set(prev.words)
        checks = store.read_place_checks(prev.gen_dir) if reuse else {}
        places = gazetteer((c.index_text for c in plan.chunks), tok, checks)  # title + heading + text
    t = time.perf_counter()
    gen = store.next_generation_name(settings.index_dir)
    fault_point("bm25")
    with timed(rep.stages, "write_bm25"):  # the generation: BM25 matrices, chunk and token stores
        store.write_generation(settings.index_dir, gen, plan.chunks, tokens, tok.user_words, bm25, places, checks)
    fault_point("manifest")
    manifest = Manifest(
        model=settings.embedding_model,
        dim=dim,
        chunk_size=settings.chunk_size,
        chunk_overlap=settings.chunk_overlap,
        generation=gen,
        tokenizer=signature(),
        chunker=CHUNKER_VERSION,
        ocr=settings.ocr,
        files=plan.records,
        kb_id=kb_id,
    )
    manifest.write(settings.index_dir)
    rep.stages["commit"] = time.perf_counter() - t - rep.stages["write_bm25"]
    return gen


def reindex_live(retriever, progress: Progress | None = None) -> IndexReport:
    """Re-index from a running app and return once its `retrieval.Retriever` answers from the new generation.

    Reuses what the app already holds: the loaded model, the open Chroma store, the loaded dictionary."""
    rep = index_corpus(retriever.settings, progress=progress, embedder=retriever.embedder,
                       vectors=retriever.vectors, tokenizer=retriever.loaded_tokenizer())
    t = time.perf_counter()
    retriever.snapshot(wait=True)
    rep.stages["reload"] = time.perf_counter() - t
    rep.seconds += rep.stages["reload"]
    return rep


def open_vectors(settings: Settings) -> VectorStore:
    """This knowledge base's collection for the configured model (its identity is created on first use)."""
    return VectorStore.open(settings.chroma_dir, settings.embedding_model, settings.chroma_host, settings.chroma_port,
                            kb_id=store.kb_identity(settings.index_dir, create=True))


def collect_garbage(vs: VectorStore, live: set[str]) -> int:
    """Delete vectors no committed chunk uses (replaced chunks, leftovers of interrupted runs)."""
    if vs.count() != len(live):
        stale = [i for i in vs.all_ids() if i not in live]
        fault_point("gc")
        vs.delete(stale)
    return vs.count()


def tty_progress() -> Progress:
    """A tqdm bar per stage on a terminal; silent otherwise."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def update(stage: str, done: int, total: int) -> None:
        if not sys.stderr.isatty():
            return
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="项", leave=False)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update
