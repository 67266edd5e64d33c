"""The 评测 tab: the run store and background runner (rag/serve/evalruns.py) and the tab in real Chromium."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, copy_index, free_port

from rag.serve.evalruns import EvalError, EvalRuns, compare, summary, write_xlsx
from rag.settings import load_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DEV = [json.loads(x) for x in (PROJECT_ROOT / "evals" / "dev.jsonl").read_text(encoding="utf-8").splitlines()[:4]]


def wait(store: EvalRuns, run_id: str, timeout: float = 600) -> dict:  # runs are niced: slow while the other worker computes
    deadline = time.time() + timeout
    while time.time() < deadline:
        rec = store.get(run_id)
        if rec["status"] not in ("queued", "running"):
            return rec
        time.sleep(0.3)
    pytest.fail(f"run {run_id} still {rec['status']} after {timeout} s")


def write_xlsx_dataset(path: Path, items: list[dict]) -> Path:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    cols = ["id", "question", "answer", "evidence", "source", "must_include", "type"]
    ws.append(cols)
    for it in items:
        ws.append(["||".join(it[c]) if isinstance(it[c], list) else it[c] for c in cols])
    wb.save(path)
    return path


@pytest.fixture(scope="module")
def kb_settings(corpus_index, tmp_path_factory):
    """A copy of the session index (an eval indexes incrementally; the shared one stays untouched)."""
    root = tmp_path_factory.mktemp("evalkb")
    copy_index(corpus_index, root)
    return load_settings(env={}, corpus_dir=root / "corpus", index_dir=root / "index", data_dir=str(root / "data"))


@pytest.fixture(scope="module")
def store(kb_settings):
    return EvalRuns(kb_settings.data_root / "evals")


@pytest.fixture(scope="module")
def done_run(store, kb_settings, tmp_path_factory):
    ds = tmp_path_factory.mktemp("ds") / "four.jsonl"
    ds.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in DEV), encoding="utf-8")
    rec = store.start(ds, ds.name, "default", "默认知识库", kb_settings, ["bm25", "hybrid"])
    assert rec["status"] == "queued" and rec["questions"] == 4
    return wait(store, rec["id"])


# -- the store ----------------------------------------------------------------------------------
def test_run_writes_eval_outputs_and_outcomes(store, done_run):
    assert done_run["status"] == "done", done_run["error"]
    d = store.dir(done_run["id"])
    for name in ("run.json", "results.jsonl", "metrics.json", "report.html", "report.md", "outcomes.xlsx", "dataset.jsonl"):
        assert (d / name).is_file(), name
    assert done_run["configs"] == ["bm25", "hybrid"] and done_run["mode"] == "hybrid"  # canonical order; configured mode primary
    assert done_run["progress"]["done"] == done_run["progress"]["total"] == 2 * 4 + 4
    assert done_run["started"] and done_run["finished"] >= done_run["started"]
    m = store.metrics(done_run["id"])
    assert set(m["comparison"]) == {"bm25", "hybrid"} and m["config"] == "hybrid" and "hit@5" in m
    rows = store.outcomes(done_run["id"])
    assert [r["id"] for r in rows] == [x["id"] for x in DEV]
    # The per-question hit@5 agrees with the report's figure for the primary configuration.
    assert sum(r["hit@5"] for r in rows) / 4 == pytest.approx(m["hit@5"])
    assert all(r["retrieved"] and r["retrieved"][0]["source"] for r in rows)
    assert [p.name for p in store.downloads(done_run["id"])] == ["results.jsonl", "metrics.json", "report.html", "outcomes.xlsx"]
    assert store.list_runs()[0]["id"] == done_run["id"]
    assert store.list_runs({"another-kb"}) == []


def test_outcomes_xlsx_one_row_per_question(store, done_run):
    from openpyxl import load_workbook

    ws = load_workbook(store.dir(done_run["id"]) / "outcomes.xlsx").active
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0][:3] == ("编号", "问题", "题型") and "回答正确" in rows[0] and "首个相关段落名次" in rows[0]
    assert [r[0] for r in rows[1:]] == [x["id"] for x in DEV]
    assert all(r[rows[0].index("回答正确")] in ("是", "否") for r in rows[1:])


def test_xlsx_cells_never_formulas(tmp_path):
    from openpyxl import load_workbook

    row = {"id": "x", "question": "=HYPERLINK(\"http://evil\")", "type": "", "gold_answer": "", "must_include": [],
           "answer": "a\x01b", "refused": True, "correct": False, "rank": None, "hit@1": None, "hit@5": None, "retrieved": []}
    write_xlsx([row], tmp_path / "o.xlsx")
    ws = load_workbook(tmp_path / "o.xlsx").active
    assert ws["B2"].data_type == "s" and ws["B2"].value.startswith("=HYPERLINK") and ws["F2"].value == "ab"


def _o(qid, correct, rank, answerable=True):
    return {"id": qid, "question": f"问题{qid}", "answerable": answerable, "correct": correct, "refused": not correct,
            "rank": rank}


@pytest.mark.parametrize("a, b, change", [
    (_o("q", False, 3), _o("q", True, 3), "better"),     # the answer became right
    (_o("q", True, 1), _o("q", False, 1), "worse"),
    (_o("q", True, 4), _o("q", True, 1), "better"),      # same answer verdict: the relevant passage ranks higher
    (_o("q", False, 2), _o("q", False, None), "worse"),  # relevant passage lost
    (_o("q", False, None), _o("q", False, 5), "better"),
    (_o("q", True, 2), _o("q", True, 2), "same"),
    (_o("q", True, None, False), _o("q", True, None, False), "same"),   # unanswerable, refused both times
    (_o("q", True, None, False), _o("q", False, None, False), "worse"),  # now answers what it cannot know
    (_o("q", True, 5), _o("q", False, 1), "worse"),      # correctness outranks rank
])
def test_compare_change(a, b, change):
    rows = compare([a], [b])
    assert [(r["id"], r["change"]) for r in rows] == [("q", change)]


def test_compare_questions_in_one_run_only():
    rows = compare([_o("1", True, 1), _o("2", True, 1)], [_o("2", True, 2), _o("3", False, None)])
    assert [(r["id"], r["change"]) for r in rows] == [("1", "only_a"), ("2", "worse"), ("3", "only_b")]
    assert summary(rows) == {"better": 0, "worse": 1, "same": 0, "only_a": 1, "only_b": 1}


def test_unreadable_dataset_fails_with_the_reason(store, kb_settings, tmp_path):
    bad = write_xlsx_dataset(tmp_path / "bad.xlsx", [{**DEV[0], "question": ""}])
    rec = store.start(bad, "问答对.xlsx", "default", "默认知识库", kb_settings, ["hybrid"])
    assert rec["status"] == "failed" and "缺少 question" in rec["error"] and rec["finished"]
    assert store.get(rec["id"])["status"] == "failed"
    with pytest.raises(EvalError, match="不支持"):
        store.start(bad, "问答对.docx", "default", "默认知识库", kb_settings, ["hybrid"])
    with pytest.raises(EvalError, match="未知的评测配置"):
        store.start(bad, "问答对.xlsx", "default", "默认知识库", kb_settings, ["rerank"])
    with pytest.raises(EvalError, match="至少选择"):
        store.start(bad, "问答对.xlsx", "default", "默认知识库", kb_settings, [])


@pytest.fixture
def fake_store(tmp_path):
    """A store whose 'python' prints progress, an error and exits 3 after a second (no model)."""
    exe = tmp_path / "fake-python"
    exe.write_text("#!/bin/sh\necho '进度 0/2 索引与加载模型' >&2\nsleep 1\necho '进度 1/2 回答' >&2\n"
                   "echo 'Traceback (most recent call last):' >&2\necho 'RuntimeError: 假的失败' >&2\nexit 3\n")
    exe.chmod(0o755)
    return EvalRuns(tmp_path / "evals", python=str(exe))


def test_crash_is_failed_with_last_lines_and_runs_queue_one_at_a_time(fake_store, kb_settings, tmp_path):
    ds = tmp_path / "d.jsonl"
    ds.write_text(json.dumps(DEV[0], ensure_ascii=False) + "\n", encoding="utf-8")
    ids = [fake_store.start(ds, ds.name, "default", "默认知识库", kb_settings, ["hybrid"])["id"] for _ in range(2)]
    both = False
    deadline = time.time() + 60
    while time.time() < deadline:
        st = [fake_store.get(i)["status"] for i in ids]
        both |= st == ["running", "running"]
        if "queued" not in st and "running" not in st:
            break
        time.sleep(0.1)
    assert not both
    for i in ids:
        rec = fake_store.get(i)
        assert rec["status"] == "failed" and "退出码 3" in rec["error"] and "RuntimeError: 假的失败" in rec["error"]
        assert rec["progress"] == {"done": 1, "total": 2, "stage": "回答"}
    cmd = fake_store.command(fake_store.get(ids[0]))
    assert cmd[:3] == [shutil.which("nice"), "-n", "10"] and "--configs" in cmd and cmd[cmd.index("--configs") + 1] == "hybrid"


def test_subprocess_environment_and_settings(fake_store, kb_settings, monkeypatch):
    monkeypatch.setenv("KEXIE_INDEX_DIR", "/elsewhere")
    s = kb_settings.replace(llm_api_key="sk-secret-1234", answer_threshold=0.3)
    fake_store._secrets["r"] = {"KEXIE_LLM_API_KEY": s.llm_api_key}
    env = fake_store._env("r")
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1" and env["TOKENIZERS_PARALLELISM"] == "false"
    assert "KEXIE_INDEX_DIR" not in env and env["KEXIE_LLM_API_KEY"] == "sk-secret-1234"
    from rag.serve.evalruns import _toml

    text = _toml(s, "bm25")
    assert "sk-secret" not in text and 'retrieval_mode = "bm25"' in text
    path = Path(fake_store.root) / "s.toml"
    path.write_text(text, encoding="utf-8")
    loaded = load_settings(path, env={})  # the subprocess reads back the same settings
    assert loaded.answer_threshold == 0.3 and loaded.embedding_model == s.embedding_model


def test_restart_fails_stale_runs(tmp_path):
    root = tmp_path / "evals"
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        cases = {"20260101-000000-aaaaaa": (os.getpid(), "running"),  # same pid, earlier process (a restarted container)
                 "20260101-000001-bbbbbb": (2**22 + 7, "running"),     # gone
                 "20260101-000002-cccccc": (2**22 + 7, "queued"),
                 "20260101-000003-dddddd": (sleeper.pid, "running")}   # another live app on the same data dir
        for rid, (pid, st) in cases.items():
            (root / rid).mkdir(parents=True)
            (root / rid / "run.json").write_text(json.dumps({"id": rid, "status": st, "created": 1, "owner_pid": pid,
                                                             "owner_token": "earlier", "kb_id": "default"}))
        store = EvalRuns(root)
        got = {r["id"]: r for r in store.list_runs()}
        assert got["20260101-000000-aaaaaa"]["status"] == "failed" and "中断" in got["20260101-000000-aaaaaa"]["error"]
        assert got["20260101-000001-bbbbbb"]["status"] == "failed"
        assert got["20260101-000002-cccccc"]["status"] == "failed" and "未运行" in got["20260101-000002-cccccc"]["error"]
        assert got["20260101-000003-dddddd"]["status"] == "running"
    finally:
        sleeper.kill()
        sleeper.wait()
    with pytest.raises(EvalError):
        store.get("../../etc")


def test_runs_listed_only_on_visible_bases(store, done_run, kb_settings):
    from rag.serve.evaltab import run_visible, runs_visible
    from rag.serve.kbs import Registry

    s = kb_settings.replace(auth_user="admin", auth_password="admin-pw", users={"alice": "alice-pw"})
    reg = Registry(s)
    assert done_run["id"] in [r["id"] for r in runs_visible(store, reg, "admin")]
    assert runs_visible(store, reg, "alice") == [] and run_visible(store, reg, done_run["id"], "alice") is None
    reg.grant("alice", "default")
    assert run_visible(store, reg, done_run["id"], "alice")["id"] == done_run["id"]


# -- the tab in a browser -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tab_app(kb_settings, tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium not installed (scripts/test-deps.sh installs it as root)")
    import gradio as gr

    from rag.serve.evaltab import eval_tab
    from rag.serve.guard import FileOwners
    from rag.serve.kbs import Registry

    s = kb_settings.replace(data_dir=str(tmp_path_factory.mktemp("tabdata")))
    with gr.Blocks(title="评测") as demo:
        with gr.Tabs():
            eval_tab(s, Registry(s), lambda request: None, FileOwners(), s.data_root / "exports")
    port = free_port()
    demo.queue()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", s
    demo.close()


# A page update waits for the app's own work (an upload parsed, a run queued); under `make test` the other worker
# may be running a browser and a server meanwhile, and 30 s was seen to run out on a fresh clone.
UI_WAIT_MS = 120_000


def test_eval_tab_in_browser(tab_app, tmp_path, out_dir):
    from playwright.sync_api import sync_playwright

    url, s = tab_app
    ds = write_xlsx_dataset(tmp_path / "科协问答对.xlsx", DEV[:3])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(url)
            page.get_by_role("tab", name="评测").click()
            page.wait_for_function("document.querySelector('#eval-kb input') && "
                                   "document.querySelector('#eval-kb input').value.includes('默认知识库')", timeout=UI_WAIT_MS)
            page.set_input_files("#eval-upload input[type=file]", str(ds))
            page.wait_for_function("document.querySelector('#eval-upload').innerText.includes('科协问答对.xlsx')", timeout=UI_WAIT_MS)
            assert page.locator("#eval-configs input[type=checkbox]:checked").count() == 1

            for n in (1, 2):
                page.click("#eval-start")
                page.wait_for_function("/排队中|正在/.test(document.querySelector('#eval-status').innerText)", timeout=UI_WAIT_MS)
                page.wait_for_function("document.querySelector('#eval-status').innerText.includes('评测完成')", timeout=600000)
                page.wait_for_function("document.querySelector('#eval-report').innerText.includes('hit@5')", timeout=UI_WAIT_MS)
                report = page.inner_text("#eval-report")
                assert "检索指标" in report and "回答准确率" in report and "科协问答对.xlsx" in report
                assert page.locator("#eval-report img").count() == 3  # the plots
                page.wait_for_function("document.querySelector('#eval-files').innerText.includes('outcomes.xlsx')", timeout=UI_WAIT_MS)
                files = page.inner_text("#eval-files")
                assert all(x in files for x in ("results.jsonl", "metrics.json", "report.html"))
                if n == 1:
                    page.screenshot(path=str(out_dir / "web_eval.png"), full_page=True)

            # The comparison defaults to the two newest runs: the same data twice changes nothing.
            page.click("#eval-cmp-btn")
            page.wait_for_function("document.querySelector('#eval-cmp-summary').innerText.includes('变好')", timeout=UI_WAIT_MS)
            assert "变好 0 题 · 变差 0 题 · 不变 3 题" in page.inner_text("#eval-cmp-summary")
            table = page.inner_text("#eval-cmp")
            assert all(x["id"] in table for x in DEV[:3]) and "不变" in table
            page.screenshot(path=str(out_dir / "web_eval_compare.png"), full_page=True)

            # A past run opens from the list.
            first = EvalRuns.for_settings(s).list_runs()[-1]
            page.click("#eval-runs input")
            page.get_by_role("option", name=first["id"][-6:]).click()
            page.wait_for_function(f"document.querySelector('#eval-files').innerText.includes('{first['id']}')", timeout=UI_WAIT_MS)
            assert "hit@5" in page.inner_text("#eval-report")
        finally:
            browser.close()
