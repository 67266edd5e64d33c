"""The text of a Word 97–2003 .doc without a converter: the main document's characters, read through the
piece table as [MS-DOC] specifies (the FIB names the table stream and the CLX; each piece is UTF-16 or
8-bit). No layout, no tables as tables (cells become tab-separated, rows lines): what a converter
gives is better, this is what staff get when none can be installed. The OLE container is read by
`olefile`."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import olefile

# FIB offsets ([MS-DOC] 2.5.1–2.5.6): the base's flags, FibRgLw97.ccpText, FibRgFcLcb97.fcClx / lcbClx.
_FLAGS, _CCP_TEXT, _FC_CLX, _LCB_CLX = 0x000A, 0x004C, 0x01A2, 0x01A6
_WHICH_TABLE = 0x0200  # fWhichTblStm: the piece table is in 1Table, else 0Table
_ENCRYPTED = 0x0100  # fEncrypted
MAX_PIECES = 1_000_000  # a damaged or hostile piece count is refused, not allocated

# Word's control characters in the text stream -> plain text.
_CONTROL = str.maketrans({"\r": "\n", "\x0b": "\n", "\x0c": "\n", "\x07": "\t", "\x1e": "-", "\x1f": None,
                          "\x01": None, "\x08": None, "\x02": None, "\x05": None, "\xa0": " "})
_FIELD = re.compile(r"\x13[^\x13\x14\x15]*\x14([^\x13\x14\x15]*)\x15|\x13[^\x13\x14\x15]*\x15")


class Word97Error(ValueError):
    """Not a readable Word 97–2003 file: str() says why, in Chinese."""


def read_text(path: Path) -> str:
    try:
        ole = olefile.OleFileIO(str(path))
    except (OSError, ValueError) as e:
        raise Word97Error(f"不是有效的 Word 97–2003 文件（{e}）") from None
    with ole:
        if not ole.exists("WordDocument"):
            raise Word97Error("文件中没有 Word 文档流（可能是 WPS 或其他 OLE 格式）")
        doc = ole.openstream("WordDocument").read()
        if len(doc) < _LCB_CLX + 4:
            raise Word97Error("Word 文件头不完整")
        (flags,) = struct.unpack_from("<H", doc, _FLAGS)
        if flags & _ENCRYPTED:
            raise Word97Error("文件已加密，请去除密码后再上传")
        table_name = "1Table" if flags & _WHICH_TABLE else "0Table"
        if not ole.exists(table_name):
            raise Word97Error(f"文件缺少 {table_name} 流（Word 95 或更早的格式不受支持）")
        table = ole.openstream(table_name).read()
    (ccp_text,) = struct.unpack_from("<i", doc, _CCP_TEXT)
    fc_clx, lcb_clx = struct.unpack_from("<II", doc, _FC_CLX)
    text = "".join(_pieces(doc, table[fc_clx:fc_clx + lcb_clx]))[:max(ccp_text, 0)]
    return plain(text)


def _pieces(doc: bytes, clx: bytes):
    """Each piece's characters in document order."""
    pos = 0
    while pos < len(clx) and clx[pos] == 0x01:  # Prc: formatting, skipped
        (cb,) = struct.unpack_from("<H", clx, pos + 1)
        pos += 3 + cb
    if pos >= len(clx) or clx[pos] != 0x02:
        raise Word97Error("Word 文件的分段表损坏")
    (lcb,) = struct.unpack_from("<I", clx, pos + 1)
    plc = clx[pos + 5:pos + 5 + lcb]
    n = (len(plc) - 4) // 12
    if n <= 0 or n > MAX_PIECES:
        raise Word97Error("Word 文件的分段表损坏")
    cps = struct.unpack_from(f"<{n + 1}i", plc, 0)
    for i in range(n):
        (fc,) = struct.unpack_from("<I", plc, 4 * (n + 1) + 8 * i + 2)
        count = cps[i + 1] - cps[i]
        if count <= 0:
            continue
        if fc & 0x40000000:  # fCompressed: 8-bit characters at fc / 2 (cp1252, as [MS-DOC] 2.9.73 says)
            start = (fc & 0x3FFFFFFF) // 2
            yield doc[start:start + count].decode("cp1252", "replace")
        else:
            start = fc & 0x3FFFFFFF
            yield doc[start:start + 2 * count].decode("utf-16-le", "replace")


def plain(text: str) -> str:
    """Fields reduced to their shown result, control characters to text, table rows to lines."""
    prev = None
    while prev != text:  # fields nest
        prev, text = text, _FIELD.sub(lambda m: m.group(1) or "", text)
    text = text.replace("\x07\x07", "\n").translate(_CONTROL)  # a cell end twice is a row end
    lines = [ln.strip("\t ").replace("\t", " | ") if "\t" in ln.strip("\t ") else ln.strip("\t ") for ln in text.split("\n")]
    return "\n".join(lines).strip()
