"""A file becomes chunks: which files of a corpus folder are read, and one file loaded, cleaned, chunked and
described (its metadata). The indexer, the benchmarks and the training scripts all get chunks here."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

from rag.ingest.loaders import SUPPORTED, walk_corpus
from rag.ingest.metadata import DocMeta
from rag.models import Chunk
from rag.settings import Settings


def sha1_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


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
    its `.meta.toml` sidecar); adds each step's seconds to `stages`. Within the per-file limits of
    `rag.ingest.limits` (a file past one raises LoadError naming it), and with `settings.isolate_parsing`
    in a child process under a memory ceiling and a timeout (`rag.ingest.worker`)."""
    from rag.ingest import worker

    return Chunked(*worker.parse(path, source, settings, stages))
