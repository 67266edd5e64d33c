"""Incremental BM25 (rag.index.bm25) vs the bm25s score matrix it replaced: re-index cost and query latency.

    .venv/bin/python bench/bm25_incremental.py [--sizes 10000,100000] [--queries 300]

Synthetic corpus: Zipfian (s=1.1) draws from a 200k-term vocabulary of two- to four-character
CJK words, documents of 100-200 tokens (~150). A re-index of one file = remove 30 rows, add 30 new
documents. "old" rebuilds the bm25s matrix over the live documents (what the previous BM25Index did on
every re-index) and saves/loads it whole; "new" is update + save(previous=) + load(reuse=).
Queries: 5-10 terms drawn from the same distribution minus its 50 most frequent terms (stop words).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.index.bm25 import BM25Index  # noqa: E402


class OldBM25:
    """The previous rag.index.bm25.BM25Index: bm25s' precomputed CSC score matrix, summed per query."""

    def __init__(self, r, size):
        self.r, self.size = r, size

    @classmethod
    def build(cls, docs):
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)
        r = bm25s.BM25(k1=1.5, b=0.75, method="atire", idf_method="robertson", csc_backend="scipy")
        r.index([t if t else [""] for t in docs], show_progress=False)
        return cls(r, len(docs))

    def scores(self, q):
        ids = self.r.get_tokens_ids([t for t in q if t])
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        m = self.r.scores
        data, indices, indptr = m["data"], m["indices"], m["indptr"]
        spans = [slice(indptr[t], indptr[t + 1]) for t in ids]
        docs = np.concatenate([indices[s] for s in spans])
        weights = np.concatenate([data[s] for s in spans])
        return np.bincount(docs, weights=weights, minlength=self.size).astype(np.float32)

    def search(self, q, k):
        s = self.scores(q)
        top = np.flatnonzero(s > 0)
        if top.size > k:
            top = top[np.argpartition(-s[top], k - 1)[:k]]
        top = top[np.argsort(-s[top], kind="stable")]
        return [(int(i), float(s[i])) for i in top]

    def save(self, path):
        path.mkdir(parents=True, exist_ok=True)
        self.r.save(str(path))

    @classmethod
    def load(cls, path, size):
        import bm25s

        return cls(bm25s.BM25.load(str(path)), size)


def vocabulary(n: int, rng: np.random.Generator) -> np.ndarray:
    chars = np.array([chr(c) for c in range(0x4E00, 0x4E00 + 3000)])
    lengths = rng.choice([2, 2, 2, 3, 4], size=n * 2)
    words = {"".join(rng.choice(chars, size=k)) for k in lengths}
    return np.array(sorted(words)[:n])


class Corpus:
    def __init__(self, seed: int = 0, vocab: int = 200_000, s: float = 1.1):
        self.rng = np.random.default_rng(seed)
        self.words = vocabulary(vocab, self.rng)
        p = 1.0 / np.arange(1, len(self.words) + 1) ** s
        self.cdf = np.cumsum(p / p.sum())

    def draw(self, n: int, skip: int = 0) -> np.ndarray:
        ranks = np.searchsorted(self.cdf, self.rng.uniform(self.cdf[skip - 1] if skip else 0, 1, n))
        return self.words[np.minimum(ranks, len(self.words) - 1)]

    def docs(self, n: int) -> list[list[str]]:
        lengths = self.rng.integers(100, 201, n)
        flat = self.draw(int(lengths.sum())).tolist()
        ends = np.cumsum(lengths).tolist()
        return [flat[e - k:e] for e, k in zip(ends, lengths.tolist())]

    def queries(self, n: int) -> list[list[str]]:
        return [self.draw(int(self.rng.integers(5, 11)), skip=50).tolist() for _ in range(n)]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def p50_ms(fn, queries) -> float:
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def disk_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def run(n: int, n_queries: int, updates: int) -> list[dict]:
    c = Corpus()
    docs = c.docs(n)
    queries = c.queries(n_queries)
    rng = np.random.default_rng(1)
    tmp = Path(tempfile.mkdtemp(prefix="bm25bench"))
    rows = []
    try:
        # old: every re-index rebuilds over the live documents
        old, t_build = timed(lambda: OldBM25.build(docs))
        live = list(docs)
        t_upd = []
        for u in range(updates):
            start = int(rng.integers(0, len(live) - 30))  # one file's chunks are contiguous
            add = c.docs(30)
            _, t1 = timed(lambda: live.__setitem__(slice(start, start + 30), []))
            live += add
            old, t2 = timed(lambda: OldBM25.build(live))
            _, t3 = timed(lambda: old.save(tmp / f"old{u}"))
            old, t4 = timed(lambda: OldBM25.load(tmp / f"old{u}", len(live)))
            t_upd.append((t1 + t2, t3, t4))
        rows.append(dict(impl="old (bm25s)", n=n, build=t_build, upd=statistics.median(t[0] for t in t_upd),
                         save=statistics.median(t[1] for t in t_upd), load=statistics.median(t[2] for t in t_upd),
                         p50=p50_ms(lambda q: old.search(q, 50), queries), mb=disk_mb(tmp / f"old{updates - 1}")))
        shutil.rmtree(tmp)
        tmp.mkdir()

        new, t_build = timed(lambda: BM25Index.build(docs))
        new.save(tmp / "new0")
        _, t_cold = timed(lambda: BM25Index.load(tmp / "new0"))
        reader, live = new, list(docs)
        t_upd = []
        for u in range(1, updates + 1):
            start = int(rng.integers(0, new.size - 30))
            add = c.docs(30)
            live[start:start + 30] = []
            live += add
            new, t1 = timed(lambda: new.update(range(start, start + 30), add))
            _, t2 = timed(lambda: new.save(tmp / f"new{u}", previous=tmp / f"new{u - 1}"))
            reader, t3 = timed(lambda: BM25Index.load(tmp / f"new{u}", reuse=reader))
            t_upd.append((t1, t2, t3))
        rows.append(dict(impl="new (segments)", n=n, build=t_build, upd=statistics.median(t[0] for t in t_upd),
                         save=statistics.median(t[1] for t in t_upd), load=statistics.median(t[2] for t in t_upd),
                         cold=t_cold, p50=p50_ms(lambda q: reader.search(q, 50), queries),
                         mb=disk_mb(tmp / f"new{updates}"), segs=len(reader._segments)))
        # Same top-50 as a rebuild over the same live documents (a sanity check, not a timing).
        ref = BM25Index.build(live)
        assert all(ref.search(q, 50) == reader.search(q, 50) for q in queries[:20])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--updates", type=int, default=5)
    args = ap.parse_args()
    rows = [r for n in map(int, args.sizes.split(",")) for r in run(n, args.queries, args.updates)]
    print("\n| chunks | impl | full build s | re-index: update ms | save ms | load ms | query p50 ms | disk MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        extra = f" (cold load {r['cold'] * 1000:.0f} ms, {r['segs']} segments)" if "cold" in r else ""
        print(f"| {r['n']:,} | {r['impl']} | {r['build']:.2f} | {r['upd'] * 1000:.1f} | {r['save'] * 1000:.1f} "
              f"| {r['load'] * 1000:.1f} | {r['p50']:.2f} | {r['mb']:.0f}{extra} |")


if __name__ == "__main__":
    main()
