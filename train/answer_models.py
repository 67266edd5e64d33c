"""Train the sentence ranker and the answerability model: `make train` (= python -m train.answer_models).

Data: the CMRC 2018 training set (../shared/bench/cmrc2018_train.json; its articles split 80/20 into
train / validation with a fixed seed) and the tuning splits of the project's own sets: evals/dev.jsonl
over corpus/ and evals/extra.jsonl over ../shared/corpus-extra/ (1 in 5 questions, by id, validates;
each weighs IN_DOMAIN_WEIGHT Wikipedia questions). Held-out sets (evals/dev_heldout.jsonl,
evals/extra_heldout.jsonl, the CMRC trial set) are never read here.

Each question is answered as the product answers it, with the product's own chunks, tokenizer and code:
the ranker learns from every CMRC question over BM25 (all 2,403 paragraphs), the answerability model from
candidate sets retrieved in hybrid mode (BM25 + the bundled encoder, fused by RRF), since the query-passage
cosine is one of its features: the in-domain sets and DENSE_PARAGRAPHS CMRC paragraphs are embedded
(about 1,000 passages, ~6 minutes on this CPU once; vectors are cached in train/.cache/). The top 5
passages are cut into `candidates` and `features` are computed by the product's code. A candidate is
positive when it holds the gold answer span (CMRC) or covers an evidence passage (dev sets).
Answerability negatives are realistic: the same question with its gold paragraph removed from the index
(a near miss; IDF computed without it too), CMRC questions with their year changed to one the paragraph
does not mention, dev questions about another of the corpus's places (a constraint no passage
satisfies), and the sets' own unanswerable questions. Logistic regression and gradient-boosted trees are
both fitted; each model's family is picked on the validation split. The threshold is the highest one
that refuses at most FALSE_REFUSAL_TARGET of the answerable validation questions, on CMRC and on the
in-domain questions alike. Writes rag/answer/answer_models.json with the data, commit, seed and figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evals.dataset import compact, load_dataset  # noqa: E402
from evals.metrics import covers  # noqa: E402
from rag.answer.candidates import candidates  # noqa: E402
from rag.answer.features import (  # noqa: E402
    ANSWERABILITY_FEATURES,
    RANKER_FEATURES,
    QuestionContext,
    answerability_features,
    ranker_matrix,
)
from rag.answer.ranker import DEFAULT_PATH, Linear, Trees  # noqa: E402
from rag.answer.sentences import idf_weights  # noqa: E402
from rag.index.bm25 import BM25Index  # noqa: E402
from rag.index.embeddings import load_embedder  # noqa: E402
from rag.index.indexer import chunk_file  # noqa: E402
from rag.index.tokenizer import Tokenizer, quoted_terms  # noqa: E402
from rag.ingest.places import gazetteer  # noqa: E402
from rag.models import Chunk, Hit, RetrievalMode  # noqa: E402
from rag.search import structure  # noqa: E402
from rag.search.question import analyze  # noqa: E402
from rag.search.retrieval import fused_hits  # noqa: E402
from rag.settings import Settings  # noqa: E402

CMRC_TRAIN = ROOT.parent / "shared" / "bench" / "cmrc2018_train.json"
DEV = ROOT / "evals" / "dev.jsonl"
EXTRA, EXTRA_CORPUS = ROOT / "evals" / "extra.jsonl", ROOT.parent / "shared" / "corpus-extra"
TOP_K = 5
DENSE_PARAGRAPHS = 400  # CMRC paragraphs embedded for hybrid retrieval (the bundled encoder: ~3 passages/s on CPU)
IN_DOMAIN_WEIGHT = 1.0  # weight of a question over 科协 documents (dev, extra) against a Wikipedia one: 5 fitted
# the five reports more closely and did no better on the in-domain validation split
TREES, LEAVES = 100, 15  # gradient boosting: small enough to ship as JSON and score 60 candidates in a few ms
FALSE_REFUSAL_TARGET = 0.05


class Vectors:
    """The product's embedder with an on-disk cache (embedding is the slow part of training on a CPU)."""

    def __init__(self, cache_dir: Path, log):
        settings = Settings()
        self.settings, self.log = settings, log
        self.path = cache_dir / f"vectors-{settings.embedding_model}.pkl"
        self.cache: dict[str, np.ndarray] = pickle.loads(self.path.read_bytes()) if self.path.is_file() else {}
        self._embedder = None

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = load_embedder(self.settings.embedding_model, self.settings.embedding_batch_size)
        return self._embedder

    def _key(self, kind: str, text: str) -> str:
        return hashlib.sha1(f"{kind}\0{text}".encode("utf-8")).hexdigest()

    def passages(self, texts: list[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if self._key("p", t) not in self.cache]
        for i in range(0, len(todo), 256):
            batch = todo[i : i + 256]
            for t, v in zip(batch, self.embedder.embed_passages(batch)):
                self.cache[self._key("p", t)] = np.asarray(v, dtype=np.float32)
            self.log(f"  embedded {min(i + 256, len(todo))}/{len(todo)} passages")
            self.save()
        return np.vstack([self.cache[self._key("p", t)] for t in texts])

    def query(self, text: str) -> np.ndarray:
        k = self._key("q", text)
        if k not in self.cache:
            self.cache[k] = np.asarray(self.embedder.embed_query(text), dtype=np.float32)
        return self.cache[k]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(self.cache))
        tmp.replace(self.path)


@dataclass
class Corpus:
    """The product's chunks of some documents, searched as the product searches them: BM25, and with
    `vectors` hybrid (BM25 + dense, fused by RRF with the default settings)."""

    chunks: list[Chunk]
    tokenizer: Tokenizer
    bm25: BM25Index
    places: frozenset[str]
    vocab: dict[str, list[set[str]]]  # per source: each chunk's token set
    documents: frozenset[str] = frozenset()
    matrix: np.ndarray | None = None  # chunk vectors
    vectors: Vectors | None = None
    docs: dict = field(default_factory=dict)  # source -> structure.DocInfo (versions, names), as the product has

    @classmethod
    def build(cls, folder: Path, vectors: Vectors | None = None) -> "Corpus":
        settings = Settings()
        chunks: list[Chunk] = []
        metas = {}
        for p in sorted(folder.rglob("*")):
            if p.is_file() and p.suffix in (".txt", ".md"):
                got = chunk_file(p, p.relative_to(folder).as_posix(), settings)
                chunks += got.chunks
                metas[p.relative_to(folder).as_posix()] = got.meta
        tok = Tokenizer(quoted_terms(c.text for c in chunks))
        tokens = [tok.tokens(c.index_text) for c in chunks]
        vocab: dict[str, list[set[str]]] = {}
        for c, t in zip(chunks, tokens):
            vocab.setdefault(c.source, []).append(set(t))
        matrix = vectors.passages([c.vector_text for c in chunks]) if vectors else None
        docs = structure.documents(metas, chunks)
        return cls(chunks, tok, BM25Index.build(tokens), frozenset(gazetteer((c.index_text for c in chunks), tok)), vocab,
                   frozenset().union(*(d.names for d in docs.values())), matrix, vectors, docs)

    def hits(self, question: str, exclude: set[str] = frozenset(), vector_of: str | None = None) -> list[Hit]:
        """Top passages, the gold ones `exclude`d, fused as the product fuses them. With vectors, hybrid;
        `vector_of`: the question whose vector to use (a question with a swapped year keeps the original's,
        as the words barely differ)."""
        s = Settings()
        keep = lambda i: self.chunks[i].source not in exclude  # noqa: E731
        q = analyze(question, documents=self.documents)
        words = structure.content_query(q, self.docs)  # as the product does: BM25 on the content words
        bm = [(i, sc) for i, sc in self.bm25.search(self.tokenizer.tokens(words), s.candidates + 20) if keep(i)]
        adjust = lambda fused: structure.rerank(fused, self.chunks, q, self.docs)  # noqa: E731
        if self.matrix is None:
            hits = fused_hits(self.chunks, bm[: s.candidates], [], s, TOP_K, RetrievalMode.BM25, adjust)
            return structure.annotate(hits, self.docs)
        sims = self.matrix @ self.vectors.query(vector_of or question)
        top = np.argsort(-sims, kind="stable")[: s.candidates + 20]
        vec = [(int(i), float(sims[i])) for i in top if keep(int(i))]
        hits = fused_hits(self.chunks, bm[: s.candidates], vec[: s.candidates], s, TOP_K, RetrievalMode.HYBRID, adjust)
        return structure.annotate(hits, self.docs)

    def terms(self, question: str, exclude: set[str] = frozenset()) -> tuple[dict[str, float], frozenset[str]]:
        """IDF weights and unknown tokens as an index without the `exclude`d documents would have them."""
        gone = [s for src in exclude for s in self.vocab.get(src, ())]

        def df(t: str) -> int:
            return self.bm25.doc_freq(t) - sum(t in s for s in gone)

        w = idf_weights(self.tokenizer.tokens(question), df, len(self.chunks) - len(gone))
        return w, frozenset(t for t in w if df(t) <= 0)


@dataclass
class Example:
    """One question answered over one candidate set."""

    split: str  # train | val
    origin: str  # cmrc | dev
    kind: str  # full | near_miss | constraint
    question: str
    ctx: QuestionContext
    cands: list
    X: np.ndarray
    y: np.ndarray  # per candidate: holds the answer
    answerable: bool = False
    hybrid: bool = False  # retrieved as the product retrieves (BM25 + dense): answerability trains on these


def make_example(corpus: Corpus, question: str, label, split: str, origin: str, kind: str,
                 exclude: set[str] = frozenset(), vector_of: str | None = None) -> Example:
    q = analyze(question, corpus.places, corpus.tokenizer.is_known_place, corpus.documents)
    hits = corpus.hits(question, exclude, vector_of)
    w, unknown = corpus.terms(question, exclude)
    ctx = QuestionContext(q, w, corpus.places, unknown)
    cands = candidates(hits)
    X = ranker_matrix(ctx, cands)
    y = np.array([bool(label(c)) for c in cands], dtype=bool) if kind == "full" else np.zeros(len(cands), bool)
    return Example(split, origin, kind, question, ctx, cands, X, y, bool(y.any()), corpus.matrix is not None)


_YEAR = re.compile(r"(?<!\d)((?:19|20)\d{2})(?=年)")


def cmrc_examples(path: Path, seed: int, limit: int | None, vectors: Vectors, log,
                  dense_paragraphs: int = DENSE_PARAGRAPHS) -> list[Example]:
    """Every question over a BM25 index of all paragraphs (for the ranker), and the questions of
    DENSE_PARAGRAPHS of them over a hybrid index of those paragraphs (for the answerability model)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    rng = random.Random(seed)
    arts = list(data["data"])
    rng.shuffle(arts)
    n_val = len(arts) // 5
    work = Path(tempfile.mkdtemp(prefix="kexie-train-"))
    paras = []  # (file name, context, qas, split)
    for a_i, art in enumerate(arts):
        for p in art["paragraphs"]:
            name = f"cmrc_{len(paras):05d}.txt"
            paras.append((name, p["context"], p["qas"], "val" if a_i < n_val else "train"))
    dense = set(rng.sample(range(len(paras)), min(dense_paragraphs, len(paras))))
    for sub, picked in (("all", range(len(paras))), ("dense", sorted(dense))):
        (work / sub).mkdir()
        for i in picked:
            (work / sub / paras[i][0]).write_text(paras[i][1], encoding="utf-8")
    t = time.perf_counter()
    corpus = Corpus.build(work / "all")
    log(f"CMRC train: {len(paras)} paragraphs, {len(corpus.chunks)} chunks, BM25 in {time.perf_counter() - t:.0f} s")
    hybrid = Corpus.build(work / "dense", vectors)
    log(f"  hybrid subset: {len(dense)} paragraphs, {len(hybrid.chunks)} chunks")
    out: list[Example] = []
    todo = [(i, qa) for i, (_, _, qas, _) in enumerate(paras) for qa in qas if qa.get("answers")]
    rng.shuffle(todo)
    if limit:
        todo = todo[:limit]
    for n, (i, qa) in enumerate(todo, 1):
        name, context, _, split = paras[i]
        ans = compact(qa["answers"][0]["text"])
        if not ans:
            continue
        label = lambda c, name=name, ans=ans: c.hit.chunk.source == name and ans in compact(c.text)  # noqa: E731
        q = qa["question"]
        out.append(make_example(corpus, q, label, split, "cmrc", "full"))
        if i in dense:
            out.append(make_example(hybrid, q, label, split, "cmrc", "full"))
            out.append(make_example(hybrid, q, label, split, "cmrc", "near_miss", {name}))
            years = _YEAR.findall(q)
            if years:
                old = years[0]
                new = next((str(int(old) + d) for d in rng.sample([-9, -7, -5, -3, 3, 5, 7, 9], 8)
                            if str(int(old) + d) not in context), None)
                if new:
                    out.append(make_example(hybrid, q.replace(old, new, 1), label, split, "cmrc", "constraint",
                                            vector_of=q))
        if n % 2000 == 0:
            log(f"  {n}/{len(todo)} questions")
    vectors.save()
    return out


def dev_examples(path: Path, corpus_dir: Path, origin: str, seed: int, vectors: Vectors, log) -> list[Example]:
    corpus = Corpus.build(corpus_dir, vectors)
    rng = random.Random(seed)
    out = []
    for it in load_dataset(path):
        # Dev questions are all tuning data; 1 in 5 by id validates (never the held-out file).
        split = "val" if int(hashlib.sha1(it.id.encode()).hexdigest(), 16) % 5 == 0 else "train"
        if not it.answerable:
            out.append(make_example(corpus, it.question, lambda c: False, split, origin, "near_miss"))
            continue
        ev = it.evidence

        def label(c, ev=ev):
            t = compact(c.text)
            return len(t) >= 6 and any(covers(c.text, e) or t in compact(e) for e in ev)

        out.append(make_example(corpus, it.question, label, split, origin, "full"))
        out.append(make_example(corpus, it.question, label, split, origin, "near_miss", set(it.source)))
        # The same question about another of the corpus's places: a figure of 青岛 does not answer for 济宁.
        places = analyze(it.question, corpus.places).places
        others = sorted(corpus.places - places)
        if len(places) == 1 and others and it.type != "multi_doc":
            swapped = it.question.replace(next(iter(places)), rng.choice(others), 1)
            out.append(make_example(corpus, swapped, label, split, origin, "constraint"))
    vectors.save()
    log(f"{path.name}: {len(out)} examples over {len(corpus.chunks)} chunks of {corpus_dir}")
    return out


# ---------------------------------------------------------------------------------------------
def fit(X: np.ndarray, y: np.ndarray, seed: int, C: float = 1.0, weight: np.ndarray | None = None,
        features: tuple[str, ...] = ()) -> Linear:
    from sklearn.linear_model import LogisticRegression

    mean, scale = X.mean(0), X.std(0)
    scale[scale < 1e-6] = 1.0
    m = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    m.fit((X - mean) / scale, y, sample_weight=weight)
    return Linear(features, mean, scale, m.coef_[0].astype(np.float64), float(m.intercept_[0]))


_n = len(RANKER_FEATURES)
COVERAGE_RULE = Linear(RANKER_FEATURES, np.zeros(_n), np.ones(_n),
                       np.array([{"cov": 0.8, "cov_ctx": 0.2}.get(f, 0.0) for f in RANKER_FEATURES]), 0.0)


def fit_trees(X: np.ndarray, y: np.ndarray, seed: int, weight: np.ndarray | None = None,
              features: tuple[str, ...] = ()) -> tuple[Trees, dict]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    g = HistGradientBoostingClassifier(max_iter=TREES, max_leaf_nodes=LEAVES, learning_rate=0.1, random_state=seed,
                                       early_stopping=False)
    g.fit(X, y, sample_weight=weight)
    trees = [p[0].nodes for p in g._predictors]
    d = {"type": "trees", "features": list(features), "baseline": float(np.ravel(g._baseline_prediction)[0]),
         "depth": int(max(n["depth"].max() for n in trees)),
         "trees": [{"feature": n["feature_idx"].tolist(), "threshold": n["num_threshold"].round(7).tolist(),
                    "left": n["left"].tolist(), "right": n["right"].tolist(), "value": n["value"].round(7).tolist(),
                    "leaf": n["is_leaf"].astype(bool).tolist()} for n in trees]}
    return Trees.from_json(d, tuple(features), Path("(trained)")), d


def linear_json(m: Linear) -> dict:
    return {"type": "logistic", "features": list(m.features), "mean": m.mean.round(6).tolist(),
            "scale": m.scale.round(6).tolist(), "coef": m.coef.round(6).tolist(), "intercept": round(m.intercept, 6)}


def top1(model: Linear, exs: list[Example]) -> float:
    """Share of questions whose best candidate holds the answer (among questions where one does)."""
    ok = [bool(e.y[int(np.argmax(model.logits(e.X)))]) for e in exs if e.answerable]
    return sum(ok) / max(len(ok), 1)


def curve(p: np.ndarray, y: np.ndarray) -> list[dict]:
    out = []
    for t in np.round(np.arange(0.05, 0.96, 0.05), 2):
        refused = p < t
        out.append({"threshold": float(t),
                    "false_refusal": round(float(refused[y].mean()), 4) if y.any() else None,
                    "unanswerable_refused": round(float(refused[~y].mean()), 4) if (~y).any() else None})
    return out


def pick_threshold(p: np.ndarray, y: np.ndarray, target: float) -> float:
    """The highest threshold refusing at most `target` of the answerable questions."""
    best = 0.0
    for t in np.round(np.arange(0.01, 0.99, 0.01), 2):
        if (p[y] < t).mean() <= target:
            best = float(t)
    return best


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "rag", "train"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return sha + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="训练句子排序模型与可回答性模型")
    ap.add_argument("--cmrc", type=Path, default=CMRC_TRAIN)
    ap.add_argument("--dev", type=Path, default=DEV)
    ap.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    ap.add_argument("--extra", type=Path, default=EXTRA)
    ap.add_argument("--extra-corpus", type=Path, default=EXTRA_CORPUS)
    ap.add_argument("--out", type=Path, default=DEFAULT_PATH)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--limit", type=int, default=None, help="只用前 N 个 CMRC 问题（测试用）")
    ap.add_argument("--cache", type=Path, default=None, help="样本缓存文件（调试用：特征代码改动后须删除）")
    ap.add_argument("--dense-paragraphs", type=int, default=DENSE_PARAGRAPHS, help="混合检索（需嵌入）的 CMRC 段落数")
    ap.add_argument("--in-domain-weight", type=float, default=IN_DOMAIN_WEIGHT)
    ap.add_argument("--family", choices=("auto", "logistic", "trees"), default="auto",
                    help="模型族：auto = 按验证集成绩选择")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "train" / ".cache",
                    help="向量缓存目录（嵌入是训练中最慢的一步；缓存与模型名绑定）")
    args = ap.parse_args(argv)
    log = lambda m: print(m, flush=True)  # noqa: E731
    if not args.cmrc.is_file():
        print(f"未找到 CMRC 2018 训练集：{args.cmrc}", file=sys.stderr)
        return 2
    np.random.seed(args.seed)
    t0 = time.perf_counter()
    if args.cache and args.cache.is_file():
        exs = pickle.loads(args.cache.read_bytes())
    else:
        vectors = Vectors(args.cache_dir, log)
        exs = (cmrc_examples(args.cmrc, args.seed, args.limit, vectors, log, args.dense_paragraphs)
               + dev_examples(args.dev, args.corpus, "dev", args.seed, vectors, log))
        if args.extra.is_file() and args.extra_corpus.is_dir():
            exs += dev_examples(args.extra, args.extra_corpus, "extra", args.seed, vectors, log)
        if args.cache:
            args.cache.write_bytes(pickle.dumps(exs))
    log(f"{len(exs)} examples built in {time.perf_counter() - t0:.0f} s")
    tr = [e for e in exs if e.split == "train"]
    va = [e for e in exs if e.split == "val"]

    # Ranker: candidates of questions whose candidate set holds the answer.
    rk = [e for e in tr if e.answerable and e.kind == "full" and (e.origin != "cmrc" or not e.hybrid)]
    X = np.vstack([e.X for e in rk])
    y = np.concatenate([e.y for e in rk])
    w_rk = np.concatenate([np.full(len(e.y), 1.0 if e.origin == "cmrc" else args.in_domain_weight) for e in rk])
    origins = sorted({e.origin for e in exs})
    va_full = {o: [e for e in va if e.origin == o and e.kind == "full" and (o != "cmrc" or not e.hybrid)] for o in origins}
    figures: dict = {"candidates_train": int(len(y)), "positives_train": int(y.sum()),
                     # The rule it replaces ranked by IDF coverage of the sentence (0.8) and its context (0.2).
                     "coverage_rule_top1_val": {o: round(top1(COVERAGE_RULE, v), 4) for o, v in va_full.items()}}
    lr = fit(X, y, args.seed, weight=w_rk, features=RANKER_FEATURES)
    options = {"logistic": (lr, linear_json(lr)), "trees": fit_trees(X, y, args.seed, weight=w_rk, features=RANKER_FEATURES)}
    figures["ranker_top1_val"] = {n: {o: round(top1(m, v), 4) for o, v in va_full.items()} for n, (m, _) in options.items()}
    # Pick by measurement: mean validation top-1 over the two sources.
    pick = args.family if args.family != "auto" else max(options, key=lambda n: sum(figures["ranker_top1_val"][n].values()))
    ranker, ranker_json = options[pick]
    figures["ranker"] = pick
    log(json.dumps(figures))

    # Answerability over whole candidate sets: features from the trained ranker's scores.
    def afeat(e: Example) -> list[float]:
        return answerability_features(e.ctx, e.cands, e.X, ranker.logits(e.X))

    # Only candidate sets retrieved as the product retrieves them (hybrid): the dense scores are features.
    tr_a, va_a = [e for e in tr if e.hybrid], [e for e in va if e.hybrid]
    A_tr = np.array([afeat(e) for e in tr_a])
    y_tr = np.array([e.answerable for e in tr_a])
    w = np.array([1.0 if e.origin == "cmrc" else args.in_domain_weight for e in tr_a])
    A_va = np.array([afeat(e) for e in va_a])
    y_va = np.array([e.answerable for e in va_a])
    origin_va = np.array([e.origin for e in va_a])
    a_lr = fit(A_tr, y_tr, args.seed, weight=w, features=ANSWERABILITY_FEATURES)
    a_options = {"logistic": (a_lr, linear_json(a_lr)),
                 "trees": fit_trees(A_tr, y_tr, args.seed, weight=w, features=ANSWERABILITY_FEATURES)}
    results = {}
    for name, (m, _) in a_options.items():
        p = m.proba(A_va)
        # The target must hold on the product's own kind of documents too, not only on Wikipedia's: the
        # highest threshold meeting it on the CMRC and on the in-domain (dev + extra) validation questions.
        cmrc_va = origin_va == "cmrc"
        t = min(pick_threshold(p[cmrc_va], y_va[cmrc_va], FALSE_REFUSAL_TARGET),
                pick_threshold(p[~cmrc_va], y_va[~cmrc_va], FALSE_REFUSAL_TARGET))
        r: dict = {"threshold": t, "unanswerable_refused": round(float((p[~y_va] < t).mean()), 4)}
        for o in origins:
            sel = origin_va == o
            r[o] = {"false_refusal": round(float((p[sel & y_va] < t).mean()), 4),
                    "unanswerable_refused": round(float((p[sel & ~y_va] < t).mean()), 4)}
        results[name] = r
    figures["answerability_val"] = results
    a_pick = (args.family if args.family != "auto"
              else max(results, key=lambda n: results[n]["unanswerable_refused"]))  # at the same false-refusal target
    answ, answ_json = a_options[a_pick]
    threshold = results[a_pick]["threshold"]
    figures["answerability"] = a_pick
    p_va = answ.proba(A_va)
    log(json.dumps(figures))

    import sklearn

    doc = {
        "trained": {
            "command": "make train  (python -m train.answer_models --seed %d)" % args.seed,
            "commit": git_commit(), "seed": args.seed, "sklearn": sklearn.__version__,
            "data": {"cmrc2018_train": {"path": "../shared/bench/cmrc2018_train.json", "sha1": sha1(args.cmrc),
                                        "licence": "CC BY-SA 4.0 (Cui et al., CMRC 2018)",
                                        "questions_used": args.limit or "all"},
                     "dev": {"path": "evals/dev.jsonl", "sha1": sha1(args.dev), "corpus": "corpus/"},
                     "extra": {"path": "evals/extra.jsonl", "sha1": sha1(args.extra) if args.extra.is_file() else None,
                               "corpus": "../shared/corpus-extra/"}},
            "examples": {"train": len(tr), "val": len(va)},
            "figures": figures,
        },
        "ranker": ranker_json,
        "answerability": {**answ_json, "threshold": threshold, "target_false_refusal": FALSE_REFUSAL_TARGET,
                          "curve_val": curve(p_va, y_va)},
    }
    text = json.dumps(doc, ensure_ascii=False, indent=1)
    # Flat lists (weights, tree nodes) on one line each: a reviewable file, not one number per line.
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    args.out.write_text(text + "\n", encoding="utf-8")
    log(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
