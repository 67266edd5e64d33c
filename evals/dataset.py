"""Q&A datasets: JSONL (one object per line), CSV or XLSX with the same columns."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from rag.text import normalize

LIST_FIELDS = ("evidence", "source", "must_include")


@dataclass
class Item:
    id: str
    question: str
    answer: str = ""
    evidence: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    must_include: list[str] = field(default_factory=list)
    type: str = ""

    @property
    def answerable(self) -> bool:
        return bool(self.answer or self.evidence or self.must_include)


def _as_list(v) -> list[str]:
    """Spreadsheet cells hold lists as JSON arrays or as lines / '||'-separated text."""
    if v is None or v == "":
        return []
    if isinstance(v, list):
        return [str(x) for x in v]
    s = str(v).strip()
    if s.startswith("["):
        try:
            return [str(x) for x in json.loads(s)]
        except json.JSONDecodeError:
            pass
    parts = s.split("||") if "||" in s else s.split("\n")
    return [p.strip() for p in parts if p.strip()]


def _item(row: dict, n: int) -> Item:
    row = {k.strip(): v for k, v in row.items() if k}
    if not str(row.get("question") or "").strip():
        raise ValueError(f"第 {n} 行缺少 question")
    return Item(
        id=str(row.get("id") or f"q{n:04d}"),
        question=str(row["question"]).strip(),
        answer=str(row.get("answer") or "").strip(),
        type=str(row.get("type") or "").strip(),
        **{f: _as_list(row.get(f)) for f in LIST_FIELDS},
    )


def load_dataset(path: Path) -> list[Item]:
    ext = path.suffix.lower()
    if ext in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    elif ext == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
    elif ext == ".xlsx":
        from openpyxl import load_workbook

        ws = load_workbook(path, read_only=True).active
        it = ws.iter_rows(values_only=True)
        header = [str(h or "").strip() for h in next(it)]
        rows = [dict(zip(header, r)) for r in it if any(c not in (None, "") for c in r)]
    else:
        raise ValueError(f"不支持的数据集格式：{path.name}（支持 .jsonl / .csv / .xlsx）")
    items = [_item(r, n) for n, r in enumerate(rows, 1)]
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path.name}：id 有重复")
    return items


def compact(text: str) -> str:
    """Form used for evidence matching: NFKC, no whitespace, no markdown emphasis."""
    return "".join(normalize(text.replace("**", "")).split())


def check_evidence(items: list[Item], corpus_texts: dict[str, str]) -> list[str]:
    """Problems with evidence that no longer occurs in the corpus (documents change)."""
    problems = []
    docs = {k: compact(v) for k, v in corpus_texts.items()}
    everything = "\n".join(docs.values())
    for it in items:
        for n, ev in enumerate(it.evidence):
            src = it.source[n] if n < len(it.source) else None
            where = docs.get(src) if src else None
            if where is None and src:
                problems.append(f"{it.id}: 来源文件不存在：{src}")
                where = everything
            if compact(ev) not in (where or everything):
                problems.append(f"{it.id}: 证据不在语料中：{ev[:40]}…")
    return problems
