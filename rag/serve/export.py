"""One saved conversation as Markdown or Word (.docx), each answer followed by its sources."""

from __future__ import annotations

import time
from pathlib import Path

from rag.serve.history import Conversation, Turn


def _source(c: dict) -> str:
    where = c.get("label") or c["source"]
    page = f"，第 {c['page']} 页" if c.get("page") else ""
    head = f"（{c['heading']}）" if c.get("heading") else ""
    return f"[{c['n']}] {where}{page}{head}" + (f" — {c['source']}" if c.get("label") else "")


def _footer(t: Turn) -> str:
    """Where the answer came from, as staff read it (the index generation id means nothing to them)."""
    when = f" · 回答于 {time.strftime('%Y-%m-%d %H:%M', time.localtime(t.created))}" if t.created else ""
    return f"知识库：{t.kb}{when}"


def markdown(conv: Conversation, turns: list[Turn]) -> str:
    out = [f"# {conv.title}", "", f"导出时间：{time.strftime('%Y-%m-%d %H:%M')}", ""]
    for t in turns:
        out += [f"## 问：{t.question}", "", t.answer, ""]
        if t.citations:
            out += ["**出处**", ""]
            for c in t.citations:
                out.append(f"- {_source(c)}")
                quote = " ".join(c["text"].split())
                out.append(f"  > {quote[:300]}{'…' if len(quote) > 300 else ''}")
            out.append("")
        out.append(f"<sub>{_footer(t)}</sub>")
        out.append("")
    return "\n".join(out)


def docx(conv: Conversation, turns: list[Turn], path: Path) -> Path:
    from docx import Document

    d = Document()
    d.add_heading(conv.title, level=1)
    d.add_paragraph(f"导出时间：{time.strftime('%Y-%m-%d %H:%M')}")
    for t in turns:
        d.add_heading(f"问：{t.question}", level=2)
        d.add_paragraph(t.answer)
        if t.citations:
            d.add_paragraph("出处").runs[0].bold = True
            for c in t.citations:
                d.add_paragraph(_source(c), style="List Bullet")
                d.add_paragraph(" ".join(c["text"].split())[:500], style="Intense Quote")
        d.add_paragraph(_footer(t))
    d.save(path)
    return path
