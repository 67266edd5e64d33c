"""BM25 Okapi over pre-tokenised chunks, backed by bm25s' precomputed sparse score matrix.

bm25s with tfc="atire" (tf*(k1+1)/(tf+k1*(1-b+b*dl/avgdl))) and idf="robertson"
(log((N-df+0.5)/(df+0.5))) gives exactly rank_bm25.BM25Okapi's scores, except that a term in more
than half the chunks gets idf 0 here instead of rank_bm25's epsilon * mean idf.
Chosen over rank_bm25 by measurement (bench/bm25_compare.py): rank_bm25 scores every document in
Python on each query.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np


def _bm25s():
    import bm25s

    # bm25s sets its own logger to DEBUG when imported, so every build would print a DEBUG line in the CLI.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def _check_layout(r) -> None:
    """`scores` below reads bm25s' precomputed CSC matrix directly (pyproject pins bm25s to the 0.3
    series, and tests compare the result with bm25s' public get_scores). Refuse, rather than return
    wrong scores, if a bm25s release lays it out differently or the variant scores absent terms."""
    m = getattr(r, "scores", None)
    ok = isinstance(m, dict) and {"data", "indices", "indptr"} <= set(m) and getattr(r, "method", "") not in ("bm25l", "bm25+")
    if not ok:
        import bm25s

        raise RuntimeError(f"不兼容的 bm25s 版本 {getattr(bm25s, '__version__', '?')}：请安装 pyproject.toml 中指定的版本范围")


class BM25Index:
    def __init__(self, retriever=None, size: int = 0):
        if retriever is not None:
            _check_layout(retriever)
        self._r = retriever
        self.size = size

    @classmethod
    def build(cls, corpus_tokens: list[list[str]], k1: float = 1.5, b: float = 0.75) -> "BM25Index":
        bm25s = _bm25s()
        if not corpus_tokens:
            return cls(None, 0)
        # scipy's CSC construction is ~30% faster than bm25s' numpy one (0.54 vs 0.75 s at 10k chunks).
        r = bm25s.BM25(k1=k1, b=b, method="atire", idf_method="robertson", csc_backend="scipy")
        # An empty chunk (all stop words) still needs a row: bm25s maps it to the empty token.
        r.index([t if t else [""] for t in corpus_tokens], show_progress=False)
        return cls(r, len(corpus_tokens))

    def scores(self, query_tokens: list[str]) -> np.ndarray:
        """Score of every chunk for the query (0 where no term matches)."""
        if self._r is None:
            return np.zeros(0, dtype=np.float32)
        ids = self._r.get_tokens_ids([t for t in query_tokens if t])
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        # Sum each query term's column of the precomputed score matrix (CSC: a term's postings are
        # contiguous). np.bincount does in one pass what bm25s' numpy backend does with np.add.at,
        # several times slower on long posting lists (bench/README.md).
        m = self._r.scores
        data, indices, indptr = m["data"], m["indices"], m["indptr"]
        spans = [slice(indptr[t], indptr[t + 1]) for t in ids]
        docs = np.concatenate([indices[s] for s in spans])
        weights = np.concatenate([data[s] for s in spans])
        return np.bincount(docs, weights=weights, minlength=self.size).astype(np.float32)

    def doc_freq(self, token: str) -> int:
        """Number of chunks containing the token (0 if unknown)."""
        if self._r is None:
            return 0
        tid = self._r.vocab_dict.get(token)
        if tid is None:
            return 0
        indptr = self._r.scores["indptr"]
        return int(indptr[tid + 1] - indptr[tid])

    def search(self, query_tokens: list[str], k: int) -> list[tuple[int, float]]:
        """Top-k (chunk index, score), best first, positive scores only."""
        s = self.scores(query_tokens)
        if s.size == 0 or k <= 0:
            return []
        # Select among matching chunks only: typically a small share of the index, so the partition
        # is over thousands rather than all chunks (100k: 0.69 -> 0.39 ms per query).
        top = np.flatnonzero(s > 0)
        if top.size > k:
            top = top[np.argpartition(-s[top], k - 1)[:k]]
        top = top[np.argsort(-s[top], kind="stable")]
        return [(int(i), float(s[i])) for i in top]

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "size").write_text(str(self.size))
        if self._r is not None:
            self._r.save(str(path))

    @classmethod
    def load(cls, path: Path) -> "BM25Index":
        bm25s = _bm25s()
        size = int((path / "size").read_text())
        if size == 0:
            return cls(None, 0)
        return cls(bm25s.BM25.load(str(path)), size)
