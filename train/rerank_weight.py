"""Measure the reranker's fusion weight (`rerank_weight`) and pool (`rerank_pool`) on the tuning sets: each
question's largest fused pool is read once, then its first P passages ranked by relevance + w × -ln(1 +
fused position) for each w and P; prints hit@1 / MRR per (P, w) beside the fused ranking's.

    .venv/bin/python -m train.rerank_weight [--weights 0,0.5,1,2,4] [--pools 16,24]

Tuning data only (evals/dev.jsonl over corpus/, evals/extra.jsonl over ../shared/corpus-extra/); the
held-out sets are never read. Needs the indexes `kexie index` builds (index/, index-extra/)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.evaluate.runner import judge_hits, passage  # noqa: E402
from rag.index.indexer import index_corpus  # noqa: E402
from rag.ingest.qa_pairs import load_dataset  # noqa: E402
from rag.search.retrieval import Retriever  # noqa: E402
from rag.settings import load_settings  # noqa: E402

SETS = [(ROOT / "evals" / "dev.jsonl", ROOT / "corpus", ROOT / "index"),
        (ROOT / "evals" / "extra.jsonl", ROOT.parent / "shared" / "corpus-extra", ROOT / "index-extra")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="测量重排融合权重（仅调参集）")
    ap.add_argument("--weights", default="0,0.25,0.5,1,2,4")
    ap.add_argument("--pools", default="12,16,24")
    args = ap.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]
    pools = [int(p) for p in args.pools.split(",")]
    for data, corpus, index in SETS:
        if not corpus.is_dir():
            continue
        s = load_settings(env={}, corpus_dir=corpus, index_dir=index)
        index_corpus(s)  # waits for every vector: the fused ranking is the one the product serves
        r = Retriever(s)
        items = [i for i in load_dataset(data) if i.answerable]
        stats = {(p, w): [0.0, 0.0] for p in pools for w in weights}
        fused = [0.0, 0.0]
        for it in items:
            pool = r.search(it.question, max(pools), "hybrid", rerank=False)
            rel = judge_hits(it, [passage(h.chunk.heading, h.chunk.text) for h in pool], [h.chunk.source for h in pool], False)
            first = next((i for i, x in enumerate(rel) if x), None)
            if first is not None and first < 10:
                fused[0] += first == 0
                fused[1] += 1 / (first + 1)
            readings = r.reader.read(it.question, [h.chunk.text for h in pool])
            for p, w in stats:
                order = sorted(range(min(p, len(pool))), key=lambda i: -(readings[i].relevance - w * math.log1p(i)))[:10]
                pos = next((n for n, i in enumerate(order) if rel[i]), None)
                if pos is not None:
                    stats[p, w][0] += pos == 0
                    stats[p, w][1] += 1 / (pos + 1)
        n = len(items)
        print(f"{data.name} ({n} answerable): fused hit@1 {fused[0] / n:.3f} MRR {fused[1] / n:.3f}")
        for (p, w), (h1, mrr) in stats.items():
            print(f"  pool={p:<3} w={w:<5} hit@1 {h1 / n:.3f}  MRR {mrr / n:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
