"""OFD (GB/T 33190), the fixed-layout format most Chinese government documents are issued in: a zip of XML.

Read directly with the standard library: OFD.xml names the document (DocRoot), whose Document.xml lists
the pages in reading order (not the order of their file names); each page's Content.xml holds TextObjects
(a Boundary box) with TextCode runs (X, Y inside the box). Runs are put on lines by their baseline and
ordered left to right; template pages (running headers and footers) are not read. Page numbers are the
position in the page list. No PyPI package measured better (README, 文件格式)."""

from __future__ import annotations

import posixpath
import re
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rag.ingest import furniture, limits
from rag.ingest.limits import LoadError
from rag.models import Document, Page

_NS = re.compile(r"^\{[^}]*\}")


def _local(tag: str) -> str:
    return _NS.sub("", tag)


def _find(el: ET.Element, name: str) -> ET.Element | None:
    return next((e for e in el.iter() if _local(e.tag) == name), None)


def _nums(text: str | None) -> list[float]:
    try:
        return [float(x) for x in (text or "").split()]
    except ValueError:
        return []


@dataclass
class _Run:
    x: float
    y: float  # baseline, from the top of the page
    size: float
    text: str
    width: float  # from DeltaX where given, else a character a glyph

    @property
    def end(self) -> float:
        return self.x + self.width


def _advance(delta: str | None, text: str, size: float) -> float:
    """The run's width: its DeltaX gaps (with OFD's "g N d" repeats) plus one glyph; else a glyph each."""
    parts, gaps = (delta or "").split(), []
    i = 0
    while i < len(parts):
        if parts[i] == "g" and i + 2 < len(parts):
            gaps += [parts[i + 2]] * int(float(parts[i + 1]))
            i += 3
        else:
            gaps.append(parts[i])
            i += 1
    try:
        return sum(float(g) for g in gaps[: max(len(text) - 1, 0)]) + size if gaps else size * len(text)
    except ValueError:
        return size * len(text)


def _part(z: zipfile.ZipFile, base: str, loc: str) -> str:
    """A location as OFD writes it (absolute from the package root, or relative to `base`'s folder)."""
    loc = loc.strip().replace("\\", "/")
    name = loc.lstrip("/") if loc.startswith("/") else posixpath.normpath(posixpath.join(posixpath.dirname(base), loc))
    if name not in z.NameToInfo:  # some writers leave out the document folder in page locations
        alt = posixpath.normpath(posixpath.join(posixpath.dirname(base), loc.lstrip("/")))
        if alt in z.NameToInfo:
            return alt
        raise LoadError(f"OFD 文件缺少部件 {name}，可能已损坏")
    return name


def _xml(z: zipfile.ZipFile, name: str) -> ET.Element:
    try:
        return ET.fromstring(z.read(name))
    except ET.ParseError as e:
        raise LoadError(f"OFD 部件 {name} 不是有效的 XML（{e}）") from None


def _runs(page: ET.Element) -> list[_Run]:
    out = []
    for obj in page.iter():
        if _local(obj.tag) != "TextObject":
            continue
        box = _nums(obj.get("Boundary")) or [0.0, 0.0]
        size = (_nums(obj.get("Size")) or [3.5])[0]
        for code in obj:
            if _local(code.tag) != "TextCode" or not (code.text or "").strip():
                continue
            x = (_nums(code.get("X")) or [0.0])[0]
            y = (_nums(code.get("Y")) or [0.0])[0]
            out.append(_Run(box[0] + x, box[1] + y, size, code.text, _advance(code.get("DeltaX"), code.text, size)))
    return out


@dataclass
class _Line:
    text: str
    x: float
    end: float
    size: float


def _lines(runs: list[_Run]) -> list[_Line]:
    """Runs on one baseline (within half a character) make a line, left to right; lines top to bottom. A
    gap wider than a character between runs becomes a space."""
    rows: list[list[_Run]] = []
    for r in sorted(runs, key=lambda r: (r.y, r.x)):
        if rows and abs(rows[-1][0].y - r.y) <= 0.5 * max(r.size, rows[-1][0].size):
            rows[-1].append(r)
        else:
            rows.append([r])
    out = []
    for row in rows:
        row.sort(key=lambda r: r.x)
        text, end = "", None
        for r in row:
            if end is not None and r.x - end > r.size:
                text += " "
            text += r.text
            end = r.end
        if text.strip():
            out.append(_Line(text.strip(), row[0].x, max(r.end for r in row), max(r.size for r in row)))
    return out


def _paragraphs(lines: list[_Line]) -> list[str]:
    """Visual lines rejoined into paragraphs by the layout: a line that runs to the text's right edge
    continues on the next one when that starts at the left margin (a new paragraph is indented)."""
    if not lines:
        return []
    left = min(x.x for x in lines)
    right = max(x.end for x in lines)
    out = [lines[0].text]
    for prev, cur in zip(lines, lines[1:]):
        full = prev.end >= right - 1.5 * prev.size
        flush = cur.x <= left + 0.5 * cur.size
        if full and flush and prev.x <= left + 2.5 * prev.size and not furniture.PAGE_NUMBER.match(cur.text):
            out[-1] += cur.text
        else:
            out.append(cur.text)
    return out


def load_ofd(path: Path, source: str) -> Document:
    """The document's pages as text, in the order Document.xml lists them."""
    limits.check_zip(path, "OFD")
    with zipfile.ZipFile(path) as z:
        if "OFD.xml" not in z.NameToInfo:
            raise LoadError("不是有效的 OFD 文件（缺少 OFD.xml），可能已损坏或是其他格式改了扩展名")
        root = _xml(z, "OFD.xml")
        doc_root = _find(root, "DocRoot")
        if doc_root is None or not (doc_root.text or "").strip():
            raise LoadError("OFD 文件没有指明文档（OFD.xml 中缺少 DocRoot）")
        doc_name = _part(z, "OFD.xml", doc_root.text)
        document = _xml(z, doc_name)
        pages_el = _find(document, "Pages")
        locs = [p.get("BaseLoc", "") for p in (pages_el if pages_el is not None else []) if _local(p.tag) == "Page"]
        pages = []
        for n, loc in enumerate(locs, 1):
            limits.check_time(f"OFD 第 {n} 页")
            text = "\n".join(_paragraphs(_lines(_runs(_xml(z, _part(z, doc_name, loc))))))
            limits.add_text(len(text), f"OFD 第 {n} 页")
            if text.strip():
                pages.append(Page(text, n))
    return Document(source, furniture.strip(pages), [])
