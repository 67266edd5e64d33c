"""On-disk index layout: an atomically replaced manifest pointing at an immutable generation.

index/
  manifest.json        the commit point (written to a temp file, fsynced, then os.replace'd)
  gen-000007/          segments.json: the generation's rows, segment by segment, with the dead rows of each;
                       seg/<id>.*: a segment's chunks, tokens, texts and ids (immutable, hard-linked from the
                       generation that wrote them, so a one-file change writes only its own segment);
                       userdict.txt, places.txt, place_checks.txt, counts.json, bm25/
                       (never modified once written), and the one mutable file, vectors.json: which vector
                       space answers this generation and how far its vectors are (see VectorState);
                       manifest.json: a copy of the manifest that committed it (written just after the
                       commit), so a damaged top-level manifest falls back to the last committed generation
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
GEN_MANIFEST = "manifest.json"  # inside gen-*/: a copy of the manifest that committed the generation
MANIFEST_FIELDS = ("model", "dim", "chunk_size", "chunk_overlap", "generation")  # "generation": since format 3
# 2: the manifest names the knowledge base (kb_id), whose id is part of its Chroma collection's name.
# 3: segmented generations (segments.json, seg/), incremental BM25, vectors filled after the commit.
FORMAT_VERSION = 3
IDENTITY = "kb_id"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a generation on disk. `part`: manifest | chunks | bm25 (the generation cannot
    be served: fall back to an older one) or vectors (vectors.json, pending.txt, the vector store: BM25
    still answers while the vectors are filled again)."""

    part: str
    text: str

    def __str__(self) -> str:
        return self.text


class Damage(ValueError):
    """An index file that cannot be trusted; str() says what, in Chinese."""

    def __init__(self, problems: list[Problem], generation: str = ""):
        self.problems = list(problems)
        self.generation = generation
        super().__init__("；".join(map(str, self.problems)))


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
    space: str = ""  # embeddings.space(model) when committed ('' before it was recorded: the model's name)

    @classmethod
    def read(cls, index_dir: Path) -> "Manifest | None":
        """The committed manifest; None when there is none. Raises `Damage` when it cannot be read."""
        p = index_dir / MANIFEST
        if not p.is_file():
            return None
        return cls.read_file(p)

    @classmethod
    def read_file(cls, p: Path) -> "Manifest":
        """A manifest file (the base's, or a generation's copy of it); `Damage` when unreadable or incomplete."""
        where = f"{p.parent.name}/{p.name}" if p.parent.name.startswith("gen-") else p.name
        try:
            data = orjson.loads(p.read_bytes())
        except (OSError, orjson.JSONDecodeError) as e:
            raise Damage([Problem("manifest", f"索引清单 {where} 无法读取或解析（{e}）")]) from None
        if not isinstance(data, dict):
            raise Damage([Problem("manifest", f"索引清单 {where} 不是 JSON 对象")])
        legacy = isinstance(data.get("version"), int) and data["version"] < FORMAT_VERSION
        missing = [k for k in MANIFEST_FIELDS if k not in data and not (legacy and k == "generation")]
        if missing:
            raise Damage([Problem("manifest", f"索引清单 {where} 缺少字段：{'、'.join(missing)}")])
        try:
            files = {k: FileRecord(**v) for k, v in (data.pop("files", None) or {}).items()}
            m = cls(files=files, **data)
        except (TypeError, AttributeError) as e:
            raise Damage([Problem("manifest", f"索引清单 {where} 内容不完整或格式不对（{e}）")]) from None
        if not isinstance(m.generation, str) or not isinstance(m.model, str):
            raise Damage([Problem("manifest", f"索引清单 {where} 的 generation/model 字段格式不对")])
        return m

    def write(self, index_dir: Path, copy_to: Path | None = None) -> None:
        """Commit (the atomic switch readers see); `copy_to`: the generation's folder, which keeps a copy
        written after the commit, so a damaged manifest.json can fall back to the last committed generation."""
        self.updated_at = time.time()
        self.writer = writer_id()
        data = dict(self.__dict__)
        data["files"] = {k: v.__dict__ for k, v in sorted(self.files.items())}
        # orjson: a 3,000-file manifest in milliseconds (json.dumps with indent took a quarter second)
        text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode("utf-8")
        atomic_write(index_dir / MANIFEST, text)
        if copy_to is not None:
            atomic_write(copy_to / GEN_MANIFEST, text)


def kb_identity(index_dir: Path, create: bool = False) -> str:
    """The knowledge base's identity, so bases sharing one Chroma server never touch each other's vectors.

    Written to its own file before the first vector (an interrupted first run keeps it); the manifest
    records it at every commit. '' when there is none and `create` is false."""
    p = index_dir / IDENTITY
    on_file = p.read_text(encoding="utf-8").strip() if p.is_file() else ""
    try:
        m = Manifest.read(index_dir)
    except Damage:  # the id file written before the first vector still names the base's collections
        m = None
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
        """None when the generation has no state; `Damage` when vectors.json cannot be parsed."""
        p = gen_dir / "vectors.json"
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
            raise Damage([Problem("vectors", f"{gen_dir.name}/vectors.json 无法解析（{e}）")], gen_dir.name) from None
        try:
            st = cls(**data)
            ints = all(isinstance(getattr(st, k), int) for k in ("total", "done", "upgrade_total", "upgrade_done"))
        except TypeError as e:
            raise Damage([Problem("vectors", f"{gen_dir.name}/vectors.json 内容不对（{e}）")], gen_dir.name) from None
        if not ints or not isinstance(st.model, str) or not st.model:
            raise Damage([Problem("vectors", f"{gen_dir.name}/vectors.json 字段格式不对")], gen_dir.name)
        return st

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


# -- integrity ------------------------------------------------------------------------------------------

def generation_names(index_dir: Path) -> list[str]:
    """The generation folders on disk, newest first (leftovers of an interrupted write excluded)."""
    names = [p.name for p in index_dir.glob("gen-*") if p.is_dir() and not p.name.endswith(".partial")]
    return sorted(names, reverse=True)


def generation_manifest(index_dir: Path, gen: str) -> Manifest | None:
    """The manifest that committed `gen`: the base's when it names `gen` (the commit point wins), else the
    generation's own copy. None when neither is there; `Damage` when the copy is unreadable."""
    try:
        m = Manifest.read(index_dir)
        if m is not None and m.generation == gen:
            return m
    except Damage:
        pass
    copy = index_dir / gen / GEN_MANIFEST
    return Manifest.read_file(copy) if copy.is_file() else None


def expected_vectors(gen_dir: Path, st: VectorState, visible: int | None = None) -> int:
    """How many vectors the store must hold in `st.model` for this generation: every distinct live chunk id
    except those still pending past `visible` (default `st.done`). Fewer means a lost or replaced store."""
    live = len(set(read_segment_ids_live(gen_dir)))
    done = st.done if visible is None else visible
    return max(0, live - max(0, st.total - done))


def check_generation(index_dir: Path, gen: str, manifest: Manifest | None = None, level: str = "deep",
                     all_files: bool = True, open_store=None) -> list[Problem]:
    """What is wrong with generation `gen` of the index at `index_dir` ([] when it is intact).

    The manifest (`manifest`, else the base's and the one that committed `gen`) parses and has its fields;
    segments.json parses; every segment's files are there with the rows segments.json gives them
    (`all_files`: the token, text and count files the indexer reuses too, not only chunks and ids); BM25's
    files are there and its live rows are the generation's; vectors.json parses and pending.txt lists what
    it promises.
    `level`: "quick" checks each segment file's size and last byte only (what every `kexie index` run can
    afford), "lines" counts its rows, "deep" also parses every chunk and loads BM25. `open_store(model)`: a
    VectorStore of the base; the store must open and hold at least the vectors vectors.json says are stored.
    Problems of part "vectors" leave the generation searchable by BM25."""
    gen_dir = index_dir / gen
    if not gen or not gen_dir.is_dir():
        return [Problem("chunks", f"索引目录 {gen or '（空）'} 不存在")]
    problems: list[Problem] = []
    if manifest is None:  # the base's manifest.json is checked too: it is the index's commit point
        try:
            Manifest.read(index_dir)
        except Damage as e:
            problems.extend(e.problems)
        try:
            if generation_manifest(index_dir, gen) is None:
                problems.append(Problem("manifest", f"找不到 {gen} 的索引清单（manifest.json）"))
        except Damage as e:
            problems.extend(e.problems)
    try:
        layout = read_segments(gen_dir)
    except (OSError, ValueError, TypeError, KeyError) as e:
        return [*problems, Problem("chunks", f"{gen}/segments.json 无法读取或解析（{e}）")]
    live = 0
    kinds = _SEG_KINDS if all_files else ("chunks.jsonl", "ids.txt")
    for seg in layout:
        live += seg.rows - len(set(seg.dead))
        for kind in kinds:
            f = _seg_file(gen_dir, seg.id, kind)
            bad = _seg_file_problem(f, kind, seg.rows, level)
            if bad:
                problems.append(Problem("chunks", f"{gen}/seg/{f.name} {bad}"))
    problems.extend(_check_bm25(gen_dir, live, level))
    problems.extend(check_vector_state(gen_dir, open_store))
    return problems


def _seg_file_problem(f: Path, kind: str, rows: int, level: str) -> str:
    """'' when a segment file looks whole at `level`, else what is wrong with it."""
    # texts.txt is NUL-separated (one separator fewer than rows); the others hold one line per row.
    sep, want = (b"\0", max(rows - 1, 0)) if kind == "texts.txt" else (b"\n", rows)
    try:
        if level == "quick":
            size = f.stat().st_size
            if want and size == 0:
                return f"为空（0 字节），应有 {rows} 行"
            if sep == b"\n" and size:
                with open(f, "rb") as fh:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        return "末尾被截断"
            return ""
        data = f.read_bytes()
    except OSError as e:
        return f"无法读取（{type(e).__name__}）"
    n = data.count(sep)
    if n != want:
        return f"{'为空（0 字节）' if not data else f'行数不符（{n}）'}，应有 {rows} 行"
    if level == "deep" and kind == "chunks.jsonl":
        try:
            for line in data.splitlines():
                Chunk.from_dict(orjson.loads(line))
        except (ValueError, TypeError, KeyError) as e:
            return f"内容无法解析（{e}）"
    return ""


def _check_bm25(gen_dir: Path, live: int, level: str) -> list[Problem]:
    """BM25's index.json parses, its live rows are the generation's, and every array file holds the data
    its header promises (a few bytes read per file); "lines" and "deep" count the terms too, "deep" loads it."""
    bm = gen_dir / "bm25"
    where = f"{gen_dir.name}/bm25"
    try:
        meta = json.loads((bm / "index.json").read_text(encoding="utf-8"))
        rows = sum(int(m["rows"]) - int(m["dead"]) for m in meta["segments"])
        seg_ids = [m["id"] for m in meta["segments"]]
    except (OSError, ValueError, TypeError, KeyError) as e:
        return [Problem("bm25", f"{where}/index.json 无法读取或解析（{e}）")]
    if rows != live:
        return [Problem("bm25", f"{where} 有 {rows} 行，与分段记录的 {live} 行不符")]
    bad = []
    for f in [f"{i}.{k}.npy" for i in seg_ids for k in ("indptr", "rows", "tf", "dl")] + ["dead.npy"]:
        shape = _npy_shape(bm / f)
        if shape is None:
            bad.append(f)
        elif level != "quick" and f.endswith(".indptr.npy"):
            terms = bm / f.replace(".indptr.npy", ".terms.txt")
            try:
                n = terms.read_bytes().count(b"\n") + 1 if shape[0] > 1 else 1
            except OSError:
                n = -1
            if n != max(shape[0] - 1, 1):
                bad.append(terms.name)
    for i in seg_ids:
        if not (bm / f"{i}.terms.txt").is_file():
            bad.append(f"{i}.terms.txt")
    if bad:
        return [Problem("bm25", f"{where} 缺少或截断了文件：{'、'.join(bad[:3])}{' 等' if len(bad) > 3 else ''}")]
    if level == "deep":
        try:
            if BM25Index.load(bm).size != live:
                return [Problem("bm25", f"{where} 的行数与分段记录不符")]
        except (OSError, ValueError, TypeError, KeyError, IndexError) as e:
            return [Problem("bm25", f"{where} 无法加载（{e}）")]
    return []


def _npy_shape(path: Path) -> tuple | None:
    """The shape of a .npy file whose data is all there (header read, size compared), else None."""
    import numpy as np

    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
            need = f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return shape if path.stat().st_size >= need else None
    except (OSError, ValueError, EOFError):
        return None


def check_vector_state(gen_dir: Path, open_store=None, visible: int | None = None) -> list[Problem]:
    """The vector side of a generation: vectors.json parses, pending.txt lists every id it counts on, and
    (with `open_store(model)`) the store opens and holds what vectors.json says is stored."""
    try:
        st = VectorState.read(gen_dir)
    except Damage as e:
        return e.problems
    if st is None:
        return []
    if st.done < st.total and len(read_id_list(gen_dir, PENDING)) < st.total:
        return [Problem("vectors", f"{gen_dir.name}/{PENDING} 不完整（应有 {st.total} 个编号）")]
    if open_store is None:
        return []
    try:
        have = open_store(st.model).count()
    except Exception as e:  # Chroma itself fails: a truncated chroma.sqlite3, a server that is gone
        return [Problem("vectors", f"向量库无法打开（{type(e).__name__}: {str(e)[:200]}）")]
    want = expected_vectors(gen_dir, st, visible)
    if have < want:
        return [Problem("vectors", f"向量库中“{st.model}”的向量只有 {have} 个，少于 {gen_dir.name}/vectors.json 记录的 {want} 个")]
    return []
