"""Evaluation runs of the web app: stored under data_dir/evals/<run_id>/, run one at a time in a
niced `kexie eval` subprocess, with per-question outcomes (outcomes.json / outcomes.xlsx) and comparisons.

No Gradio here: rag/serve/evaltab.py is the page, this is the store and the background runner."""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import fields
from pathlib import Path

from rag.settings import SECRETS, Settings

log = logging.getLogger("kexie.evalruns")

CONFIGS = ("bm25", "vector", "fused", "hybrid", "langchain")
DATASET_TYPES = (".jsonl", ".json", ".csv", ".xlsx")
DOWNLOADS = ("results.jsonl", "metrics.json", "report.html", "outcomes.xlsx")
ACTIVE = ("queued", "running")
PROGRESS = re.compile(r"^进度 (\d+)/(\d+)\s*(.*)$")
# Tells this process's runs from those of an earlier process that had the same pid (a restarted container).
_TOKEN = uuid.uuid4().hex
_RUN_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")


class EvalError(Exception):
    """A run request refused, with the reason for the user (in Chinese)."""


# -- the one worker of this process: eval subprocesses never run side by side -------------------
_queue: queue.Queue = queue.Queue()
_worker: threading.Thread | None = None
_worker_lock = threading.Lock()
_procs: set[subprocess.Popen] = set()
_stores: dict[Path, EvalRuns] = {}
_stores_lock = threading.Lock()


def _ensure_worker() -> None:
    global _worker
    with _worker_lock:
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_work, name="kexie-eval", daemon=True)
            _worker.start()


def _work() -> None:
    while True:
        store, run_id = _queue.get()
        try:
            store._execute(run_id)
        except Exception as e:  # the worker must survive anything one run does
            log.exception("eval run %s failed", run_id)
            store._update(run_id, status="failed", finished=time.time(), error=f"内部错误：{type(e).__name__}: {e}")
        finally:
            _queue.task_done()


@atexit.register
def _kill_children() -> None:
    for p in list(_procs):
        if p.poll() is None:
            p.terminate()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _toml(settings: Settings, mode: str) -> str:
    """The knowledge base's settings for the subprocess, secrets left out (they go by environment)."""
    skip = {"corpus_dir", "index_dir", "data_dir", "grants", *SECRETS}
    lines = []
    for f in fields(Settings):
        if f.name in skip:
            continue
        # The base's own FAQ folder, resolved here: the subprocess would derive it from --corpus otherwise.
        v = mode if f.name == "retrieval_mode" else str(settings.faq_root) if f.name == "faq_dir" else getattr(settings, f.name)
        if isinstance(v, bool):
            lines.append(f"{f.name} = {'true' if v else 'false'}")
        elif isinstance(v, (int, float)):
            lines.append(f"{f.name} = {v!r}")
        elif isinstance(v, (str, Path)):
            lines.append(f"{f.name} = {json.dumps(str(v))}")  # a JSON string is a TOML basic string
        elif isinstance(v, tuple):
            lines.append(f"{f.name} = {json.dumps([str(x) for x in v])}")
    return "\n".join(lines) + "\n"


def primary_mode(settings: Settings, configs: list[str]) -> str:
    """The configuration the answers and per-question outcomes use: the configured mode if chosen,
    else the first chosen mode of ours (the report's top-level figures are the same one's)."""
    ours = [c for c in configs if c != "langchain"]
    if settings.retrieval_mode in ours or not ours:
        return settings.retrieval_mode
    return ours[0]


class EvalRuns:
    """The runs of one data directory. Use `EvalRuns.for_settings` so a process has one store per directory."""

    def __init__(self, root: Path, python: str | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.python = python or sys.executable
        self._lock = threading.Lock()
        self._secrets: dict[str, dict[str, str]] = {}  # run id -> environment for its subprocess only
        self._recover()

    @classmethod
    def for_settings(cls, settings: Settings) -> EvalRuns:
        root = (settings.data_root / "evals").resolve()
        with _stores_lock:
            if root not in _stores:
                _stores[root] = cls(root)
            return _stores[root]

    # -- records ----------------------------------------------------------------------------
    def dir(self, run_id: str) -> Path:
        if not _RUN_ID.match(run_id or ""):
            raise EvalError(f"评测记录不存在：{run_id}")
        return self.root / run_id

    def get(self, run_id: str) -> dict:
        p = self.dir(run_id) / "run.json"
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise EvalError(f"评测记录不存在：{run_id}") from None

    def _write(self, rec: dict) -> None:
        d = self.dir(rec["id"])
        tmp = d / "run.json.tmp"
        tmp.write_text(json.dumps(rec, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, d / "run.json")  # readers (the page's timer) never see half a file

    def _update(self, run_id: str, **changes) -> dict:
        with self._lock:
            rec = self.get(run_id)
            rec.update(changes)
            self._write(rec)
            return rec

    def list_runs(self, kb_ids: set[str] | None = None) -> list[dict]:
        """Runs newest first; only those on the given knowledge bases when kb_ids is given."""
        out = []
        for d in self.root.iterdir() if self.root.is_dir() else []:
            if not _RUN_ID.match(d.name):
                continue
            try:
                rec = self.get(d.name)
            except EvalError:
                continue
            if kb_ids is None or rec.get("kb_id") in kb_ids:
                out.append(rec)
        return sorted(out, key=lambda r: (r.get("created", 0), r["id"]), reverse=True)

    def queue_position(self, run_id: str) -> int:
        """How many runs of this store wait before this queued one (the running one included)."""
        rec = self.get(run_id)
        if rec["status"] != "queued":
            return 0
        return sum(1 for r in self.list_runs() if r["status"] in ACTIVE and r["created"] < rec["created"])

    def _recover(self) -> None:
        """Runs left 'queued' or 'running' by a process that is gone are failed (interrupted)."""
        for rec in self.list_runs():
            if rec["status"] not in ACTIVE:
                continue
            pid, token = rec.get("owner_pid", 0), rec.get("owner_token", "")
            if token == _TOKEN or (pid != os.getpid() and pid and _pid_alive(pid)):
                continue  # ours, or another live app process on the same data directory
            self._update(rec["id"], status="failed", finished=time.time(),
                         error="应用重启，评测被中断" if rec["status"] == "running" else "应用重启，排队中的评测未运行")

    # -- starting ---------------------------------------------------------------------------
    def start(self, dataset: Path, name: str, kb_id: str, kb_name: str, kb_settings: Settings,
              configs: list[str], user: str | None = None) -> dict:
        """Queue a run of `dataset` (copied into the run) on a knowledge base. A dataset that cannot be
        read gives a run that is failed at once, with the reason."""
        unknown = sorted(set(configs or []) - set(CONFIGS))
        if unknown:
            raise EvalError(f"未知的评测配置：{', '.join(unknown)}")
        configs = [c for c in CONFIGS if c in set(configs or [])]  # canonical order, duplicates dropped
        if not configs:
            raise EvalError("请至少选择一种检索配置")
        ext = Path(name).suffix.lower()
        if ext not in DATASET_TYPES:
            raise EvalError(f"不支持的数据集格式：{name}（支持 .jsonl / .csv / .xlsx）")
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        d = self.dir(run_id)
        d.mkdir(parents=True)
        shutil.copyfile(dataset, d / f"dataset{ext}")
        mode = primary_mode(kb_settings, configs)
        rec = {"id": run_id, "dataset": Path(name).name, "configs": configs, "mode": mode, "kb_id": kb_id,
               "kb_name": kb_name, "user": user or "", "status": "queued", "created": time.time(), "started": None,
               "finished": None, "error": "", "progress": {"done": 0, "total": 0, "stage": ""}, "questions": 0,
               "owner_pid": os.getpid(), "owner_token": _TOKEN}
        try:
            from rag.evaluate.dataset import load_dataset

            rec["questions"] = len(load_dataset(d / f"dataset{ext}"))
            if not rec["questions"]:
                raise ValueError("数据集中没有问题")
        except Exception as e:  # the staff's file: say what is wrong with it, do not start
            rec.update(status="failed", finished=time.time(), error=f"数据集无法读取：{e}")
            self._write(rec)
            return rec
        (d / "settings.toml").write_text(_toml(kb_settings, mode), encoding="utf-8")
        rec["corpus_dir"], rec["index_dir"] = str(kb_settings.corpus_dir), str(kb_settings.index_dir)
        self._write(rec)
        # Secrets travel by environment, never on disk; nothing else of the app's environment overrides the file.
        self._secrets[run_id] = {"KEXIE_LLM_API_KEY": kb_settings.llm_api_key} if kb_settings.llm_api_key else {}
        _queue.put((self, run_id))
        _ensure_worker()
        return rec

    def command(self, rec: dict) -> list[str]:
        d = self.dir(rec["id"])
        dataset = next(d.glob("dataset.*"))
        cmd = [self.python, "-m", "rag.cli", "eval", str(dataset), "--config", str(d / "settings.toml"),
               "--corpus", rec["corpus_dir"], "--index", rec["index_dir"], "--configs", ",".join(rec["configs"]),
               "--out", str(d)]
        nice = shutil.which("nice")
        return [nice, "-n", "10", *cmd] if nice else cmd  # the chat keeps the CPU first

    def _env(self, run_id: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEXIE_") or k == "KEXIE_LOG_LEVEL"}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
                   PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"))
        env.update(self._secrets.pop(run_id, {}))
        return env

    def _execute(self, run_id: str) -> None:
        rec = self.get(run_id)
        if rec["status"] != "queued":
            return
        d = self.dir(run_id)
        if not Path(rec["index_dir"]).is_dir():  # its base was deleted while the run waited: never re-create it
            self._update(run_id, status="failed", finished=time.time(), error="知识库已删除，评测未运行")
            return
        rec = self._update(run_id, status="running", started=time.time())
        tail: deque[str] = deque(maxlen=12)
        with open(d / "eval.log", "w", encoding="utf-8") as out, open(d / "eval.err", "w", encoding="utf-8") as err:
            proc = subprocess.Popen(self.command(rec), stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                    env=self._env(run_id), text=True, encoding="utf-8", errors="replace")
            _procs.add(proc)
            self._update(run_id, pid=proc.pid)
            try:
                for line in proc.stderr:
                    err.write(line)
                    m = PROGRESS.match(line.strip())
                    if m:
                        self._update(run_id, progress={"done": int(m[1]), "total": int(m[2]), "stage": m[3]})
                    elif line.strip():
                        tail.append(line.rstrip())
                rc = proc.wait()
            finally:
                _procs.discard(proc)
        if rc == 0 and (d / "metrics.json").is_file():
            try:
                write_outcomes(d)
            except Exception as e:
                log.exception("outcomes of %s", run_id)
                self._update(run_id, status="failed", finished=time.time(), error=f"结果汇总失败：{type(e).__name__}: {e}")
                return
            self._update(run_id, status="done", finished=time.time())
            return
        lines = list(tail) or (d / "eval.log").read_text(encoding="utf-8", errors="replace").splitlines()[-8:]
        why = f"退出码 {rc}" if rc >= 0 else f"被信号 {-rc} 终止"
        self._update(run_id, status="failed", finished=time.time(), error=f"评测进程异常退出（{why}）：\n" + "\n".join(lines[-8:]))

    # -- results ----------------------------------------------------------------------------
    def outcomes(self, run_id: str) -> list[dict]:
        p = self.dir(run_id) / "outcomes.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else []

    def metrics(self, run_id: str) -> dict:
        p = self.dir(run_id) / "metrics.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}

    def downloads(self, run_id: str) -> list[Path]:
        d = self.dir(run_id)
        return [d / n for n in DOWNLOADS if (d / n).is_file()]

    def compare(self, run_a: str, run_b: str) -> list[dict]:
        return compare(self.outcomes(run_a), self.outcomes(run_b))


# -- per-question outcomes ----------------------------------------------------------------------
def outcome_rows(items, records: list[dict]) -> list[dict]:
    """One row per question: the answer judged as `kexie eval` judges it, and where the first relevant
    passage ranked among those the answer was built from."""
    from rag.evaluate.metrics import contains_all, relevance
    from rag.evaluate.runner import passage

    by_id = {r["id"]: r for r in records}
    rows = []
    for it in items:
        r = by_id.get(it.id)
        if r is None:
            continue
        hits = r.get("retrieved", [])
        rank = None
        if it.answerable:
            rel = relevance([passage(h.get("heading", ""), h.get("text", "")) for h in hits], it.evidence)
            rank = next((n for n, s in enumerate(rel, 1) if s), None)
        refused = bool(r.get("refused"))
        if it.answerable:
            correct = (not refused) and (contains_all(r["answer"], it.must_include) if it.must_include else True)
        else:
            correct = refused
        rows.append({
            "id": it.id, "question": it.question, "type": it.type, "answerable": it.answerable,
            "gold_answer": it.answer, "must_include": it.must_include, "answer": r.get("answer", ""),
            "refused": refused, "correct": correct, "rank": rank,
            "hit@1": None if not it.answerable else rank == 1,
            "hit@5": None if not it.answerable else rank is not None and rank <= 5,
            "retrieved": [{"source": h.get("source", ""), "heading": h.get("heading", ""), "text": h.get("text", "")[:200]}
                          for h in hits[:3]],
        })
    return rows


def write_outcomes(run_dir: Path) -> list[dict]:
    from rag.evaluate.dataset import load_dataset

    items = load_dataset(next(run_dir.glob("dataset.*")))
    records = [json.loads(x) for x in (run_dir / "results.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    rows = outcome_rows(items, records)
    (run_dir / "outcomes.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    write_xlsx(rows, run_dir / "outcomes.xlsx")
    return rows


XLSX_COLUMNS = ["编号", "问题", "题型", "标准答案", "必须包含", "我们的回答", "是否拒答", "回答正确",
                "hit@1", "hit@5", "首个相关段落名次", "检索第一条来源", "检索第一条内容"]


def _cell(v):
    if isinstance(v, bool):
        return "是" if v else "否"
    return v


def write_xlsx(rows: list[dict], path: Path) -> None:
    from openpyxl import Workbook
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Alignment, Font

    wb = Workbook()
    ws = wb.active
    ws.title = "逐题结果"
    ws.append(XLSX_COLUMNS)
    for r in rows:
        top = r["retrieved"][0] if r["retrieved"] else {}
        ws.append([ILLEGAL_CHARACTERS_RE.sub("", v) if isinstance(v, str) else v for v in (
            r["id"], r["question"], r["type"], r["gold_answer"], "、".join(r["must_include"]), r["answer"],
            _cell(r["refused"]), _cell(r["correct"]),
            "" if r["hit@1"] is None else int(r["hit@1"]), "" if r["hit@5"] is None else int(r["hit@5"]),
            r["rank"] or "", top.get("source", ""), top.get("text", ""))])
    for row in ws.iter_rows(min_row=2):
        for c in row:
            if c.data_type == "f":  # text from a dataset is never a formula
                c.data_type = "s"
            c.alignment = Alignment(wrap_text=True, vertical="top")
    for c in ws[1]:
        c.font = Font(bold=True)
    for col, width in zip("ABCDEFGHIJKLM", (10, 40, 10, 40, 16, 50, 8, 8, 6, 6, 10, 30, 60)):
        ws.column_dimensions[col].width = width
    ws.freeze_panes = "B2"
    wb.save(path)


# -- comparison ---------------------------------------------------------------------------------
def _key(o: dict) -> tuple:
    """Higher is better: a right answer first, then an earlier first relevant passage."""
    return (bool(o["correct"]), -(o["rank"] or 99))


def outcome_text(o: dict | None) -> str:
    if o is None:
        return "（无此题）"
    if not o["answerable"]:
        return "正确拒答" if o["correct"] else "应拒答未拒答"
    verdict = "正确" if o["correct"] else ("拒答" if o["refused"] else "错误")
    where = f"相关段落第 {o['rank']} 名" if o["rank"] else "未检索到相关段落"
    return f"{verdict}；{where}"


def compare(a: list[dict], b: list[dict]) -> list[dict]:
    """Per question (by id, A's order, then B's new ones): outcomes in A and B and the change
    (better / worse / same / only_a / only_b), by answer correctness, then by first relevant rank."""
    ia, ib = {o["id"]: o for o in a}, {o["id"]: o for o in b}
    rows = []
    for qid in [*ia, *(k for k in ib if k not in ia)]:
        oa, ob = ia.get(qid), ib.get(qid)
        if oa is None or ob is None:
            change = "only_a" if ob is None else "only_b"
        else:
            ka, kb = _key(oa), _key(ob)
            change = "better" if kb > ka else "worse" if kb < ka else "same"
        rows.append({"id": qid, "question": (ob or oa)["question"], "a": oa, "b": ob, "change": change})
    return rows


def summary(rows: list[dict]) -> dict[str, int]:
    out = {k: 0 for k in ("better", "worse", "same", "only_a", "only_b")}
    for r in rows:
        out[r["change"]] += 1
    return out
