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


_CN_DIGIT = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_UNIT = {"十": 10, "百": 100, "千": 1000}
_CN_BIG = {"万": 10_000, "亿": 100_000_000}
CN_NUMERAL = "零〇一二两三四五六七八九十百千万亿"


def parse_cn_int(text: str) -> int | None:
    """A whole number written in Chinese numerals or digits: "十一" 11, "二十三" 23, "一百零五" 105,
    "两万" 20000, "3" 3. None for anything else ("一是", "进一步" are not numbers)."""
    t = text.strip()
    if t.isdecimal():  # not isdigit: "①" and "²" are digits that int() refuses
        return int(t)
    if not t or any(ch not in CN_NUMERAL for ch in t):
        return None
    total = section = digit = 0
    seen_digit = False
    last_unit = 10**9  # units inside a section must fall: "三十三十" and "十十" are no numbers
    for ch in t:
        if ch in _CN_DIGIT:
            if seen_digit and digit and _CN_DIGIT[ch]:  # "二三" is not a number
                return None
            digit, seen_digit = _CN_DIGIT[ch], True
        elif ch in _CN_UNIT:
            if _CN_UNIT[ch] >= last_unit:
                return None
            last_unit = _CN_UNIT[ch]
            section += (digit if seen_digit else 1) * _CN_UNIT[ch]  # "十一": a bare 十 is 10
            digit, seen_digit = 0, False
        else:  # 万 / 亿
            section += digit
            if section == 0:
                return None
            total += section * _CN_BIG[ch]
            section = digit = 0
            seen_digit = False
            last_unit = 10**9
    return total + section + digit


_DIGITS = "零一二三四五六七八九"


def cn_numeral(n: int) -> str:
    """1..9999 in Chinese numerals as laws write them: 十一, 二十三, 一百零五, 一千零一."""
    if not 0 < n < 10000:
        return str(n)
    out, zero = "", False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        d = n // value % 10
        if d:
            if zero and out:
                out += "零"
            out += ("" if (unit == "十" and d == 1 and n < 20) else _DIGITS[d]) + unit
            zero = False
        elif out:
            zero = True
    return out


# An article marker: 第X条 with Chinese numerals or digits (第十二条, 第105条).
ARTICLE = re.compile(rf"第([{CN_NUMERAL}\d]+)条")


def articles_in(text: str) -> list[int]:
    """Article numbers (第X条) the text names, as numbers."""
    return [n for n in (parse_cn_int(m) for m in ARTICLE.findall(text)) if n]
