"""A few-layer student of e5-small for the passage side, distilled on this CPU: does it keep retrieval quality?
(Issue #26, item 2: "a student with fewer layers distilled from e5 on the corpus".)

    .venv/bin/python -m bench.student --layers 4 --minutes 25

The student keeps `--layers` of e5-small's 12 layers, evenly spaced and ending with the last (DistilBERT's
initialisation), and learns to put each passage where the full model puts it: loss 1 - cos(student, e5) on
passages that are not in corpus/ (CMRC 2018 *training* paragraphs and ../shared/corpus-extra's chunks), seeded.
Queries stay with the full model (they are short and embedded one at a time), so the student only has to match
e5's passage vectors, and the index it builds is searched with e5's queries.

Measured in the same run, on the chunks of corpus/ (chunked as `kexie index` chunks them) and the sets over it
(dev is a tuning split; dev_heldout was held out by the tuners; blind_corpus was written blind): vector-only MRR@10
with e5 passages (the baseline), the student before training and after; cosine to e5 on 200 held-out training
passages; passages/s of e5 and the student in the same float path (`rag.e5.bert`, batch 16, length-sorted).
Exact cosine ranking over all chunks, evidence by the evaluation's own containment (`rag.evaluate.metrics`)."""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"


def kept_layers(n: int, total: int = 12) -> list[int]:
    """n layer indices of total, evenly spaced, the first and the last included."""
    if not 1 <= n <= total:
        raise ValueError(f"layers must be 1..{total}: {n}")
    if n == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (n - 1)) for i in range(n)})


def pieces(text: str, size: int = 400) -> list[str]:
    """text cut after sentence ends into pieces of at most ~size characters (training passages)."""
    from rag.lang.sentences import SENTENCE

    out, cur = [], ""
    for s in SENTENCE.findall(text):
        if cur and len(cur) + len(s) > size:
            out.append(cur)
            cur = ""
        cur += s
    if cur.strip():
        out.append(cur)
    return [p for p in out if len(p) >= 40]


def corpus_chunks(folder: Path):
    from rag.ingest.pipeline import chunk_file
    from rag.settings import load_settings

    s = load_settings(isolate_parsing=False)
    return [c for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")
            for c in chunk_file(p, p.name, s).chunks]


def training_passages(n: int, seed: int) -> list[str]:
    cmrc = json.loads((SHARED / "bench" / "cmrc2018_train.json").read_text(encoding="utf-8"))["data"]
    texts = [p for d in cmrc for para in d["paragraphs"] for p in pieces(para["context"])]
    texts += [c.vector_text for c in corpus_chunks(SHARED / "corpus-extra")]
    random.Random(seed).shuffle(texts)
    return texts[:n]


def encode(tok, f, texts: list[str], prefix: str, max_tokens: int):
    return [e.ids[:max_tokens - 2] for e in tok.encode_batch([prefix + t for t in texts])]


def embed(net, f, ids: list[list[int]], batch: int = 16):
    """(n, 384) e5 vectors of token id lists, length-sorted batches, no gradient."""
    import torch

    from rag.e5 import model as e5model

    out = torch.zeros((len(ids), f.hidden))
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    with torch.no_grad():
        for b in range(0, len(order), batch):
            ii = order[b:b + batch]
            x, mask = e5model.batch([ids[i] for i in ii], f, f.max_positions)
            out[ii] = e5model.pool(net(x, mask).last_hidden_state, mask)
    return out


def student_of(teacher, keep: list[int]):
    s = copy.deepcopy(teacher)
    s.encoder.layer = type(s.encoder.layer)(s.encoder.layer[i] for i in keep)
    s.config.num_hidden_layers = len(keep)
    return s


def train(student, f, ids, targets, minutes: float, batch: int, lr: float, seed: int) -> dict:
    import torch

    from rag.e5 import model as e5model

    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    student.train()
    deadline, steps, seen, losses = time.monotonic() + minutes * 60, 0, 0, []
    while time.monotonic() < deadline:
        order = list(range(len(ids)))
        rng.shuffle(order)
        # batches of similar length (little padding): sort within windows of 8 batches, then shuffle the batches
        windows = [sorted(order[w:w + 8 * batch], key=lambda i: len(ids[i])) for w in range(0, len(order), 8 * batch)]
        batches = [win[b:b + batch] for win in windows for b in range(0, len(win), batch)]
        rng.shuffle(batches)
        for ii in batches:
            if time.monotonic() >= deadline:
                break
            x, mask = e5model.batch([ids[i] for i in ii], f, f.max_positions)
            v = e5model.pool(student(x, mask).last_hidden_state, mask)
            loss = (1 - (v * targets[ii]).sum(-1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps, seen = steps + 1, seen + len(ii)
            losses.append(loss.item())
    student.eval()
    return {"steps": steps, "passages": seen, "epochs": round(seen / len(ids), 2),
            "loss_first_50": round(sum(losses[:50]) / max(1, len(losses[:50])), 4),
            "loss_last_50": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4, help="layers the student keeps (of 12)")
    ap.add_argument("--train-passages", type=int, default=3000)
    ap.add_argument("--minutes", type=float, default=25, help="training time (on this CPU)")
    ap.add_argument("--max-tokens", type=int, default=256, help="training passages are cut to this many tokens")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", default="dev,dev_heldout,blind_corpus", help="evals/<name>.jsonl over corpus/")
    ap.add_argument("--save", type=Path, help="write the student's weights here (torch.save of its state dict)")
    a = ap.parse_args(argv)
    if not (SHARED / "bench" / "cmrc2018_train.json").exists():
        sys.exit(f"需要 {SHARED}/bench/cmrc2018_train.json（训练段落）")

    import torch

    from bench.early_layers import mrr_at_10
    from rag.e5 import bert
    from rag.e5 import file as e5file
    from rag.e5.tokenizer import E5Tokenizer
    from rag.ingest.qa_pairs import load_dataset

    torch.set_num_threads(2)
    f = e5file.read()
    tok, teacher = E5Tokenizer(f), bert.encoder(f)
    keep = kept_layers(a.layers, f.layers)
    print(f"student keeps layers {keep} of {f.layers}")

    texts = training_passages(a.train_passages + 200, a.seed)
    ids = encode(tok, f, texts, "passage: ", a.max_tokens)
    train_ids, val_ids = ids[200:], ids[:200]
    t = time.perf_counter()
    targets = embed(teacher, f, ids)
    print(f"e5 targets for {len(ids)} passages: {time.perf_counter() - t:.0f} s")

    chunks = corpus_chunks(ROOT / "corpus")
    c_ids = encode(tok, f, [c.vector_text for c in chunks], "passage: ", f.max_positions)
    sets = {name: load_dataset(ROOT / "evals" / f"{name}.jsonl") for name in a.sets.split(",")}
    queries = {name: embed(teacher, f, encode(tok, f, [i.question for i in items], "query: ", f.max_positions))
               for name, items in sets.items()}

    def measure(net, label: str) -> dict:
        t = time.perf_counter()
        P = embed(net, f, c_ids)
        rate = len(c_ids) / (time.perf_counter() - t)
        V = embed(net, f, val_ids) if net is not teacher else targets[:200]
        return {"encoder": label, "passages_s": round(rate, 2), "val_cos": round(float((V * targets[:200]).sum(-1).mean()), 4),
                **{name: round(mrr_at_10(queries[name].numpy(), P.numpy(), items, chunks), 4) for name, items in sets.items()}}

    rows = [measure(teacher, "e5 (12 layers)")]
    student = student_of(teacher, keep)
    rows.append(measure(student, f"student {len(keep)} layers, untrained"))
    log = train(student, f, train_ids, targets[200:], a.minutes, a.batch, a.lr, a.seed)
    print("training:", log)
    rows.append(measure(student, f"student {len(keep)} layers, {a.minutes:g} min"))
    print(f"\n{len(chunks)} chunks of corpus/; MRR@10 vector-only, e5 queries\n")
    print("| passages | passages/s | cos to e5 (200 held-out) | " + " | ".join(sets) + " |")
    print("|---|---:|---:|" + "---:|" * len(sets))
    for r in rows:
        print(f"| {r['encoder']} | {r['passages_s']} | {r['val_cos']} | " + " | ".join(f"{r[s]:.4f}" for s in sets) + " |")
    if a.save:
        torch.save({"layers": keep, "state_dict": student.state_dict(), "training": log, "rows": rows}, a.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
