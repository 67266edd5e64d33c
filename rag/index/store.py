"""On-disk index layout: an atomically replaced manifest pointing at an immutable generation.

index/
  manifest.json        the commit point (written to a temp file, fsynced, then os.replace'd)
  gen-000007/          chunks.jsonl, tokens.jsonl, userdict.txt, places.txt, place_checks.txt, bm25/
                       (never modified once written)
  chroma/              vectors keyed by chunk id (may hold extra ids after an interrupted run;
                       readers only trust ids listed in their generation)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from rag.index.bm25 import BM25Index
from rag.models import Chunk

MANIFEST = "manifest.json"
# 2: the manifest names the knowledge base (kb_id), whose id is part of its Chroma collection's name.
FORMAT_VERSION = 2
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
    dim: int
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
        data = json.loads(p.read_text(encoding="utf-8"))
        files = {k: FileRecord(**v) for k, v in data.pop("files", {}).items()}
        return cls(files=files, **data)

    def write(self, index_dir: Path) -> None:
        self.updated_at = time.time()
        self.writer = writer_id()
        data = dict(self.__dict__)
        data["files"] = {k: v.__dict__ for k, v in sorted(self.files.items())}
        atomic_write(index_dir / MANIFEST, json.dumps(data, ensure_ascii=False, indent=1))


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


def write_generation(
    index_dir: Path, name: str, chunks: list[Chunk], tokens: list[list[str]], user_words: list[str], bm25: BM25Index,
    places: list[str] = (),
    place_checks: dict[str, bool] | None = None,
) -> Path:
    """Write a complete generation under a temp name, then rename it into place."""
    final = index_dir / name
    tmp = index_dir / (name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with open(tmp / "chunks.jsonl", "w", encoding="utf-8") as f:
        for c in chunks:
            f.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")
    with open(tmp / "tokens.jsonl", "w", encoding="utf-8") as f:
        for c, t in zip(chunks, tokens):
            f.write(json.dumps([c.token_key, " ".join(t)], ensure_ascii=False) + "\n")
    (tmp / "userdict.txt").write_text("\n".join(user_words), encoding="utf-8")
    (tmp / "places.txt").write_text("\n".join(places), encoding="utf-8")
    checks = sorted((place_checks or {}).items())
    (tmp / "place_checks.txt").write_text("".join(f"{w}\t{int(ok)}\n" for w, ok in checks), encoding="utf-8")
    bm25.save(tmp / "bm25")
    for p in tmp.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _fsync_dir(index_dir)
    return final


def read_chunks(gen_dir: Path) -> list[Chunk]:
    with open(gen_dir / "chunks.jsonl", encoding="utf-8") as f:
        return [Chunk.from_dict(json.loads(line)) for line in f]


def read_tokens(gen_dir: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    p = gen_dir / "tokens.jsonl"
    if p.is_file():
        with open(p, encoding="utf-8") as f:
            for line in f:
                cid, toks = json.loads(line)
                out[cid] = toks.split(" ") if toks else []
    return out


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
