"""Plain dataclasses passed between the pipeline stages."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from rag.lang.text import normalize


class _Choice(str, Enum):
    """A closed set of settings values; `from_str` gives the Chinese error users see."""

    @classmethod
    def choices(cls) -> list[str]:
        return [m.value for m in cls]

    @classmethod
    def from_str(cls, value: "str | _Choice") -> "_Choice":
        try:
            return cls(str(value.value if isinstance(value, Enum) else value).strip().lower())
        except ValueError:
            raise ValueError(f"未知的{cls._label()}：{value}（可选 {' / '.join(cls.choices())}）") from None

    @classmethod
    def _label(cls) -> str:
        return ""

    def __str__(self) -> str:
        return self.value


class RetrievalMode(_Choice):
    HYBRID = "hybrid"
    BM25 = "bm25"
    VECTOR = "vector"

    @classmethod
    def _label(cls) -> str:
        return "检索模式"


class Backend(_Choice):
    EXTRACTIVE = "extractive"  # offline default
    OPENAI = "openai"  # any OpenAI-compatible endpoint
    LLAMACPP = "llamacpp"  # a local GGUF model in a worker process

    @classmethod
    def _label(cls) -> str:
        return "回答后端"


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
    scanned_pages: list[int] = field(default_factory=list)  # pages left out: no text layer, OCR off


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
    context: str = ""  # the title's part taken from the text itself (headline, place), not the file name
    article: str = ""  # regulations: the article this chunk belongs to ("第二十九条"), else ""
    kind: str = ""  # "table" for a table chunk (markdown rows, header repeated), else "" (prose)

    @property
    def index_text(self) -> str:
        """Normalised text with title/heading context, for BM25 and answer scoring.

        Derived on demand rather than stored, so a loaded index holds each passage's text once."""
        return normalize(f"{self.title} {self.heading}\n{self.text}")

    @property
    def vector_text(self) -> str:
        """What is embedded: like `index_text` without the file name, so a rename re-embeds nothing."""
        return normalize(f"{self.context} {self.heading}\n{self.text}")

    @property
    def token_key(self) -> str:
        """Key of the stored BM25 tokens: the id fixes the embedded text, the title the rest of `index_text`."""
        return hashlib.sha1(f"{self.id}\0{self.title}".encode("utf-8")).hexdigest()[:20]

    def to_dict(self) -> dict:
        return dict(self.__dict__)  # flat fields: much cheaper than dataclasses.asdict at 100k chunks

    @classmethod
    def from_dict(cls, d: dict) -> "Chunk":
        d.pop("index_text", None)  # stored by indexes written before it was derived
        d.setdefault("context", "")
        d.setdefault("article", "")
        d.setdefault("kind", "")
        # Every chunk of a document repeats its source, title and headings: share one string each.
        for k in ("source", "title", "heading", "context"):
            d[k] = sys.intern(d[k])
        return cls(**d)


@dataclass
class Hit:
    """A retrieved chunk: `score` is the fused RRF score (in every mode, so it means one thing), and
    each retriever's rank (1-based) and own score, None where that retriever did not return it."""

    chunk: Chunk
    score: float
    bm25_rank: int | None = None
    vector_rank: int | None = None
    bm25_score: float | None = None
    vector_score: float | None = None
    rank: int = 0
    label: str = ""  # regulations: 《title》第N条, how the passage is cited
    note: str = ""  # from a superseded version: "（2002年版，已被2024年修订版取代）"
    versions: str = ""  # the version group of its document, where the corpus holds several versions
    reading: Any = None  # rag.e5.reader.Reading when the reading model reranked it (not part of the JSON)
    tier: int = 3  # rag.search.structure tier when reranked: 0 = the article / definition the question names

    def to_json(self) -> dict:
        """The stable `search --json` shape. `score` is always the fused (RRF) score; each retriever's
        own score (BM25, cosine similarity) is in bm25_score / vector_score, None where it did not find it."""
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
            "bm25_score": None if self.bm25_score is None else round(float(self.bm25_score), 6),
            "vector_score": None if self.vector_score is None else round(float(self.vector_score), 6),
        }


@dataclass
class Citation:
    n: int
    source: str
    page: int | None
    heading: str
    text: str  # the passage as indexed
    support: list[str] = field(default_factory=list)  # sentences of the passage the answer relies on
    spans: list[tuple[int, int]] = field(default_factory=list)  # their offsets in `text`, where known (extractive)
    label: str = ""  # regulations: the article as staff quote it, 《社会团体登记管理条例》第二十九条

    def to_json(self) -> dict:
        d = {"n": self.n, "source": self.source, "page": self.page, "heading": self.heading, "text": self.text}
        if self.label:  # added key: present only for regulation articles
            d["label"] = self.label
        return d


CLOSEST = 3  # passages a refusal offers in place of citations ("以下是最接近的段落")


# -- curated question/answer pairs (标准问答), matched before the documents are read ------------------
@dataclass
class FaqPair:
    id: str  # the row's id column, else q0001… by position (unique within its file)
    question: str
    answer: str
    file: str  # file name in the FAQ folder
    row: int  # the row as staff see it: JSONL line, spreadsheet row (header = 1)
    evidence: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Unique across the folder: file and id, plus a digest of the question, so a key picked before
        another edit shifted the rows never reaches a different pair."""
        digest = hashlib.sha1(self.question.encode("utf-8")).hexdigest()[:8]
        return f"{self.file}#{self.id}#{digest}"

    @property
    def where(self) -> str:
        return f"{self.file} 第 {self.row} 行"


@dataclass
class FaqMatch:
    pair: FaqPair
    score: float

    @property
    def question(self) -> str:
        return self.pair.question

    @property
    def answer(self) -> str:
        return self.pair.answer

    @property
    def file(self) -> str:
        return self.pair.file

    @property
    def row(self) -> int:
        return self.pair.row

    def to_json(self) -> dict:
        return {"question": self.pair.question, "answer": self.pair.answer, "source": self.pair.file, "row": self.pair.row,
                "score": round(float(self.score), 4)}


@dataclass
class Answer:
    question: str
    answer: str
    refused: bool
    citations: list[Citation]
    retrieved: list[Hit]
    standalone: str = ""
    backend: str = "extractive"
    notice: str = ""  # e.g. "LLM unreachable, fell back to offline answer"
    evidence: float = 0.0  # the answerability model's probability that the passages answer the question
    confidence: float = 0.0  # extractive: the ranker's probability for the best candidate sentence
    generation: str = ""  # the index generation the answer was served from
    timings: dict[str, float] = field(default_factory=dict)
    faq: FaqMatch | None = None  # the curated pair (标准答案) the question matched, if any
    # With a curated answer: the document answer shown after it ("" when none is), `answer` the two joined.
    doc_answer: str | None = None

    @property
    def document(self) -> str:
        """The document answer alone, without a curated answer joined before it."""
        return self.answer if self.doc_answer is None else self.doc_answer

    def closest(self) -> list[Citation]:
        """For a refusal, the passages it offers instead, numbered like citations (they support nothing)."""
        if not self.refused:
            return []
        return [Citation(n, h.chunk.source, h.chunk.page, h.chunk.heading, h.chunk.text, label=h.label)
                for n, h in enumerate(self.retrieved[:CLOSEST], 1)]

    def to_json(self) -> dict:
        d = {
            "answer": self.answer,
            "refused": self.refused,
            "citations": [c.to_json() for c in self.citations],
            "retrieved": [h.to_json() for h in self.retrieved],
        }
        if self.faq is not None:  # added key: present only when a curated answer was given
            d["faq"] = self.faq.to_json()
        return d
