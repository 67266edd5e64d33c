"""Place names: which 'XX市/XX省' a text is about, the corpus's own gazetteer, and the question's places.

One module for every place rule, so the exclusion lists (城市, 全市, 我省…) live in one place.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from rag.lang.text import HAN, is_han, normalize

# Provinces and the like, by their short names (a question says 山东 as often as 山东省).
PROVINCES = ("北京 天津 上海 重庆 河北 山西 辽宁 吉林 黑龙江 江苏 浙江 安徽 福建 江西 山东 河南 湖北 湖南 广东 海南 四川 "
             "贵州 云南 陕西 甘肃 青海 台湾 内蒙古 广西 西藏 宁夏 新疆 香港 澳门").split()
# Words that look like a place to a tokenizer but name no particular one.
NO_PARTICULAR_PLACE = {"中国", "中华", "全国", "我国", "国家", "中央", "全省", "全市"}
# …市 / …省 endings that are not a city or province (for the gazetteer).
_NOT_PLACES = {"城市", "全市", "本市", "该市", "各市", "县市", "超市", "上市", "股市", "门市", "我市", "省市", "强市",
               "全省", "本省", "我省", "各省", "外省", "该省", "分省", "强省", "代表市", "发挥市",
               "节省", "反省", "自省", "内省"}  # 省 as a verb


def place_counts(text: str) -> Counter[str]:
    """Counts of 'XX市'/'XX省' candidates (2-3 characters before 市/省), common words excluded."""
    t = normalize(text)
    counts: Counter[str] = Counter()
    for m in re.finditer(r"[市省](?!场|民|委|政府|级|区|县)", t):
        i = m.start()
        for n in (2, 3):
            cand = t[i - n : i + 1]
            if len(cand) == n + 1 and is_han(cand) and cand not in _NOT_PLACES and cand[-2:] not in _NOT_PLACES:
                counts[cand] += 1
    return counts


def dominant_place(text: str) -> str:
    """Most frequent place name in the text (at least 3 times), or ''."""
    counts = place_counts(text)
    if not counts:
        return ""
    top = counts.most_common(1)[0][1]
    if top < 3:
        return ""
    # "连云港市" and "云港市" tie: the longest near-top candidate is the full name.
    best = max((c for c, n in counts.items() if n >= 0.9 * top), key=lambda c: (len(c), counts[c]))
    return best


_PLACE_ORG = re.compile(r"(?:回族|壮族|维吾尔)?(?:市|省|自治区)(?:科协|科学技术协会)")
_PLACE_SUFFIX = re.compile(r"市|省|回族|壮族|维吾尔")
_PLACE_Q = re.compile(f"([{HAN}]{{2,3}}?)(?:市|省)")
_NOT_PLACE_END = set("全本我该各在和省市县区")


def gazetteer(texts, tokenizer, checked: dict[str, bool] | None = None) -> list[str]:
    """Place names the corpus itself uses for a 科协 ("青岛市科协" -> 青岛), to tell 青岛's figures from 济宁's.

    `texts` are in indexing form (`Chunk.index_text`, already normalised).

    `checked`: part-of-speech decisions already made with the same dictionary (read, and extended
    with new ones), so a re-index does not load jieba's tagger for names it has judged before.

    Before each "市科协/省科协" the 2- or 3-character name is the one the corpus uses most often
    in front of 市/省 ("连云港" over "云港", "青岛" over "程青岛" from "新征程青岛市")."""
    return gazetteer_from(place_stats(texts), tokenizer, checked)


def place_stats(texts) -> dict[str, Counter[str]]:
    """What `gazetteer` counts, per text and summable: candidate names before 市科协/省科协 ("cand") and
    how often each 2-3 character string stands right before 市/省/… ("before"). Counts add and subtract
    exactly, so a re-index updates them with the changed chunks only."""
    cand: Counter[str] = Counter()
    before: Counter[str] = Counter()
    for text in texts:
        for m in _PLACE_ORG.finditer(text):
            i = m.start()
            for n in (2, 3):
                pre = text[max(0, i - n) : i]
                if len(pre) == n and is_han(pre) and pre[-1] not in _NOT_PLACE_END:
                    cand[pre] += 1
        # One pass over those suffixes, not one regex per candidate; only strings that could be a
        # candidate are kept, so the stored counts stay small.
        for m in _PLACE_SUFFIX.finditer(text):
            i = m.start()
            for n in (2, 3):
                pre = text[i - n : i] if i >= n else ""
                if pre and pre[-1] not in _NOT_PLACE_END and is_han(pre):
                    before[pre] += 1
    return {"cand": cand, "before": before}


def gazetteer_from(stats: dict[str, Counter[str]], tokenizer, checked: dict[str, bool] | None = None) -> list[str]:
    """The gazetteer decision on counts from `place_stats` (see `gazetteer`)."""
    candidates = {c for c, n in stats["cand"].items() if n > 0}
    before = stats["before"]
    count = {c: before[c] for c in candidates}
    names = set()
    for c in candidates:
        if count[c] < 2:
            continue
        longer = [d for d in candidates if len(d) > len(c) and d.endswith(c) and count[d] >= 0.8 * count[c]]
        shorter = [d for d in candidates if len(d) < len(c) and c.endswith(d) and count[d] > 1.5 * count[c]]
        if not longer and not shorter:
            names.add(c)
    # jieba's part-of-speech tags keep places and proper names ("代表", "年度" before "市科协" are not).
    checked = {} if checked is None else checked
    for n in names:
        if n not in checked:
            checked[n] = tokenizer.is_place_word(n)
    return sorted(n for n in names if checked[n])


def places_in(text: str, gaz: frozenset[str]) -> set[str]:
    t = normalize(text)
    return {g for g in gaz if g in t}


def question_places(q: str, gaz: frozenset[str], is_place: Callable[[str], bool] | None = None) -> set[str]:
    """Known places in the question, plus unknown ones it names as "XX市/XX省" (烟台市).

    `is_place` (jieba's part-of-speech check) confirms names the corpus does not know; without it the
    two characters before 市/省 are taken. Words that merely end in 市/省 (城市, 超市, 节省) never count."""
    t = normalize(q)
    found = places_in(t, gaz)
    for m in _PLACE_Q.finditer(t):
        name, suffix = m.group(1), t[m.end() - 1]
        # "我省" "全市" "各市" name no place, as in the gazetteer ("请问我省…" must not yield "问我").
        if name[-1] in _NOT_PLACE_END or any(name.endswith(g) or g.endswith(name) for g in found):
            continue
        if name[-1] + suffix in _NOT_PLACES or name + suffix in _NOT_PLACES:
            continue
        if is_place is None:
            found.add(name[-2:])
            continue
        for cand in (name, name[-2:]):
            if is_place(cand) or is_place(cand + suffix):
                found.add(cand)
                break
    return found


def place_mismatch(qplaces: set[str], passage: str, labels: list[str], gaz: frozenset[str]) -> bool:
    """The question names a place and the passage is about another one: the passage never names an asked
    place, and the nearest of its `labels` (heading, then document title) that names any place names
    another. A passage that mentions other places in passing ("山东省…大赛" in a 济宁 report) is no
    mismatch by itself: its document decides."""
    if not qplaces or places_in(passage, gaz | qplaces) & qplaces:
        return False
    for label in labels:
        found = places_in(label, gaz | qplaces)
        if found:
            return not (found & qplaces)
    return False
