"""OCR for PDF pages without a text layer (scans), fully offline.

rapidocr-onnxruntime ships the PP-OCR Chinese detection/recognition models inside its wheel; pages are
rendered with pypdfium2, or, without it, the page's largest embedded image is used. Install with
`pip install -e '.[ocr]'`.
"""

from __future__ import annotations

import threading
from pathlib import Path

# Render scale: 200 dpi keeps 10.5 pt body text about 30 px high, which PP-OCR reads well.
RENDER_DPI = 200
MIN_SCORE = 0.5  # recognition confidence below this is dropped as noise

_engine = None
_lock = threading.Lock()


class OcrUnavailable(RuntimeError):
    """The OCR package is not installed; str() is a user-facing hint."""


def available() -> bool:
    try:
        _get_engine()
    except OcrUnavailable:
        return False
    return True


def _get_engine():
    global _engine
    if _engine is None:
        with _lock:
            if _engine is None:
                try:
                    from rapidocr_onnxruntime import RapidOCR
                except ImportError:
                    raise OcrUnavailable("OCR 组件未安装（请运行 pip install -e '.[ocr]'）") from None
                _engine = RapidOCR()
    return _engine


def page_image(path: Path, page_number: int, dpi: int = RENDER_DPI):
    """The page (1-based) as an RGB numpy array."""
    import numpy as np

    try:
        import pypdfium2 as pdfium
    except ImportError:
        pdfium = None
    if pdfium is not None:
        pdf = pdfium.PdfDocument(str(path))
        try:
            page = pdf[page_number - 1]
            bitmap = page.render(scale=dpi / 72)
            img = bitmap.to_pil().convert("RGB")
            page.close()
        finally:
            pdf.close()
        return np.asarray(img)
    # No renderer: OCR the largest image embedded in the page (what a scanner produces).
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    if reader.is_encrypted:
        reader.decrypt("")
    images = list(reader.pages[page_number - 1].images)
    if not images:
        return None
    best = max(images, key=lambda im: im.image.width * im.image.height)
    return np.asarray(best.image.convert("RGB"))


def ocr_image(img) -> str:
    """Text of an RGB image, one line per visual line, top to bottom."""
    engine = _get_engine()
    result, _elapsed = engine(img)
    return _reading_order(result or [])


def ocr_pdf_page(path: Path, page_number: int) -> str:
    """OCR text of one PDF page (1-based); '' when nothing is recognised."""
    img = page_image(Path(path), page_number)
    if img is None:
        return ""
    return ocr_image(img)


def _reading_order(result: list) -> str:
    """Group recognised boxes into lines (by vertical overlap) and order them left to right."""
    boxes = []
    for box, text, score in result:
        if not text or not text.strip() or float(score) < MIN_SCORE:
            continue
        ys = [p[1] for p in box]
        xs = [p[0] for p in box]
        boxes.append((min(ys), max(ys), min(xs), text.strip()))
    boxes.sort()
    lines: list[list[tuple]] = []
    for top, bottom, left, text in boxes:
        if lines:
            ltop, lbottom = min(b[0] for b in lines[-1]), max(b[1] for b in lines[-1])
            overlap = min(bottom, lbottom) - max(top, ltop)
            if overlap > 0.5 * min(bottom - top, lbottom - ltop):
                lines[-1].append((top, bottom, left, text))
                continue
        lines.append([(top, bottom, left, text)])
    out = []
    for line in lines:
        parts = [t for _, _, _, t in sorted(line, key=lambda b: b[2])]
        joined = parts[0]
        for part in parts[1:]:
            joined += (" " if joined[-1:].isascii() and part[:1].isascii() else "") + part
        out.append(joined)
    return "\n".join(out)
