"""Feedback -> eval dataset lines (`kexie feedback export`), ready for `kexie eval`.

A 👍 keeps the answer as gold; a 👎 with a correction takes the correction and must include its figures,
names or (when short) the phrase itself; a 👎 without one, or with a correction nothing can be required of,
is a question to review (`"review": true`, no gold), which `kexie eval` skips and counts, never scores: an
empty `must_include` would score any answer as right."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rag.answer.wording import CITATION
from rag.serve.history import Feedback

# What a corrected answer must contain: figures with their unit, dates, quoted names.
KEY = re.compile(r"\d[\d,.，]*\s*(?:万|亿)?\s*[个支名人次项家场所篇元天年月日件部条届期%％余多]*|《[^》]{2,40}》|“[^”]{2,20}”")
SHORT = 24  # a correction this short without figures or names is itself the key phrase
# How staff open a correction ("应该是126支", "正确答案：…"): not part of what the answer must say.
LEAD = re.compile(r"^(?:正确答案|答案|应该|应当|实际上?)(?:是|为)?[:：，,]?\s*")


def plain(answer: str) -> str:
    """The text without [n] markers or notices."""
    text = CITATION.sub("", answer).split("\n\n> ", 1)[0]
    return " ".join(text.split()).strip()


def answer_of(fb: Feedback) -> str:
    """What the rated answer said: the document answer, else the curated answer given alone."""
    return plain(fb.document) or plain(fb.curated)


def must_include(correction: str) -> list[str]:
    text = plain(correction)
    if not text:
        return []
    keys = list(dict.fromkeys(m.group(0).strip() for m in KEY.finditer(text) if len(m.group(0).strip()) >= 2))
    if keys:
        return keys
    phrase = LEAD.sub("", text).strip("。；;，, ")
    return [phrase] if phrase and len(text) <= SHORT else []


def evidence(fb: Feedback, gold: str, keys: list[str]) -> tuple[list[str], list[str]]:
    """The cited passages' supporting sentences (else the passage), with their files. For a correction,
    only passages that contain its key phrases: a wrong answer's citations are not evidence."""
    ev, src = [], []
    for c in fb.citations:
        parts = [s for s in c.get("support") or [] if s.strip()] or [c["text"]]
        if fb.rating < 0 and not any(k in c["text"] for k in keys or [gold]):
            continue
        for p in parts:
            ev.append(p)
            src.append(c["source"])
    return ev, src


def to_item(fb: Feedback) -> dict:
    base = {"id": f"fb-{fb.turn[:12]}", "question": fb.question, "type": "feedback",
            "feedback": {"rating": fb.rating, "comment": fb.comment, "kb": fb.kb, "generation": fb.generation}}
    if fb.rating < 0 and not fb.correction:
        return {**base, "answer": "", "evidence": [], "source": [], "must_include": [], "review": True,
                "original_answer": answer_of(fb)}
    keys = must_include(fb.correction) if fb.correction else []
    if fb.correction and not keys:  # a long correction without figures or names: a person says what counts
        return {**base, "answer": "", "evidence": [], "source": [], "must_include": [], "review": True,
                "original_answer": answer_of(fb), "correction": plain(fb.correction)}
    gold = plain(fb.correction) if fb.correction else ("" if fb.refused else answer_of(fb))
    ev, src = evidence(fb, gold, keys) if gold else ([], [])
    return {**base, "answer": gold, "evidence": ev, "source": src, "must_include": keys}


def export(items: list[Feedback], out: Path) -> tuple[int, int]:
    """Write one JSONL line per feedback; returns (lines, of which to review)."""
    lines = [to_item(fb) for fb in items]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return len(lines), sum(1 for x in lines if x.get("review"))


def passage_counts(items: list[Feedback], kb: str, source: str) -> dict[str, tuple[int, int]]:
    """(👍, 👎) per cited passage of `source` in base `kb`, keyed by the passage's text as indexed: which
    passages keep producing answers staff reject."""
    out: dict[str, tuple[int, int]] = {}
    for f in items:
        if f.kb != kb:
            continue
        for c in {c["text"]: c for c in f.citations if c.get("source") == source}.values():  # once per answer
            up, down = out.get(c["text"], (0, 0))
            out[c["text"]] = (up + (f.rating > 0), down + (f.rating < 0))
    return out


def count_label(counts: tuple[int, int]) -> str:
    up, down = counts
    return " · ".join(x for x in (f"赞 {up}" if up else "", f"踩 {down}" if down else "") if x)

