"""Answer candidates: the sentences of the retrieved passages, and clause windows of long ones, as spans.

Every candidate carries its character offsets in its chunk's text, so highlighting, de-duplication of
overlapping chunks and clause trimming work on spans, not on substring search.
"""

from __future__ import annotations

from dataclasses import dataclass

from rag.answer.instructions import looks_like_instruction
from rag.lang import tables
from rag.lang.sentences import CLAUSE, CLOSERS, LINE_SENTENCE
from rag.lang.text import normalize
from rag.models import Hit

LONG_SENTENCE = 110  # longer sentences also yield windows of clauses up to this length
MIN_CHARS = 4


@dataclass
class Candidate:
    hit: Hit
    start: int  # offsets in hit.chunk.text; a heading candidate has start = end = -1
    end: int
    text: str
    sentence: int  # index of the sentence in its chunk (-1: the heading)
    window: bool = False  # a clause window of a longer sentence

    @property
    def span(self) -> tuple[str, int, int]:
        return (self.hit.chunk.id, self.start, self.end)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence, surrounding whitespace excluded."""
    out = []
    for m in LINE_SENTENCE.finditer(text):
        s, e = m.start(), m.end()
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def clause_windows(text: str, start: int, end: int, limit: int = LONG_SENTENCE) -> list[tuple[int, int]]:
    """Windows of whole clauses (cut at ，；： only, never mid-word) of at most `limit` characters."""
    clauses = [(start + m.start(), start + m.end()) for m in CLAUSE.finditer(text[start:end]) if m.end() > m.start()]
    out = []
    for i in range(len(clauses)):
        for j in range(i, len(clauses)):
            s, e = clauses[i][0], clauses[j][1]
            if e - s > limit:
                break
            if (s, e) != (start, end):
                out.append((s, e))
    return out


def split_sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in sentence_spans(text)]


def _rows(h: Hit) -> list[Candidate]:
    """A table chunk's data rows, each read with its column names: the span is the row's line."""
    text = h.chunk.text
    lines, pos = [], 0
    for line in text.split("\n"):
        lines.append((pos, pos + len(line), line))
        pos += len(line) + 1
    if len(lines) < 3:
        return []
    header = tables.cells(lines[0][2])
    out = []
    for n, (s, e, line) in enumerate(lines[2:], 1):
        if tables.is_row(line) and not tables.is_separator(line):
            sentence = tables.row_sentence(header, tables.cells(line))
            if len(sentence) >= MIN_CHARS:
                out.append(Candidate(h, s, e, sentence, n))
    return out


def candidates(hits: list[Hit]) -> list[Candidate]:
    """Sentences (and clause windows of long sentences) of the hits, plus a chunk's nearest heading when it
    is not the document title (bylines such as "曾能建 福建省科协党组书记" answer "谁")."""
    out: list[Candidate] = []
    for h in hits:
        c = h.chunk
        title = normalize(c.title)
        label = c.heading.rsplit(" > ", 1)[-1]
        # A heading is a candidate ("曾能建 福建省科协党组书记" answers "谁"), an article number alone is not.
        if len(label) >= MIN_CHARS and label not in c.title and label != c.article and not looks_like_instruction(label):
            out.append(Candidate(h, -1, -1, label, -1))
        if c.kind == "table":
            out += _rows(h)
            continue
        for n, (s, e) in enumerate(sentence_spans(c.text)):
            if e - s < MIN_CHARS or c.text[s:e].rstrip(CLOSERS).endswith(("？", "?")) or normalize(c.text[s:e]) in title:
                continue  # a question in the text (an FAQ's, a heading's) or the document's own title answers nothing
            if looks_like_instruction(c.text[s:e]):
                continue  # orders addressed to the assistant are document data, never its answer
            out.append(Candidate(h, s, e, c.text[s:e], n))
            if e - s > LONG_SENTENCE:
                out += [Candidate(h, ws, we, c.text[ws:we], n, True) for ws, we in clause_windows(c.text, s, e)
                        if we - ws >= MIN_CHARS]
    return out
