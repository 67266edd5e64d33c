"""Knowledge-base management: safe uploads into corpus/, deletes, and the document list."""

from __future__ import annotations

import fcntl
import filecmp
import os
import re
import shutil
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from rag.index import store
from rag.ingest import limits
from rag.ingest.loaders import SUPPORTED, walk_corpus
from rag.ingest.metadata import DocMeta, group_versions
from rag.settings import Settings


class UploadRejected(Exception):
    """str() is the message shown to the user."""


@dataclass
class DocRow:
    source: str
    status: str  # 已索引 / 跳过 / 失败 / 待索引
    chunks: int
    size: int
    indexed_at: str
    reason: str
    version: str = ""  # among versions of one text: "2002年版：已被2024年修订版取代" / "2024年修订版：现行"
    effective: str = ""  # 施行 date (ISO), where the document states it


def safe_name(name: str) -> str:
    """A file name that cannot leave the corpus dir: no separators, no '..', no control characters."""
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '<>:"|?*\x00')
    name = re.sub(r"\s+", " ", name).strip(" .")
    if not name or name in (".", ".."):
        raise UploadRejected("文件名无效")
    return name[:150]


def upload_types(settings: Settings) -> tuple[str, ...]:
    """What the page accepts: what the admin configured, else every type the index reads."""
    return tuple(settings.upload_extensions) or SUPPORTED


def resolve_in_corpus(settings: Settings, source: str) -> Path:
    """The corpus file for a citation/source name; refuses anything outside corpus/."""
    root = settings.corpus_dir.resolve()
    p = (settings.corpus_dir / source).resolve()
    if not p.is_relative_to(root) or p == root:
        raise UploadRejected("只能访问语料目录中的文件")
    return p


VERSIONS = ".versions"  # replaced uploads are kept here (hidden: never indexed)


@dataclass
class Saved:
    path: Path
    message: str  # what happened, for the user
    replaced: Path | None = None  # where the previous file of the same name was kept


def save_upload(settings: Settings, tmp_path: str | Path, original_name: str) -> Saved:
    """Copy an uploaded temp file into corpus/ after checking its name, extension and size.

    A file of the same name is never silently overwritten: identical bytes change nothing, different
    bytes replace it and the old file is kept under corpus/.versions/ with its time stamp."""
    src = Path(tmp_path)
    raw = original_name.replace("\\", "/")
    if ".." in raw.split("/") or raw.startswith("/"):
        raise UploadRejected(f"文件名“{original_name}”含路径，已拒绝")
    name = safe_name(raw)
    ext = Path(name).suffix.lower()
    allowed = upload_types(settings)
    if ext not in allowed:
        raise UploadRejected(f"“{name}”：不支持的文件类型 {ext or '（无扩展名）'}，支持 {' '.join(allowed)}")
    size = src.stat().st_size
    big = limits.too_big(size, settings.max_file_mb)
    if big:
        raise UploadRejected(f"“{name}”：{big}")
    dest = resolve_in_corpus(settings, name)
    settings.corpus_dir.mkdir(parents=True, exist_ok=True)
    # Uploads run concurrently (several browser sessions): one at a time per corpus, so a replaced file
    # always reaches .versions and two copies never interleave.
    with open(settings.corpus_dir / ".upload.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _save_locked(settings, src, dest, name)


def _save_locked(settings: Settings, src: Path, dest: Path, name: str) -> Saved:
    kept = None
    if dest.is_file():
        if filecmp.cmp(src, dest, shallow=False):
            return Saved(dest, f"“{name}”与已有文件内容相同，未改动")
        versions = settings.corpus_dir / VERSIONS
        versions.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(dest.stat().st_mtime))
        kept = versions / f"{dest.stem}.{stamp}{dest.suffix}"
        n = 1
        while kept.exists():
            n += 1
            kept = versions / f"{dest.stem}.{stamp}-{n}{dest.suffix}"
        shutil.copy2(dest, kept)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".uploading")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)  # a half-copied file is never seen by the indexer (hidden name until then)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if kept is not None:
        return Saved(dest, f"已替换同名文件“{name}”，旧版本保存为 {VERSIONS}/{kept.name}", kept)
    return Saved(dest, f"已上传：{name}")


def list_documents(settings: Settings) -> list[DocRow]:
    """Every file in corpus/ with its index status (files not yet indexed show as 待索引)."""
    try:
        m = store.Manifest.read(settings.index_dir)
    except store.Damage:  # the retriever answers from a copy and says so; the table lists the files as 待索引
        m = None
    records = m.files if m else {}
    versions = group_versions({s: DocMeta.from_dict(r.meta) for s, r in records.items() if r.status == "indexed"})
    rows = []
    seen = set()
    if settings.corpus_dir.is_dir():
        for source, p in walk_corpus(settings.corpus_dir):
            if not p.is_file():
                continue
            seen.add(source)
            r = records.get(source)
            size = p.stat().st_size
            if r is None:
                rows.append(DocRow(source, "待索引", 0, size, "", ""))
                continue
            status = {"indexed": "已索引", "skipped": "跳过", "failed": "失败"}.get(r.status, r.status)
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.indexed_at)) if r.indexed_at else ""
            meta = DocMeta.from_dict(r.meta)
            v = versions.get(source)
            version = ""
            if v is not None and v.siblings:
                version = f"{v.label or '版本'}：{'现行' if v.in_force else '已被' + (v.superseded_label or '新版') + '取代'}"
            rows.append(DocRow(source, status, r.chunks, size, when, r.reason, version, meta.in_force_since()))
    for source, r in records.items():
        if source not in seen and r.status == "indexed":
            rows.append(DocRow(source, "已删除（待重新索引）", r.chunks, r.size, "", ""))
    return rows
