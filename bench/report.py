"""Merge per-size results, print the table, draw the latency plot.

    .venv/bin/python -m bench.report [--out bench/results] [--plot bench/latency.png] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TARGETS = {
    "build_vs_raw": ">= 0.90 (build throughput vs raw encode)",
    "reindex_changed_s": "<= 3 s in a 10k-chunk index",
    "cold_start_s": "<= 8 s",
    "hybrid_p50_ms": "<= 30 ms at 100k",
    "speedup": ">= 20x vs baseline (hybrid p50)",
}


# IndexReport.stages, in pipeline order ("embed" includes vector synthesis in a scaled build).
STAGES = ("read_previous", "scan", "load", "clean", "chunk", "embed", "write_chroma", "tokenize", "build_bm25",
          "places", "write_bm25", "commit")


def load_runs(out: Path) -> list[dict]:
    runs = []
    for p in sorted(out.glob("bench-*.json")):
        try:
            runs.append(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return sorted(runs, key=lambda r: r["size"])


def _g(d: dict, *path, default=None):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _fmt(fmt: str, *values) -> str:
    return "–" if any(v is None for v in values) else fmt.format(*values)


def rows(runs: list[dict]) -> list[tuple[str, list[str]]]:
    """(label, one cell per run)."""

    def f(fmt, *path, scale=1.0):
        out = []
        for r in runs:
            v = _g(r, *path)
            out.append("–" if v is None else fmt.format(v * scale))
        return out

    def both(a, b):
        return [f"{x} / {y}" for x, y in zip(a, b)]

    lines: list[tuple[str, list[str]]] = [
        ("chunks indexed (files)", [_fmt("{:,} ({})", _g(r, "build", "chunks"), _g(r, "corpus", "files")) for r in runs]),
        ("vectors from model / synthesised", [_fmt("{} / {:,}", _g(r, "build", "embedder", "real_embedded"),
                                                   _g(r, "build", "embedder", "synthesised")) for r in runs]),
        ("build measured: s (chunks/s)", [_fmt("{:.1f} ({:.0f})", _g(r, "build", "seconds"),
                                               _g(r, "build_derived", "measured_chunks_per_s")) for r in runs]),
    ]
    def stage(r, st):
        sec = _g(r, "build_derived", "stages", st, "seconds")
        if sec is not None and sec < 0.01:  # a rate over a few microseconds means nothing
            return _fmt("{:.2f}", sec)
        return _fmt("{:.2f} ({:.0f})", sec, _g(r, "build_derived", "stages", st, "chunks_per_s"))

    for st in STAGES:
        lines.append((f"  stage {st}: s (chunks/s)", [stage(r, st) for r in runs]))
    lines += [
        ("  non-model pipeline time, s", f("{:.1f}", "build_derived", "pipeline_overhead_seconds")),
        ("build peak RSS, MB", f("{:.0f}", "build", "peak_rss_mb")),
        ("raw encode, passages/s", f("{:.2f}", "raw_encode", "passages_per_s")),
        ("build if all real: s (chunks/s)", [_fmt("{:.0f} ({:.2f})", _g(r, "build_derived", "projected_seconds"),
                                                  _g(r, "build_derived", "projected_chunks_per_s")) for r in runs]),
        ("build / raw throughput (>= 0.90)", f("{:.3f}", "build_derived", "build_vs_raw")),
        ("BM25 p50 / p95 ms", both(f("{:.1f}", "query", "bm25", "p50_ms"), f("{:.1f}", "query", "bm25", "p95_ms"))),
        ("vector p50 / p95 ms", both(f("{:.1f}", "query", "vector", "p50_ms"), f("{:.1f}", "query", "vector", "p95_ms"))),
        ("hybrid p50 / p95 ms", both(f("{:.1f}", "query", "hybrid", "p50_ms"), f("{:.1f}", "query", "hybrid", "p95_ms"))),
        ("  query embedding alone p50 ms", f("{:.1f}", "query", "hybrid_parts", "embed_query", "p50_ms")),
        ("  hybrid, query vector given p50 / p95 ms", both(f("{:.1f}", "query", "hybrid_query_vector_given", "p50_ms"), f("{:.1f}", "query", "hybrid_query_vector_given", "p95_ms"))),
        ("answer p50 / p95 ms", both(f("{:.1f}", "query", "answer", "p50_ms"), f("{:.1f}", "query", "answer", "p95_ms"))),
        ("query process RSS, MB (of which the loaded index)", [_fmt("{:.0f} ({:.0f})", _g(r, "query", "rss_mb"),
                                                                  _g(r, "query", "index_rss_mb")) for r in runs]),
        ("questions timed (per mode)", [str(_g(r, "query", "hybrid", "n", default="–")) for r in runs]),
        ("ours hybrid, paired with baseline, p50 / p95 ms", both(f("{:.1f}", "baseline", "ours_hybrid_paired", "p50_ms"), f("{:.1f}", "baseline", "ours_hybrid_paired", "p95_ms"))),
        ("baseline hybrid p50 / p95 ms", both(f("{:.1f}", "baseline", "hybrid", "p50_ms"), f("{:.1f}", "baseline", "hybrid", "p95_ms"))),
        ("  baseline BM25 / vector p50 ms", both(f("{:.1f}", "baseline", "bm25", "p50_ms"), f("{:.1f}", "baseline", "vector", "p50_ms"))),
        ("baseline build BM25 / Chroma s", both(f("{:.1f}", "baseline", "bm25_build_seconds"), f("{:.1f}", "baseline", "chroma_build_seconds"))),
        ("baseline questions timed", [str(_g(r, "baseline", "hybrid", "n", default="–")) for r in runs]),
        ("speedup vs baseline, hybrid p50 (>= 20x)", f("{:.1f}x", "speedup", "hybrid_p50_x")),
        ("ratio ours / baseline, hybrid p50", f("{:.3f}", "speedup", "ratio_ours_over_baseline_p50")),
        ("retrieval only (query vector cached): ours p50 / p95 ms", both(f("{:.1f}", "baseline", "ours_hybrid_cached_query_vector", "p50_ms"), f("{:.1f}", "baseline", "ours_hybrid_cached_query_vector", "p95_ms"))),
        ("retrieval only: baseline p50 / p95 ms", both(f("{:.1f}", "baseline", "hybrid_cached_query_vector", "p50_ms"), f("{:.1f}", "baseline", "hybrid_cached_query_vector", "p95_ms"))),
        ("speedup, retrieval only p50", f("{:.1f}x", "speedup", "retrieval_only_p50_x")),
        ("re-index unchanged, s", f("{:.2f}", "reindex", "unchanged", "seconds")),
        ("re-index 1 changed file, s (<= 3)", f("{:.2f}", "reindex", "changed", "seconds")),
        ("re-index 1 added file, s (chunks embedded)", [_fmt("{:.2f} ({})", _g(r, "reindex", "added", "seconds"),
                                                             _g(r, "reindex", "added", "embedded")) for r in runs]),
        ("  of which embedding, s", f("{:.2f}", "reindex", "added", "stages", "embed")),
        ("re-index 1 deleted file, s", f("{:.2f}", "reindex", "deleted", "seconds")),
        ("cold start to answer, median s (<= 8)", f("{:.2f}", "cold_start", "median_s")),
        ("index on disk, MB", f("{:.0f}", "index_disk_mb")),
        ("load average (1 min) start -> end", [_fmt("{} -> {}", (_g(r, "loadavg_start") or [None])[0],
                                                    (_g(r, "loadavg_end") or [None])[0]) for r in runs]),
    ]
    return lines


def print_table(runs: list[dict]) -> None:
    if not runs:
        return
    header = [f"{r['size']:,} chunks" for r in runs]
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title="kexie-rag benchmark")
        t.add_column("figure")
        for h in header:
            t.add_column(h, justify="right")
        for label, cells in rows(runs):
            t.add_row(label, *cells)
        Console().print(t)
    except ImportError:
        print(markdown_table(runs))
    for r in runs:
        for n in r.get("scaled", []):
            print(f"{r['size']:,} scaled: {n}")
        env = {ph: e for ph, e in r.get("phases_env", {}).items() if e}
        print(f"{r['size']:,}: code {r.get('git', '?')}, measured {r.get('date', '?')}, "
              f"{r.get('machine', {}).get('cores', '?')} cores" + (f", env per phase {env}" if env else ""))


def markdown_table(runs: list[dict]) -> str:
    header = [f"{r['size']:,} chunks" for r in runs]
    out = ["| figure | " + " | ".join(header) + " |", "|---|" + "---:|" * len(runs)]
    for label, cells in rows(runs):
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(runs: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    runs = [r for r in runs if _g(r, "query", "hybrid")]
    if not runs:
        return False
    fig, ax = plt.subplots(figsize=(6.8, 4.4), dpi=120)

    def series(paths, style, color, label, alpha=1.0):
        """First of `paths` present in each run: the paired figures when the baseline ran."""
        pts = []
        for r in runs:
            v = next((_g(r, *p) for p in paths if _g(r, *p)), None)
            if v:
                pts.append((r["build"]["chunks"], v))
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], style, color=color, alpha=alpha, label=label)

    series([("baseline", "ours_hybrid_paired", "p50_ms"), ("query", "hybrid", "p50_ms")], "o-", "C0",
           "kexie-rag hybrid p50, incl. query embedding")
    series([("baseline", "hybrid", "p50_ms")], "s-", "C3", "LangChain EnsembleRetriever p50, incl. query embedding")
    series([("baseline", "ours_hybrid_cached_query_vector", "p50_ms"),
            ("query", "hybrid_query_vector_given", "p50_ms")], "o--", "C0",
           "kexie-rag p50, query vector cached (retrieval only)", 0.7)
    series([("baseline", "hybrid_cached_query_vector", "p50_ms")], "s--", "C3",
           "LangChain p50, query vector cached (retrieval only)", 0.7)
    ax.axhline(30, color="grey", lw=0.8, ls=":", label="target 30 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("corpus size (chunks)")
    ax.set_ylabel("hybrid query latency, ms")
    day = runs[-1].get("date", "")[:10]
    ax.set_title(f"Hybrid retrieval latency vs corpus size ({day}, {runs[-1]['machine']['cores']} cores)\n"
                 "both systems timed in one process, alternating question by question", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def write_outputs(out: Path, extra_plot: Path | None = None) -> dict:
    runs = load_runs(out)
    summary = {"targets": TARGETS, "runs": runs}
    (out / "results.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    if plot(runs, out / "latency.png") and extra_plot:
        plot(runs, extra_plot)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    a = ap.parse_args(argv)
    summary = write_outputs(a.out, a.plot)
    if a.markdown:
        print(markdown_table(summary["runs"]))
    else:
        print_table(summary["runs"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
