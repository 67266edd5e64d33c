"""Tables as markdown rows: the one form every loader (DOCX, PDF, spreadsheets, HTML) writes and the
chunker reads, so a table chunk repeats its header row and the citation card can draw it."""

from __future__ import annotations

import re

_SEPARATOR = re.compile(r"^\|(?:\s*:?-{3,}:?\s*\|)+$")


def fill(grid: list[list[str | None]]) -> list[list[str]]:
    """Clean cell texts, fill merged cells, drop empty rows and columns.

    Extractors give a merged cell's text once and None (PDF) or a repeat (DOCX) elsewhere: a None takes
    the value above it when there is one (a vertical merge: a category spanning rows), else the one
    to its left (a header spanning columns)."""
    rows = [[_cell(c) for c in r] for r in grid]
    rows = [r for r in rows if any(r)]  # an empty row is no merge: nothing to fill it with
    width = max((len(r) for r in rows), default=0)
    rows = [r + [None] * (width - len(r)) for r in rows]
    for i, r in enumerate(rows):
        for j, c in enumerate(r):
            if c is None:
                above = rows[i - 1][j] if i else None
                r[j] = above if above else (r[j - 1] if j and r[j - 1] else "")
    rows = [r for r in rows if any(r)]
    keep = [j for j in range(width) if any(r[j] for r in rows)]
    return [[r[j] for j in keep] for r in rows]


def _cell(c: str | None) -> str | None:
    if c is None:
        return None
    t = re.sub(r"(?<=[\u4e00-\u9fff（）、，])\s+(?=[\u4e00-\u9fff（）、，])", "", str(c))  # a cell's line breaks
    return re.sub(r"\s+", " ", t).strip().replace("|", "｜")


def markdown(rows: list[list[str]]) -> str:
    """A markdown table: the first row is the header."""
    if not rows:
        return ""
    head, body = rows[0], rows[1:]
    lines = [_line(head), "|" + "---|" * len(head)]
    lines += [_line(r) for r in body]
    return "\n".join(lines)


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(c or " " for c in cells) + " |"


def is_row(line: str) -> bool:
    t = line.strip()
    return len(t) >= 3 and t.startswith("|") and t.endswith("|")


def is_separator(line: str) -> bool:
    return _SEPARATOR.match(line.strip().replace(" ", "")) is not None


def cells(line: str) -> list[str]:
    """The cells of one markdown row."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def row_sentence(header: list[str], row: list[str]) -> str:
    """A data row read with its column names ("年份：2023年；科普活动经费：120万元"), which is what a
    question about a cell matches and what an answer quotes."""
    parts = []
    for j, v in enumerate(row):
        if not v:
            continue
        h = header[j] if j < len(header) else ""
        parts.append(f"{h}：{v}" if h and h != v else v)
    return "；".join(parts)


def plausible(grid: list[list[str | None]], max_cell: int = 300) -> bool:
    """A real table rather than a page layout box that a line-based detector took for one: at least two
    rows and two columns, most cells filled, no cell a whole text column."""
    if len(grid) < 2 or max((len(r) for r in grid), default=0) < 2:
        return False
    cells = [c for r in grid for c in r]
    filled = [c for c in cells if c and str(c).strip()]
    return len(filled) >= 0.5 * len(cells) and all(len(str(c)) <= max_cell for c in filled)
