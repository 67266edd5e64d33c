"""BM25 Okapi over pre-tokenised chunks, kept as immutable segments so a re-index updates it incrementally.

Scores are computed at query time from raw term frequencies and exact live statistics, so an index
reached by any sequence of `update`s scores exactly like `build` over the same live documents:

    score(d, q) = sum over query terms t in d of  idf(t) * tf*(k1+1) / (tf + k1*(1 - b + b*dl/avgdl))
    idf(t)      = log(max(1, (N - df + 0.5) / (df + 0.5)))

This is bm25s 0.3's method="atire", idf_method="robertson" (which the previous implementation wrapped,
and tests still compare with): rank_bm25.BM25Okapi's scores, except that a term in more than half the
chunks gets idf 0 here instead of rank_bm25's epsilon * mean idf. An empty chunk (all stop words) is
indexed as the single empty token [""], as bm25s does, so it has a row and length 1.

Layout. An index is a tuple of segments, each a batch of documents indexed once and never modified
(its own vocabulary, postings of (local row, tf) grouped by term, document lengths, a random id), plus
what belongs to one version of the index: which rows of each segment are still alive, and the derived
per-row arrays (global row, length norm). N, the total live length (integers, so avgdl is exact) and,
at query time, each term's live df come from these; nothing global is baked into stored numbers.
`update` makes a new segment of the added documents, copies the alive mask of the segments it removes
rows from, and recomputes the per-row arrays with a few vector ops: milliseconds at 100k chunks, where
re-scoring the whole corpus (the bm25s matrix) took seconds. Segments are merged when there are more
than MAX_SEGMENTS of them or one is more than MAX_DEAD dead (bench/bm25_incremental.py).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Iterable
from itertools import chain
from pathlib import Path

import numpy as np

MAX_SEGMENTS = 8  # each query looks a term up in every segment: bound that per-term overhead
MAX_DEAD = 0.25  # a segment with more dead rows than this is rewritten without them
FORMAT = 1


class _Segment:
    """Documents indexed once: postings grouped by term (CSC-like), rows ascending within a term."""

    __slots__ = ("id", "terms", "vocab", "indptr", "rows", "tf", "dl")

    def __init__(self, seg_id: str, terms: list[str], indptr: np.ndarray, rows: np.ndarray, tf: np.ndarray,
                 dl: np.ndarray, vocab: dict[str, int] | None = None):
        self.id = seg_id
        self.terms = terms  # local term id -> term
        self.vocab = vocab if vocab is not None else dict(zip(terms, range(len(terms))))
        self.indptr = indptr  # int64, len(terms) + 1: term j's postings are [indptr[j], indptr[j+1])
        self.rows = rows  # int32 local row of each posting
        self.tf = tf  # float32 raw term frequency (exact for integers below 2**24)
        self.dl = dl  # int64 document length (tokens, duplicates included)

    @property
    def n(self) -> int:
        return len(self.dl)

    @classmethod
    def from_tokens(cls, docs: list[list[str]]) -> "_Segment":
        import scipy.sparse

        docs = [d if d else [""] for d in docs]
        dl = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
        # One C-level pass each for the vocabulary and the token ids; a per-document Counter in Python
        # costs several times more at 100k chunks.
        vocab = dict.fromkeys(chain.from_iterable(docs))
        vocab = dict(zip(vocab, range(len(vocab))))
        total = int(dl.sum())
        tok = np.fromiter(map(vocab.__getitem__, chain.from_iterable(docs)), dtype=np.int32, count=total)
        doc = np.repeat(np.arange(len(docs), dtype=np.int32), dl)
        # scipy's COO -> CSC is a counting sort that also sums duplicate (doc, term) pairs into tf:
        # 0.4 s for 15M tokens against 0.9 s for np.sort of (term, doc) keys.
        m = scipy.sparse.csc_matrix((np.ones(total, dtype=np.float32), (doc, tok)), shape=(len(docs), len(vocab)))
        m.sum_duplicates()
        return cls(uuid.uuid4().hex, list(vocab), m.indptr.astype(np.int64), m.indices.astype(np.int32),
                   m.data.astype(np.float32), dl, vocab)

    # -- persistence: one file per array, so a later generation can hard-link them unchanged
    def files(self) -> list[str]:
        return [f"{self.id}.{k}" for k in ("terms.txt", "indptr.npy", "rows.npy", "tf.npy", "dl.npy")]

    def write(self, path: Path) -> None:
        text = "\n".join(self.terms)
        if text.count("\n") != len(self.terms) - 1:
            raise ValueError("BM25 词项中不能含换行符")
        (path / f"{self.id}.terms.txt").write_text(text, encoding="utf-8")
        for name in ("indptr", "rows", "tf", "dl"):
            np.save(path / f"{self.id}.{name}.npy", getattr(self, name), allow_pickle=False)

    @classmethod
    def read(cls, path: Path, seg_id: str) -> "_Segment":
        terms = (path / f"{seg_id}.terms.txt").read_text(encoding="utf-8").split("\n")
        arrays = [np.load(path / f"{seg_id}.{name}.npy", allow_pickle=False) for name in ("indptr", "rows", "tf", "dl")]
        return cls(seg_id, terms, *arrays)


def _merge(parts: list[tuple[_Segment, np.ndarray | None]]) -> _Segment:
    """One segment holding the live rows of adjacent `parts` (segment, alive mask or None), in order.

    O(postings + vocabulary) and no sort: each part's postings for a term are a contiguous, row-ordered
    run, so they are placed after the previous parts' postings of that term (a counting placement)."""
    vocab = dict(parts[0][0].vocab)
    maps = []  # per part: local term id -> merged term id
    for seg, _ in parts:
        maps.append(np.fromiter((vocab.setdefault(t, len(vocab)) for t in seg.terms), dtype=np.int64,
                                count=len(seg.terms)))
    kept = []  # per part: (merged term of each kept posting, new row, tf, kept postings per local term)
    row_base = 0
    for seg, alive in parts:
        term = np.repeat(np.arange(len(seg.terms), dtype=np.int64), np.diff(seg.indptr))
        rows, tf = seg.rows, seg.tf
        if alive is None:
            new_rows = rows.astype(np.int64) + row_base
            live = seg.n
        else:
            keep = alive[rows]
            term, rows, tf = term[keep], rows[keep], tf[keep]
            new_rows = (np.cumsum(alive) - 1)[rows] + row_base
            live = int(alive.sum())
        kept.append((term, new_rows, tf, np.bincount(term, minlength=len(seg.terms))))
        row_base += live
    counts = np.zeros(len(vocab), dtype=np.int64)
    for (_, _, _, c), m in zip(kept, maps):
        counts[m] += c  # m is injective within a part
    indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    cursor = indptr[:-1].copy()
    rows_out = np.empty(int(indptr[-1]), dtype=np.int32)
    tf_out = np.empty(int(indptr[-1]), dtype=np.float32)
    for (term, new_rows, tf, c), m in zip(kept, maps):
        run_start = np.cumsum(c) - c  # where each local term's kept run starts in this part's arrays
        dest = cursor[m][term] + np.arange(len(term)) - run_start[term]
        rows_out[dest] = new_rows
        tf_out[dest] = tf
        cursor[m] += c
    dl = np.concatenate([seg.dl if a is None else seg.dl[a] for seg, a in parts])
    terms = list(vocab)
    if not counts.all():  # drop terms that only occurred in dead rows
        nz = counts > 0
        terms = [t for t, k in zip(terms, nz) if k]
        indptr = np.concatenate([[0], np.cumsum(counts[nz])])
        vocab = None
    return _Segment(uuid.uuid4().hex, terms, indptr, rows_out, tf_out, dl, vocab)


def _idf(df: int, n: int) -> float:
    # bm25s' _score_idf_robertson: floored at 0 rather than negative for terms in over half the chunks.
    return math.log(max(1.0, (n - df + 0.5) / (df + 0.5)))


class BM25Index:
    """Immutable: `update` returns a new index and leaves this one usable by concurrent readers."""

    def __init__(self, segments: tuple[_Segment, ...] = (), alive: tuple[np.ndarray | None, ...] = (),
                 k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b
        self._segments = tuple(segments)
        self._alive = tuple(alive)  # per segment: bool mask of live local rows, None when all are live
        live = [s.n if a is None else int(a.sum()) for s, a in zip(self._segments, self._alive)]
        self._live = live
        self._offset = np.concatenate([[0], np.cumsum(live, dtype=np.int64)]).tolist()  # first global row
        self.size = self._offset[-1]
        n = self.size
        # Per segment: local row -> global row, dead rows -> n. Scoring adds everything into n + 1 bins
        # and drops the last, which is cheaper than filtering dead postings out of every posting list.
        self._gmap = []
        dls = []
        for s, a, off in zip(self._segments, self._alive, self._offset):
            if a is None:
                self._gmap.append(None)  # global row = local row + offset
                dls.append(s.dl)
            else:
                g = np.full(s.n, n, dtype=np.intp)
                g[a] = np.arange(off, off + int(a.sum()))
                self._gmap.append(g)
                dls.append(s.dl[a])
        self._total_len = int(sum(int(d.sum()) for d in dls))
        # The length part of each live row's denominator, in global row order (+1 slot for dead rows).
        self._norm = np.ones(n + 1)
        if n:
            dl = np.concatenate(dls)
            self._norm[:n] = k1 * (1 - b + b * dl / (self._total_len / n))

    @classmethod
    def build(cls, corpus_tokens: list[list[str]], k1: float = 1.5, b: float = 0.75) -> "BM25Index":
        if not corpus_tokens:
            return cls((), (), k1, b)
        return cls((_Segment.from_tokens(corpus_tokens),), (None,), k1, b)

    def update(self, remove: Iterable[int], add: list[list[str]]) -> "BM25Index":
        """A new index: this one's live rows except `remove` (row positions), in order, then `add`."""
        rm = np.unique(np.fromiter(remove, dtype=np.int64))
        if rm.size and (rm[0] < 0 or rm[-1] >= self.size):
            raise IndexError(f"BM25 行号越界：{rm[0] if rm[0] < 0 else rm[-1]}（共 {self.size} 行）")
        segments, alive = list(self._segments), list(self._alive)
        cut = np.searchsorted(rm, self._offset)  # rm[cut[i]:cut[i+1]] fall in segment i
        for i, (s, a) in enumerate(zip(self._segments, self._alive)):
            if cut[i] == cut[i + 1]:
                continue  # untouched: its mask is shared with this index
            pos = rm[cut[i]:cut[i + 1]] - self._offset[i]
            local = pos if a is None else np.flatnonzero(a)[pos]
            a = np.ones(s.n, dtype=bool) if a is None else a.copy()
            a[local] = False
            alive[i] = a
        if add:
            segments.append(_Segment.from_tokens(add))
            alive.append(None)
        segments, alive = _maintain(segments, alive)
        return BM25Index(tuple(segments), tuple(alive), self.k1, self.b)

    def _postings(self, token: str):
        """Per segment holding the token: (global rows, dead rows mapped to size; tf; dead postings)."""
        for s, g, off in zip(self._segments, self._gmap, self._offset):
            j = s.vocab.get(token)
            if j is None:
                continue
            lo, hi = s.indptr[j], s.indptr[j + 1]
            rows = s.rows[lo:hi]
            if g is None:
                yield (rows + off if off else rows), s.tf[lo:hi], 0
            else:
                rows = g[rows]
                yield rows, s.tf[lo:hi], int(np.count_nonzero(rows == self.size))

    def scores(self, query_tokens: list[str]) -> np.ndarray:
        """Score of every chunk for the query (0 where no term matches)."""
        n = self.size
        rows_parts, weight_parts = [], []
        for t in query_tokens:
            if not t:  # the empty token only stands for empty chunks, it is not a query term
                continue
            postings = list(self._postings(t))
            df = sum(len(r) - dead for r, _, dead in postings)
            if df == 0:
                continue
            idf = _idf(df, n)
            if idf == 0:
                continue
            for rows, tf, _ in postings:
                # idf*(k1+1) * tf/(tf + norm), in place: the posting lists of common terms are long.
                w = self._norm[rows]
                w += tf
                np.divide(tf, w, out=w)
                w *= idf * (self.k1 + 1)
                rows_parts.append(rows)
                weight_parts.append(w)
        if not rows_parts:
            return np.zeros(n, dtype=np.float32)
        # Each row gets its terms' weights added in query-term order whatever the segmentation,
        # so incremental and rebuilt indexes give bit-identical scores.
        s = np.bincount(np.concatenate(rows_parts), weights=np.concatenate(weight_parts), minlength=n + 1)
        return s[:n].astype(np.float32)

    def doc_freq(self, token: str) -> int:
        """Number of live chunks containing the token (0 if unknown)."""
        return sum(len(r) - dead for r, _, dead in self._postings(token))

    def search(self, query_tokens: list[str], k: int) -> list[tuple[int, float]]:
        """Top-k (chunk index, score), best first, positive scores only, ties by chunk index."""
        s = self.scores(query_tokens)
        if s.size == 0 or k <= 0:
            return []
        # Select among matching chunks only: typically a small share of the index, so the partition
        # is over thousands rather than all chunks.
        top = np.flatnonzero(s > 0)
        if top.size > k:
            # Keep every chunk tied with the k-th score, so the lowest rows win ties, not partition order.
            kth = -np.partition(-s[top], k - 1)[k - 1]
            top = top[s[top] >= kth]
        top = top[np.lexsort((top, -s[top]))][:k]
        return [(int(i), float(s[i])) for i in top]

    def save(self, path: Path, previous: Path | None = None) -> None:
        """Write to directory `path`. Segment files already in `previous` (where an older version of this
        index was saved) are hard-linked rather than rewritten, so a generation costs its new segments."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        dead = [np.zeros(0, dtype=np.int32) if a is None else np.flatnonzero(~a).astype(np.int32) for a in self._alive]
        for s in self._segments:
            if previous is not None and all((Path(previous) / f).is_file() for f in s.files()):
                for f in s.files():
                    _link(Path(previous) / f, path / f)
            else:
                s.write(path)
        np.save(path / "dead.npy", np.concatenate(dead) if dead else np.zeros(0, dtype=np.int32), allow_pickle=False)
        meta = {"format": FORMAT, "k1": self.k1, "b": self.b, "size": self.size,
                "segments": [{"id": s.id, "rows": s.n, "dead": len(d)} for s, d in zip(self._segments, dead)]}
        (path / "index.json").write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(cls, path: Path, reuse: "BM25Index | None" = None) -> "BM25Index":
        """Read an index saved by `save`; segments that `reuse` (an index in memory) has are shared."""
        path = Path(path)
        meta = json.loads((path / "index.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"不支持的 BM25 索引格式：{path}，请重建索引")
        known = {s.id: s for s in reuse._segments} if reuse is not None else {}
        dead = np.load(path / "dead.npy", allow_pickle=False)
        segments, alive, at = [], [], 0
        for m in meta["segments"]:
            s = known.get(m["id"]) or _Segment.read(path, m["id"])
            if s.n != m["rows"]:
                raise ValueError(f"BM25 段 {m['id']} 行数不符：{s.n} != {m['rows']}")
            a = None
            if m["dead"]:
                a = np.ones(s.n, dtype=bool)
                a[dead[at:at + m["dead"]]] = False
                at += m["dead"]
            segments.append(s)
            alive.append(a)
        return cls(tuple(segments), tuple(alive), meta["k1"], meta["b"])


def _maintain(segments: list[_Segment], alive: list[np.ndarray | None]):
    """The merge policy: drop dead segments, compact mostly-dead ones, merge the smallest neighbours."""
    parts = [(s, a) for s, a in zip(segments, alive) if a is None or a.any()]
    parts = [(_merge([(s, a)]), None) if a is not None and (~a).sum() > MAX_DEAD * s.n else (s, a)
             for s, a in parts]
    while len(parts) > MAX_SEGMENTS:
        # Merging the adjacent pair with the fewest live rows keeps merges logarithmic per row, like
        # an LSM tree; only adjacent segments, since segment order is row order.
        live = [s.n if a is None else int(a.sum()) for s, a in parts]
        i = min(range(len(parts) - 1), key=lambda j: live[j] + live[j + 1])
        parts[i:i + 2] = [(_merge(parts[i:i + 2]), None)]
    return [s for s, _ in parts], [a for _, a in parts]


def _link(src: Path, dst: Path) -> None:
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or one without hard links
        shutil.copy2(src, dst)
