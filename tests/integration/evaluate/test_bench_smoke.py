"""Smoke test of the benchmark harness: a tiny run in a subprocess, JSON shape and positive numbers only.

No timing assertions: latencies depend on the machine. Without ../shared the harness builds its corpus
from corpus/ alone and asks only evals/dev.jsonl questions, so the test still runs; only the
assertions about the ../shared sources are skipped. The LangChain baseline runs too (on 1,000 chunks it
takes seconds), so the child process it runs in is exercised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT, SHARED

pytestmark = pytest.mark.slow

SIZE = 1000  # the issue: "a smoke test runs the bench at the 1k size"


@pytest.fixture(scope="module")
def bench_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-results")
    work = tmp_path_factory.mktemp("bench-work")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEXIE_")}
    env["HF_HUB_OFFLINE"] = "1"
    cmd = [
        sys.executable, str(PROJECT_ROOT / "bench" / "run.py"),
        "--sizes", str(SIZE), "--questions", "6", "--encode-sample", "8",
        "--cold-runs", "1", "--added-paragraphs", "3", "--query-budget", "3",
        "--out", str(out), "--work", str(work),
    ]
    p = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((out / f"bench-{SIZE}.json").read_text(encoding="utf-8")), out


def _positive(d: dict, *keys: str) -> None:
    for k in keys:
        assert isinstance(d[k], (int, float)) and d[k] > 0, (k, d[k])


def test_build_figures(bench_result):
    r, _ = bench_result
    assert r["size"] == SIZE
    b = r["build"]
    _positive(b, "chunks", "seconds", "peak_rss_mb", "vectors")
    assert abs(b["chunks"] - SIZE) <= 0.1 * SIZE
    # The stages the issue names: load, clean, chunk, tokenise, embed, write Chroma, write BM25.
    assert {"load", "clean", "chunk", "tokenize", "embed", "write_chroma", "build_bm25", "write_bm25"} <= set(b["stages"])
    for name, st in r["build_derived"]["stages"].items():
        _positive(st, "seconds", "chunks_per_s")
    assert b["embedder"]["real_embedded"] == 8 and b["embedder"]["synthesised"] == b["chunks"] - 8
    assert r["build_derived"]["scaled"] is True and r["scaled"]
    _positive(r["raw_encode"], "passages_per_s", "seconds")
    _positive(r["build_derived"], "projected_seconds", "projected_chunks_per_s", "build_vs_raw")


def test_query_figures(bench_result):
    r, _ = bench_result
    q = r["query"]
    for mode in ("bm25", "vector", "hybrid", "answer"):
        assert q[mode]["n"] >= 1
        _positive(q[mode], "p50_ms", "p95_ms")
        assert q[mode]["p95_ms"] >= q[mode]["p50_ms"]
    _positive(q["hybrid_parts"]["embed_query"], "p50_ms")
    _positive(q["hybrid_query_vector_given"], "p50_ms")


def test_cold_start_and_reindex(bench_result):
    r, _ = bench_result
    assert r["cold_start"]["ok"]
    _positive(r["cold_start"], "median_s", "peak_rss_mb")
    for op in ("changed", "added", "deleted"):
        assert r["reindex"][op]["ok"], op
        _positive(r["reindex"][op], "seconds")
    assert r["reindex"]["unchanged"]["ok"]


def test_baseline_figures(bench_result):
    r, _ = bench_result
    b = r["baseline"]
    assert "error" not in b, b.get("stderr", "")[-2000:]
    assert b["docs"] == r["build"]["chunks"] and b["k"] == 5
    for key in ("hybrid", "ours_hybrid_paired", "hybrid_cached_query_vector", "ours_hybrid_cached_query_vector", "bm25", "vector"):
        assert b[key]["n"] >= 1
        _positive(b[key], "p50_ms")
    _positive(r["speedup"], "hybrid_p50_x", "retrieval_only_p50_x")


def test_outputs(bench_result):
    r, out = bench_result
    summary = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [x["size"] for x in summary["runs"]] == [SIZE]
    assert (out / "latency.png").stat().st_size > 0


def test_shared_sources_used(bench_result):
    r, _ = bench_result
    if not SHARED.exists():
        pytest.skip(f"../shared not present: {SHARED}")
    assert r["shared"] is True
    assert {"own", "extra"} <= set(r["corpus"]["groups"])
