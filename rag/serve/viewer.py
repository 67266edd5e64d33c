"""The in-document viewer: a cited passage shown in its document, highlighted and scrolled into view.

`GET /view/{kb_id}/{source}?t=TOKEN&c=KEY&s=A-B,...` takes the same signed token as the download link
(rag/serve/links.py): `c` names the cited passage (a hash of its text) and `s` the answer's sentences in it.
Text documents (txt, md, docx, html, OFD) are shown as indexed: the document rebuilt from its chunks in
order, each chunk's overlap with the one before dropped, headings and pages marked. A PDF passage is shown
on its page rendered to an image (pypdfium2), with boxes over the characters that hold it (pdfplumber).
The page runs no script (CSP), and every piece of document text is escaped."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from rag.lang.sentences import TERMINAL
from rag.models import Chunk

MIN_OVERLAP = 2  # characters; a shorter match of one chunk's end and the next one's start is chance
PDF_SCALE = 1.6  # page image pixels per PDF point
MIN_PIECE = 6  # characters of a sentence or cell boxed on its own (a shorter one, like 有限公司, recurs on a page)


def passage_key(text: str) -> str:
    """A short name for a cited passage's text (the link stays short; a changed text no longer matches)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def view_link(download: str, text: str, spans: list[tuple[int, int]] | None = None) -> str:
    """The viewer's link for a card, from its signed download link (same token, same checks)."""
    if not download.startswith("/files/"):
        return ""
    query = {"c": passage_key(text)}
    if spans:
        query["s"] = ",".join(f"{a}-{b}" for a, b in spans)
    return "/view/" + download[len("/files/"):] + "&" + urlencode(query) + "#hit"  # the browser scrolls to it


def parse_spans(s: str) -> list[tuple[int, int]]:
    out = []
    for part in (s or "").split(",")[:20]:
        m = re.fullmatch(r"(\d{1,7})-(\d{1,7})", part.strip())
        if m and int(m.group(1)) < int(m.group(2)):
            out.append((int(m.group(1)), int(m.group(2))))
    return out


def overlap(a: str, b: str, limit: int = 400) -> int:
    """How many characters at the start of `b` repeat the end of `a` (the chunker's overlap), else 0."""
    for k in range(min(len(a), len(b), limit), MIN_OVERLAP - 1, -1):
        if a.endswith(b[:k]):
            return k
    return 0


@dataclass
class Rebuilt:
    text: str
    starts: list[int]  # each chunk's offset in `text` (overlap included)
    fresh: list[int]  # where each chunk's new text begins in `text`


def rebuild(chunks: list[Chunk]) -> Rebuilt:
    """The document's text from its chunks in order, each overlap kept once."""
    text, starts, fresh = "", [], []
    prev: Chunk | None = None
    for c in chunks:
        k = overlap(prev.text, c.text) if prev and not (prev.kind or c.kind) else 0
        if k:
            starts.append(len(text) - k)
            fresh.append(len(text))
            text += c.text[k:]
        else:
            sep = "\n\n" if text else ""
            starts.append(len(text) + len(sep))
            fresh.append(len(text))
            text += sep + c.text
        prev = c
    return Rebuilt(text, starts, fresh)


def _marked(text: str, offset: int, passage: tuple[int, int] | None, marks: list[tuple[int, int]]) -> str:
    """text (at `offset` in the document) escaped, with the passage and the marks wrapped where they fall."""
    end = offset + len(text)
    cuts = {offset, end}
    ranges = ([passage] if passage else []) + marks
    for a, b in ranges:
        cuts.update(x for x in (a, b) if offset < x < end)
    out, points = [], sorted(cuts)
    for a, b in zip(points, points[1:]):
        piece = html.escape(text[a - offset:b - offset])
        if any(x <= a and b <= y for x, y in marks):
            piece = f"<mark>{piece}</mark>"
        if passage and passage[0] <= a and b <= passage[1]:
            piece = f"<span class='passage'>{piece}</span>"
        out.append(piece)
    return "".join(out)


def text_body(chunks: list[Chunk], cited: int | None, spans: list[tuple[int, int]]) -> str:
    """The document as text: sections and pages marked, the cited chunk shaded, its sentences marked."""
    doc = rebuild(chunks)
    passage = marks = None
    if cited is not None:
        a = doc.starts[cited]
        passage = (a, a + len(chunks[cited].text))
        marks = [(a + x, a + y) for x, y in spans if y <= len(chunks[cited].text)]
    anchor_at = (marks[0][0] if marks else passage[0]) if passage else None
    out, heading, page = [], None, None
    for i, c in enumerate(chunks):
        if c.page and c.page != page:
            out.append(f"<div class='page'>第 {c.page} 页</div>")
            page = c.page
        a, b = doc.fresh[i], doc.fresh[i + 1] if i + 1 < len(chunks) else len(doc.text)
        if c.heading != heading:
            if c.heading:
                out.append(f"<h2>{html.escape(c.heading)}</h2>")
                while a < b and doc.text[a] == "\n":  # the heading stands for the break
                    a += 1
            heading = c.heading
        piece = doc.text[a:b]
        last = i + 1 == len(chunks)
        if anchor_at is not None and (a <= anchor_at < b or (last and anchor_at == b)):
            cut = anchor_at - a
            out.append(_marked(piece[:cut], a, passage, marks or []) + "<a id='hit'></a>"
                       + _marked(piece[cut:], anchor_at, passage, marks or []))
            anchor_at = None
        else:
            out.append(_marked(piece, a, passage, marks or []))
    return f"<div class='doc'>{''.join(out)}</div>"


# -- PDF: the cited page as an image with boxes over the passage -----------------------------------
def pdf_boxes(path: Path, page_no: int, targets: list[str]) -> tuple[list[tuple[float, float, float, float]], float, float]:
    """Boxes (left, top, width, height as % of the page) over the characters of each target on page
    `page_no`, one per line of text; whitespace is ignored on both sides (PDF text has its own)."""
    import pdfplumber

    with pdfplumber.open(str(path)) as pdf:
        page = pdf.pages[page_no - 1]
        x0, top0 = float(page.bbox[0]), float(page.bbox[1])
        w, h = float(page.width), float(page.height)
        chars = [c for c in page.chars if c["text"].strip()]
    flat = "".join(c["text"] for c in chars)
    boxes = []
    for t in targets:
        for piece in _pieces(t, flat):
            i = flat.find(piece)
            if i < 0:
                continue
            lines: dict[int, list] = {}
            for c in chars[i:i + len(piece)]:
                lines.setdefault(round(float(c["top"]) / 3), []).append(c)
            for cs in lines.values():
                left, right = min(float(c["x0"]) for c in cs) - x0, max(float(c["x1"]) for c in cs) - x0
                up, down = min(float(c["top"]) for c in cs) - top0, max(float(c["bottom"]) for c in cs) - top0
                boxes.append((100 * left / w, 100 * up / h, 100 * (right - left) / w, 100 * (down - up) / h))
    return boxes, w, h


def _pieces(target: str, flat: str) -> list[str]:
    """The target whole when the page holds it, else the sentences and table cells of it that the page holds
    (cleaning joins lines and drops page furniture, and a table's cells come in another order)."""
    compact = re.sub(r"\s+", "", target)
    if compact and compact in flat:
        return [compact]
    parts = re.split(f"(?<=[{TERMINAL}])|[\\s|]+", target)
    return [s for s in parts if len(s) >= MIN_PIECE and s in flat]


def pdf_page_image(path: Path, page_no: int) -> str:
    """The page as a PNG data URI."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        img = pdf[page_no - 1].render(scale=PDF_SCALE).to_pil()
    finally:
        pdf.close()
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def pdf_body(path: Path, chunk: Chunk, spans: list[tuple[int, int]]) -> str:
    targets = [chunk.text[a:b] for a, b in spans] or [chunk.text]
    boxes, _, _ = pdf_boxes(path, chunk.page, targets)
    ids = ["id='hit' "] + [""] * len(boxes)
    marks = "".join(f"<div class='box' {ids[i]}style='left:{x:.2f}%;top:{y:.2f}%;width:{w:.2f}%;height:{h:.2f}%'></div>"
                    for i, (x, y, w, h) in enumerate(boxes))
    note = "" if boxes else "<p class='note'>未能在页面图像上定位引用的文字（可能是扫描页），引用的段落见下方。</p>"
    return (f"<div class='pdf-page'><img alt='第 {chunk.page} 页' src='{pdf_page_image(path, chunk.page)}'>{marks}</div>"
            f"{note}<h2>引用的段落</h2><div class='doc'>{_marked(chunk.text, 0, (0, len(chunk.text)), spans)}</div>")


# -- the page ---------------------------------------------------------------------------------
STYLE = """
body {font: 16px/1.8 "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; margin: 0; padding: 12px 18px 40vh;
      color: #1f2328; background: #fff;}
header {position: sticky; top: 0; background: inherit; border-bottom: 1px solid #d0d7de; padding: 6px 0; margin-bottom: 10px;}
header .src {font-weight: 600;} header .where {color: #57606a; font-size: 0.92em;}
h2 {font-size: 1.02em; margin: 1.2em 0 0.4em; color: #0b5cad;}
.page {color: #57606a; font-size: 0.85em; border-top: 1px dashed #d0d7de; margin-top: 1em;}
.doc {white-space: pre-wrap;}
.passage {background: #eef4ff;}
mark {background: #fff3b0; color: #1f2328;}
.pdf-page {position: relative; display: inline-block; max-width: 100%;}
.pdf-page img {max-width: 100%; display: block; border: 1px solid #d0d7de;}
.box {position: absolute; background: rgba(255, 214, 0, 0.35); outline: 2px solid #f0b429;}
.note {color: #9a6700;}
#hit {scroll-margin-top: 30vh;}
@media (prefers-color-scheme: dark) {
  body {color: #e6edf3; background: #0d1117;} header {border-color: #30363d;} header .where, .page {color: #8b949e;}
  h2 {color: #79c0ff;} .passage {background: #172a45;} mark {background: #6e5a00; color: #fff;}
}
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def page(title: str, where: str, body: str) -> str:
    return (f"<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><header><div class='src'>{html.escape(title)}</div>"
            f"<div class='where'>{where}</div></header>{body}</body></html>")


def message_page(title: str, text: str) -> str:
    """A page that says, in Chinese, why there is nothing to show (deleted file, expired link)."""
    return page(title, "", f"<p>{html.escape(text)}</p>")


def render(path: Path, source: str, chunks: list[Chunk], key: str, spans: list[tuple[int, int]]) -> str:
    """The viewer page for `source` (its chunks in order), the passage named by `key` shown in place."""
    cited = next((i for i, c in enumerate(chunks) if passage_key(c.text) == key), None)
    where = []
    if cited is None:
        where.append("文件已更新：引用的段落在当前版本中找不到，下面是文件现在的内容。" if key else "")
    else:
        c = chunks[cited]
        if c.page:
            where.append(f"第 {c.page} 页")
        if c.heading:
            where.append(html.escape(c.heading))
        if c.article and c.article not in c.heading:
            where.append(html.escape(c.article))
    where_html = " · ".join(w for w in where if w)
    if cited is not None and chunks[cited].page and path.suffix.lower() == ".pdf":
        try:
            return page(source, where_html, pdf_body(path, chunks[cited], spans))
        except Exception:  # noqa: BLE001 - an unreadable page falls back to the text view, never to an error
            pass
    return page(source, where_html, text_body(chunks, cited, spans))
