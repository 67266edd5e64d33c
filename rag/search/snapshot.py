"""One committed index generation loaded into memory (chunks, BM25, tokenizer, places, document names),
and the errors that say why none can be served. The answer stage reads what it needs from here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rag.index import store
from rag.index.bm25 import BM25Index
from rag.index.tokenizer import Tokenizer
from rag.ingest.metadata import DocMeta
from rag.models import Chunk
from rag.search import structure
from rag.search.query import Query
from rag.search.question import analyze
from rag.search.structure import DocInfo
from rag.settings import Settings


class IndexNotReady(Exception):
    """No usable index: str() tells the user what to run."""


class IndexDamaged(IndexNotReady):
    """The current generation is damaged and no older one on disk is intact: str() says what is damaged
    and the command that rebuilds the index."""

    def __init__(self, message: str, problems: list[store.Problem] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


def rebuild_command(settings: Settings) -> str:
    """The command that rebuilds this base's index (its folders spelled out: it may not be the default one)."""
    return f"kexie index --rebuild --index {settings.index_dir} --corpus {settings.corpus_dir}"


def problems_text(problems: list[store.Problem], n: int = 3) -> str:
    return "；".join(map(str, problems[:n])) + (f" 等 {len(problems)} 处" if len(problems) > n else "")


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
    # Sources still in this generation whose files are gone from corpus/ (deleted before the re-index that
    # would drop them, e.g. before a crash): never returned by a search.
    hidden: frozenset[str] = frozenset()
    warning: str = ""  # for people (Chinese): this is an older generation, served because the current is damaged
    notice: str = ""  # for people: documents hidden because they were deleted from corpus/

    @classmethod
    def load(cls, index_dir: Path, base_tokenizer: Tokenizer | None = None, previous: "Snapshot | None" = None,
             manifest: store.Manifest | None = None, corpus_dir: Path | None = None) -> "Snapshot":
        """`previous`: the generation in memory; its segments (chunks, BM25) are shared, not read again,
        so loading a one-file change costs that file. `manifest`: the one naming the generation to load
        (default: the committed one). `corpus_dir`: hide the sources whose files are no longer there.
        Raises `store.Damage` when the generation's files are damaged (missing, truncated, unparsable)."""
        m = manifest if manifest is not None else store.Manifest.read(index_dir)
        if m is None or not m.generation:
            raise IndexNotReady(f"索引不存在：{index_dir}。请先运行 kexie index")
        gen = index_dir / m.generation
        if m.version < store.FORMAT_VERSION and gen.is_dir() and not (gen / "segments.json").is_file():
            # a layout from before segments
            raise IndexNotReady(f"索引格式已更新：{index_dir}。请运行 kexie index 重建索引")
        problems = [p for p in store.check_generation(index_dir, m.generation, m, level="quick", all_files=False)
                    if p.part != "vectors"]  # the vector side is the retriever's (vector_view): BM25 still answers
        if problems:
            raise store.Damage(problems, m.generation)
        known = previous.segments if previous is not None else {}
        unreadable = (OSError, ValueError, TypeError, KeyError, IndexError)
        layout, segs, where = store.read_segments(gen), {}, f"{m.generation}/segments.json"
        try:
            for seg in layout:
                where = f"{m.generation}/seg/{seg.id}.chunks.jsonl"
                segs[seg.id] = known.get(seg.id) or store.read_segment_chunks(gen, seg.id)
                if len(segs[seg.id]) != seg.rows:
                    raise ValueError(f"有 {len(segs[seg.id])} 行，应有 {seg.rows} 行")
            where = f"{m.generation} 的词典与地名文件"
            words, places = store.read_user_words(gen), store.read_places(gen)
        except unreadable as e:
            raise store.Damage([store.Problem("chunks", f"{where} 无法读取（{type(e).__name__}: {e}）")],
                               m.generation) from None
        chunks = store.live_rows(layout, segs.__getitem__)
        try:
            bm25 = BM25Index.load(gen / "bm25", previous.bm25 if previous is not None else None)
            if bm25.size != len(chunks):
                raise ValueError(f"有 {bm25.size} 行，应有 {len(chunks)} 行")
        except unreadable as e:
            raise store.Damage([store.Problem("bm25", f"{m.generation}/bm25 无法加载（{type(e).__name__}: {e}）")],
                               m.generation) from None
        by_id: dict[str, list[int]] = {}
        for i, c in enumerate(chunks):
            by_id.setdefault(c.id, []).append(i)
        hidden: frozenset[str] = frozenset()
        if corpus_dir is not None and corpus_dir.is_dir():  # no corpus folder here: nothing to compare with
            # One stat per indexed document: cheap at every load, no hashing.
            hidden = frozenset(src for src in {c.source for c in chunks} if not (corpus_dir / src).exists())
        metas = {s: DocMeta.from_dict(r.meta) for s, r in m.files.items() if r.status == "indexed" and s not in hidden}
        docs = structure.documents(metas, chunks)
        return cls(m, chunks, bm25, Tokenizer.reuse(words, base_tokenizer), by_id, frozenset(places), docs,
                   frozenset().union(*(d.names for d in docs.values())), segs, hidden, "", deleted_text(hidden))

    def query(self, text: str) -> Query:
        """The turn's question analysed once, with this generation's places and document names."""
        return Query(text, analyze(text, self.places, self.tokenizer.is_known_place, self.documents))


def deleted_text(sources) -> str:
    gone = sorted(sources)
    if not gone:
        return ""
    names = "、".join(gone[:3]) + (f" 等 {len(gone)} 个文档" if len(gone) > 3 else "")
    return f"{names} 已从语料目录删除，但索引尚未更新：已不再检索。运行 kexie index 更新索引"
