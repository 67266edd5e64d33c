"""Text primitives every stage shares: the indexing normal form, sentence punctuation, Han characters.

A leaf module: it imports nothing from the project, so any module may import it.
"""

from __future__ import annotations

import re
import unicodedata

# Han ideographs: CJK Unified (basic + extension A), compatibility ideographs, and the supplementary
# planes (extensions B-H: rare names and place characters OCR and GB18030 texts do contain).
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
HAN_CHAR = re.compile(f"[{HAN}]")
HAN_RUN = re.compile(f"[{HAN}]+")

# Sentence-final punctuation (full and half width) and closing quotes/brackets that may follow it.
TERMINAL = "。！？；!?;…"
CLOSERS = "”’」』）)】》\"'"

_SPACE_BETWEEN_HAN = re.compile(f"(?<=[{HAN}]) (?=[{HAN}])")


def normalize(text: str) -> str:
    """Indexing form: NFKC (full-width letters/digits/punctuation to half width), collapsed whitespace,
    no spaces between Han characters (OCR inserts them)."""
    t = unicodedata.normalize("NFKC", text)
    t = t.replace("\u3000", " ")
    t = re.sub(r"[ \t\f\v\r\n]+", " ", t)
    t = _SPACE_BETWEEN_HAN.sub("", t)
    return t.strip()


def has_han(text: str) -> bool:
    return HAN_CHAR.search(text) is not None


def is_han(text: str) -> bool:
    """Non-empty and Han characters only."""
    return HAN_RUN.fullmatch(text) is not None
