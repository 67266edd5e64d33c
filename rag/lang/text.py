"""The text normal form every stage shares: Han characters, the indexing form, a token estimate."""

from __future__ import annotations

import re
import unicodedata

# Han ideographs: CJK Unified (basic + extension A), compatibility ideographs, and the supplementary
# planes (extensions B-H: rare names and place characters OCR and GB18030 texts do contain).
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
HAN_CHAR = re.compile(f"[{HAN}]")
HAN_RUN = re.compile(f"[{HAN}]+")


# The characters of Chinese numerals (一 … 亿, 两, 〇) as a regex class body.
CN_NUMERAL = "零〇一二两三四五六七八九十百千万亿"

_SPACE_BETWEEN_HAN = re.compile(f"(?<=[{HAN}]) (?=[{HAN}])")


# A token as `usage` estimates it: one Han character, one run of letters or digits, or one other symbol.
_TOKEN = re.compile(f"[{HAN}]|[A-Za-z0-9]+|[^\\s{HAN}A-Za-z0-9]")


def estimate_tokens(text: str) -> int:
    """A stated estimate of model tokens (no tokenizer is loaded for it): see `_TOKEN`."""
    return len(_TOKEN.findall(text or ""))


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
