"""Chroma as a content-addressed vector store: one vector per chunk id, embedded or client/server."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from rag.index.embeddings import space

WRITE_BATCH = 4000  # below Chroma's max batch size; one round trip per batch, never per chunk
_ALIAS_PREFIX = "kexie-chroma-"


class StoreClosed(Exception):
    """The store was retired and closed while a caller still held it: open the current one."""


def _alias(chroma_dir: Path, key: str) -> Path:
    """A symlink to chroma_dir that Chroma treats as a new database (and so reads afresh from disk)."""
    real = chroma_dir.resolve()
    tag = hashlib.sha1(str(real).encode()).hexdigest()[:10]
    _remove_dead_aliases()
    link = Path(tempfile.gettempdir()) / f"{_ALIAS_PREFIX}{tag}-{os.getpid()}-{key}"
    if not link.is_symlink():
        try:
            link.symlink_to(real, target_is_directory=True)
        except FileExistsError:
            pass
    return link


def _remove_dead_aliases() -> None:
    """Links left by processes that ended without closing (kill -9, crash)."""
    for link in Path(tempfile.gettempdir()).glob(_ALIAS_PREFIX + "*"):
        parts = link.name[len(_ALIAS_PREFIX):].split("-")
        if len(parts) < 3 or not parts[1].isdigit() or not link.is_symlink():
            continue
        pid = int(parts[1])
        try:
            # Only our own user's links: another user's in sticky /tmp is theirs to remove.
            if pid != os.getpid() and not Path(f"/proc/{pid}").exists() and link.lstat().st_uid == os.getuid():
                link.unlink(missing_ok=True)
        except OSError:
            pass


def _forget_system(path: str) -> None:
    """Chroma caches a system per path even when it failed to start (a damaged chroma.sqlite3): drop it,
    so the next open (after the store was repaired or set aside) starts afresh instead of failing again."""
    try:
        from chromadb.api.shared_system_client import SharedSystemClient as C

        with C._refcount_lock:
            C._identifier_to_system.pop(path, None)
            C._identifier_to_refcount.pop(path, None)
    except Exception:  # another chromadb layout: nothing cached to drop
        pass


def collection_name(model: str, kb_id: str = "") -> str:
    """One collection per knowledge base and embedding model: bases sharing a Chroma server never
    touch each other's vectors, and vector spaces never mix. ('' = an index made before bases had ids.)"""
    model = space(model)
    slug = re.sub(r"[^a-zA-Z0-9_-]+", "-", Path(model).name or model).strip("-_")[:40] or "model"
    return f"kexie-{kb_id}-{slug}" if kb_id else f"kexie-{slug}"


class VectorStore:
    def __init__(self, client, model: str, kb_id: str = "", alias: Path | None = None, remote: bool = False):
        self._client = client
        self.remote = remote  # a Chroma server, possibly shared with other knowledge bases
        self.kb_id = kb_id
        self.model = model
        self.name = collection_name(model, kb_id)
        self._alias = alias
        self._state = threading.Lock()
        self._users = 0
        self._retired = False
        self._closed = False
        # `configuration` (not the legacy "hnsw:space" metadata) keeps Chroma's default embedding
        # function, which would download an ONNX model, out of the collection entirely.
        self._col = client.get_or_create_collection(
            self.name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}, metadata={"model": model}
        )

    @classmethod
    def open(cls, chroma_dir: Path, model: str, host: str = "", port: int = 8000, fresh: str = "",
             kb_id: str = "") -> "VectorStore":
        """`fresh="key"` opens the embedded store through an alias path: Chroma caches one in-memory HNSW
        per path and process, which does not see vectors another process (a CLI `kexie index`) added."""
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        cs = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        alias = None
        if host:
            client = chromadb.HttpClient(host=host, port=port, settings=cs)
        else:
            chroma_dir.mkdir(parents=True, exist_ok=True)
            alias = _alias(chroma_dir, fresh) if fresh else None
            path = str(alias or chroma_dir)
            try:
                client = chromadb.PersistentClient(path=path, settings=cs)
            except Exception:
                _forget_system(path)
                raise
        return cls(client, model, kb_id, alias, remote=bool(host))

    # -- lifecycle: a reader that moves to a newer view retires the old store; it closes once unused --
    def acquire(self) -> bool:
        """Count the caller as a user (the store stays open until `release`); False if already closed."""
        with self._state:
            if self._closed:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        with self._state:
            self._users -= 1
        self._close_if_idle()

    @contextmanager
    def _use(self):
        if not self.acquire():
            raise StoreClosed(self.name)
        try:
            yield
        finally:
            self.release()

    def retire(self) -> None:
        """Close as soon as no call is using the store (queries in flight finish on it)."""
        with self._state:
            self._retired = True
        self._close_if_idle()

    def close(self, only_if_idle: bool = False) -> None:
        """Release the client (Chroma's cached system: HNSW segments, SQLite handles) and its alias link."""
        with self._state:
            # Decided and marked under the lock, so no new user can slip in between.
            if self._closed or (only_if_idle and (not self._retired or self._users)):
                return
            self._closed = True
        self._release_client()

    def _close_if_idle(self) -> None:
        self.close(only_if_idle=True)

    def _release_client(self) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # already stopped, or a server that went away: nothing left to release
                pass
        if self._alias is not None:
            try:
                self._alias.unlink(missing_ok=True)
            except OSError:
                pass

    def count(self) -> int:
        return self._col.count()

    def existing(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), WRITE_BATCH):
            found.update(self._col.get(ids=ids[i : i + WRITE_BATCH], include=[])["ids"])
        return found

    def all_ids(self) -> set[str]:
        out: set[str] = set()
        offset = 0
        while True:
            got = self._col.get(include=[], limit=WRITE_BATCH * 5, offset=offset)["ids"]
            out.update(got)
            if len(got) < WRITE_BATCH * 5:
                return out
            offset += len(got)

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        for i in range(0, len(ids), WRITE_BATCH):
            self._col.upsert(ids=ids[i : i + WRITE_BATCH], embeddings=vectors[i : i + WRITE_BATCH])

    def delete(self, ids: list[str]) -> None:
        for i in range(0, len(ids), WRITE_BATCH):
            self._col.delete(ids=ids[i : i + WRITE_BATCH])

    def query(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """(id, cosine similarity) best first."""
        if k <= 0:
            return []
        with self._use():
            return self._query(vector, k)

    def _query(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        try:  # the caller caps k at its generation's size: no count() round trip per query
            res = self._col.query(query_embeddings=[vector], n_results=k, include=["distances"])
        except Exception:
            n = self.count()  # fewer stored vectors than asked for (e.g. an interrupted first run)
            if n == 0:
                return []
            res = self._col.query(query_embeddings=[vector], n_results=min(k, n), include=["distances"])
        return [(i, 1.0 - float(d)) for i, d in zip(res["ids"][0], res["distances"][0])]

    def collections(self) -> set[str]:
        return {c if isinstance(c, str) else c.name for c in self._client.list_collections()}

    @staticmethod
    def name_of(model: str, kb_id: str) -> str:
        return collection_name(model, kb_id)

    def drop_other_collections(self, keep: set[str] | None = None) -> list[str]:
        """Remove this knowledge base's collections of other models (after a model change has been
        committed) except those in `keep`; other bases' collections on a shared server are never touched."""
        keep = keep or {self.name}
        dropped = []
        mine = f"kexie-{self.kb_id}-" if self.kb_id else None
        for c in self._client.list_collections():
            name = c if isinstance(c, str) else c.name
            # An embedded store belongs to one base (index/chroma), so its pre-identity "kexie-<model>"
            # collections are this base's too; on a shared server only our own prefix is ours.
            ours = name.startswith(mine) if mine else False
            if not self.remote and name.startswith("kexie-"):
                ours = True
            if ours and name not in keep:
                self._client.delete_collection(name)
                dropped.append(name)
        return dropped

