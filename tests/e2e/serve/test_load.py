"""Load test: concurrent chat sessions against the real app (127.0.0.1 only) while one re-index runs.

The app (`python app.py`) serves a copy of the session index. Each simulated user is its own
`gradio_client.Client` (its own Gradio session, so its own server-side chat history) and asks a short script
of evals/dev.jsonl questions: answerable, unanswerable, multi-turn follow-ups ("那济宁市呢？", "第二点具体说说")
and questions about a document that does not exist yet. After a fifth of the requests the test drops that
document into the copied corpus and re-indexes, either with the "重新索引（增量）" button (`do_reindex`, in the
app's process) or with `python -m rag.cli index` (another process); the chats keep going.

Checked for every answer: no exception, no "出错了"; the citation HTML names the generation it was served from
and every cited file is a document of that generation (chunk sources are snapshotted while the test runs, so
generations the indexer deletes later are still known); every [n] in the answer has its card; each session's
chat holds exactly its own turns; a session never sees the generation go backwards; requests started after the
re-index finished see the new generation (after the CLI, within CLI_STALE_GRACE_S) and find the new document;
answers that name the new document come only from generations that contain it; identical turns served from the same
generation get identical answers in every session; answers from the old generation equal what a single user
gets in-process. Re-indexing must not block reading: no stretch without a finished chat that overlaps the re-index
is longer than twice the longest such stretch elsewhere in the same run (`stretches`), and a re-index longer than
twice the p95 latency before it holds a chat that both starts and finishes inside it.

A quarter of the users (every API_EVERY-th session) ask through the HTTP API instead (`POST /api/ask`, their own
history sent with each question). /api/ask names no generation: a request that finished before the new document
was written is known to be served from the first generation, one that started after the re-index finished (after
the CLI, CLI_STALE_GRACE_S later) from the new one, and the checks above apply to them as to page sessions
(including identical answers to identical turns across page and API users); a request in between is checked for
errors, [n] without a citation, and files that are no document of any generation.

Latency p50/p95 before / during / after the re-index is printed and written to test-output/load.json.
Size and limits: KEXIE_LOAD_SESSIONS (8), KEXIE_LOAD_TURNS (7 per session), KEXIE_LOAD_TIMEOUT (240 s a run),
KEXIE_LOAD_BASELINE_SCRIPTS (5: how many of the scripts are compared with a single user's answers).

Regression: `Retriever.vectors` used to open Chroma without a lock, so concurrent first requests (a cold app,
or the first requests after another process committed) raced inside chromadb and answered "出错了".
"""

from __future__ import annotations

import html
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, free_port

from rag.index import store
from rag.serve.kbs import DEFAULT_ID

pytestmark = pytest.mark.slow

# `make test` runs a small load (56 requests) that keeps every check; KEXIE_LOAD_SESSIONS=20 KEXIE_LOAD_TURNS=10
# is the full one (200 requests, ~4 min here).
SESSIONS = int(os.environ.get("KEXIE_LOAD_SESSIONS", "8"))
TURNS = int(os.environ.get("KEXIE_LOAD_TURNS", "7"))  # per session; the last POST_TURNS wait for the re-index
TIMEOUT_S = float(os.environ.get("KEXIE_LOAD_TIMEOUT", "240"))  # each load run (two of them: <= 8 min in all)
BASELINE_SCRIPTS = int(os.environ.get("KEXIE_LOAD_BASELINE_SCRIPTS", "5"))  # scripts re-asked in-process (~0.3 s a turn)
POST_TURNS = 3
# After another process commits, the app notices on its next request and loads the new generation; requests that
# arrive during that load may be answered from the previous committed generation. After the UI button, never.
CLI_STALE_GRACE_S = 10.0
REQUEST_TIMEOUT_S = 120.0
API_EVERY = int(os.environ.get("KEXIE_LOAD_API_EVERY", "4"))  # every 4th session asks through POST /api/ask; 0: none
SCRIPTS = max(1, SESSIONS // 2)  # two sessions share each script: same turn + same generation => same answer

NEW_DOC = "舟山市科协海洋科普基地建设管理办法.txt"
NEW_DOC_TEXT = "\n\n".join([
    "舟山市科协海洋科普基地建设管理办法",
    "第一条 为规范舟山市海洋科普基地的建设和管理，发挥海洋科普基地在提升公民科学素质中的作用，制定本办法。",
    "第二条 舟山市海洋科普基地由舟山市科协统一认定和命名，各县区科协负责辖区内基地的日常管理和年度检查。",
    "第三条 申报海洋科普基地应当具备以下条件：拥有不少于五百平方米的固定展教场所；配备至少三名专职科普讲解员；"
    "每年面向公众免费开放不少于一百二十天。",
    "第四条 海洋科普基地每年至少举办六次海洋主题科普活动，其中面向中小学生的研学活动不少于三次。",
    "第五条 舟山市科协每两年对海洋科普基地开展一次综合评估，评估结果分为优秀、合格和不合格三个等次。",
    "第六条 连续两次评估不合格的海洋科普基地，由舟山市科协撤销其命名，三年内不得再次申报。",
    "第七条 对评估为优秀的海洋科普基地，舟山市科协给予每个基地五万元的科普工作经费补助。",
    "第八条 海洋科普基地应当建立科普志愿者队伍，鼓励渔民、海洋科研人员担任兼职讲解员。",
    "第九条 本办法由舟山市科协负责解释，自二〇二四年三月一日起施行。",
]) + "\n"
NEW_DOC_QUESTIONS = ["舟山市海洋科普基地由谁负责日常管理？", "申报舟山市海洋科普基地需要具备哪些条件？",
                     "舟山市海洋科普基地每年至少举办几次海洋主题科普活动？",
                     "舟山市科协对评估为优秀的海洋科普基地给予多少经费补助？"]
NEW_DOC_MARKERS = ("舟山", "海洋科普基地")  # words no document of the bundled corpus contains
CITIES = ["青岛市", "济宁市", "天津市", "聊城市", "连云港市"]
PRE_PATTERN = ["place", "follow", "unans", "newdoc", "ans", "ordinal", "unans"]
POST_PATTERN = ["newdoc", "place", "follow"]

GEN_RE = re.compile(r"data-generation='(gen-\d{6})'")
CARD_RE = re.compile(r"<div class='cite-head'>\[(\d+)\] (.*?) (?:<a\b|</div>)")
MARK_RE = re.compile(r"\[\[(\d+)\]\]\(#cite-(\d+)-(\d+)\)")  # [n] of the k-th answer -> its card k-n
TURN_MARK = re.compile(r"\s*\[\]\(#turn-[0-9a-f]{32}\)")  # the saved turn's id the answer carries
ERROR_TEXT = "出错了"
# The traceback of the known race: concurrent lazy `chromadb.PersistentClient(...)` in Retriever.vectors.
VECTORS_RACE = re.compile(r'rag/retrieval\.py", line \d+, in vectors\s+self\._vectors = VectorStore\.open\(.*?'
                          r'chromadb\.PersistentClient\(', re.S)
REPORT: dict[str, dict] = {}  # test-output/load.json: one entry per run


# -- the app ----------------------------------------------------------------------------------

def quiet_env(**extra: str) -> dict[str, str]:
    """No telemetry, no Hub, and none of the developer's KEXIE_* settings (the baseline uses the defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEXIE_")}
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               DO_NOT_TRACK="1", **extra)
    return env


@dataclass
class App:
    url: str
    root: Path
    log: Path
    proc: subprocess.Popen

    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    @property
    def index(self) -> Path:
        return self.root / "index"

    def env(self) -> dict[str, str]:
        return quiet_env(KEXIE_CORPUS_DIR=str(self.corpus), KEXIE_INDEX_DIR=str(self.index))


@pytest.fixture
def start_app(corpus_index, tmp_path_factory):
    """Starts the real app on a fresh copy of the session index (nothing is re-embedded)."""
    pytest.importorskip("gradio_client")
    apps: list[App] = []

    def start() -> App:
        root = tmp_path_factory.mktemp("load")
        shutil.copytree(corpus_index.corpus_dir, root / "corpus")
        shutil.copytree(corpus_index.index_dir, root / "index")
        (root / "corpus").chmod(0o755)  # the test adds a document to the copy
        port = free_port()
        env = quiet_env(KEXIE_CORPUS_DIR=str(root / "corpus"), KEXIE_INDEX_DIR=str(root / "index"),
                        KEXIE_PORT=str(port), KEXIE_HOST="127.0.0.1",
                        KEXIE_API_RATE_LIMIT="100000")  # the API users share one address: no limit in the way
        log = root / "app.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "app.py")], env=env, cwd=root, stdout=fh,
                                    stderr=subprocess.STDOUT)
        app = App(f"http://127.0.0.1:{port}/", root, log, proc)
        apps.append(app)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(app.url, timeout=2)
                return app
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("app exited: " + log.read_text())
                time.sleep(0.5)
        pytest.fail("app did not start in 120 s")

    yield start
    for app in apps:
        app.proc.terminate()
        try:
            app.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            app.proc.kill()
            app.proc.wait()


def make_client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False, download_files=False)


def endpoint_names(client) -> tuple[str, str]:
    """The API names of `respond` (the chat handler) and `do_reindex` (the 重新索引 button)."""
    named = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    respond = sorted(n for n in named if re.fullmatch(r"/respond(_\d+)?", n))
    assert respond and "/do_reindex" in named, f"endpoints changed: {sorted(named)}"
    return respond[0], "/do_reindex"


def page_load_name(client) -> str:
    """The API name of the page's load handler that fills the 知识库 tab's list (other tabs have their own)."""
    named = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    loads = [n for n in sorted(named) if re.fullmatch(r"/on_load(_\d+)?", n)
             and any(r.get("label") == "管理的知识库" for r in named[n]["returns"])]
    assert len(loads) == 1, f"page load endpoints changed: {sorted(named)}"
    return loads[0]


# -- generations ------------------------------------------------------------------------------
class GenerationWatch(threading.Thread):
    """Snapshots each committed generation's document set while the test runs (old ones get deleted)."""

    def __init__(self, index_dir: Path):
        super().__init__(daemon=True)
        self.index_dir = index_dir
        self.sources: dict[str, frozenset[str]] = {}
        self.committed: list[tuple[str, float]] = []  # (manifest generation, first seen at)
        # A generation is searchable before its vectors are all made (rag/index/backfill.py): when they were seen complete.
        self.vectors_complete: dict[str, float] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.scan()

    def scan(self) -> None:
        for d in sorted(self.index_dir.glob("gen-*")):
            if d.name in self.sources or not re.fullmatch(r"gen-\d{6}", d.name):
                continue  # gen-*.partial is never read: it is renamed into place only when complete
            try:  # the generation's live rows, segment by segment (rag/index/store.py)
                srcs = frozenset(c.source for c in store.read_chunks(d))
            except OSError:
                continue
            with self.lock:
                self.sources[d.name] = srcs
        for d in self.index_dir.glob("gen-*"):
            if d.name in self.sources and d.name not in self.vectors_complete:
                st = store.VectorState.read(d)
                if st is not None and st.complete:
                    with self.lock:
                        self.vectors_complete[d.name] = time.perf_counter()
        try:
            gen = json.loads((self.index_dir / "manifest.json").read_text(encoding="utf-8"))["generation"]
        except (OSError, ValueError, KeyError):
            return
        with self.lock:
            if not self.committed or self.committed[-1][0] != gen:
                self.committed.append((gen, time.perf_counter()))

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.scan()

    def docs(self, gen: str) -> frozenset[str] | None:
        with self.lock:
            if gen in self.sources:
                return self.sources[gen]
        self.scan()  # an answer may name a generation committed a moment ago
        with self.lock:
            return self.sources.get(gen)


# -- scripts ----------------------------------------------------------------------------------
@dataclass
class Turn:
    question: str
    kind: str  # ans | unans | place | follow | ordinal | newdoc
    post: bool  # sent only after the re-index finished


def build_scripts(n_scripts: int, turns: int) -> list[list[Turn]]:
    rows = [json.loads(line) for line in (PROJECT_ROOT / "evals" / "dev.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    unans = [r["question"] for r in rows if r["type"] == "unanswerable"]
    ans = [r["question"] for r in rows if r["type"] != "unanswerable"]
    placed = [q for q in ans if any(c in q for c in CITIES)]
    assert len(unans) >= 5 and len(placed) >= 10
    n_post = max(1, min(POST_TURNS, turns - 2))
    pattern = [PRE_PATTERN[i % len(PRE_PATTERN)] for i in range(turns - n_post)] + POST_PATTERN[:n_post]
    scripts = []
    for s in range(n_scripts):
        rng = random.Random(1000 + s)
        out: list[Turn] = []
        for i, kind in enumerate(pattern):
            post = i >= turns - n_post
            prev = out[-1].question if out else ""
            if kind == "follow" and prev and any(c in prev for c in CITIES):
                q = f"那{rng.choice([c for c in CITIES if c not in prev])}呢？"
            elif kind == "ordinal" and out:
                q = "第二点具体说说"
            elif kind == "newdoc":
                q = rng.choice(NEW_DOC_QUESTIONS)
            elif kind == "unans":
                q = rng.choice(unans)
            elif kind == "place":
                q = rng.choice(placed)
            else:
                kind, q = "ans", rng.choice(ans)
            out.append(Turn(q, kind, post))
        scripts.append(out)
    return scripts


# -- one request ------------------------------------------------------------------------------
@dataclass
class Result:
    session: int
    script: int
    turn: int
    question: str
    kind: str
    post: bool
    t0: float
    t1: float = 0.0
    gen: str = ""
    answer: str = ""  # the answer as the assistant gave it: "…[1]。" (links removed)
    sources: list[str] = field(default_factory=list)  # cited file per card, in card order
    refused: bool = False
    prev_question: str = ""
    prev_answer: str = ""
    error: str = ""
    problems: list[str] = field(default_factory=list)
    api: bool = False  # asked through POST /api/ask, not the page

    @property
    def latency(self) -> float:
        return self.t1 - self.t0


def message_text(msg: dict) -> str:
    content = msg.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def check_reply(r: Result, outputs, n_turn: int) -> list:
    """Parse (chat, citations html, textbox), note what is wrong with it; returns the new chat."""
    chat, cites = outputs[0], outputs[1]
    if not isinstance(chat, list) or len(chat) != 2 * n_turn:
        r.problems.append(f"chat has {len(chat) if isinstance(chat, list) else chat!r} messages, expected {2 * n_turn}")
        return chat if isinstance(chat, list) else []
    if message_text(chat[-2]).strip() != r.question:
        r.problems.append(f"last user message is {message_text(chat[-2])!r}: another session's turn?")
    text = message_text(chat[-1])
    if not TURN_MARK.search(text) and ERROR_TEXT not in text:
        r.problems.append("the answer carries no turn id (feedback would go by position)")
    text = TURN_MARK.sub("", text)
    r.answer = MARK_RE.sub(lambda m: f"[{m.group(1)}]", text)
    if ERROR_TEXT in text:
        r.error = text
        return chat
    if not isinstance(cites, str):
        r.problems.append(f"no citation html: {cites!r}")
        return chat
    # The panel holds every answer's sources, newest first and open: this answer's are the first block.
    blocks = cites.split("<details class='turn-cites'")
    cites = blocks[1] if len(blocks) > 1 else cites
    if f"data-turn='{n_turn}'" not in cites:
        r.problems.append(f"the newest sources are not those of answer {n_turn}")
    gens = GEN_RE.findall(cites)
    if len(gens) != 1:
        r.problems.append(f"citation html names {len(gens)} generations")
    r.gen = gens[0] if gens else ""
    cards = [(int(n), html.unescape(src)) for n, src in CARD_RE.findall(cites)]
    r.sources = [src for _, src in cards]
    r.refused = "class='refused-note'" in cites
    if not r.refused:
        marks = MARK_RE.findall(text)
        if not cards or not marks:
            r.problems.append("an answer without citations")
        missing = {int(a) for a, _, _ in marks} - {n for n, _ in cards}
        if missing:
            r.problems.append(f"answer cites {sorted(missing)} but has no such card")
        if any(a != b or int(k) != n_turn for a, k, b in marks):
            r.problems.append("a [n] link points at another card or another answer's")
    return chat


def ask(client, api: str, r: Result, chat: list, timeout: float) -> list:
    try:
        out = client.submit(r.question, chat, api_name=api).result(timeout=timeout)
        r.t1 = time.perf_counter()
        return check_reply(r, out, r.turn + 1)
    except Exception as e:  # noqa: BLE001 - every failure is a finding
        r.t1 = time.perf_counter()
        r.error = f"{type(e).__name__}: {e}"
        return chat


def is_api_user(session: int) -> bool:
    return API_EVERY > 0 and session % API_EVERY == API_EVERY - 1


def ask_api(url: str, r: Result, history: list[tuple[str, str]], timeout: float) -> bool:
    """One question through `POST /api/ask` (the page's checks on its JSON); False if it failed."""
    r.api = True
    body = json.dumps({"question": r.question, "history": history}, ensure_ascii=False).encode()
    req = urllib.request.Request(url + "api/ask", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            a = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        r.t1 = time.perf_counter()
        r.error = f"HTTP {e.code}: {e.read()[:300].decode('utf-8', 'replace')}"
        return False
    except Exception as e:  # noqa: BLE001 - every failure is a finding
        r.t1 = time.perf_counter()
        r.error = f"{type(e).__name__}: {e}"
        return False
    r.t1 = time.perf_counter()
    r.answer, r.refused = a["answer"], a["refused"]
    if ERROR_TEXT in r.answer:
        r.error = r.answer
        return False
    # What the page's cards would show: the citations, or for a refusal the closest passages.
    r.sources = [h["source"] for h in a["retrieved"][:3]] if r.refused else [c["source"] for c in a["citations"]]
    if not r.refused:
        marks = {int(n) for n in re.findall(r"\[(\d+)\]", r.answer)}
        if not a["citations"] or not marks:
            r.problems.append("an answer without citations")
        missing = marks - {c["n"] for c in a["citations"]}
        if missing:
            r.problems.append(f"answer cites {sorted(missing)} but has no such citation")
    return True


def session_worker(idx: int, script_id: int, script: list[Turn], client, api: str, results: list, lock,
                   reindexed: threading.Event, deadline: float, start: threading.Event) -> None:
    """One user's script: through the page (`client`, `api` = the respond endpoint) or, with client None,
    through POST /api/ask (`api` = the app's URL)."""
    chat: list = []
    history: list[tuple[str, str]] = []
    prev_q = prev_a = ""
    start.wait()
    for i, turn in enumerate(script):
        if turn.post and not reindexed.wait(max(0.0, deadline - time.perf_counter())):
            return  # these turns check freshness: they wait for the re-index to have finished
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return
        r = Result(idx, script_id, i, turn.question, turn.kind, turn.post, time.perf_counter(),
                   prev_question=prev_q, prev_answer=prev_a)
        if client is None:
            ok = ask_api(api, r, history, min(REQUEST_TIMEOUT_S, remaining))
            history.append((r.question, r.answer))
        else:
            chat = ask(client, api, r, chat, min(REQUEST_TIMEOUT_S, remaining))
            ok = not r.error and len(chat) == 2 * (i + 1)
        with lock:
            results.append(r)
        if not ok:
            return  # this user's conversation is broken; later turns would only repeat the finding
        prev_q, prev_a = r.question, re.sub(r"\n\n> .*$", "", r.answer, flags=re.S)


# -- statistics and reporting -----------------------------------------------------------------
# Chats finish in bursts (8 sessions share two cores): the longest wait between two finishes is several times the
# mean wait even with no re-index, so a wait is judged against the longest one of the same run, not the mean.
STALL_FACTOR = 2.0


def stretches(ends: list[float], ws: float, we: float) -> tuple[float | None, float]:
    """(longest wait between consecutive chat finishes that overlaps the re-index window [ws, we], longest wait
    that does not). The first is None when no chat finished after ws; the second is the whole run when every
    wait overlaps the window."""
    ends = sorted(ends)
    if not ends or ends[-1] <= ws:
        return None, 0.0
    waits = list(zip(ends, ends[1:]))
    overlap = [b - a for a, b in waits if b > ws and a < we]
    elsewhere = [b - a for a, b in waits if b <= ws or a >= we]
    if ends[0] > ws:  # every chat finished after the window began: wait from its start
        overlap.append(ends[0] - ws)
    return max(overlap, default=0.0), max(elsewhere, default=ends[-1] - ends[0])


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[max(0, min(len(v) - 1, math.ceil(len(v) * p / 100) - 1))]  # nearest rank


def summary(rs: list[Result], span: tuple[float, float] | None = None, every: list[Result] = ()) -> dict:
    """Latency of `rs`; with `span`, also the mean number of chats in flight and completions/s in that interval."""
    lat = [r.latency for r in rs]
    row = {"n": len(rs), "p50_ms": _ms(pct(lat, 50)), "p95_ms": _ms(pct(lat, 95)), "max_ms": _ms(max(lat) if lat else None),
           "in_flight": None, "done_per_s": None}
    if span and span[1] > span[0]:
        a, b = span
        row["in_flight"] = round(sum(max(0.0, min(r.t1, b) - max(r.t0, a)) for r in every) / (b - a), 1)
        row["done_per_s"] = round(sum(1 for r in every if a <= r.t1 < b) / (b - a), 1)
    return row


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 1)


def print_table(title: str, table: dict[str, dict]) -> None:
    print(f"\n{title}")
    print(f"{'phase':<10}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}{'in flight':>11}{'done/s':>8}")
    for name, row in table.items():
        cells = [row[k] if row.get(k) is not None else "-" for k in ("p50_ms", "p95_ms", "max_ms", "in_flight", "done_per_s")]
        print(f"{name:<10}{row['n']:>6}{cells[0]:>10}{cells[1]:>10}{cells[2]:>10}{cells[3]:>11}{cells[4]:>8}")


def write_report(out_dir: Path, name: str, report: dict) -> None:
    REPORT[name] = report
    out_dir.mkdir(exist_ok=True)
    (out_dir / "load.json").write_text(json.dumps(REPORT, ensure_ascii=False, indent=1), encoding="utf-8")


def app_log_problems(log_text: str) -> tuple[int, list[str]]:
    """(tracebacks of the known Chroma-open race, every other error the app logged)."""
    race, other = 0, []
    for block in re.split(r"^(?=(?:ERROR|WARNING|CRITICAL) )", log_text, flags=re.M):
        if not block.startswith(("ERROR", "CRITICAL")) and "Traceback" not in block:
            continue
        if block.startswith("ERROR kexie.web: answer failed") and VECTORS_RACE.search(block):
            race += 1
        else:
            other.append(block[-1500:])
    return race, other


# -- the tests --------------------------------------------------------------------------------
_BASELINE: dict[tuple[str, int, int], tuple[str, list[str]]] = {}  # (generation, script, turn) -> answer, sources


def baseline(corpus_index, retriever, gen: str, scripts: list[list[Turn]], script: int, turn: int):
    """A single user's answer, in-process on the fixture index (the copy's first generation)."""
    from rag.answer.assistant import Assistant

    if (gen, script, turn) not in _BASELINE:
        assistant = Assistant(corpus_index, retriever)
        hist: list[tuple[str, str]] = []
        for j, t in enumerate(scripts[script][: turn + 1]):
            a = assistant.ask(t.question, hist)
            srcs = [h.chunk.source for h in a.retrieved[:3]] if a.refused else [c.source for c in a.citations]
            _BASELINE[(gen, script, j)] = (a.answer, srcs)
            hist.append((t.question, a.answer))
    return _BASELINE[(gen, script, turn)]


@pytest.mark.parametrize("reindex", ["ui", pytest.param("cli", marks=pytest.mark.skipif(
    not os.environ.get("KEXIE_LOAD_ALL"), reason="second re-index mode (external `kexie index`): set KEXIE_LOAD_ALL=1"))])
def test_concurrent_chats_during_reindex(reindex, start_app, corpus_index, retriever, out_dir):
    app = start_app()
    assert not (app.corpus / NEW_DOC).exists()
    watch = GenerationWatch(app.index)
    gen0 = watch.committed[-1][0]
    assert NEW_DOC not in watch.sources[gen0]

    admin = make_client(app.url)
    api, reindex_api = endpoint_names(admin)
    page_load = page_load_name(admin)
    warm = admin.predict("什么是四服务一加强", [], api_name=api)  # loads the embedder before anything is timed
    assert ERROR_TEXT not in message_text(warm[0][-1]) and f"data-generation='{gen0}'" in warm[1]

    scripts = build_scripts(SCRIPTS, TURNS)
    clients = [None if is_api_user(i) else make_client(app.url) for i in range(SESSIONS)]
    results: list[Result] = []
    lock = threading.Lock()
    start, reindexed = threading.Event(), threading.Event()
    deadline = time.perf_counter() + TIMEOUT_S
    threads = [threading.Thread(target=session_worker, daemon=True, name=f"chat-{i}",
                                args=(i, i % SCRIPTS, scripts[i % SCRIPTS], clients[i],
                                      app.url if clients[i] is None else api, results, lock,
                                      reindexed, deadline, start)) for i in range(SESSIONS)]
    for t in threads:
        t.start()
    watch.start()
    t_start = time.perf_counter()
    start.set()

    # One re-index once a fifth of the questions have been answered; the chats keep going.
    total = SESSIONS * TURNS
    while len(results) < max(SESSIONS, total // 5) and time.perf_counter() < deadline:
        if not any(t.is_alive() for t in threads):
            break
        time.sleep(0.02)
    (app.corpus / NEW_DOC).write_text(NEW_DOC_TEXT, encoding="utf-8")
    t_submit = time.perf_counter()
    t_running = None
    reindex_error = reindex_msg = ""
    if reindex == "ui":  # the 重新索引（增量） button: index_corpus in the app's own process
        admin.predict(api_name=page_load)  # fills this session's knowledge-base lists, as opening the page does
        job = admin.submit(DEFAULT_ID, api_name=reindex_api)  # the base picked in the 知识库 tab (by id)
        while not job.done() and time.perf_counter() < deadline:
            if t_running is None and job.status().code.name in ("PROCESSING", "PROGRESS"):
                t_running = time.perf_counter()
            time.sleep(0.02)
        timed_out = not job.done()
        try:
            reindex_msg = job.result(timeout=max(0.1, deadline - time.perf_counter()))[0]
        except Exception as e:  # noqa: BLE001
            reindex_error = f"{type(e).__name__}: {e}"
    else:  # `kexie index` in another process against the same directories
        with open(app.root / "cli-index.log", "w") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "rag.cli", "index", "--wait", "--corpus", str(app.corpus),
                                     "--index", str(app.index)], env=app.env(), cwd=app.root, stdout=fh,
                                    stderr=subprocess.STDOUT)
            t_running = time.perf_counter()
            try:
                proc.wait(timeout=max(0.1, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        timed_out = time.perf_counter() >= deadline
        reindex_msg = (app.root / "cli-index.log").read_text(encoding="utf-8", errors="replace")
        if proc.returncode:
            reindex_error = f"kexie index exited with {proc.returncode}"
    t_done = time.perf_counter()
    reindexed.set()
    ws, we = (t_running or t_submit), t_done

    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()) + 1)
    hung = [t.name for t in threads if t.is_alive()]
    wall = time.perf_counter() - t_start
    watch.stop.set()
    watch.join(2)
    watch.scan()
    for c in clients + [admin]:
        if c is not None:
            c.close()
    if hung or timed_out:
        pytest.fail(f"load run exceeded its {TIMEOUT_S:.0f} s limit: {len(results)}/{total} answers, "
                    f"re-index {'unfinished' if timed_out else 'done'}, sessions still waiting: {hung[:5]}")

    # -- what happened -----------------------------------------------------------------------
    results.sort(key=lambda r: (r.session, r.turn))
    gens_committed = [g for g, _ in watch.committed]
    gen1 = gens_committed[-1]
    t_commit = next((t for g, t in watch.committed if g == gen1), we)
    failures: list[tuple[str, str]] = []  # (kind, message)

    def fail(r: Result | None, msg: str, kind: str = "check") -> None:
        where = f"session {r.session} turn {r.turn} {r.question!r} [{r.gen or '?'}]: " if r else ""
        failures.append((kind, where + msg))

    if reindex_error:
        fail(None, f"re-index failed: {reindex_error}\n{reindex_msg[-1000:]}")
    if "新增 1" not in reindex_msg:
        fail(None, f"re-index summary: {reindex_msg[-300:]!r}")
    if len(gens_committed) != 2 or gen1 == gen0:
        fail(None, f"expected exactly one new generation after {gen0}, saw {gens_committed}")
    if NEW_DOC not in (watch.sources.get(gen1) or ()):
        fail(None, f"{gen1} does not contain {NEW_DOC}")

    grace = CLI_STALE_GRACE_S if reindex == "cli" else 0.0
    every_doc = frozenset().union(*watch.sources.values())
    for r in results:  # /api/ask names no generation: where it is known from the timing, the checks below apply
        if r.api and not r.error:
            r.gen = gen0 if r.t1 <= t_submit else gen1 if r.t0 > we + grace else ""

    last_gen: dict[int, str] = {}
    for r in results:
        if r.error:
            fail(r, f"error: {r.error}", "error")
            continue
        for p in r.problems:
            fail(r, p)
        if not r.gen:
            for src in r.sources if r.api else ():
                if src not in every_doc:
                    fail(r, f"cites {src!r}, which is no document of any generation")
            continue
        docs = watch.docs(r.gen)
        if docs is None:
            fail(r, f"served from {r.gen}, a generation never committed to {app.index}")
            continue
        for src in r.sources:
            if src not in docs:
                fail(r, f"cites {src!r}, which is not a document of {r.gen}")
        if NEW_DOC not in docs and any(m in r.answer for m in NEW_DOC_MARKERS):
            fail(r, f"answer mentions the new document but {r.gen} does not contain it: {r.answer[:60]}")
        if r.gen < last_gen.get(r.session, ""):
            fail(r, f"went back from {last_gen[r.session]} to {r.gen}")
        last_gen[r.session] = max(r.gen, last_gen.get(r.session, ""))
        if r.t0 > we + grace and r.gen != gen1 or r.t0 > we and r.gen not in (gen0, gen1):
            fail(r, f"started {r.t0 - we:.2f} s after the re-index finished but was served from {r.gen}, not {gen1}")
        if r.kind == "newdoc" and r.post and NEW_DOC in docs and (r.refused or NEW_DOC not in r.sources):
            fail(r, f"the new document should answer it: {r.answer[:80]!r} cites {r.sources}")

    # Identical turns (same question after the same previous turn) on the same generation with all its vectors:
    # identical answers. While a generation's vectors are still being made, its hybrid ranking uses the ones
    # already stored, so answers may change as they arrive (the same generation, a fuller vector index).
    seen: dict[tuple, Result] = {}
    compared = 0
    for r in results:
        done_at = watch.vectors_complete.get(r.gen)
        if r.error or not r.gen or done_at is None or r.t0 < done_at:
            continue
        other = seen.setdefault((r.gen, r.question, r.prev_question, r.prev_answer), r)
        compared += other is not r
        if other is not r and (other.answer, other.sources) != (r.answer, r.sources):
            fail(r, f"differs from session {other.session}'s answer to the same turn: "
                    f"{r.answer[:60]!r} vs {other.answer[:60]!r}")
    assert compared > 0, "no identical turns were served from a generation with all its vectors"

    # Old-generation answers equal a single user's, computed in-process on the fixture index (same generation).
    from rag.index import store
    baseline_checked, t_base = 0, time.perf_counter()
    if store.Manifest.read(corpus_index.index_dir).generation == gen0:
        for r in results:
            if r.error or r.gen != gen0 or r.script >= BASELINE_SCRIPTS:
                continue
            want = baseline(corpus_index, retriever, gen0, scripts, r.script, r.turn)
            baseline_checked += 1
            if (r.answer, r.sources) != want:
                fail(r, f"differs from the single-user answer: {r.answer[:60]!r} {r.sources} "
                        f"vs {want[0][:60]!r} {want[1]}")
    baseline_s = time.perf_counter() - t_base

    log_text = app.log.read_text(encoding="utf-8", errors="replace")
    race, other_log = app_log_problems(log_text)
    if race or other_log:
        fail(None, f"app log: {race} Chroma-open race tracebacks, {len(other_log)} other errors\n"
                   + "\n".join(other_log[:2]), "log")
    fresh = [r for r in results if r.kind == "newdoc" and r.post and r.gen == gen1]
    if not fresh:
        fail(None, f"no question about the new document was answered from {gen1}")
    if len(results) != total:
        fail(None, f"only {len(results)} of {total} requests were answered", "incomplete")

    # -- figures -----------------------------------------------------------------------------
    ok = [r for r in results if not r.error]
    before = [r for r in ok if r.t1 <= ws]
    during = [r for r in ok if r.t0 < we and r.t1 > ws]
    inside = [r for r in ok if r.t0 >= ws and r.t1 <= we]
    after = [r for r in ok if r.t0 >= we]
    # The first chats after a commit load the new generation (all sessions' post-re-index turns start together).
    first_after = sorted(after, key=lambda r: r.t0)[:SESSIONS]
    t_end = max((r.t1 for r in results), default=we)
    table = {"overall": summary(ok, (t_start, t_end), ok), "before": summary(before, (t_start, ws), ok),
             "during": summary(during, (ws, we), ok), "inside": summary(inside), "after": summary(after, (we, t_end), ok),
             "after_1st": summary(first_after)}
    report = {
        "reindex_by": "do_reindex endpoint (in the app)" if reindex == "ui" else "python -m rag.cli index (subprocess)",
        "sessions": SESSIONS, "api_sessions": sum(1 for i in range(SESSIONS) if is_api_user(i)),
        "turns_per_session": TURNS, "requests_planned": total, "requests": len(results),
        "errors": sum(1 for r in results if r.error), "problems": len(failures),
        "refused": sum(1 for r in ok if r.refused), "wall_s": round(wall, 2),
        "throughput_rps": round(len(results) / wall, 2) if wall else None,
        "reindex": {"generation_before": gen0, "generation_after": gen1, "started_s": round(t_submit - t_start, 3),
                    "running_s": round(ws - t_start, 3), "commit_seen_s": round(t_commit - t_start, 3),
                    "finished_s": round(we - t_start, 3), "window_s": round(we - ws, 3),
                    "summary": reindex_msg.strip().splitlines()[-1] if reindex_msg.strip() else ""},
        "served_by_generation": {g: sum(1 for r in ok if r.gen == g) for g in sorted({r.gen for r in ok})},
        "baseline_checked": baseline_checked, "baseline_s": round(baseline_s, 2),
        "latency": table,
        "failures": [m for _, m in failures[:50]],
        # t0/t1: seconds since the load started; the re-index window is reindex.running_s .. reindex.finished_s
        "requests_log": [{"session": r.session, "api": r.api, "turn": r.turn, "kind": r.kind, "t0": round(r.t0 - t_start, 3),
                          "t1": round(r.t1 - t_start, 3), "gen": r.gen, "refused": r.refused, "error": r.error[:200]}
                         for r in results],
    }
    write_report(out_dir, reindex, report)
    print_table(f"load [{reindex}]: {SESSIONS} sessions ({report['api_sessions']} via /api/ask) x {TURNS} turns, "
                f"{len(results)} requests in {wall:.1f} s "
                f"({report['throughput_rps']} req/s), errors {report['errors']}, refused {report['refused']}, "
                f"re-index window {we - ws:.2f} s ({gen0} -> {gen1}), baseline-checked {baseline_checked}", table)

    assert not failures, f"{len(failures)} problems:\n" + "\n".join(m for _, m in failures[:30])
    # Reading is not blocked by the re-index: chats keep finishing across it as they do elsewhere in the run.
    across, elsewhere = stretches([r.t1 for r in ok], ws, we)
    assert across is not None, f"no chat finished after the re-index began (latency during {table['during']})"
    assert across <= STALL_FACTOR * elsewhere, (
        f"no chat finished for {across:.2f} s across the {we - ws:.2f} s re-index, more than {STALL_FACTOR:g} x the "
        f"longest such stretch elsewhere ({elsewhere:.2f} s): reading was blocked (latency during {table['during']})")
    p95_before = pct([r.latency for r in before], 95)
    if p95_before is not None and we - ws > 2 * p95_before:
        assert inside, (f"no chat both started and finished during the {we - ws:.2f} s re-index "
                        f"(p95 before {p95_before:.2f} s): reading was blocked (latency during {table['during']})")
    assert after, "no chat was sent after the re-index"


def _every(start: float, stop: float, step: float) -> list[float]:
    return [start + i * step for i in range(int((stop - start) / step) + 1)]


# (case, finish times, re-index window, blocked?)
STALL_CASES = [
    ("steady finishes, short re-index", _every(0, 60, 1.0), (30.2, 30.7), False),
    ("bursts of four every 6 s, re-index between them", [b + d for b in _every(0, 60, 6) for d in (0, .1, .2, .3)],
     (6.4, 6.9), False),
    ("a local run's finishes (test-output/load.json of a passing run)",
     [2.4, 4.8, 9.4, 15.2, 17.2, 17.2, 19.1, 20.8, 22.9, 23.0, 25.0, 25.0, 25.1, 31.4, 31.5, 33.2, 34.8, 36.5, 38.1,
      39.9, 41.6, 41.6, 41.6, 43.1, 44.6, 47.5, 50.1, 50.1, 50.2, 50.2, 52.2, 52.3, 54.1, 54.3, 54.3, 54.4, 54.4,
      54.5, 58.7, 58.8, 58.8, 58.8, 64.0, 65.9, 66.0, 66.0, 72.8, 72.9, 72.9, 72.9, 74.7, 80.1, 80.1, 81.8, 81.9],
     (25.35, 25.9), False),
    ("long re-index with chats finishing inside it", _every(0, 80, 2.0), (20.5, 50.5), False),
    ("finishes stop for 15 s after a short re-index", _every(0, 30, 1.0) + _every(45, 70, 1.0), (30.2, 30.7), True),
    ("none finishes during a long re-index", _every(0, 20, 2.0) + _every(50, 80, 2.0), (20.5, 50.5), True),
    ("none finishes after the re-index began", _every(0, 30, 1.0), (30.2, 30.7), True),
]


@pytest.mark.parametrize("case,ends,window,blocked", STALL_CASES, ids=[c[0] for c in STALL_CASES])
def test_a_stall_across_the_reindex_is_told_from_bursty_finishes(case, ends, window, blocked):
    across, elsewhere = stretches(ends, *window)
    assert (across is None or across > STALL_FACTOR * elsewhere) == blocked, (case, across, elsewhere)


def test_cold_start_concurrent_first_questions(start_app, out_dir):
    """Users already on the page when the app (re)starts: the first questions arrive together."""
    app = start_app()
    clients = [None if is_api_user(i) else make_client(app.url) for i in range(SESSIONS)]
    api, _ = endpoint_names(next(c for c in clients if c is not None))
    docs = GenerationWatch(app.index)
    gen0 = docs.committed[-1][0]
    questions = [t.question for script in build_scripts(SCRIPTS, TURNS) for t in script
                 if t.kind in ("ans", "place", "unans")] * SESSIONS  # standalone questions only
    results: list[Result] = []
    lock, start = threading.Lock(), threading.Event()

    def one(i: int) -> None:
        start.wait()
        r = Result(i, 0, 0, questions[i], "cold", False, time.perf_counter())
        if clients[i] is None:
            if ask_api(app.url, r, [], REQUEST_TIMEOUT_S):
                r.gen = gen0  # nothing re-indexes here: the one generation
        else:
            ask(clients[i], api, r, [], REQUEST_TIMEOUT_S)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(SESSIONS)]
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join(REQUEST_TIMEOUT_S + 10)
    for c in clients:
        if c is not None:
            c.close()
    assert not any(t.is_alive() for t in threads), "cold-start questions still unanswered after the time limit"

    failures: list[tuple[str, str]] = []
    for r in sorted(results, key=lambda r: r.session):
        if r.error:
            failures.append(("error", f"session {r.session} {r.question!r}: {r.error}"))
            continue
        failures += [("check", f"session {r.session}: {p}") for p in r.problems]
        known = docs.docs(r.gen) or frozenset()
        failures += [("check", f"session {r.session}: cites {s!r}, not in {r.gen}") for s in r.sources if s not in known]
    log_text = app.log.read_text(encoding="utf-8", errors="replace")
    race, other_log = app_log_problems(log_text)
    if race or other_log:
        failures.append(("log", f"app log: {race} Chroma-open race tracebacks, {len(other_log)} other errors"))
    table = {"cold": summary([r for r in results if not r.error])}
    write_report(out_dir, "cold_start", {"sessions": SESSIONS, "requests": len(results),
                                         "errors": sum(1 for r in results if r.error), "latency": table,
                                         "failures": [m for _, m in failures[:50]]})
    print_table(f"cold start: {SESSIONS} first questions at once, errors {sum(1 for r in results if r.error)}", table)
    assert not failures, f"{len(failures)} problems:\n" + "\n".join(m for _, m in failures[:30])
