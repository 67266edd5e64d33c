"""Early layers of e5-small as a cheaper first-stage encoder, untrained: is the mean of layer k's outputs a usable
vector? (Issue #26: "early layers only for a first stage that the full model upgrades later".)

    .venv/bin/python -m bench.early_layers --index index --sets dev,dev_heldout,blind_corpus

One pass of the port (`rag.e5.bert`) over the index's chunks (`Chunk.vector_text`, "passage: ") and each set's
questions ("query: "), pooling after layers 2, 3, 4, 6, 8 and 12 exactly as the full model pools after 12
(mean over every real token, L2); exact cosine ranking over all chunks; MRR@10 by the evaluation's own evidence
containment (`rag.evaluate.metrics`). The full model (layer 12) is the baseline in the same run. Layer k costs
k/12 of the full model's work per passage."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAYERS = (2, 3, 4, 6, 8, 12)


def pooled_by_layer(net, tok, f, texts: list[str], prefix: str, layers=LAYERS, batch: int = 16):
    """{k: (n, 384) L2-normalised means of layer k's outputs} for texts (first 510 tokens each)."""
    import numpy as np
    import torch

    from rag.e5 import model as e5model

    encs = [e.ids for e in tok.encode_batch([prefix + t for t in texts])]
    order = sorted(range(len(encs)), key=lambda i: len(encs[i]))
    out = {k: np.zeros((len(texts), f.hidden), np.float32) for k in layers}
    with torch.no_grad():
        for b in range(0, len(order), batch):
            ii = order[b:b + batch]
            ids, mask = e5model.batch([encs[i] for i in ii], f, f.max_positions)
            for k, h in enumerate(net.hidden_states(ids, mask), 1):
                if k in layers:
                    out[k][ii] = e5model.pool(h, mask).numpy()
    return out


def mrr_at_10(Q, P, items, chunks) -> float:
    """Mean MRR@10 of the exact cosine ranking of chunks (rows of P) for each item's question (rows of Q), by the
    evaluation's own evidence containment."""
    import numpy as np

    from rag.evaluate.metrics import covers, retrieval_metrics

    scores = Q @ P.T
    return float(np.mean([retrieval_metrics([{j for j, e in enumerate(it.evidence) if covers(chunks[c].text, e)}
                                             for c in np.argsort(-scores[qi])[:10]], len(it.evidence))["mrr"]
                          for qi, it in enumerate(items)]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, default=ROOT / "index", help="an index of corpus/ (kexie index)")
    ap.add_argument("--sets", default="dev,dev_heldout,blind_corpus", help="evals/<name>.jsonl over that corpus")
    a = ap.parse_args(argv)

    from rag.e5 import bert
    from rag.e5 import file as e5file
    from rag.e5.tokenizer import E5Tokenizer
    from rag.index import store
    from rag.ingest.qa_pairs import load_dataset

    chunks = store.read_chunks(a.index / store.Manifest.read(a.index).generation)
    f = e5file.read()
    tok, net = E5Tokenizer(f), bert.encoder(f)
    t = time.perf_counter()
    P = pooled_by_layer(net, tok, f, [c.vector_text for c in chunks], "passage: ")
    print(f"{len(chunks)} chunks, all layers in one pass: {time.perf_counter() - t:.0f} s")
    print("| set (questions) | " + " | ".join(f"layer {k}" for k in LAYERS) + " |")
    print("|---|" + "---:|" * len(LAYERS))
    for name in a.sets.split(","):
        items = load_dataset(ROOT / "evals" / f"{name}.jsonl")
        Q = pooled_by_layer(net, tok, f, [i.question for i in items], "query: ")
        cells = [f"{mrr_at_10(Q[k], P[k], items, chunks):.3f}" for k in LAYERS]
        print(f"| {name} ({len(items)}) | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
