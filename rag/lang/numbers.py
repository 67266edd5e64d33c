"""Numbers as Chinese texts write them: numerals (十一, 两万), article numbers (第X条), figures ("1,200",
"3.5"), and the values a text states."""

from __future__ import annotations

import re

from rag.lang.lists import FIGURE_ITEM
from rag.lang.text import CN_NUMERAL, normalize

_CN_DIGIT = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_UNIT = {"十": 10, "百": 100, "千": 1000}
_CN_BIG = {"万": 10_000, "亿": 100_000_000}


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


# A figure as written: digits with optional thousands separators and decimals ("1,200", "3.5"), never part
# of a longer digit run ("12" is not in "2012"). NFKC turns "，" into ",": "12,34,56" is three figures,
# "1,200" one (a comma before exactly 3 digits).
FIGURE = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d])(?:\.\d+)?|(?<![\d.])\d+(?:\.\d+)?(?![\d])")


def figures(text: str) -> set[float]:
    """The figures a text states, as values ("1,200" and "1200" are the same); a list item's own marker
    ("1. " "(3)") is not one."""
    return {float(n.replace(",", "")) for n in FIGURE.findall(FIGURE_ITEM.sub("", normalize(text)))}


# Digits and runs of numerals, for the values a question states (see `stated_values`).
_DIGIT_RUN = re.compile(r"\d+(?:\.\d+)?")
_NUMERAL_RUN = re.compile(f"第?[{CN_NUMERAL}]+")
# Five-year plan periods (十三五, 十四五): they date a figure like a year, they are not a quantity.
PLAN_PERIOD = re.compile("十[一二三四五六七八九]五")
# Words with a numeral inside that state no number.
NOT_NUMBERS = ("一些", "一下", "统一", "一起", "一直", "一样", "一定", "一般", "唯一", "进一步", "万一", "一体")


def stated_values(text: str, years: set[str] = frozenset()) -> set[float]:
    """The values a short text (a question) states in digits or numerals, years and plan periods not
    counted; a bare 一 is mostly an article ("一个社会团体", "一年"), so it counts only as an ordinal (第一)."""
    t = PLAN_PERIOD.sub(" ", text)
    out: set[float] = set()
    for m in _DIGIT_RUN.finditer(t):
        if m.group(0) not in years:
            out.add(float(m.group(0)))
    for w in NOT_NUMBERS:
        t = t.replace(w, " ")
    for m in _NUMERAL_RUN.finditer(t):
        run = m.group(0)
        ordinal = run.startswith("第")
        v = parse_cn_int(run.lstrip("第"))
        if v is not None and (v != 1 or ordinal) and any(c not in "万亿千百" for c in run.lstrip("第")):
            out.add(float(v))
    return out


# Chinese numerals with a unit or a counter after them ("三百支", "五分之一"): a number, unlike 一些 or 统一.
_NUMERAL_WITH_UNIT = re.compile(r"[一二两三四五六七八九十百千万亿零〇]+(?:[个支家项名人场次所座篇件期批万亿元天年届位处条类种台户份本门块倍]|分之)")


def has_number(sentence: str) -> bool:
    """The sentence states a number: any digit, or numerals with a unit or counter."""
    return any(ch.isdigit() for ch in sentence) or _NUMERAL_WITH_UNIT.search(sentence) is not None
