"""The local GGUF backend with a real model on a sample of a dev set: what reaches the user.

    .venv/bin/python bench/local_llm.py --gguf /path/model.gguf [--dataset evals/dev.jsonl] [--every 6]
        [--corpus ../shared/corpus-extra --index index-extra]

Prints one table: answer accuracy and refusals as `kexie eval` defines them, plus what the hardening
guards against: empty answers, placeholder markers ("[编号]"), sentences dropped for invented figures,
fallbacks to the offline answer (with their reasons), questions stopped by the answerability gate
before the model, and latency. Nothing here is a test: the model file is the caller's.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.evaluate.dataset import load_dataset  # noqa: E402
from rag.evaluate.runner import answer_metrics  # noqa: E402
from rag.answer.assistant import Assistant  # noqa: E402
from rag.answer.verify import has_content  # noqa: E402
from rag.index.indexer import index_corpus  # noqa: E402
from rag.settings import load_settings  # noqa: E402

_PLACEHOLDER = re.compile(r"\[(?:编号|资料|出处|来源|引用|序号|n)\]")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--dataset", default=str(ROOT / "evals" / "dev.jsonl"))
    ap.add_argument("--every", type=int, default=6, help="every N-th question (a fixed, spread sample)")
    ap.add_argument("--context", type=int, default=8192)
    ap.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    ap.add_argument("--index", type=Path, default=ROOT / "index")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "local_llm.jsonl")
    args = ap.parse_args()

    s = load_settings(env={}, corpus_dir=args.corpus, index_dir=args.index, answer_backend="llamacpp",
                      gguf_path=args.gguf, gguf_context=args.context, llm_timeout=600)
    index_corpus(s)
    items = load_dataset(Path(args.dataset))[:: max(args.every, 1)]
    a = Assistant(s)
    answers, rows = [], []
    t_all = time.perf_counter()
    for n, it in enumerate(items, 1):
        t = time.perf_counter()
        ans = a.ask(it.question)
        sec = time.perf_counter() - t
        answers.append(ans)
        reached = "generate" in ans.timings  # the answerability gate let it through to the model
        rows.append({"id": it.id, "question": it.question, "answerable": it.answerable, "answer": ans.answer,
                     "refused": ans.refused, "backend": ans.backend, "notice": ans.notice, "reached_model": reached,
                     "seconds": round(sec, 2)})
        print(f"[{n}/{len(items)}] {sec:5.1f}s {ans.backend:10s} {'拒答' if ans.refused else '回答'} {it.question[:30]}",
              file=sys.stderr, flush=True)
    a.close()
    am, _ = answer_metrics(items, answers)
    answerable = [r for r in rows if r["answerable"]]
    reasons = Counter(r["notice"].split("（")[0] for r in rows if r["notice"])
    table = {
        "questions (answerable / unanswerable)": f"{len(answerable)} / {len(rows) - len(answerable)}",
        "answer accuracy": am.get("answer_accuracy"),
        "refusal on unanswerable": am.get("refusal_accuracy"),
        "answerable refused": am.get("false_refusal_rate"),
        "citation precision": am.get("citation_precision"),
        "answered by the model / fell back / stopped by the gate before the model": (
            f"{sum(r['backend'] == 'llamacpp' and r['reached_model'] for r in rows)} / "
            f"{sum(r['backend'] == 'extractive' and r['reached_model'] for r in rows)} / "
            f"{sum(not r['reached_model'] for r in rows)}"),
        "empty answers shown": sum(not has_content(r["answer"]) for r in rows),
        "placeholder markers shown": sum(bool(_PLACEHOLDER.search(r["answer"])) for r in rows),
        "answers with sentences dropped for invented figures": sum("资料中没有的数字" in r["notice"] for r in rows),
        "fallback reasons": dict(reasons),
        "seconds per question p50 / max": (f"{sorted(r['seconds'] for r in rows)[len(rows) // 2]:.1f} / "
                                           f"{max(r['seconds'] for r in rows):.1f}"),
        "total minutes": round((time.perf_counter() - t_all) / 60, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"\n| {Path(args.gguf).name} on {Path(args.dataset).name}, every {args.every}th question | value |\n|---|---|")
    for k, v in table.items():
        print(f"| {k} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
