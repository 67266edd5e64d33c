"""static-e5: a static (model2vec-style) encoder distilled from the bundled multilingual-e5 (train/static_encoder.py).

A text is cut into jieba words; each known word has one fixed vector (its e5 embedding, PCA-reduced, frequency
weighted, stored as int8 with a per-row scale). A word outside the vocabulary falls back to its characters, so
only a text with no known character at all gets the zero vector. The text's vector is the sum of its token
vectors (the weights are baked in), L2-normalised: thousands of passages per second on one core, no torch."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from rag.lang.text import normalize

MODEL_PATH = Path(__file__).with_name("data") / "static-e5.npz"
# Punctuation, symbols and whitespace carry no topic; jieba returns them as tokens of their own.
_SKIP = re.compile(r"^[\W_]+$", re.UNICODE)


def new_tokenizer():
    """A private jieba instance (the global one may carry another module's user words), HMM off: deterministic."""
    import jieba

    tok = jieba.Tokenizer()
    tok.initialize()
    return tok


def words(tok, text: str) -> list[str]:
    """The tokens the vocabulary is counted over and looked up with: normalised, lower-cased jieba words."""
    return [w for w in tok.cut(normalize(text).lower(), HMM=False) if w.strip() and not _SKIP.match(w)]


class StaticEmbedder:
    """Loads the committed model file offline; `embed_passages` / `embed_query` like the other encoders."""

    def __init__(self, path: str | Path = MODEL_PATH):
        with np.load(path, allow_pickle=False) as z:
            vocab = [str(w) for w in z["vocab"]]
            self._vectors = z["q"].astype(np.float32) * z["scale"].astype(np.float32)[:, None]
        self.name = "static-e5"
        self.dim = int(self._vectors.shape[1])
        self._ids = {w: i for i, w in enumerate(vocab)}
        self._tok = new_tokenizer()

    def token_ids(self, text: str) -> list[int]:
        ids: list[int] = []
        for w in words(self._tok, text):
            i = self._ids.get(w)
            if i is not None:
                ids.append(i)
            else:  # out of vocabulary: back off to the characters we know
                ids.extend(self._ids[c] for c in w if c in self._ids)
        return ids

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        seqs = [self.token_ids(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        lens = np.array([len(s) for s in seqs], dtype=np.int64)
        rows = np.flatnonzero(lens)
        if rows.size:
            # One gather and one segmented sum for the whole batch instead of a Python loop over texts.
            flat = np.fromiter((i for r in rows for i in seqs[r]), dtype=np.int64, count=int(lens[rows].sum()))
            starts = np.concatenate(([0], np.cumsum(lens[rows])[:-1]))
            out[rows] = np.add.reduceat(self._vectors[flat], starts, axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)  # a text with no known token stays the zero vector, never NaN

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_passages([text])[0]


def provenance(path: str | Path = MODEL_PATH) -> dict:
    """The model file's provenance (data, teacher, commit, seed, command), written beside it by the trainer."""
    return json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))
