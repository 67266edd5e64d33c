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

from rag.ingest import limits, word97
from rag.lang.tables import fill, markdown
from rag.models import Document, Page

SPREADSHEETS = (".xlsx", ".xlsm", ".xls", ".csv", ".et")
SLIDES = (".pptx", ".dps")
WEB = (".html", ".htm")
LEGACY = (".doc", ".wps", ".et", ".dps")  # binary formats a converter turns into docx / xlsx / pptx
CONVERT_TIMEOUT = 120


class ConversionUnavailable(Exception):
    """No converter for this format on the system: str() names what to install."""


# -- spreadsheets --------------------------------------------------------------------------------
def load_spreadsheet(path: Path, source: str, decode=None) -> Document:
    """Each sheet a table. Rows are streamed and a sheet stops at the limits in `limits` (rows, cells,
    cells with the empty ones, all sheets together), said in the document's warnings: a workbook that
    describes millions of cells costs what its first ones cost."""
    ext = path.suffix.lower()
    tally = _Tally()
    if ext == ".csv":
        text = decode(path.read_bytes()) if decode else path.read_text(encoding="utf-8-sig")
        sheets = [("", tally.take("", csv.reader(io.StringIO(text))))]
    elif ext == ".xls":
        sheets = _xls_sheets(path, tally)
    else:
        sheets = _xlsx_sheets(path, tally)
    pages = []
    for n, (name, grid) in enumerate(sheets, 1):
        limits.check_time(f"工作表「{name}」")
        table = markdown(fill(grid))
        if table:
            head = f"## {name}\n" if name and len(sheets) > 1 else ""
            pages.append(Page(head + table, n if len(sheets) > 1 else None))
    return Document(source, pages, tally.warnings)


class _Tally:
    """Cells read so far, per sheet and for the whole workbook, and the warnings of sheets cut short."""

    def __init__(self):
        self.book_cells = 0
        self.full = False  # MAX_BOOK_CELLS reached: later sheets are not read
        self.warnings: list[str] = []

    def take(self, name: str, rows) -> list[list[str | None]]:
        """The grid of one sheet from an iterator of rows (sequences of cell values), stopping at the limits."""
        label = f"工作表「{name}」" if name else "表格"
        grid: list[list[str | None]] = []
        cells = visited = 0
        stop = ""
        for row in rows:
            limits.tick(f"{label}第 {len(grid) + 1} 行")
            if len(grid) >= limits.MAX_ROWS:
                stop = f"{label}超过 {limits.MAX_ROWS} 行的上限"
                break
            visited += max(1, len(row))
            if visited > limits.MAX_SHEET_SPAN:
                stop = f"{label}的单元格（含空单元格）超过每个工作表 {limits.MAX_SHEET_SPAN} 个的上限"
                break
            values = [_cell_text(v) for v in row]
            filled = [v for v in values if v is not None]
            if cells + len(filled) > limits.MAX_SHEET_CELLS:
                stop = f"{label}的非空单元格超过每个工作表 {limits.MAX_SHEET_CELLS} 个的上限"
                break
            if self.book_cells + len(filled) > limits.MAX_BOOK_CELLS:
                stop = f"工作簿的非空单元格超过 {limits.MAX_BOOK_CELLS} 个的上限，之后的工作表未索引；{label}"
                self.full = True
                break
            limits.add_text(sum(map(len, filled)), f"{label}第 {len(grid) + 1} 行")
            cells += len(filled)
            self.book_cells += len(filled)
            grid.append(values)
        if stop:
            self.warnings.append(f"{stop}，只索引了前 {len(grid)} 行")
        return grid


def _xls_sheets(path: Path, tally: _Tally) -> list[tuple[str, list]]:
    import xlrd

    # on_demand: one sheet in memory at a time; ragged_rows: a row holds its cells only, not padded to
    # the widest row (one cell at IV65536 would otherwise make a 16-million-cell grid).
    book = xlrd.open_workbook(str(path), on_demand=True, ragged_rows=True)
    sheets = []
    try:
        for i in range(book.nsheets):
            if tally.full:
                break
            limits.check_time(f"第 {i + 1} 个工作表")
            sh = book.sheet_by_index(i)
            sheets.append((sh.name, tally.take(sh.name, (sh.row_values(r) for r in range(sh.nrows)))))
            book.unload_sheet(i)
    finally:
        book.release_resources()
    return sheets


def _xlsx_sheets(path: Path, tally: _Tally) -> list[tuple[str, list]]:
    import openpyxl

    # Sheets are streamed (read_only): their parts count against the inflated size, not against
    # the XML elements a tree would hold.
    limits.check_zip(path, path.suffix.lower().lstrip(".") or "xlsx", streamed=worksheet_parts(path))
    book = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
    sheets = []
    try:
        for ws in book.worksheets:
            if tally.full:
                break
            limits.check_time(f"工作表「{ws.title}」")
            merges = scan_sheet(ws)
            ws.reset_dimensions()  # the declared size (A1:XFD1048576) is not trusted: rows as they are
            grid = tally.take(ws.title, ws.iter_rows(values_only=True))
            _blank_merged(grid, merges)
            sheets.append((ws.title, grid))
    finally:
        book.close()
    return sheets


def worksheet_parts(path: Path) -> frozenset[str]:
    """The parts of a workbook that openpyxl streams in read-only mode: its worksheets, found as openpyxl
    finds them (package relationships -> workbook -> its relationships). Empty when they cannot be told:
    then every part counts as one parsed whole."""
    import posixpath
    import xml.etree.ElementTree as ET

    rel_tag = "{http://schemas.openxmlformats.org/package/2006/relationships}Relationship"

    def rels(z: zipfile.ZipFile, name: str):
        if z.getinfo(name).file_size > limits.MB:  # a relationships part is a few KB
            raise ValueError(name)
        return list(ET.fromstring(z.read(name)).iter(rel_tag))

    try:
        with zipfile.ZipFile(path) as z:
            book = next(r.get("Target", "") for r in rels(z, "_rels/.rels") if r.get("Type", "").endswith("/officeDocument"))
            book = book.lstrip("/")
            base = posixpath.dirname(book)
            parts = set()
            for r in rels(z, posixpath.join(base, "_rels", posixpath.basename(book) + ".rels")):
                if r.get("Type", "").endswith("/worksheet"):
                    target = r.get("Target", "")
                    parts.add(target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join(base, target)))
            return frozenset(parts)
    except (StopIteration, KeyError, ValueError, zipfile.BadZipFile, ET.ParseError, OSError):
        return frozenset()


_DATA_TAGS = frozenset(("sheetData", "row", "c", "v", "f", "is", "t", "r", "rPr", "rFont", "b", "i", "u", "sz", "color",
                        "family", "charset", "scheme", "strike", "vertAlign", "outline", "shadow", "condense", "extend",
                        "rPh", "phoneticPr"))


def scan_sheet(ws) -> list[str]:
    """One streaming pass over a sheet's XML before the reader builds anything (expat, constant memory):
    refuses a row over MAX_ROW_CELLS cells (the reader builds a whole row at once) and more than
    MAX_SHEET_EXTRAS elements besides the cells; returns the merged ranges. Stops early where the
    sheet will be cut anyway (MAX_ROWS rows, MAX_SHEET_SPAN cells)."""
    from xml.parsers import expat

    get_source = getattr(ws, "_get_source", None)  # openpyxl's read-only sheet: its part in the archive
    if get_source is None:
        return []
    label = f"工作表「{ws.title}」"
    state = {"rows": 0, "cells": 0, "row_cells": 0, "row_elements": 0, "extras": 0}
    merges: list[str] = []

    class Enough(Exception):
        pass

    def start(tag: str, attrs: dict) -> None:
        local = tag.rpartition("}")[2]
        if local == "row":
            state["rows"] += 1
            state["row_cells"] = state["row_elements"] = 0
            if state["rows"] > limits.MAX_ROWS or state["cells"] > limits.MAX_SHEET_SPAN:
                raise Enough
        elif local in _DATA_TAGS:
            state["row_elements"] += 1
            if local == "c":
                state["cells"] += 1
                state["row_cells"] += 1
                if state["row_cells"] > limits.MAX_ROW_CELLS:
                    raise limits.LimitExceeded(f"{label}第 {state['rows']} 行有超过 {limits.MAX_ROW_CELLS} 个单元格"
                                               f"（每行的上限，即 Excel 的列数），不像正常的表格，已拒绝")
            if state["row_elements"] > 8 * limits.MAX_ROW_CELLS:
                raise limits.LimitExceeded(f"{label}第 {state['rows']} 行的内容结构过于庞大"
                                           f"（超过 {8 * limits.MAX_ROW_CELLS} 个 XML 元素），已拒绝")
        else:
            state["extras"] += 1
            if state["extras"] > limits.MAX_SHEET_EXTRAS:
                raise limits.LimitExceeded(f"{label}除单元格外的内容（列格式、合并区域、条件格式等）超过 "
                                           f"{limits.MAX_SHEET_EXTRAS} 项的上限，已拒绝")
            if local == "mergeCell" and attrs.get("ref"):
                merges.append(attrs["ref"])

    parser = expat.ParserCreate(namespace_separator="}")
    parser.StartElementHandler = start
    try:
        with get_source() as src:
            while block := src.read(1 << 20):
                parser.Parse(block, False)
                limits.check_time(label)
            parser.Parse(b"", True)
    except Enough:
        return []  # the sheet is cut before its end, where the merged ranges are listed
    except expat.ExpatError as e:
        raise ValueError(f"{label}的 XML 无法解析（{e}）") from None
    return merges


def _blank_merged(grid: list[list[str | None]], merges: list[str]) -> None:
    """Merged ranges keep their value in the top-left cell only: None elsewhere, which `fill` takes
    from above (a category spanning rows) or the left (a header spanning columns)."""
    from openpyxl.utils.cell import range_boundaries

    work = 0
    for ref in merges:
        try:
            min_col, min_row, max_col, max_row = range_boundaries(ref)
        except (ValueError, TypeError):
            continue
        if None in (min_col, min_row, max_col, max_row):
            continue
        for r in range(min_row, min(max_row, len(grid)) + 1):
            row = grid[r - 1]
            for c in range(min_col, min(max_col, len(row)) + 1):
                if (r, c) != (min_row, min_col):
                    row[c - 1] = None
            work += max(1, min(max_col, len(row)) - min_col + 1)
            if work > limits.MAX_SHEET_SPAN:  # overlapping ranges: no real sheet has more merged cells than cells
                return


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
    """Each slide a page: its shapes' text, tables and notes. Refused past MAX_SLIDES slides or
    MAX_SLIDE_SHAPES shapes (table cells included) on a slide, counted while iterating."""
    from pptx import Presentation

    limits.check_zip(path, "pptx")
    deck = Presentation(str(path))
    total = len(deck.slides)
    if total > limits.MAX_SLIDES:
        raise limits.LimitExceeded(f"幻灯片过多：共 {total} 页，超过每个文件 {limits.MAX_SLIDES} 页的上限，已拒绝")
    pages = []
    for n, slide in enumerate(deck.slides, 1):
        limits.check_time(f"第 {n} 页幻灯片")
        lines: list[str] = []
        items = 0

        def count(k: int) -> None:
            nonlocal items
            items += k
            if items > limits.MAX_SLIDE_SHAPES:
                raise limits.LimitExceeded(f"第 {n} 页幻灯片的形状过多（超过每页 {limits.MAX_SLIDE_SHAPES} 个形状"
                                           "与表格单元格的上限），已拒绝")
            limits.tick(f"第 {n} 页幻灯片")

        for shape in slide.shapes:
            count(1)
            if shape.has_text_frame:
                text = "\n".join(p.text.strip() for p in shape.text_frame.paragraphs if p.text.strip())
                if text:
                    # The title placeholder heads the slide.
                    is_title = shape.is_placeholder and "TITLE" in str(shape.placeholder_format.type)
                    lines.append(f"## {text}" if is_title else text)
                    limits.add_text(len(text), f"第 {n} 页幻灯片")
            elif getattr(shape, "has_table", False) and shape.has_table:
                grid = []
                for row in shape.table.rows:
                    cells = row.cells
                    count(len(cells))
                    grid.append([c.text for c in cells])
                    limits.add_text(sum(len(x) for x in grid[-1]), f"第 {n} 页幻灯片")
                lines.append(markdown(fill(grid)))
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                limits.add_text(len(notes), f"第 {n} 页幻灯片的备注")
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
    """A .doc / .wps / .et / .dps file as a modern file (LibreOffice) or as plain text (antiword, else
    rag.ingest.word97, for Word-format .doc and .wps). Raises ConversionUnavailable naming what to install."""
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
                                 capture_output=True, timeout=CONVERT_TIMEOUT, preexec_fn=_converter_memory())
        except subprocess.TimeoutExpired:
            raise ValueError(f"LibreOffice 转换超时（{CONVERT_TIMEOUT} 秒）") from None
        out = workdir / f"{path.stem}.{target}"
        if run.returncode != 0 or not out.is_file():
            raise ValueError(f"LibreOffice 无法转换此文件（{_last_error(run.stderr)}）")
        return out
    if ext in (".doc", ".wps") and shutil.which("antiword"):
        run = subprocess.run(["antiword", "-m", "UTF-8.txt", "-w", "0", str(path)], capture_output=True, timeout=CONVERT_TIMEOUT,
                             preexec_fn=_converter_memory())
        if run.returncode != 0:
            raise ValueError(f"antiword 无法读取此文件（{_last_error(run.stderr)}）")
        return run.stdout.decode("utf-8", "replace")
    if ext in (".doc", ".wps"):  # no converter: the Word 97–2003 text stream itself (no tables as tables)
        try:
            return word97.read_text(path)
        except word97.Word97Error as e:
            raise ValueError(f"{e}；安装 LibreOffice（apt install libreoffice-writer-nogui）或 antiword（apt install antiword）"
                             "后可读取更多格式") from None
    need = "LibreOffice（apt install libreoffice-calc-nogui libreoffice-impress-nogui）"
    raise ConversionUnavailable(f"{ext} 文件需要转换工具，本机未安装：请安装 {need} 后重新索引，或另存为新格式后上传")


def _converter_memory():
    """In a parse worker (its address space lowered by rag/ingest/worker.py) a converter gets the
    process's hard limit back: LibreOffice maps far more address space than a parser uses, and it has its
    own timeout. Elsewhere nothing is changed (no preexec_fn in a threaded process)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == hard:
        return None

    def restore() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))

    return restore


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
