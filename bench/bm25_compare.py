"""rank-bm25 vs bm25s (our rag.index.bm25 wrapper): same tokens, same Okapi scores, query latency.

    .venv/bin/python bench/bm25_compare.py [--sizes 0,20000,100000]

Size 0 means the bundled corpus as indexed (index/ must exist: `kexie index`). Larger sizes are made of
real tokenised sentences (corpus/, ../shared/corpus-extra, CMRC paragraphs) recombined at random into
distinct chunks of 60-200 tokens.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.index import store  # noqa: E402
from rag.index.bm25 import BM25Index  # noqa: E402
from rag.index.tokenizer import Tokenizer  # noqa: E402
from rag.settings import load_settings  # noqa: E402


def sentences() -> list[str]:
    texts = [p.read_text(encoding="utf-8") for p in (ROOT / "corpus").glob("*.txt")]
    extra = ROOT.parent / "shared"
    texts += [p.read_text(encoding="utf-8") for p in (extra / "corpus-extra").glob("*") if p.is_file()]
    cmrc = extra / "bench" / "cmrc2018_trial.json"
    if cmrc.is_file():
        for art in json.loads(cmrc.read_text(encoding="utf-8"))["data"]:
            texts += [p["context"] for p in art["paragraphs"]]
    return [s for t in texts for s in re.split(r"(?<=[。！？；])", t) if len(s.strip()) > 8]


def latency(fn, queries) -> tuple[float, float]:
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), float(np.percentile(times, 95))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="0,20000,100000")
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    from rank_bm25 import BM25Okapi

    tok = Tokenizer()
    sents = sentences()
    sent_tokens = [tok.tokens(s) for s in sents]
    rnd = random.Random(7)
    queries = [tok.tokens(s)[:8] for s in rnd.sample(sents, args.queries)]
    rows = []
    for size in (int(x) for x in args.sizes.split(",")):
        if size == 0:
            s = load_settings(env={})
            m = store.Manifest.read(s.index_dir)
            if m is None:
                print("no index/: run `kexie index` first; skipping the corpus size")
                continue
            docs = store.read_tokens(s.index_dir / m.generation)
            label = f"corpus ({len(docs)} chunks)"
        else:
            docs = []
            while len(docs) < size:
                picked = rnd.sample(sent_tokens, rnd.randint(3, 8))
                docs.append([w for t in picked for w in t] + [f"doc{len(docs)}"])
            label = f"{size} chunks"
        t = time.perf_counter()
        ours = BM25Index.build(docs)
        build_ours = time.perf_counter() - t
        t = time.perf_counter()
        ref = BM25Okapi(docs)
        build_ref = time.perf_counter() - t
        # Same semantics: rank_bm25 with epsilon=0 floors negative idf at 0 as we do; compare top-10 score lists
        # (scores, not ids: equal-score ties may be ordered differently).
        ref0 = BM25Okapi(docs, epsilon=0)
        same = 0
        for q in queries[:50]:
            a = [round(sc, 3) for _, sc in ours.search(q, 10)]
            b = [round(float(x), 3) for x in np.sort(ref0.get_scores(q))[::-1][: len(a)]]
            same += np.allclose(a, b, atol=2e-3)
        p50_ours, p95_ours = latency(lambda q: ours.search(q, 50), queries)
        n_ref = queries if size <= 20000 else queries[:40]
        p50_ref, p95_ref = latency(lambda q: np.argsort(-ref.get_scores(q))[:50], n_ref)
        rows.append({"size": label, "bm25s_build_s": round(build_ours, 2), "rank_bm25_build_s": round(build_ref, 2),
                     "bm25s_p50_ms": round(p50_ours, 2), "bm25s_p95_ms": round(p95_ours, 2),
                     "rank_bm25_p50_ms": round(p50_ref, 2), "rank_bm25_p95_ms": round(p95_ref, 2),
                     "speedup_p50": round(p50_ref / p50_ours, 1), "same_top10_of_50": int(same)})
        print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    print("\n| corpus | bm25s p50 / p95 ms | rank-bm25 p50 / p95 ms | speed-up | same top-10 (of 50) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['bm25s_p50_ms']} / {r['bm25s_p95_ms']} | {r['rank_bm25_p50_ms']} / {r['rank_bm25_p95_ms']} "
              f"| {r['speedup_p50']}x | {r['same_top10_of_50']} |")


if __name__ == "__main__":
    main()
