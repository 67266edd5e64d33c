"""On-disk index layout: an atomically replaced manifest pointing at an immutable generation.

index/
  manifest.json        the commit point (written to a temp file, fsynced, then os.replace'd)
  gen-000007/          segments.json: the generation's rows, segment by segment, with the dead rows of each;
                       seg/<id>.*: a segment's chunks, tokens, texts and ids (immutable, hard-linked from the
                       generation that wrote them, so a one-file change writes only its own segment);
                       userdict.txt, places.txt, place_checks.txt, counts.json, bm25/
                       (never modified once written), and the one mutable file, vectors.json: which vector
                       space answers this generation and how far its vectors are (see VectorState)
  chroma/              vectors keyed by chunk id (may hold extra ids after an interrupted run;
                       readers only trust ids listed in their generation and not still pending)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from rag.index.bm25 import BM25Index
from rag.index.tokenizer import prepare
from rag.models import Chunk

MANIFEST = "manifest.json"
# 2: the manifest names the knowledge base (kb_id), whose id is part of its Chroma collection's name.
# 3: segmented generations (segments.json, seg/), incremental BM25, vectors filled after the commit.
FORMAT_VERSION = 3
IDENTITY = "kb_id"


@dataclass
class FileRecord:
    source: str
    sha1: str = ""
    size: int = 0
    status: str = "indexed"  # indexed | skipped | failed
    reason: str = ""
    chunks: int = 0
    indexed_at: float = 0.0
    warnings: list[str] = field(default_factory=list)
    scanned_pages: list[int] = field(default_factory=list)  # pages without text, left out while OCR was off
    ocr_pages: int = 0  # pages whose text came from OCR
    meta: dict = field(default_factory=dict)  # metadata.DocMeta as read from the text, file name and sidecar


@dataclass
class Manifest:
    model: str
    dim: int  # 0 since vectors are made after the commit (kept: older manifests still read)
    chunk_size: int
    chunk_overlap: int
    generation: str = ""
    tokenizer: str = ""  # tokenizer.signature() of the stored BM25 tokens
    chunker: str = ""  # chunking.CHUNKER_VERSION that produced the chunks
    writer: str = ""  # host:pid of the process that committed this generation
    ocr: bool = False  # whether scanned pages were OCR'd (turning it on re-processes skipped scans)
    files: dict[str, FileRecord] = field(default_factory=dict)
    version: int = FORMAT_VERSION
    updated_at: float = 0.0
    kb_id: str = ""  # this knowledge base's identity: its vectors live in collections named after it

    @classmethod
    def read(cls, index_dir: Path) -> "Manifest | None":
        p = index_dir / MANIFEST
        if not p.is_file():
            return None
        data = orjson.loads(p.read_bytes())
        files = {k: FileRecord(**v) for k, v in data.pop("files", {}).items()}
        return cls(files=files, **data)

    def write(self, index_dir: Path) -> None:
        self.updated_at = time.time()
        self.writer = writer_id()
        data = dict(self.__dict__)
        data["files"] = {k: v.__dict__ for k, v in sorted(self.files.items())}
        # orjson: a 3,000-file manifest in milliseconds (json.dumps with indent took a quarter second)
        atomic_write(index_dir / MANIFEST, orjson.dumps(data, option=orjson.OPT_INDENT_2).decode("utf-8"))


def kb_identity(index_dir: Path, create: bool = False) -> str:
    """The knowledge base's identity, so bases sharing one Chroma server never touch each other's vectors.

    Written to its own file before the first vector (an interrupted first run keeps it); the manifest
    records it at every commit. '' when there is none and `create` is false."""
    p = index_dir / IDENTITY
    on_file = p.read_text(encoding="utf-8").strip() if p.is_file() else ""
    m = Manifest.read(index_dir)
    if m and m.kb_id:
        # The committed manifest names the collection its vectors are in: it wins over a stale id file.
        if on_file != m.kb_id:
            atomic_write(p, m.kb_id)
        return m.kb_id
    if on_file:
        return on_file
    if not create:
        return ""
    import uuid

    index_dir.mkdir(parents=True, exist_ok=True)
    kb = uuid.uuid4().hex[:16]
    atomic_write(p, kb)
    return kb


def writer_id() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Segment:
    """A run of rows written once; later generations reuse it and mark the rows they dropped as dead."""

    id: str
    rows: int
    dead: list[int] = field(default_factory=list)
    sources: dict[str, list[int]] = field(default_factory=dict)  # source -> [first row, end row)

    def live(self) -> list[int]:
        dead = set(self.dead)
        return [r for r in range(self.rows) if r not in dead]


def new_segment(chunks: list[Chunk]) -> Segment:
    import uuid

    sources: dict[str, list[int]] = {}
    for r, c in enumerate(chunks):  # a file's chunks are contiguous: one [start, end) per source
        sources.setdefault(c.source, [r, r])[1] = r + 1
    return Segment(uuid.uuid4().hex[:12], len(chunks), [], sources)


def _seg_file(gen_dir: Path, seg_id: str, kind: str) -> Path:
    return gen_dir / "seg" / f"{seg_id}.{kind}"


_SEG_KINDS = ("chunks.jsonl", "tokens.txt", "texts.txt", "ids.txt", "stats.jsonl")


def write_generation(
    index_dir: Path, name: str, segments: list[Segment], new_rows: dict[str, tuple[list[Chunk], list[list[str]], list[dict]]],
    previous: Path | None, user_words: list[str], bm25: BM25Index, places: list[str] = (),
    place_checks: dict[str, bool] | None = None, counts: dict | None = None,
) -> Path:
    """Write a complete generation under a temp name, then rename it into place. Segments in `new_rows`
    (id -> chunks, tokens, per-row counts) are written; the others are hard-linked from the `previous` generation."""
    final = index_dir / name
    tmp = index_dir / (name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "seg").mkdir(parents=True)
    for seg in segments:
        if seg.id in new_rows:
            _write_segment(tmp, seg.id, *new_rows[seg.id])
        else:
            for kind in _SEG_KINDS:
                _link(_seg_file(previous, seg.id, kind), _seg_file(tmp, seg.id, kind))
    (tmp / "segments.json").write_text(json.dumps([s.__dict__ for s in segments], ensure_ascii=False), encoding="utf-8")
    (tmp / "userdict.txt").write_text("\n".join(user_words), encoding="utf-8")
    (tmp / "places.txt").write_text("\n".join(places), encoding="utf-8")
    checks = sorted((place_checks or {}).items())
    (tmp / "place_checks.txt").write_text("".join(f"{w}\t{int(ok)}\n" for w, ok in checks), encoding="utf-8")
    (tmp / "counts.json").write_bytes(orjson.dumps(counts or {}))
    bm25.save(tmp / "bm25", previous / "bm25" if previous else None)
    for p in tmp.rglob("*"):
        if p.is_file() and p.stat().st_nlink == 1:  # linked files were synced when first written
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _fsync_dir(index_dir)
    return final


def _write_segment(gen_dir: Path, seg_id: str, chunks: list[Chunk], tokens: list[list[str]], stats: list[dict]) -> None:
    with open(_seg_file(gen_dir, seg_id, "chunks.jsonl"), "wb") as f:
        f.write(b"".join(orjson.dumps(c.to_dict()) + b"\n" for c in chunks))
    _seg_file(gen_dir, seg_id, "tokens.txt").write_text("".join(" ".join(t) + "\n" for t in tokens), encoding="utf-8")
    # What the tokenizer cuts, NUL-separated: the rare whole-corpus scan for a word that entered or left
    # the dictionary reads these without parsing JSON.
    _seg_file(gen_dir, seg_id, "texts.txt").write_text("\0".join(prepare(c.index_text) for c in chunks), encoding="utf-8")
    _seg_file(gen_dir, seg_id, "ids.txt").write_text("".join(f"{c.id}\t{c.token_key}\n" for c in chunks), encoding="utf-8")
    # Each row's share of the generation's summable counts (quoted terms, place statistics), one line per
    # row, so that dropping a row subtracts it without reading its text again.
    with open(_seg_file(gen_dir, seg_id, "stats.jsonl"), "wb") as f:
        f.write(b"".join((orjson.dumps(st) if st else b"") + b"\n" for st in stats))


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)


def read_segments(gen_dir: Path) -> list[Segment]:
    return [Segment(**d) for d in json.loads((gen_dir / "segments.json").read_text(encoding="utf-8"))]


def read_segment_chunks(gen_dir: Path, seg_id: str) -> list[Chunk]:
    """Every row of a segment, dead ones included (row numbers are positions in this list)."""
    with open(_seg_file(gen_dir, seg_id, "chunks.jsonl"), "rb") as f:
        return [Chunk.from_dict(orjson.loads(line)) for line in f]


def _lines(gen_dir: Path, seg_id: str, kind: str) -> list[str]:
    return _seg_file(gen_dir, seg_id, kind).read_text(encoding="utf-8").split("\n")[:-1]


def read_segment_tokens(gen_dir: Path, seg_id: str, rows: list[int] | None = None):
    """Every row's tokens; with `rows`, {row: tokens} for those only (a one-file change in a 100k-row
    segment parses 30 lines, not 100k)."""
    lines = _lines(gen_dir, seg_id, "tokens.txt")
    cut = lambda line: line.split(" ") if line else []  # noqa: E731
    return [cut(x) for x in lines] if rows is None else {r: cut(lines[r]) for r in rows}


def read_segment_texts(gen_dir: Path, seg_id: str) -> list[str]:
    return _seg_file(gen_dir, seg_id, "texts.txt").read_text(encoding="utf-8").split("\0")


def read_segment_keys(gen_dir: Path, seg_id: str, rows: list[int]) -> dict[int, tuple[str, str]]:
    """{row: (chunk id, token key)} for `rows`."""
    lines = _lines(gen_dir, seg_id, "ids.txt")
    return {r: tuple(lines[r].split("\t")) for r in rows}


def read_segment_ids(gen_dir: Path, seg_id: str) -> list[str]:
    return [x[:x.index("\t")] for x in _lines(gen_dir, seg_id, "ids.txt")]


def read_segment_stats(gen_dir: Path, seg_id: str, rows: list[int]) -> dict[int, dict]:
    lines = _seg_file(gen_dir, seg_id, "stats.jsonl").read_bytes().split(b"\n")
    return {r: orjson.loads(lines[r]) if lines[r] else {} for r in rows}


def live_rows(segments: list[Segment], read) -> list:
    """`read(seg_id)` for each segment, its live rows only, in generation order."""
    out: list = []
    for seg in segments:
        rows = read(seg.id)
        if seg.dead:
            dead = set(seg.dead)
            rows = [x for r, x in enumerate(rows) if r not in dead]
        out.extend(rows)
    return out


def read_segment_ids_live(gen_dir: Path) -> list[str]:
    return live_rows(read_segments(gen_dir), lambda sid: read_segment_ids(gen_dir, sid))


def read_chunks(gen_dir: Path) -> list[Chunk]:
    """The generation's chunks in row order (the order of its BM25 rows)."""
    return live_rows(read_segments(gen_dir), lambda sid: read_segment_chunks(gen_dir, sid))


def read_tokens(gen_dir: Path) -> list[list[str]]:
    return live_rows(read_segments(gen_dir), lambda sid: read_segment_tokens(gen_dir, sid))


def read_counts(gen_dir: Path) -> dict:
    p = gen_dir / "counts.json"
    return orjson.loads(p.read_bytes()) if p.is_file() else {}


@dataclass
class VectorState:
    """Which vector space answers a generation and how far its vectors are (`gen/vectors.json`).

    The generation is committed as soon as it is searchable by BM25; its chunks without a vector in
    `model` are listed in `gen/pending.txt`, filled in that order, and `done` counts the prefix stored.
    Readers never use a vector of a pending id past `done`, so a half-written batch is never served.
    When `model` is the fast encoder, `upgrade` names the accurate one being filled (`gen/upgrade.txt`)
    in its own collection; at `upgrade_done == upgrade_total` one atomic write switches `model`."""

    model: str
    total: int = 0
    done: int = 0
    upgrade: str = ""
    upgrade_total: int = 0
    upgrade_done: int = 0
    writer: str = ""  # host:pid that last stored vectors (readers in other processes reopen their view)
    rate: float = 0.0  # passages per second of the current phase, for the estimate
    updated_at: float = 0.0
    reembed: bool = False  # `--rebuild`: embed again even where the store has a vector

    @property
    def complete(self) -> bool:
        return self.done >= self.total and not self.upgrade

    @classmethod
    def read(cls, gen_dir: Path) -> "VectorState | None":
        p = gen_dir / "vectors.json"
        try:
            return cls(**json.loads(p.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None

    def write(self, gen_dir: Path) -> None:
        self.updated_at = time.time()
        atomic_write(gen_dir / "vectors.json", json.dumps(self.__dict__, ensure_ascii=False))


PENDING, UPGRADE = "pending.txt", "upgrade.txt"  # ids lacking a vector in the served / the upgrade model


def read_id_list(gen_dir: Path, name: str) -> list[str]:
    return _read_lines(gen_dir / name)


def write_id_list(gen_dir: Path, name: str, ids: list[str]) -> None:
    atomic_write(gen_dir / name, "".join(i + "\n" for i in ids))


def read_user_words(gen_dir: Path) -> list[str]:
    return _read_lines(gen_dir / "userdict.txt")


def read_places(gen_dir: Path) -> list[str]:
    return _read_lines(gen_dir / "places.txt")


def read_place_checks(gen_dir: Path) -> dict[str, bool]:
    """Place-word decisions of a generation (see places.gazetteer); empty for older generations."""
    return {w: ok == "1" for w, _, ok in (line.partition("\t") for line in _read_lines(gen_dir / "place_checks.txt"))}


def _read_lines(p: Path) -> list[str]:
    return [w for w in p.read_text(encoding="utf-8").split("\n") if w] if p.is_file() else []


def next_generation_name(index_dir: Path) -> str:
    nums = [int(p.name[4:10]) for p in index_dir.glob("gen-*") if p.name[4:10].isdigit()]
    return f"gen-{max(nums, default=0) + 1:06d}"


def remove_stale_generations(index_dir: Path, keep: str, keep_previous: int = 1) -> None:
    """Delete old generations (keeping a few for readers still on them) and partial leftovers."""
    gens = sorted(p for p in index_dir.glob("gen-*") if p.is_dir())
    for p in gens:
        if p.name.endswith(".partial"):
            shutil.rmtree(p, ignore_errors=True)
    done = [p for p in gens if not p.name.endswith(".partial") and p.name != keep and p.name < keep]
    for p in done[: max(0, len(done) - keep_previous)]:
        shutil.rmtree(p, ignore_errors=True)
