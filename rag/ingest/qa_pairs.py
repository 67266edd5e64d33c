"""Q&A pair files: JSONL (one object per line), CSV or XLSX with the same columns.

One loader for the eval datasets (`kexie eval`) and the curated FAQ pairs staff upload (rag/answer/faq.py),
so a file that evaluates also serves as an FAQ and the other way round."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

LIST_FIELDS = ("evidence", "source", "must_include")
EXTENSIONS = (".jsonl", ".json", ".csv", ".xlsx")


@dataclass
class Item:
    id: str
    question: str
    answer: str = ""
    evidence: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    must_include: list[str] = field(default_factory=list)
    type: str = ""
    # The row as staff see it (JSONL line, spreadsheet row with the header as row 1): where, not what, so
    # the same questions in a CSV and a JSONL still compare equal.
    row: int = field(default=0, compare=False)
    # A 👎 exported without a correct answer: a question for staff to review, never scored as gold.
    review: bool = False

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


def _item(row: dict, n: int, line: int | None = None) -> Item:
    """Record `n` (1-based, ids default to q0001…) found on `line` of its file."""
    line = n if line is None else line
    if not isinstance(row, dict):
        raise ValueError(f"第 {line} 行应为 JSON 对象")
    row = {str(k).strip(): v for k, v in row.items() if k}
    if not str(row.get("question") or "").strip():
        raise ValueError(f"第 {line} 行缺少 question")
    return Item(
        id=str(row.get("id") or f"q{n:04d}"),
        question=str(row["question"]).strip(),
        answer=str(row.get("answer") or "").strip(),
        type=str(row.get("type") or "").strip(),
        **{f: _as_list(row.get(f)) for f in LIST_FIELDS},
        row=line,
        review=str(row.get("review") or "").strip().lower() in ("true", "1", "yes"),
    )


def _blank(cells) -> bool:
    return all(c is None or str(c).strip() == "" for c in cells)


def _table(header: list[str], rows: list[tuple[int, list]]) -> list[tuple[int, dict]]:
    if rows and "question" not in header:
        raise ValueError(f"缺少 question 列（表头：{'、'.join(h for h in header if h) or '空'}）")
    return [(line, dict(zip(header, cells))) for line, cells in rows]


def _csv_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:  # Excel on Chinese Windows saves CSV as GBK
        try:
            return raw.decode("gb18030")
        except UnicodeDecodeError:
            raise ValueError("无法识别文件编码（请另存为 UTF-8 的 CSV）") from None


def read_rows(path: Path) -> list[tuple[int, dict]]:
    """(row as staff see it, raw record) of every non-blank record."""
    ext = path.suffix.lower()
    if ext in (".jsonl", ".json"):
        out = []
        for line, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            if not text.strip():
                continue
            try:
                out.append((line, json.loads(text)))
            except json.JSONDecodeError as e:
                raise ValueError(f"第 {line} 行不是有效的 JSON（{e.msg}）") from None
        return out
    if ext == ".csv":
        reader = csv.reader(io.StringIO(_csv_text(path), newline=""))
        header = [h.strip() for h in next(reader, [])]
        return _table(header, [(line, r) for line, r in enumerate(reader, 2) if not _blank(r)])
    if ext == ".xlsx":
        from openpyxl import load_workbook

        from rag.ingest import limits, office

        try:  # the same limits as a spreadsheet in the corpus: size when inflated, cells per row, rows
            limits.check_zip(path, "xlsx", streamed=office.worksheet_parts(path))
            wb = load_workbook(path, read_only=True)
            try:
                ws = wb.active
                office.scan_sheet(ws)
                ws.reset_dimensions()  # rows as they are, not padded to a declared A1:XFD1048576
                it = ws.iter_rows(values_only=True)
                header = [str(h or "").strip() for h in next(it, ())]
                rows = []
                for line, r in enumerate(it, 2):
                    if line > limits.MAX_ROWS + 1:
                        raise ValueError(f"超过 {limits.MAX_ROWS} 行的上限，请拆分成几个文件")
                    if not _blank(r):
                        rows.append((line, list(r)))
                return _table(header, rows)
            finally:
                wb.close()
        except limits.LoadError as e:
            raise ValueError(str(e)) from None
    raise ValueError(f"不支持的数据集格式：{path.name}（支持 .jsonl / .csv / .xlsx）")


def load_dataset(path: Path) -> list[Item]:
    path = Path(path)
    items = [_item(r, n, line) for n, (line, r) in enumerate(read_rows(path), 1)]
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"{path.name}：id 有重复（{'、'.join(dup[:5])}）")
    return items
