"""`kexie eval DATASET [--configs …] [--out DIR]`: retrieval, answer and citation metrics, comparisons, report."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rag.answer.assistant import Assistant
from rag.index.indexer import index_corpus
from rag.models import Answer, RetrievalMode
from rag.search.retrieval import Retriever
from rag.settings import Settings

from .dataset import Item, check_evidence, load_dataset
from .metrics import (
    char_f1,
    contains_all,
    covers,
    percentile,
    relevance,
    retrieval_metrics,
    rouge_l,
)

# bm25 / vector: each retriever alone; fused: their RRF fusion (the hybrid mode without the reader);
# hybrid: the product's retrieval (fused, then reranked by the reading model when `rerank` is on).
RETRIEVAL_CONFIGS = (*RetrievalMode.choices(), "fused", "langchain")
_PLAIN = {"bm25": ("bm25", False), "vector": ("vector", False), "fused": ("hybrid", False)}
# The checkout this runner belongs to (its ../shared holds the CMRC files), else the working directory.
_REPO = Path(__file__).resolve().parent.parent.parent  # the checkout (rag/evaluate/ -> rag/ -> it)
CMRC_PATH = next((p for p in (_REPO.parent / "shared" / "bench" / "cmrc2018_trial.json",
                              Path.cwd().parent / "shared" / "bench" / "cmrc2018_trial.json") if p.is_file()),
                 _REPO.parent / "shared" / "bench" / "cmrc2018_trial.json")


@dataclass
class Run:
    """Per-question outcomes of one configuration."""

    name: str
    retrieval: list[dict] = field(default_factory=list)  # per answerable question: metrics
    failures: list[dict] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
def judge_hits(item: Item, texts: list[str], sources: list[str], gold_sources: bool) -> list[set[int]]:
    """Relevance of each hit: covering an evidence passage, or (CMRC) coming from the gold paragraph."""
    if gold_sources:
        return [{0} if s in item.source else set() for s in sources]
    return relevance(texts, item.evidence)


def run_retrieval(name: str, search, items: list[Item], gold_sources: bool, step=None) -> Run:
    run = Run(name)
    for it in items:
        if not it.answerable:
            continue
        if step:
            step(f"检索 {name}")
        t = time.perf_counter()
        texts, sources = search(it.question)
        run.latencies.append(time.perf_counter() - t)
        rel = judge_hits(it, texts, sources, gold_sources)
        m = retrieval_metrics(rel, 1 if gold_sources else len(it.evidence))
        m["type"] = it.type
        run.retrieval.append(m)
        if not m["hit@5"]:
            run.failures.append({"id": it.id, "question": it.question, "type": it.type,
                                 "retrieved": [f"{s}: {t[:80]}" for t, s in zip(texts[:3], sources[:3])]})
    return run


def passage(heading: str, text: str) -> str:
    """What a hit shows: its heading path (bylines, article numbers) and its text."""
    return f"{heading}\n{text}" if heading else text


def ours(retriever: Retriever, name: str):
    mode, rerank = _PLAIN.get(name, (name, None))

    def search(q: str):
        hits = retriever.search(q, 10, mode, rerank=rerank)
        return [passage(h.chunk.heading, h.chunk.text) for h in hits], [h.chunk.source for h in hits]

    return search


def langchain_baseline(retriever: Retriever):
    """The textbook EnsembleRetriever(BM25Retriever, Chroma) over the same chunks and embedding model,
    default weights and c; jieba instead of str.split (which cannot tokenise Chinese); k=10 each."""
    import jieba
    from langchain_chroma import Chroma
    from langchain_classic.retrievers import EnsembleRetriever
    from langchain_community.retrievers import BM25Retriever
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings

    emb = retriever.embedder

    class Wrapped(Embeddings):
        def embed_documents(self, texts):
            return emb.embed_passages(texts).tolist()

        def embed_query(self, text):
            return emb.embed_query(text).tolist()

    snap = retriever.snapshot()
    docs = [Document(page_content=passage(c.heading, c.text), metadata={"source": c.source}) for c in snap.chunks]
    bm25 = BM25Retriever.from_documents(docs, preprocess_func=jieba.lcut, k=10)
    store = Chroma(collection_name=f"lc-baseline-{int(time.time() * 1000)}", embedding_function=Wrapped())
    store.add_documents(docs)
    ens = EnsembleRetriever(retrievers=[bm25, store.as_retriever(search_kwargs={"k": 10})])

    def search(q: str):
        got = ens.invoke(q)[:10]
        return [d.page_content for d in got], [d.metadata["source"] for d in got]

    return search


def summarize_retrieval(run: Run) -> dict:
    n = len(run.retrieval) or 1
    keys = ["hit@1", "hit@3", "hit@5", "hit@10", "mrr", "ndcg@10"]
    out = {k: round(sum(m[k] for m in run.retrieval) / n, 4) for k in keys}
    out["latency_p50_ms"] = round(percentile(run.latencies, 0.5) * 1000, 2)
    out["latency_p95_ms"] = round(percentile(run.latencies, 0.95) * 1000, 2)
    out["questions"] = len(run.retrieval)
    return out


# ---------------------------------------------------------------------------------------------
def cited_ok(c, item: Item, gold_sources: bool = False) -> bool:
    """A citation is right when its passage holds an evidence passage; on CMRC, when it is from the gold paragraph."""
    if gold_sources:
        return c.source in item.source
    text = passage(c.heading, c.text)
    return any(covers(text, e) for e in item.evidence) or (bool(item.must_include) and contains_all(text, item.must_include[:1]))


def answer_record(item: Item, a: Answer) -> dict:
    """The per-question line of results.jsonl."""
    return {
        "id": item.id,
        "question": item.question,
        "retrieved": [h.to_json() for h in a.retrieved],
        "answer": a.answer,
        "refused": a.refused,
        "citations": [c.to_json() for c in a.citations],
    }


def answer_metrics(items: list[Item], answers: list[Answer], gold_sources: bool = False) -> tuple[dict, dict]:
    acc, f1, rl, cprec, crec, false_ref, ref_ok, lat = [], [], [], [], [], [], [], {}
    by_type: dict[str, dict[str, list[float]]] = {}
    for it, a in zip(items, answers):
        for stage, sec in a.timings.items():
            lat.setdefault(stage, []).append(sec)
        t = by_type.setdefault(it.type or "untyped", {"accuracy": [], "refusal_ok": []})
        if not it.answerable:
            ref_ok.append(float(a.refused))
            t["refusal_ok"].append(float(a.refused))
            continue
        false_ref.append(float(a.refused))
        ok = (not a.refused) and contains_all(a.answer, it.must_include) if it.must_include else not a.refused
        acc.append(float(ok))
        t["accuracy"].append(float(ok))
        f1.append(char_f1(a.answer if not a.refused else "", it.answer))
        rl.append(rouge_l(a.answer if not a.refused else "", it.answer))
        if not a.refused and a.citations:
            cprec.append(sum(cited_ok(c, it, gold_sources) for c in a.citations) / len(a.citations))
            covered = {j for c in a.citations for j, e in enumerate(it.evidence) if covers(passage(c.heading, c.text), e)}
            crec.append(len(covered) / max(len(it.evidence), 1))
        elif not a.refused:
            cprec.append(0.0)
            crec.append(0.0)
    mean = lambda v: round(sum(v) / len(v), 4) if v else None  # noqa: E731
    total = [sum(a.timings.values()) for a in answers]
    metrics = {
        "answer_accuracy": mean(acc),
        "char_f1": mean(f1),
        "rouge_l": mean(rl),
        "citation_precision": mean(cprec),
        "citation_recall": mean(crec),
        "refusal_accuracy": mean(ref_ok),
        "false_refusal_rate": mean(false_ref),
        "latency_ms": {
            stage: {"p50": round(percentile(v, 0.5) * 1000, 2), "p95": round(percentile(v, 0.95) * 1000, 2)}
            for stage, v in {**lat, "total": total}.items()
        },
    }
    types = {k: {"accuracy": mean(v["accuracy"]), "refusal_accuracy": mean(v["refusal_ok"]),
                 "n": len(v["accuracy"]) + len(v["refusal_ok"])} for k, v in by_type.items()}
    return metrics, types


# ---------------------------------------------------------------------------------------------
def cmrc_items(path: Path, corpus: Path, limit: int | None) -> list[Item]:
    """Write the CMRC trial paragraphs as documents; questions' gold source is their paragraph's file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    corpus.mkdir(parents=True, exist_ok=True)
    items: list[Item] = []
    n = 0
    for art in data["data"]:
        for para in art["paragraphs"]:
            if limit and len(items) >= limit:
                return items[:limit]  # a smoke run indexes only the paragraphs its questions need
            name = f"cmrc_{n:03d}.txt"
            (corpus / name).write_text(para["context"], encoding="utf-8")
            n += 1
            for qa in para["qas"]:
                ans = qa["answers"][0]["text"] if qa.get("answers") else ""
                items.append(Item(qa["id"], qa["question"], ans, [ans] if ans else [], [name], [ans] if ans else [], "cmrc"))
    return items[:limit] if limit else items


def evaluate(settings: Settings, items: list[Item], configs: list[str], gold_sources: bool = False,
             answers: bool = True, backend: str | None = None, log=print, progress=None) -> dict:
    """Index (incrementally) and evaluate; returns the metrics document and per-question records.

    progress(done, total, stage) is called before each question of each stage (0 first, while indexing)."""
    total = len(configs) * sum(i.answerable for i in items) + (len(items) if answers else 0)
    done = 0

    def step(stage: str) -> None:
        nonlocal done
        if progress:
            progress(done, total, stage)
        done += 1

    if progress:
        progress(0, total, "索引与加载模型")
    rep = index_corpus(settings)
    log(f"索引：{rep.chunks} 个段落（新嵌入 {rep.embedded}）")
    retriever = Retriever(settings)
    runs: dict[str, Run] = {}
    for name in configs:
        if name == "langchain":
            if progress:  # building it embeds every chunk again: say so, not the last config's stage
                progress(done, total, "构建 LangChain 基线（重新嵌入全部段落）")
            search = langchain_baseline(retriever)
        elif name in RETRIEVAL_CONFIGS:
            search = ours(retriever, name)
        else:
            raise ValueError(f"未知的评测配置：{name}（可选 {', '.join(RETRIEVAL_CONFIGS)}）")
        runs[name] = run_retrieval(name, search, items, gold_sources, step)
        log(f"{name:10s} " + json.dumps(summarize_retrieval(runs[name]), ensure_ascii=False))
    doc: dict = {"questions": len(items), "answerable": sum(i.answerable for i in items),
                 "comparison": {k: summarize_retrieval(v) for k, v in runs.items()},
                 "failures": {k: v.failures for k, v in runs.items()},
                 "per_type_retrieval": {k: _by_type(v) for k, v in runs.items()}}
    records = []
    if answers:
        assistant = Assistant(settings, retriever)
        outs = []
        for it in items:
            step("回答")
            outs.append(assistant.ask(it.question, backend=backend))
        records = [answer_record(i, a) for i, a in zip(items, outs)]
        am, types = answer_metrics(items, outs, gold_sources)
        doc["answer"] = am
        doc["per_type"] = types
        doc["answer_failures"] = [
            {"id": i.id, "question": i.question, "type": i.type, "must_include": i.must_include,
             "answer": a.answer[:160], "refused": a.refused}
            for i, a in zip(items, outs)
            if (i.answerable and (a.refused or not contains_all(a.answer, i.must_include))) or (not i.answerable and not a.refused)
        ]
    primary = settings.retrieval_mode if settings.retrieval_mode in runs else next(iter(runs), None)
    doc["config"] = primary
    if primary:
        # The primary configuration's figures at the top level ("questions" stays the dataset's count).
        doc.update({k: v for k, v in doc["comparison"][primary].items() if k != "questions"})
    if "answer" in doc:
        doc.update({k: v for k, v in doc["answer"].items()})
    if progress:
        progress(total, total, "完成")
    return {"metrics": doc, "records": records}


class StderrProgress:
    """`进度 DONE/TOTAL STAGE` lines on stderr (the web app's eval tab reads them): at each new stage,
    every `every` questions and at the end; stdout and the --out files stay as they were."""

    PREFIX = "进度 "

    def __init__(self, every: int = 10, stream=None):
        self.every, self.stream, self.stage = every, stream, None

    def __call__(self, done: int, total: int, stage: str) -> None:
        if stage != self.stage or done % self.every == 0 or done == total:
            self.stage = stage
            print(f"{self.PREFIX}{done}/{total} {stage}", file=self.stream or sys.stderr, flush=True)


def _by_type(run: Run) -> dict:
    out: dict[str, dict] = {}
    for m in run.retrieval:
        t = out.setdefault(m["type"] or "untyped", {"n": 0, "hit@5": 0.0, "mrr": 0.0})
        t["n"] += 1
        t["hit@5"] += m["hit@5"]
        t["mrr"] += m["mrr"]
    return {k: {"n": v["n"], "hit@5": round(v["hit@5"] / v["n"], 4), "mrr": round(v["mrr"] / v["n"], 4)} for k, v in out.items()}


def write_outputs(out: Path, result: dict, title: str) -> None:
    from .report import write_report

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.jsonl", "w", encoding="utf-8") as f:
        for r in result["records"]:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (out / "metrics.json").write_text(json.dumps(result["metrics"], ensure_ascii=False, indent=1), encoding="utf-8")
    write_report(out, result["metrics"], title)


def main(settings: Settings, args) -> int:
    configs = [c.strip() for c in (args.configs or settings.retrieval_mode).split(",") if c.strip()]
    if args.dataset == "cmrc":
        if not CMRC_PATH.is_file():
            print(f"跳过：未找到 CMRC 2018 试验集（{CMRC_PATH}）")
            return 0
        work = Path(tempfile.mkdtemp(prefix="kexie-cmrc-"))
        items = cmrc_items(CMRC_PATH, work / "corpus", args.limit)
        cached = Path.cwd() / "index" / "cmrc" if args.index is None else settings.index_dir
        s = settings.replace(corpus_dir=work / "corpus", index_dir=cached)
        try:
            result = evaluate(s, items, configs, gold_sources=True, backend=args.backend, progress=StderrProgress())
        finally:
            shutil.rmtree(work, ignore_errors=True)
        title = "CMRC 2018 试验集"
    else:
        path = Path(args.dataset)
        items = load_dataset(path)
        review = [i for i in items if i.review]
        if review:  # 👎 without a correct answer: there is no gold to score against
            print(f"跳过 {len(review)} 个待审核问题（review：反馈中没有给出正确答案）", file=sys.stderr)
            items = [i for i in items if not i.review]
        if not items:
            print("错误：数据集中没有可评测的问题", file=sys.stderr)
            return 2
        if args.limit:
            items = items[: args.limit]
        texts = {}
        for p in settings.corpus_dir.rglob("*"):
            if p.is_file() and p.suffix.lower() in (".txt", ".md"):
                texts[p.relative_to(settings.corpus_dir).as_posix()] = p.read_text(encoding="utf-8", errors="replace")
        problems = check_evidence(items, texts) if texts else []
        for pr in problems:
            print(f"警告：{pr}")
        result = evaluate(settings, items, configs, backend=args.backend, progress=StderrProgress())
        result["metrics"]["evidence_problems"] = problems
        title = path.name
    m = result["metrics"]
    print(json.dumps({k: m[k] for k in ("config", "hit@1", "hit@5", "mrr", "ndcg@10", "answer_accuracy",
                                        "citation_precision", "refusal_accuracy", "false_refusal_rate") if k in m},
                     ensure_ascii=False))
    if args.out:
        write_outputs(args.out, result, title)
        print(f"结果已写入 {args.out}（results.jsonl、metrics.json、report.md、report.html）")
    return 0
