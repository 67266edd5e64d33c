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

from . import store
from .bm25 import BM25Index
from .chunking import CHUNKER_VERSION, chunk_document
from .cleaning import paragraphs
from .embeddings import Embedder, load_embedder
from .loaders import SUPPORTED, LoadError, Skipped, load
from .models import Chunk
from .sentences import gazetteer
from .settings import Settings
from .store import FileRecord, Manifest
from .tokenizer import Tokenizer, quoted_terms, signature
from .vectors import VectorStore

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
    for dirpath, dirnames, filenames in os.walk(corpus_dir, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith("~"):
                continue
            p = Path(dirpath) / name
            source = p.relative_to(corpus_dir).as_posix()
            if p.is_symlink():
                target = p.resolve()
                if not target.is_relative_to(root):
                    skipped[source] = "符号链接指向语料目录之外，已忽略"
                    continue
            if not p.is_file():
                skipped[source] = "不是普通文件"
                continue
            if p.suffix.lower() not in SUPPORTED:
                skipped[source] = ("旧版 .doc 格式不支持，请另存为 .docx" if p.suffix.lower() == ".doc"
                                   else f"不支持的文件类型：{p.suffix.lower() or '无扩展名'}")
                continue
            files[source] = p
    return files, skipped


def chunk_file(path: Path, source: str, settings: Settings, stages: dict[str, float] | None = None) -> tuple[list[Chunk], list[str]]:
    """Load, clean and chunk one file; adds the seconds of each step to `stages`."""
    stages = {} if stages is None else stages
    with timed(stages, "load"):
        doc = load(path, source, ocr=settings.ocr)
    with timed(stages, "clean"):
        paras = paragraphs(doc.pages, pdf=path.suffix.lower() == ".pdf")
    with timed(stages, "chunk"):
        chunks = chunk_document(paras, source, settings.chunk_size, settings.chunk_overlap)
    if not chunks:
        raise Skipped("文件中没有可索引的文字")
    return chunks, doc.warnings


@contextmanager
def timed(stages: dict[str, float], name: str):
    """Add the block's wall time to stages[name]."""
    t = time.perf_counter()
    try:
        yield
    finally:
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - t


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

    A long-running app passes what it already holds: `vectors`, its retriever's open store (so its
    reads see its own writes), and `tokenizer`, a loaded jieba to copy instead of loading a new one."""
    t0 = time.perf_counter()
    rep = IndexReport()
    with index_lock(settings.index_dir):
        prev = store.Manifest.read(settings.index_dir)
        if prev and not rebuild:
            if prev.version != store.FORMAT_VERSION:
                rep.rebuilt = "索引格式已更新"
            elif prev.model != settings.embedding_model:
                rep.rebuilt = f"嵌入模型已从“{prev.model}”改为“{settings.embedding_model}”，向量空间不同"
            elif (prev.chunk_size, prev.chunk_overlap) != (settings.chunk_size, settings.chunk_overlap):
                rep.rebuilt = "分块参数已改变"
            if rep.rebuilt:
                log.warning("%s，正在重建索引…", rep.rebuilt)
        elif rebuild:
            rep.rebuilt = "按要求重建"
        full = bool(rep.rebuilt) or prev is None
        prev_gen = settings.index_dir / prev.generation if prev and prev.generation else None
        same_rules = bool(prev) and prev.tokenizer == signature()
        with timed(rep.stages, "read_previous"):
            prev_chunks = store.read_chunks(prev_gen) if prev_gen and not full else []
            prev_tokens = store.read_tokens(prev_gen) if prev_gen and not full and same_rules else {}
            prev_words = store.read_user_words(prev_gen) if prev_gen and not full else []
        prev_files = prev.files if prev and not full else {}
        by_source: dict[str, list[Chunk]] = {}
        for c in prev_chunks:
            by_source.setdefault(c.source, []).append(c)

        # 1. Scan and chunk what changed.
        t = time.perf_counter()
        files, rep.skipped = scan_corpus(settings.corpus_dir)
        hashes: dict[str, str] = {}
        for source, path in files.items():
            try:
                size = path.stat().st_size
                if size > max_file_mb * 2**20:  # never read a file that will be refused anyway
                    rep.skipped[source] = f"文件过大（{size / 2**20:.0f} MB，上限 {max_file_mb} MB）"
                    continue
                hashes[source] = sha1_file(path)
            except OSError as e:
                rep.failed[source] = "没有读取权限" if isinstance(e, PermissionError) else f"无法读取：{e}"
        gone_by_hash = {r.sha1: s for s, r in prev_files.items() if s not in files and r.status == "indexed"}
        rechunk = prev is not None and prev.chunker != CHUNKER_VERSION
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
            ocr_changed = prev is not None and prev.ocr != settings.ocr and old is not None and old.status != "indexed"
            if old and old.sha1 == digest and not ocr_changed and not rechunk:
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
                chunks, rec.warnings = chunk_file(path, source, settings, rep.stages)
                new_chunks[source] = chunks
                rec.chunks = len(chunks)
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
        all_chunks = [c for s in sorted(new_chunks) for c in new_chunks[s]]
        rep.chunks = len(all_chunks)
        rep.stages["scan"] = time.perf_counter() - t - sum(rep.stages.get(k, 0.0) for k in ("load", "clean", "chunk"))

        settled = all(prev_files.get(s) is not None and prev_files[s].status != "indexed" for s in [*rep.failed, *rep.skipped])
        if prev and not full and same_rules and not rechunk and rep.changes == 0 and settled and prev.ocr == settings.ocr:
            # Nothing to commit; still finish a clean-up that an interrupted run may have left.
            vs = vectors or _open_vectors(settings)
            rep.vectors = _collect_garbage(vs, {c.id for c in all_chunks})
            rep.generation = prev.generation
            rep.seconds = time.perf_counter() - t0
            return rep

        # 2. Embed chunks whose vectors are not stored yet (content-addressed ids).
        with timed(rep.stages, "write_chroma"):  # opening the store and asking what it holds count as writing
            # A long-running app passes its retriever's store, so its reads see its own writes.
            vs = vectors or _open_vectors(settings)
        known = {c.id for c in prev_chunks}
        unique: dict[str, Chunk] = {}
        for c in all_chunks:
            unique.setdefault(c.id, c)
        candidates = [i for i in unique if i not in known]
        # An explicit --rebuild re-embeds everything; otherwise stored vectors of identical text are reused.
        with timed(rep.stages, "write_chroma"):
            present = vs.existing(candidates) if candidates and not rebuild else set()
        missing = [i for i in candidates if i not in present]
        if missing:
            with timed(rep.stages, "embed"):
                embedder = embedder or load_embedder(settings.embedding_model, settings.embedding_batch_size, settings.query_instruction)
            step = max(settings.embedding_batch_size, 1) * 4
            for i in range(0, len(missing), step):
                ids = missing[i : i + step]
                with timed(rep.stages, "embed"):
                    vecs = embedder.embed_passages([unique[x].index_text for x in ids])
                fault_point("embed")
                with timed(rep.stages, "write_chroma"):
                    vs.add(ids, vecs)  # written per batch, so an interrupted run keeps its progress
                fault_point("chroma")
                if progress:
                    progress("生成向量", min(i + step, len(missing)), len(missing))
        rep.embedded = len(missing)

        # 3. Tokenise (reusing stored tokens) and build BM25.
        t = time.perf_counter()
        words = quoted_terms(c.text for c in all_chunks)
        tok = Tokenizer.reuse(words, tokenizer)
        changed_words = set(words) ^ set(prev_words)
        tokens: list[list[str]] = []
        for n, c in enumerate(all_chunks, 1):
            cached = prev_tokens.get(c.id)
            if cached is None or (changed_words and any(w in c.text for w in changed_words)):
                cached = tok.tokens(c.index_text)
            tokens.append(cached)
            if progress and n % 500 == 0:
                progress("分词", n, len(all_chunks))
        rep.stages["tokenize"] = time.perf_counter() - t
        with timed(rep.stages, "build_bm25"):
            bm25 = BM25Index.build(tokens)

        # 4. Commit: generation files, then the manifest (the atomic switch), then clean up.
        with timed(rep.stages, "places"):
            # Decisions made with the same dictionary stay valid.
            checks = store.read_place_checks(prev_gen) if prev_gen and not full and same_rules and not changed_words else {}
            places = gazetteer((c.index_text for c in all_chunks), tok, checks)  # title + heading + text
        t = time.perf_counter()
        gen = store.next_generation_name(settings.index_dir)
        fault_point("bm25")
        with timed(rep.stages, "write_bm25"):  # the generation: BM25 matrices, chunk and token stores
            store.write_generation(settings.index_dir, gen, all_chunks, tokens, tok.user_words, bm25, places, checks)
        fault_point("manifest")
        manifest = Manifest(
            model=settings.embedding_model,
            dim=getattr(embedder, "dim", 0) or (prev.dim if prev else 0),
            chunk_size=settings.chunk_size,
            chunk_overlap=settings.chunk_overlap,
            generation=gen,
            tokenizer=signature(),
            chunker=CHUNKER_VERSION,
            ocr=settings.ocr,
            files=records,
        )
        manifest.write(settings.index_dir)
        rep.stages["commit"] = time.perf_counter() - t - rep.stages["write_bm25"]
        rep.generation = gen

        rep.vectors = _collect_garbage(vs, set(unique))
        if full:
            vs.drop_other_collections()
        store.remove_stale_generations(settings.index_dir, gen)
    rep.seconds = time.perf_counter() - t0
    return rep


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


def _open_vectors(settings: Settings) -> VectorStore:
    return VectorStore.open(settings.chroma_dir, settings.embedding_model, settings.chroma_host, settings.chroma_port)


def _collect_garbage(vs: VectorStore, live: set[str]) -> int:
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
