"""Choose the offline answer's refusal threshold on the tuning sets, in the product's own documents: each
question is retrieved and read once as the product does (fused, reranked, read), then answered at every
threshold of a grid by the same `spans.pick` the answer uses (shape and place checks included). The
threshold kept is the highest at which at most `--max-false` of the answerable questions are refused;
the whole curve is written beside it.

    .venv/bin/python -m train.refusal            # writes rag/answer/refusal.json

Why not the reader's own threshold: that one is chosen on CMRC 2018 validation questions, where the
no-answer head separates well (AUC 0.96); on 科协 reports and laws its probabilities run lower, and at the
CMRC threshold a quarter of the answerable tuning questions were refused. Tuning data only (evals/dev*.jsonl
over corpus/, evals/extra*.jsonl over ../shared/corpus-extra/); the blind sets are never read. Deterministic:
no sampling, no training."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.answer import spans  # noqa: E402
from rag.answer.assistant import Assistant  # noqa: E402
from rag.answer.refusal import DEFAULT_PATH  # noqa: E402
from rag.e5 import file as e5file  # noqa: E402
from rag.index.indexer import index_corpus  # noqa: E402
from rag.ingest.qa_pairs import load_dataset  # noqa: E402
from rag.search.question import analyze  # noqa: E402
from rag.settings import load_settings  # noqa: E402

EVALS = ROOT / "evals"
SETS = [(("dev.jsonl", "dev_heldout.jsonl"), ROOT / "corpus", ROOT / "index"),
        (("extra.jsonl", "extra_heldout.jsonl"), ROOT.parent / "shared" / "corpus-extra", ROOT / "index-extra")]
GRID = [round(0.02 * i, 2) for i in range(1, 49)]


def answered(assistant: Assistant, question: str) -> list[float]:
    """For each threshold of GRID: 1.0 when the offline answer would answer, else 0.0."""
    snap = assistant.retriever.snapshot()
    q = analyze(question, snap.places, snap.tokenizer.is_known_place, snap.documents)
    hits = assistant.read(question, assistant.retriever.search(question, max(assistant.settings.top_k, 5), snap=snap))
    return [float(bool(spans.pick(hits, q, t, snap.places).chosen)) for t in GRID]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="在调参集上选择拒答阈值（写出 rag/answer/refusal.json）")
    ap.add_argument("--max-false", type=float, default=0.05, help="可回答问题被拒答的最高比例")
    ap.add_argument("--out", type=Path, default=DEFAULT_PATH)
    args = ap.parse_args(argv)
    rows = []  # (set, answerable, answered per threshold)
    for names, corpus, index in SETS:
        if not corpus.is_dir():
            print(f"跳过 {corpus}（不存在）")
            continue
        s = load_settings(env={}, corpus_dir=corpus, index_dir=index, answer_threshold=0.0)
        index_corpus(s)  # waits for every vector: the ranking the product serves
        assistant = Assistant(s)
        for name in names:
            for it in load_dataset(EVALS / name):
                rows.append((name, it.answerable, answered(assistant, it.question)))
            print(f"{name}: {sum(r[0] == name for r in rows)} 个问题")
    pos = [r for r in rows if r[1]]
    neg = [r for r in rows if not r[1]]
    curve = []
    for i, t in enumerate(GRID):
        curve.append({"threshold": t,
                      "answerable_refused": round(sum(1 - r[2][i] for r in pos) / len(pos), 4),
                      "unanswerable_refused": round(sum(1 - r[2][i] for r in neg) / len(neg), 4)})
    ok = [c for c in curve if c["answerable_refused"] <= args.max_false]
    chosen = max(ok, key=lambda c: c["threshold"]) if ok else curve[0]
    reader = assistant.retriever.reader
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    record = {
        "threshold": chosen["threshold"],
        "rule": f"highest threshold with at most {args.max_false:.0%} of the answerable tuning questions refused",
        "at_threshold": chosen,
        "reader_sha256": e5file.sha256(reader.path),
        "data": {n: sum(r[0] == n for r in rows) for names, _, _ in SETS for n in names},
        "counts": {"answerable": len(pos), "unanswerable": len(neg)},
        "date": date.today().isoformat(),
        "commit": commit,
        "command": "python -m train.refusal",
        "curve": curve,
    }
    args.out.write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"阈值 {chosen['threshold']}：可回答问题拒答 {chosen['answerable_refused']:.1%}，"
          f"不可回答问题拒答 {chosen['unanswerable_refused']:.1%}（{len(pos)} / {len(neg)} 题）；已写入 {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
