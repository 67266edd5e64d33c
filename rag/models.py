"""Plain dataclasses passed between the pipeline stages."""

from __future__ import annotations

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
    index_text: str  # normalised text with title/heading context, for BM25 and embeddings
    ocr: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)  # flat fields: much cheaper than dataclasses.asdict at 100k chunks


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
