"""Incremental indexing: scan corpus/, chunk what changed, embed only unseen chunks, commit a new generation."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rag.index import backfill, store
from rag.index.bm25 import BM25Index
from rag.index.embeddings import Embedder, space
from rag.index.faults import fault_point
from rag.index.store import FileRecord, Manifest
from rag.index.tokenizer import Tokenizer, prepare, quoted_terms, signature
from rag.index.vectors import VectorStore
from rag.ingest import limits
from rag.ingest.chunking import CHUNKER_VERSION
from rag.ingest.loaders import LoadError, Skipped
from rag.ingest.metadata import sidecar_path
from rag.ingest.pipeline import chunk_file, scan_corpus, sha1_file
from rag.ingest.worker import timed
from rag.lang.places import gazetteer_from, place_stats
from rag.models import Chunk
from rag.settings import Settings

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
    pending: int = 0  # chunks committed without a vector yet (filled in the background)
    seconds: float = 0.0
    searchable_seconds: float = 0.0  # until the generation was committed and searchable by BM25
    stages: dict[str, float] = field(default_factory=dict)
    generation: str = ""

    @property
    def changes(self) -> int:
        return len(self.added) + len(self.changed) + len(self.removed) + len(self.renamed)

    def file_lines(self) -> list[str]:
        """One line per file added, changed, removed, renamed, skipped, repaired or failed (CLI and page alike)."""
        out = [f"{label}：{x}" for label, items in (("新增", self.added), ("修改", self.changed), ("删除", self.removed))
               for x in items]
        out += [f"重命名：{a} → {b}" for a, b in self.renamed]
        out += [f"跳过：{src}（{reason}）" for src, reason in sorted(self.skipped.items())]
        out += [f"注意 {src}：{'；'.join(notes)}" for src, notes in sorted(self.warned.items())]
        out += [f"失败：{src}（{reason}）" for src, reason in sorted(self.failed.items())]
        return out

    def summary(self) -> str:
        return (f"新增 {len(self.added)}，修改 {len(self.changed)}，删除 {len(self.removed)}，重命名 {len(self.renamed)}，"
                f"未变 {self.unchanged}，跳过 {len(self.skipped)}，失败 {len(self.failed)}；"
                f"共 {self.chunks} 个段落，{self.searchable_seconds:.1f} 秒后可检索")


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


@dataclass
class Previous:
    """What the last committed generation offers for reuse (empty on a first run or a full rebuild)."""

    manifest: Manifest | None
    gen_dir: Path | None
    full: bool  # rebuild everything: no previous generation, or its model/format/chunking differ
    same_rules: bool  # its stored tokens were made by today's tokenizer rules
    segments: list[store.Segment] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    @property
    def files(self) -> dict[str, FileRecord]:
        return self.manifest.files if self.manifest and not self.full else {}

    def live_sources(self) -> dict[str, tuple[int, int, int]]:
        """source -> (segment number, first row, end row) of its live rows."""
        out = {}
        for n, seg in enumerate(self.segments):
            dead = set(seg.dead)
            for source, (a, b) in seg.sources.items():
                if a not in dead:
                    out[source] = (n, a, b)
        return out


@dataclass
class Plan:
    """The next generation: a record per file, the sources whose rows stay as they are, the new chunks."""

    records: dict[str, FileRecord]
    keep: set[str]
    new: dict[str, list[Chunk]]  # source -> chunks (new, changed and re-chunked files)
    up_to_date: bool  # identical to the previous generation: nothing to commit

    @property
    def chunks(self) -> int:
        return sum(r.chunks for s, r in self.records.items() if s in self.keep) + sum(map(len, self.new.values()))


def index_corpus(
    settings: Settings,
    rebuild: bool = False,
    embedder: Embedder | None = None,
    progress: Progress | None = None,
    vectors: VectorStore | None = None,
    tokenizer: Tokenizer | None = None,
    wait: bool = True,
) -> IndexReport:
    """Bring the index in line with the corpus directory. Safe to interrupt at any point.

    plan (scan, chunk what changed) -> tokenise and update BM25 -> commit a generation, searchable at
    once -> fill its missing vectors in batches (`backfill.fill`; with `wait=False` the caller runs that
    later or in the background). A long-running app passes what it already holds: `embedder`, `vectors`
    (its retriever's open store, so its reads see its own writes) and `tokenizer` (a loaded jieba)."""
    t0 = time.perf_counter()
    rep = IndexReport()
    with index_lock(settings.index_dir):
        prev = read_previous(settings, rebuild, rep)
        plan = plan_generation(settings, prev, rep, progress)
        kb = store.kb_identity(settings.index_dir, create=True)
        with backfill.Stores(settings, kb, vectors) as stores:
            _apply(settings, plan, prev, stores, tokenizer, rep, rebuild, progress)
            # The store may have lost vectors the generation counts on (a truncated chroma.sqlite3, a
            # store set aside): plan them again so that the fill below or in the background makes them.
            with backfill.worker_lock(settings.index_dir, block=False) as mine:
                if mine and rep.generation:  # else the running filler verifies the new generation itself
                    backfill.verify(settings, stores, settings.index_dir / rep.generation)
    rep.searchable_seconds = time.perf_counter() - t0
    if wait:
        backfill.fill(settings, embedder=embedder, vectors=vectors, progress=progress, rep=rep)
    rep.seconds = time.perf_counter() - t0
    return rep


def _apply(settings: Settings, plan: Plan, prev: Previous, stores: "backfill.Stores", tokenizer: Tokenizer | None,
           rep: IndexReport, rebuild: bool, progress: Progress | None) -> None:
    if plan.up_to_date:
        rep.generation = prev.manifest.generation
        return
    gen = build_generation(settings, plan, prev, tokenizer, rep, progress)
    rep.generation = commit(settings, plan, gen, prev, rep, stores, rebuild)
    if prev.full:
        stores.drop_other_collections()
    store.remove_stale_generations(settings.index_dir, rep.generation)


def read_previous(settings: Settings, rebuild: bool, rep: IndexReport) -> Previous:
    """The committed generation and whether it can be reused (sets `rep.rebuilt` when not). A damaged one
    (manifest, segment or BM25 files) is never built upon: its files would be linked into the next."""
    try:
        m = store.Manifest.read(settings.index_dir)
        damage = []
        if m is not None and m.generation and m.version == store.FORMAT_VERSION:
            damage = [p for p in store.check_generation(settings.index_dir, m.generation, m, level="quick")
                      if p.part != "vectors"]  # the vector side is re-planned after the commit (backfill.verify)
    except store.Damage as e:
        m, damage = None, e.problems
    if damage and not rebuild:
        rep.rebuilt = f"索引已损坏（{'；'.join(map(str, damage))}）"
        log.warning("%s，正在重建索引…", rep.rebuilt)
        m = None
    elif damage:
        m = None
    if m and not rebuild:
        if m.version != store.FORMAT_VERSION:
            rep.rebuilt = "索引格式已更新"
        elif m.model != settings.embedding_model:
            rep.rebuilt = f"嵌入模型已从“{m.model}”改为“{settings.embedding_model}”，向量空间不同"
        elif (m.space or m.model) != space(settings.embedding_model):
            rep.rebuilt = (f"嵌入模型“{m.model}”的生成方式已更新（{m.space or m.model} → "
                           f"{space(settings.embedding_model)}），向量空间不同")
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
            prev.segments = store.read_segments(gen_dir)
            prev.words = store.read_user_words(gen_dir)
            prev.counts = store.read_counts(gen_dir)
    return prev


def plan_generation(settings: Settings, prev: Previous, rep: IndexReport, progress: Progress | None) -> Plan:
    """Scan the corpus, chunk new and changed files, keep the chunks of unchanged ones."""
    t = time.perf_counter()
    prev_files = prev.files
    live = prev.live_sources()
    files, rep.skipped = scan_corpus(settings.corpus_dir)
    hashes: dict[str, str] = {}
    for source, path in files.items():
        try:
            size = path.stat().st_size
            big = limits.too_big(size, settings.max_file_mb)
            if big:  # never read a file that will be refused anyway
                rep.skipped[source] = big
                continue
            if size == 0:  # said here, before contents are compared: empty files are not duplicates of each other
                rep.skipped[source] = "文件为空（0 字节）"
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
    keep: set[str] = set()
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
            if old.status == "indexed" and source in live:
                keep.add(source)
            elif old.status == "failed":  # still failing: keep saying so in every summary
                rep.failed[source] = old.reason
            else:
                rep.skipped[source] = old.reason
            rep.unchanged += 1
            continue
        size = path.stat().st_size
        rec = FileRecord(source=source, sha1=digest, size=size, indexed_at=time.time())
        try:
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
            if old and old.status == "indexed" and source in live:
                # Never lose what was indexed: keep the last good version of a file that broke.
                keep.add(source)
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
    plan = Plan(records, keep, {s: new_chunks[s] for s in sorted(new_chunks)}, False)
    rep.chunks = plan.chunks
    rep.stages["scan"] = time.perf_counter() - t - sum(rep.stages.get(k, 0.0) for k in ("load", "clean", "chunk"))
    settled = all(prev_files.get(s) is not None and prev_files[s].status != "indexed" for s in [*rep.failed, *rep.skipped])
    up_to_date = (m is not None and not prev.full and prev.same_rules and not rechunk and rep.changes == 0 and settled
                  and m.ocr == settings.ocr)
    plan.up_to_date = up_to_date
    return plan


def needs_reprocess(old: FileRecord, m: Manifest | None, settings: Settings) -> bool:
    """An unchanged file is read again when OCR was switched on and it has pages a scan left empty
    (or it was skipped or failed as a scan), or switched off and it has OCR'd pages."""
    if m is None or m.ocr == settings.ocr:
        return False
    if settings.ocr:
        return old.status != "indexed" or bool(old.scanned_pages)
    return old.ocr_pages > 0 or old.status != "indexed"


@dataclass
class Generation:
    """A generation ready to write: its segments (old ones with their new dead rows, then the new one)."""

    segments: list[store.Segment]
    new_rows: dict[str, tuple[list[Chunk], list[list[str]], list[dict]]]  # new segment id -> chunks, tokens, row stats
    dropped_ids: set[str]  # chunk ids of rows dropped from the previous generation
    new_ids: list[str]  # chunk ids of the new rows, in row order
    bm25: BM25Index
    tokenizer: Tokenizer
    counts: dict
    places: list[str]
    checks: dict[str, bool]


MAX_SEGMENTS = 8  # more, or a quarter of the rows dead, and the chunk store is rewritten as one segment


def build_generation(settings: Settings, plan: Plan, prev: Previous, tokenizer: Tokenizer | None, rep: IndexReport,
                     progress: Progress | None) -> Generation:
    """Tokenise the new chunks and update BM25, the user dictionary and the place counts with the rows
    that change only: a one-file change costs that file, not the corpus (`prev.full`: everything anew)."""
    t = time.perf_counter()
    gen_dir = prev.gen_dir if not prev.full else None
    old = [store.Segment(**{**seg.__dict__, "dead": list(seg.dead)}) for seg in prev.segments] if gen_dir else []
    dropped: dict[int, list[int]] = {}  # segment number -> its rows dropped now
    for n, seg in enumerate(old):
        dead = set(seg.dead)
        for source, (a, b) in seg.sources.items():
            if a not in dead and source not in plan.keep:
                dropped.setdefault(n, []).extend(range(a, b))
    rows_total = sum(seg.rows for seg in old)
    dead_total = sum(len(seg.dead) for seg in old) + sum(map(len, dropped.values()))
    compact = bool(old) and (len(old) >= MAX_SEGMENTS or dead_total > rows_total / 4)
    new: list[Chunk] = [c for cs in plan.new.values() for c in cs]
    reuse_tokens: dict[str, list[str]] = {}  # token_key -> stored tokens of rows leaving their segment
    stats_out = []  # per-row counts of the dropped rows, to subtract
    dropped_ids: set[str] = set()
    for n, rows in dropped.items():
        sid = old[n].id
        keys = store.read_segment_keys(gen_dir, sid, rows)
        toks = store.read_segment_tokens(gen_dir, sid, rows) if prev.same_rules else None
        stats_out.extend(store.read_segment_stats(gen_dir, sid, rows).values())
        for r in rows:
            dropped_ids.add(keys[r][0])
            if toks is not None:
                reuse_tokens[keys[r][1]] = toks[r]
        old[n].dead = sorted(set(old[n].dead) | set(rows))
    # The user dictionary: terms the documents put in quotes, counted per chunk, updated by the change.
    counts = {k: Counter(v) for k, v in prev.counts.items()} if gen_dir else {}
    quoted = counts.setdefault("quoted", Counter())
    new_stats = [row_stats(c) for c in new]
    for st in stats_out:
        _add(counts, st, -1)
    for st in new_stats:
        _add(counts, st, +1)
    words = sorted(w for w, k in quoted.items() if k > 0)
    changed_words = {prepare(w) for w in set(words) ^ set(prev.words)} if gen_dir else set()
    # Rows kept whose text holds a word that entered or left the dictionary are tokenised again, as a
    # full rebuild would; so are all rows when the tokenizer's rules changed or the store is compacted.
    retok = {}
    for n, seg in enumerate(old):
        if compact or not prev.same_rules:
            retok[n] = seg.live()
        elif changed_words:
            texts = store.read_segment_texts(gen_dir, seg.id)
            rows = [r for r in seg.live() if any(w in texts[r] for w in changed_words)]
            if rows:
                retok[n] = rows
    moved: list[Chunk] = []
    moved_stats: list[dict] = []
    for n, rows in sorted(retok.items()):
        sid = old[n].id
        chunks = store.read_segment_chunks(gen_dir, sid)
        toks = store.read_segment_tokens(gen_dir, sid, rows) if prev.same_rules else None
        stats = store.read_segment_stats(gen_dir, sid, rows)
        for r in rows:
            c = chunks[r]
            moved.append(c)
            moved_stats.append(stats[r])  # still counted: the row stays in the generation
            if toks is not None:
                reuse_tokens[c.token_key] = toks[r]
        dropped.setdefault(n, []).extend(rows)
        old[n].dead = sorted(set(old[n].dead) | set(rows))
    # A segment keeps each file's rows contiguous: new rows in source order (BM25 rows in the same order).
    rows_new, row_st = _by_source(moved + new, moved_stats + new_stats)
    tok = Tokenizer.reuse(words, tokenizer)
    tokens: list[list[str]] = []
    for n, c in enumerate(rows_new, 1):
        cached = reuse_tokens.get(c.token_key)
        if cached is None or (changed_words and any(w in prepare(c.index_text) for w in changed_words)):
            cached = tok.tokens(c.index_text)
        tokens.append(cached)
        if progress and n % 500 == 0:
            progress("分词", n, len(rows_new))
    rep.stages["tokenize"] = time.perf_counter() - t
    with timed(rep.stages, "build_bm25"):
        segments = [seg for seg in old if len(seg.dead) < seg.rows]
        if segments:  # rows kept where they are: update the previous BM25 with the change only
            bm25 = BM25Index.load(gen_dir / "bm25").update(_live_positions(prev.segments, dropped), tokens)
        else:  # first build, full rebuild, new tokenizer rules, or compaction: every row is in `rows_new`
            bm25 = BM25Index.build(tokens)
    new_rows: dict[str, tuple[list[Chunk], list[list[str]], list[dict]]] = {}
    if rows_new:
        seg = store.new_segment(rows_new)
        new_rows[seg.id] = (rows_new, tokens, row_st)
        segments.append(seg)
    with timed(rep.stages, "places"):
        # Decisions made with the same dictionary stay valid.
        reuse = gen_dir and prev.same_rules and set(tok.user_words) == set(prev.words)
        checks = store.read_place_checks(gen_dir) if reuse else {}
        places = gazetteer_from(counts_for_places(counts), tok, checks)
    new_ids = [c.id for c in rows_new]
    dropped_ids -= set(new_ids)
    if dropped_ids:  # ids are content-addressed: the same passage may live on in another file's rows
        dropped_ids -= set(store.live_rows([s for s in segments if s.id not in new_rows],
                                           lambda sid: store.read_segment_ids(gen_dir, sid)))
    return Generation(segments, new_rows, dropped_ids, new_ids, bm25, tok, _plain(counts), places, checks)


def row_stats(c: Chunk) -> dict:
    """One chunk's share of the summable counts: quoted terms (its text) and place statistics (its index text)."""
    st = {"quoted": Counter(quoted_terms([c.text]))}
    st.update(place_stats([c.index_text]))
    return {k: dict(v) for k, v in st.items() if v}


def _add(counts: dict, st: dict, sign: int) -> None:
    for k, v in st.items():
        c = counts.setdefault(k, Counter())
        for w, n in v.items():
            c[w] += sign * n
            if c[w] <= 0:
                del c[w]


def counts_for_places(counts: dict) -> dict:
    return {"cand": counts.get("cand", Counter()), "before": counts.get("before", Counter())}


def _plain(counts: dict) -> dict:
    return {k: {w: n for w, n in v.items() if n > 0} for k, v in counts.items()}


def _by_source(chunks: list[Chunk], stats: list[dict]) -> tuple[list[Chunk], list[dict]]:
    """Rows grouped by source, each file's rows in their order."""
    order = sorted(range(len(chunks)), key=lambda i: chunks[i].source)
    return [chunks[i] for i in order], [stats[i] for i in order]


def _live_positions(before: list[store.Segment], dropped: dict[int, list[int]]) -> list[int]:
    """Positions, among the previous generation's live rows, of the rows dropped now."""
    out, offset = [], 0
    for n, seg in enumerate(before):
        live = seg.live()
        if n in dropped:
            gone = set(dropped[n])
            out.extend(offset + i for i, r in enumerate(live) if r in gone)
        offset += len(live)
    return out


def commit(settings: Settings, plan: Plan, gen: Generation, prev: Previous, rep: IndexReport,
           stores: "backfill.Stores", rebuild: bool) -> str:
    """Write the generation's files and its vector state, then the manifest: the atomic switch readers see."""
    t = time.perf_counter()
    name = store.next_generation_name(settings.index_dir)
    fault_point("bm25")
    with timed(rep.stages, "write_bm25"):  # the generation: segments, BM25, dictionary, counts
        gen_dir = store.write_generation(settings.index_dir, name, gen.segments, gen.new_rows,
                                         prev.gen_dir if not prev.full else None, gen.tokenizer.user_words, gen.bm25,
                                         gen.places, gen.checks, gen.counts)
    with timed(rep.stages, "vector_plan"):
        state, pending = backfill.plan_vectors(settings, prev.gen_dir if not prev.full else None, gen_dir,
                                               gen.new_ids, gen.dropped_ids, stores, rebuild)
        store.write_id_list(gen_dir, backfill.PENDING, pending)
        state.write(gen_dir)
    rep.pending = state.total - state.done
    fault_point("manifest")
    manifest = Manifest(
        model=settings.embedding_model,
        dim=0,
        chunk_size=settings.chunk_size,
        chunk_overlap=settings.chunk_overlap,
        generation=name,
        tokenizer=signature(),
        chunker=CHUNKER_VERSION,
        ocr=settings.ocr,
        files=plan.records,
        kb_id=stores.kb_id,
        space=space(settings.embedding_model),
    )
    manifest.write(settings.index_dir, copy_to=gen_dir)
    rep.stages["commit"] = time.perf_counter() - t - rep.stages["write_bm25"] - rep.stages["vector_plan"]
    with timed(rep.stages, "gc"):
        fault_point("gc")
        stores.delete(gen.dropped_ids)  # vectors no committed chunk uses any more
    return name


def open_vectors(settings: Settings) -> VectorStore:
    """This knowledge base's collection for the configured model (its identity is created on first use)."""
    return VectorStore.open(settings.chroma_dir, settings.embedding_model, settings.chroma_host, settings.chroma_port,
                            kb_id=store.kb_identity(settings.index_dir, create=True))


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
