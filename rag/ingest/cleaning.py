"""Clean OCR'd / extracted text into paragraphs without losing content.

Display text keeps the original characters; `normalize` gives the form used for indexing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.ingest import limits
from rag.lang.lists import BLOCK_START
from rag.lang.sentences import BODY_STOPS, ends_sentence
from rag.lang.tables import is_row
from rag.lang.text import HAN, normalize
from rag.models import Page

_CJK_OR_DIGIT = re.compile(f"[{HAN}0-9０-９a-zA-Z%％“‘（(]")


PLAIN_LINE_MAX = 40  # longer lines are body text even without punctuation


@dataclass
class Para:
    text: str  # original text (inner line breaks of rejoined pieces removed)
    page: int | None
    ocr: bool = False


def _continues(prev: str, nxt: str, min_prev_len: int) -> bool:
    """True when `nxt` is the rest of a sentence that a page/line break cut out of `prev`."""
    if ends_sentence(prev) or is_row(prev):
        return False
    # Short unpunctuated lines are titles; a line with a full stop inside is body text, whatever its length.
    if len(prev.strip()) < min_prev_len and not any(ch in prev for ch in BODY_STOPS):
        return False
    s = nxt.strip()
    if not s or BLOCK_START.match(s) or not _CJK_OR_DIGIT.match(s):
        return False
    # A short unpunctuated next line is a heading or byline, not the rest of a sentence.
    return len(s) > PLAIN_LINE_MAX or any(ch in s for ch in BODY_STOPS + ";")


def paragraphs(pages: list[Page], pdf: bool = False) -> list[Para]:
    """Split pages into paragraphs, rejoin sentences cut by breaks, drop exact duplicate paragraphs."""
    # A txt paragraph is one line; PDF lines are visual lines, so short pieces also get rejoined.
    min_prev_len = 8 if pdf else 40
    out: list[Para] = []
    for pg in pages:
        limits.check_time()
        for raw in pg.text.split("\n"):
            line = raw.strip()
            if not line:
                continue
            limits.tick()
            # Rejoining copies the paragraph so far: past MAX_PARA_CHARS a new one starts (linear time
            # on a file whose every line continues the last).
            if out and len(out[-1].text) < limits.MAX_PARA_CHARS and _continues(out[-1].text, line, min_prev_len):
                prev = out[-1]
                joiner = " " if prev.text[-1:].isascii() and line[:1].isascii() else ""
                prev.text = prev.text + joiner + line
                continue
            out.append(Para(line, pg.page, pg.ocr))
    seen: set[str] = set()
    unique: list[Para] = []
    for p in out:
        key = normalize(p.text)
        # Short lines (captions, slogans, page furniture) legitimately repeat; only long ones are duplicates.
        if len(key) >= 20:
            if key in seen:
                continue
            seen.add(key)
        unique.append(p)
    return unique
