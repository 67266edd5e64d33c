"""The other files offices keep: spreadsheets (each sheet a table), slides (slide number as the page),
web pages (main text only), and legacy .doc / WPS files through a converter installed on the system."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from rag.ingest.tables import fill, markdown
from rag.models import Document, Page

SPREADSHEETS = (".xlsx", ".xlsm", ".xls", ".csv", ".et")
SLIDES = (".pptx", ".dps")
WEB = (".html", ".htm")
LEGACY = (".doc", ".wps", ".et", ".dps")  # binary formats a converter turns into docx / xlsx / pptx
MAX_ROWS = 20_000  # per sheet: a table that large is data, not a document
CONVERT_TIMEOUT = 120


class ConversionUnavailable(Exception):
    """No converter for this format on the system: str() names what to install."""


# -- spreadsheets --------------------------------------------------------------------------------
def load_spreadsheet(path: Path, source: str, decode=None) -> Document:
    ext = path.suffix.lower()
    if ext == ".csv":
        text = decode(path.read_bytes()) if decode else path.read_text(encoding="utf-8-sig")
        sheets = [("", list(csv.reader(io.StringIO(text))))]
    elif ext == ".xls":
        import xlrd

        book = xlrd.open_workbook(str(path))
        sheets = [(sh.name, [[_cell_text(v) for v in sh.row_values(r)] for r in range(min(sh.nrows, MAX_ROWS))])
                  for sh in book.sheets()]
    else:
        import openpyxl

        book = openpyxl.load_workbook(str(path), read_only=False, data_only=True)
        sheets = []
        for ws in book.worksheets:
            grid = [[_cell_text(v) for v in row] for row in ws.iter_rows(max_row=min(ws.max_row, MAX_ROWS), values_only=True)]
            # Merged ranges keep their value in the top-left cell only: None elsewhere, which `fill` takes
            # from above (a category spanning rows) or the left (a header spanning columns).
            for rng in ws.merged_cells.ranges:
                for r in range(rng.min_row, min(rng.max_row, len(grid)) + 1):
                    for c in range(rng.min_col, rng.max_col + 1):
                        if (r, c) != (rng.min_row, rng.min_col) and c - 1 < len(grid[r - 1]):
                            grid[r - 1][c - 1] = None
            sheets.append((ws.title, grid))
        book.close()
    pages = []
    for n, (name, grid) in enumerate(sheets, 1):
        table = markdown(fill(grid))
        if table:
            head = f"## {name}\n" if name and len(sheets) > 1 else ""
            pages.append(Page(head + table, n if len(sheets) > 1 else None))
    return Document(source, pages)


def _cell_text(v) -> str | None:
    if v is None or v == "":
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if hasattr(v, "strftime"):
        return v.strftime("%Y-%m-%d") if not getattr(v, "hour", 0) else v.strftime("%Y-%m-%d %H:%M")
    return str(v)


# -- slides --------------------------------------------------------------------------------------
def load_pptx(path: Path, source: str) -> Document:
    from pptx import Presentation

    deck = Presentation(str(path))
    pages = []
    for n, slide in enumerate(deck.slides, 1):
        lines: list[str] = []
        for shape in slide.shapes:
            if shape.has_text_frame:
                text = "\n".join(p.text.strip() for p in shape.text_frame.paragraphs if p.text.strip())
                if text:
                    # The title placeholder heads the slide.
                    is_title = shape.is_placeholder and "TITLE" in str(shape.placeholder_format.type)
                    lines.append(f"## {text}" if is_title else text)
            elif getattr(shape, "has_table", False) and shape.has_table:
                grid = [[c.text for c in row.cells] for row in shape.table.rows]
                lines.append(markdown(fill(grid)))
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                lines.append(f"备注：{notes}")
        if lines:
            pages.append(Page("\n".join(lines), n))
    return Document(source, pages)


# -- web pages -----------------------------------------------------------------------------------
_DROP = ("script", "style", "noscript", "nav", "header", "footer", "aside", "form", "iframe", "svg", "button", "select")
_BLOCK = {"p", "div", "li", "br", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "tr", "td", "th", "dd", "dt",
          "blockquote", "pre", "table"}
_NAV_CLASS = re.compile(r"nav|menu|breadcrumb|footer|header|sidebar|share|comment|copyright|banner|toolbar", re.I)


def looks_like_html(text: str) -> bool:
    """A page saved under .txt: starts with a doctype or <html>, or is mostly tags."""
    head = text.lstrip()[:2000].lower()
    if head.startswith(("<!doctype html", "<html")) or ("<body" in head and "</" in head):
        return True
    tags = len(re.findall(r"</?(?:p|div|span|br|td|tr|li|a|table|h\d)\b[^>]*>", text[:20000], re.I))
    return tags >= 10 and tags * 20 > len(text[:20000]) / 10


def html_text(html: str) -> str:
    """The page's main text: scripts, styles, navigation, headers and footers removed; headings as
    markdown headings, tables as markdown tables, block elements one per line."""
    import lxml.html

    root = lxml.html.document_fromstring(html)
    for el in root.iter(*_DROP):
        el.drop_tree()
    for el in list(root.iter()):
        if not isinstance(el.tag, str) or el.getparent() is None:
            continue
        marks = f"{el.get('class', '')} {el.get('id', '')} {el.get('role', '')}"
        if el.tag in ("div", "ul", "section") and _NAV_CLASS.search(marks) and el.getparent() is not None:
            el.drop_tree()
    lines: list[str] = []
    for table in list(root.iter("table")):
        grid = [[" ".join(td.text_content().split()) or None for td in tr.iter("td", "th")] for tr in table.iter("tr")]
        md = markdown(fill([r for r in grid if r]))
        placeholder = lxml.html.fromstring("<p></p>")
        placeholder.text = f"\ue000{len(lines)}\ue001"
        lines.append(md)
        table.getparent().replace(table, placeholder)
    out: list[str] = []
    body = root.find("body") if root.find("body") is not None else root
    _walk(body, out)
    text = "\n".join(x for x in (re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in "".join(out).split("\n")) if x)
    return re.sub(r"\ue000(\d+)\ue001", lambda m: "\n" + lines[int(m.group(1))] + "\n", text)


def _walk(el, out: list[str]) -> None:
    tag = el.tag if isinstance(el.tag, str) else ""
    if tag in _BLOCK:
        out.append("\n")
    if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
        out.append("#" * int(tag[1]) + " ")
    if el.text and tag:
        out.append(el.text)
    for child in el:
        _walk(child, out)
        if child.tail:
            out.append(child.tail)
    if tag in _BLOCK:
        out.append("\n")


# -- legacy binary formats -----------------------------------------------------------------------
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _legacy_container(path: Path) -> bool:
    """An OLE compound file (its 8-byte signature and at least its 512-byte header), a zip, or RTF."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(_OLE):
        return len(head) == 512
    return head.startswith(b"{\\rtf") or zipfile.is_zipfile(path)


def soffice() -> str | None:
    return shutil.which("soffice") or shutil.which("libreoffice")


def convert_legacy(path: Path, workdir: Path) -> Path | str:
    """A .doc / .wps / .et / .dps file as a modern file (LibreOffice) or as plain text (antiword for
    Word-format .doc and .wps). Raises ConversionUnavailable naming what to install."""
    ext = path.suffix.lower()
    # Word / WPS binaries are OLE compound files (newer WPS files may be zips, Word may save RTF): a
    # converter would read anything else as plain text and index garbage.
    if not _legacy_container(path):
        raise ValueError(f"不是有效的 {ext} 文件（文件头不符），可能已损坏或是其他格式改了扩展名")
    office = soffice()
    if office:
        target = {".doc": "docx", ".wps": "docx", ".et": "xlsx", ".dps": "pptx"}[ext]
        # A private profile: two conversions at once (or a user's open LibreOffice) would lock one.
        profile = Path(tempfile.mkdtemp(prefix="lo-profile-", dir=workdir))
        try:
            run = subprocess.run([office, f"-env:UserInstallation=file://{profile}", "--headless", "--convert-to",
                                  target, "--outdir", str(workdir), str(path)],
                                 capture_output=True, timeout=CONVERT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ValueError(f"LibreOffice 转换超时（{CONVERT_TIMEOUT} 秒）") from None
        out = workdir / f"{path.stem}.{target}"
        if run.returncode != 0 or not out.is_file():
            raise ValueError(f"LibreOffice 无法转换此文件（{_last_error(run.stderr)}）")
        return out
    if ext in (".doc", ".wps") and shutil.which("antiword"):
        run = subprocess.run(["antiword", "-m", "UTF-8.txt", "-w", "0", str(path)], capture_output=True, timeout=CONVERT_TIMEOUT)
        if run.returncode != 0:
            raise ValueError(f"antiword 无法读取此文件（{_last_error(run.stderr)}）")
        return run.stdout.decode("utf-8", "replace")
    need = "LibreOffice（apt install libreoffice-writer-nogui）或 antiword（apt install antiword）" \
        if ext in (".doc", ".wps") else "LibreOffice（apt install libreoffice-calc-nogui libreoffice-impress-nogui）"
    raise ConversionUnavailable(f"{ext} 文件需要转换工具，本机未安装：请安装 {need} 后重新索引，或另存为新格式后上传")


def _last_error(stderr: bytes) -> str:
    """The converter's own error, one line (its warnings about Java and fonts say nothing about the file)."""
    lines = [x.strip() for x in stderr.decode("utf-8", "replace").splitlines() if x.strip() and not x.startswith("Warning")]
    return lines[-1][:200] if lines else "未给出原因"


def antiword_tables(text: str) -> str:
    """antiword draws table rows as |cell|cell|: markdown rows the chunker reads as a table."""
    out = []
    for line in text.split("\n"):
        t = line.strip()
        if t.startswith("|") and t.endswith("|") and t.count("|") >= 3:
            cells = [c.strip() for c in t.strip("|").split("|")]
            out.append("| " + " | ".join(c or " " for c in cells) + " |")
        else:
            out.append(line)
    return "\n".join(out)
