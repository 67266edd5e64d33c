"""Chroma as a content-addressed vector store: one vector per chunk id, embedded or client/server."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

WRITE_BATCH = 4000  # below Chroma's max batch size; one round trip per batch, never per chunk


def _alias(chroma_dir: Path, key: str) -> Path:
    """A symlink to chroma_dir that Chroma treats as a new database (and so reads afresh from disk)."""
    import hashlib
    import os
    import tempfile

    real = chroma_dir.resolve()
    tag = hashlib.sha1(str(real).encode()).hexdigest()[:10]
    link = Path(tempfile.gettempdir()) / f"kexie-chroma-{tag}-{os.getpid()}-{key}"
    if not link.is_symlink():
        try:
            link.symlink_to(real, target_is_directory=True)
        except FileExistsError:
            pass
    return link


def collection_name(model: str) -> str:
    """One collection per embedding model, so vector spaces never mix."""
    slug = re.sub(r"[^a-zA-Z0-9_-]+", "-", Path(model).name or model).strip("-_")[:40] or "model"
    return f"kexie-{slug}"


class VectorStore:
    def __init__(self, client, model: str):
        self._client = client
        self.name = collection_name(model)
        # `configuration` (not the legacy "hnsw:space" metadata) keeps Chroma's default embedding
        # function, which would download an ONNX model, out of the collection entirely.
        self._col = client.get_or_create_collection(
            self.name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}, metadata={"model": model}
        )

    @classmethod
    def open(cls, chroma_dir: Path, model: str, host: str = "", port: int = 8000, fresh: str = "") -> "VectorStore":
        """`fresh="key"` opens the embedded store through an alias path: Chroma caches one in-memory HNSW
        per path and process, which does not see vectors another process (a CLI `kexie index`) added."""
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        cs = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        if host:
            client = chromadb.HttpClient(host=host, port=port, settings=cs)
        else:
            chroma_dir.mkdir(parents=True, exist_ok=True)
            path = _alias(chroma_dir, fresh) if fresh else chroma_dir
            client = chromadb.PersistentClient(path=str(path), settings=cs)
        return cls(client, model)

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
        try:  # the caller caps k at its generation's size: no count() round trip per query
            res = self._col.query(query_embeddings=[vector], n_results=k, include=["distances"])
        except Exception:
            n = self.count()  # fewer stored vectors than asked for (e.g. an interrupted first run)
            if n == 0:
                return []
            res = self._col.query(query_embeddings=[vector], n_results=min(k, n), include=["distances"])
        return [(i, 1.0 - float(d)) for i, d in zip(res["ids"][0], res["distances"][0])]

    def drop_other_collections(self) -> list[str]:
        """Remove collections built by other models (after a model change has been committed)."""
        dropped = []
        for c in self._client.list_collections():
            name = c if isinstance(c, str) else c.name
            if name.startswith("kexie-") and name != self.name:
                self._client.delete_collection(name)
                dropped.append(name)
        return dropped
