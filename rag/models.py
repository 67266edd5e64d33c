"""Plain dataclasses passed between the pipeline stages."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field


@dataclass
class Page:
    """A run of text from one page (PDF) or the whole file (page None)."""

    text: str
    page: int | None = None
    ocr: bool = False


@dataclass
class Document:
    source: str  # path relative to the corpus dir, as shown in citations
    pages: list[Page]
    warnings: list[str] = field(default_factory=list)


@dataclass
class Chunk:
    id: str  # stable: derived from the indexed text, so unchanged chunks are never re-embedded
    source: str
    title: str  # document title/context shown and indexed with every chunk
    heading: str  # heading path, " > " joined
    page: int | None
    position: int  # chunk number within its document
    text: str  # original text, for display and citation
    ocr: bool = False

    @property
    def index_text(self) -> str:
        """Normalised text with title/heading context, for BM25 and embeddings.

        Derived on demand rather than stored, so a loaded index holds each passage's text once."""
        from .cleaning import normalize  # cleaning imports this module

        return normalize(f"{self.title} {self.heading}\n{self.text}")

    def to_dict(self) -> dict:
        return dict(self.__dict__)  # flat fields: much cheaper than dataclasses.asdict at 100k chunks

    @classmethod
    def from_dict(cls, d: dict) -> "Chunk":
        d.pop("index_text", None)  # stored by indexes written before it was derived
        # Every chunk of a document repeats its source, title and headings: share one string each.
        for k in ("source", "title", "heading"):
            d[k] = sys.intern(d[k])
        return cls(**d)


@dataclass
class Hit:
    """A retrieved chunk with its fused score and each retriever's rank (1-based, None if absent)."""

    chunk: Chunk
    score: float
    bm25_rank: int | None = None
    vector_rank: int | None = None
    bm25_score: float | None = None
    vector_score: float | None = None
    rank: int = 0

    def to_json(self) -> dict:
        """The stable `search --json` shape."""
        c = self.chunk
        return {
            "rank": self.rank,
            "score": round(float(self.score), 6),
            "source": c.source,
            "page": c.page,
            "title": c.title,
            "heading": c.heading,
            "text": c.text,
            "bm25_rank": self.bm25_rank,
            "vector_rank": self.vector_rank,
        }
