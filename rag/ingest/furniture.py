"""Page furniture of PDFs: running headers and footers (the same line at the top or bottom of most pages,
page numbers aside) and bare page numbers ("251", "— 3 —", "2 / 4", "第 3 页") at a page's edge. They are
removed before chunking, so they never become a chunk or the heading of one. Table-tested in
tests/integration/ingest/test_formats.py, with the lines that must stay."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

from rag.models import Page

EDGE = 3  # lines at the top and at the bottom of a page where furniture sits
_DASH = "-—–－"
PAGE_NUMBER = re.compile(
    rf"^\s*(?:第\s*\d+\s*页(?:\s*[/／，,]?\s*共\s*\d+\s*页)?|[{_DASH}]\s*\d+\s*[{_DASH}]|\d+\s*[/／]\s*\d+"
    r"|\d{1,4}|page\s+\d+(?:\s+of\s+\d+)?)\s*$", re.I)
_PAGE_IN_LINE = re.compile(r"\d+\s*[/／]\s*\d+|第\s*\d+\s*页")


def _key(line: str) -> str:
    """A line as it repeats across pages: page numbers, digits and spacing do not count."""
    s = _PAGE_IN_LINE.sub("", line)
    return re.sub(r"\d", "#", re.sub(r"\s+", "", s))


def _edges(lines: list[str]) -> list[int]:
    """Indexes of the first and last EDGE non-blank lines."""
    idx = [i for i, x in enumerate(lines) if x.strip()]
    return sorted(set(idx[:EDGE] + idx[-EDGE:]))


def strip(pages: list[Page]) -> list[Page]:
    """The pages without their running headers, footers and bare page numbers (empty pages dropped)."""
    split = [p.text.split("\n") for p in pages]
    seen: Counter[str] = Counter()
    body: set[str] = set()
    for lines in split:
        edges = _edges(lines)
        seen.update({_key(lines[i]) for i in edges} - {""})
        body.update(_key(x) for i, x in enumerate(lines) if i not in edges)
    # "Most pages": more than half of them, and at least two; never a kind of line the body also has
    # ("填充行 1：…" on every line of every page is text, though its first line repeats at every top).
    running = {k for k, n in seen.items() if n >= 2 and n * 2 > len(pages) and k not in body}
    out = []
    for p, lines in zip(pages, split):
        drop = {i for i in _edges(lines) if PAGE_NUMBER.match(lines[i]) or _key(lines[i]) in running}
        text = "\n".join(x for i, x in enumerate(lines) if i not in drop)
        if text.strip():
            out.append(replace(p, text=text))
    return out
