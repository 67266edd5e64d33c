"""The 评测 tab of the web app: upload a Q&A dataset, run `kexie eval` in the background, read the
report in the page, download the results, and compare any two runs question by question."""

from __future__ import annotations

import base64
import html
import shutil
import time
from pathlib import Path

import gradio as gr

from rag.serve.evalruns import (
    ACTIVE,
    CONFIGS,
    DATASET_TYPES,
    EvalError,
    EvalRuns,
    outcome_text,
    summary,
)
from rag.serve.guard import protect_output
from rag.serve.kbs import KBError

CONFIG_LABELS = {"hybrid": "hybrid（本项目混合检索）", "bm25": "bm25（仅 BM25）", "vector": "vector（仅向量）",
                 "fused": "fused（BM25+向量融合，不经阅读模型重排）",
                 "langchain": "langchain（LangChain 教科书基线）"}
STATUS = {"queued": "排队中", "running": "进行中", "done": "完成", "failed": "失败"}
RETRIEVAL = ["hit@1", "hit@3", "hit@5", "hit@10", "mrr", "ndcg@10"]
ANSWER = {"answer_accuracy": "回答准确率", "char_f1": "字符级 F1", "rouge_l": "ROUGE-L", "citation_precision": "引用精确率",
          "citation_recall": "引用召回率", "refusal_accuracy": "拒答准确率（不可回答题）", "false_refusal_rate": "误拒率（可回答题）"}
CHANGES = {"better": "变好", "worse": "变差", "same": "不变", "only_a": "仅 A 有", "only_b": "仅 B 有"}
CMP_HEADERS = ["变化", "编号", "问题", "A 的结果", "B 的结果"]

STYLE = """<style>
.eval-report table {border-collapse:collapse; margin:6px 0 14px; font-size:0.92em;}
.eval-report th, .eval-report td {border:1px solid #d0d7de; padding:4px 8px; vertical-align:top; text-align:left;}
.eval-report th {background:#f6f8fa;}
.eval-report .plots {display:flex; flex-wrap:wrap; gap:8px;}
.eval-report .plots img {max-width:32%; min-width:300px; height:auto; border:1px solid #eee;}
.eval-report .muted {color:#57606a;}
.eval-report .ret {font-size:0.9em; color:#57606a; margin:2px 0;}
</style>"""


def _t(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "–"


def _num(v) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def run_label(rec: dict) -> str:
    return (f"{_t(rec.get('created'))} · {rec['dataset']} · {rec['kb_name']} · {','.join(rec['configs'])} · "
            f"{STATUS.get(rec['status'], rec['status'])} · {rec['id'][-6:]}")


def status_markdown(runs: EvalRuns, rec: dict | None) -> str:
    """One line or two on where a run stands."""
    if rec is None:
        return "上传数据集、选择知识库与检索配置后点击“开始评测”。评测在后台运行，不影响问答。"
    what = f"**{rec['dataset']}** · 知识库 {rec['kb_name']} · 配置 {', '.join(rec['configs'])}"
    st = rec["status"]
    if st == "queued":
        ahead = runs.queue_position(rec["id"])
        return f"**排队中**：{what}" + (f"（前面还有 {ahead} 个评测）" if ahead else "")
    if st == "running":
        p = rec.get("progress") or {}
        done, total = p.get("done", 0), p.get("total", 0)
        if not total:
            return f"**正在启动**：{what}（加载模型与索引）"
        pct = int(100 * done / total)
        bar = "█" * (pct // 5) + "░" * (20 - pct // 5)
        return f"**正在评测**：{what}\n\n`{bar}` {done}/{total}（{pct}%）· {p.get('stage', '')}"
    if st == "done":
        secs = (rec.get("finished") or 0) - (rec.get("started") or rec.get("finished") or 0)
        return f"**评测完成**：{what} · {rec.get('questions', 0)} 个问题 · 用时 {secs:.0f} 秒 · {_t(rec.get('finished'))}"
    err = rec.get("error") or "未知原因"
    return f"**评测失败**：{what}\n\n```\n{err}\n```"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table; cells are escaped here, except those already built as HTML (wrapped in a Markup-like tuple)."""
    def cell(c):
        return c[0] if isinstance(c, tuple) else html.escape(str(c))

    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


def _retrieved(o: dict) -> tuple[str]:
    lines = [f"<div class='ret'>{n}. <b>{html.escape(h['source'])}</b>：{html.escape(' '.join(h['text'].split())[:80])}</div>"
             for n, h in enumerate(o["retrieved"], 1)]
    return ("".join(lines) or "<span class='muted'>（无）</span>",)


def report_html(runs: EvalRuns, rec: dict) -> str:
    """The report of a finished run, from metrics.json, the plots and the per-question outcomes."""
    if rec["status"] != "done":
        return ""
    d = runs.dir(rec["id"])
    m = runs.metrics(rec["id"])
    outcomes = runs.outcomes(rec["id"])
    esc = html.escape
    parts = [STYLE, "<div class='eval-report'>",
             f"<h3>评测报告：{esc(rec['dataset'])}</h3>",
             (f"<p class='muted'>知识库 {esc(rec['kb_name'])} · 问题 {m.get('questions', 0)} 个（可回答 {m.get('answerable', 0)} 个）· "
             f"回答与逐题结果使用 {esc(m.get('config') or rec.get('mode', ''))} · {_t(rec.get('finished'))}</p>"),
             "<h4>检索指标（各配置）</h4>",
             _table(["配置", *RETRIEVAL, "p50 毫秒", "p95 毫秒"],
                    [[name, *(_num(c.get(k)) for k in RETRIEVAL), _num(c.get("latency_p50_ms")), _num(c.get("latency_p95_ms"))]
                     for name, c in m.get("comparison", {}).items()])]
    if m.get("answer"):
        parts += ["<h4>回答</h4>", _table(["指标", "值"], [[label, _num(m["answer"].get(k))] for k, label in ANSWER.items()])]
    if m.get("per_type"):
        parts += ["<h4>按题型</h4>", _table(["题型", "数量", "回答准确率", "拒答准确率"],
                                           [[k, v["n"], _num(v["accuracy"]), _num(v["refusal_accuracy"])]
                                            for k, v in sorted(m["per_type"].items())])]
    parts.append("<div class='plots'>")
    for name in ("metrics.png", "hitk.png", "latency.png"):
        if (d / name).is_file():
            b64 = base64.b64encode((d / name).read_bytes()).decode()
            parts.append(f"<img alt='{name}' src='data:image/png;base64,{b64}'>")
    parts.append("</div>")
    failed = [o for o in outcomes if not o["correct"] or o["hit@5"] is False]
    parts.append(f"<h4>未通过的问题（{len(failed)} / {len(outcomes)}）</h4>")
    if failed:
        parts.append(_table(
            ["编号", "题型", "问题", "标准答案（必须包含）", "我们的回答", "结果", "检索到的前 3 条"],
            [[o["id"], o["type"], o["question"],
              o["gold_answer"] + (f"（{'、'.join(o['must_include'])}）" if o["must_include"] else "") or "（不可回答）",
              "拒答" if o["refused"] else o["answer"][:200], outcome_text(o), _retrieved(o)] for o in failed]))
    else:
        parts.append("<p>全部通过。</p>")
    others = {k: v for k, v in m.get("failures", {}).items() if k != m.get("config") and v}
    for name, fails in others.items():
        parts.append(f"<details><summary>{esc(name)}：前 5 条未检索到相关段落的问题（{len(fails)}）</summary>"
                     + _table(["编号", "题型", "问题", "检索到的前 3 条"],
                              [[f["id"], f["type"], f["question"], ("<br>".join(esc(x) for x in f["retrieved"]),)] for f in fails])
                     + "</details>")
    problems = m.get("evidence_problems") or []
    if problems:
        parts.append(f"<details><summary>证据校验：{len(problems)} 条证据不在语料中（文档可能已修改）</summary>"
                     + "".join(f"<div class='ret'>{esc(p)}</div>" for p in problems) + "</details>")
    parts.append("</div>")
    return "".join(parts)


def downloads(runs: EvalRuns, run_id: str, exports: Path) -> list[str]:
    """The run's files, copied into the page's private exports folder (the only one Gradio may serve from;
    the data directory also holds the database, which must never be served)."""
    out = exports / "eval" / run_id
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in runs.downloads(run_id):
        dst = out / f"{run_id}-{p.name}"
        if not dst.is_file() or dst.stat().st_mtime < p.stat().st_mtime:
            shutil.copyfile(p, dst)
        paths.append(str(dst))
    return paths


def compare_view(runs: EvalRuns, a: dict, b: dict) -> tuple[str, list[list[str]]]:
    rows = runs.compare(a["id"], b["id"])
    n = summary(rows)
    text = (f"**A**：{run_label(a)}\n\n**B**：{run_label(b)}\n\n"
            f"B 相对 A：变好 **{n['better']}** 题 · 变差 **{n['worse']}** 题 · 不变 {n['same']} 题"
            + (f" · 仅 A 有 {n['only_a']} 题" if n["only_a"] else "") + (f" · 仅 B 有 {n['only_b']} 题" if n["only_b"] else "")
            + "（先比回答是否正确，再比第一条相关段落的名次）")
    order = {"worse": 0, "better": 1, "only_a": 2, "only_b": 3, "same": 4}  # changes first; sorted() keeps dataset order within
    table = [[CHANGES[r["change"]], r["id"], r["question"], outcome_text(r["a"]), outcome_text(r["b"])]
             for r in sorted(rows, key=lambda r: order[r["change"]])]
    return text, table


def runs_visible(runs: EvalRuns, registry, user: str | None) -> list[dict]:
    """The runs on knowledge bases the user may see, newest first."""
    return runs.list_runs({kb.id for kb in registry.visible(user)})


def run_visible(runs: EvalRuns, registry, run_id: str | None, user: str | None) -> dict | None:
    """A run if the user may see its knowledge base, else None (unknown and not allowed read the same)."""
    if not run_id:
        return None
    try:
        rec = runs.get(run_id)
        registry.get(rec["kb_id"], user)
    except (EvalError, KBError):
        return None
    return rec


def eval_tab(settings, registry, user_of, owners, exports: Path):
    """The 评测 tab; call inside `with gr.Tabs():`. registry: rag.serve.kbs.Registry; user_of(request) -> user or None;
    owners: rag.serve.guard.FileOwners (a run's downloads belong to the user who asked, while they may read its base)."""
    runs = EvalRuns.for_settings(settings)

    def user(request: gr.Request | None):
        return user_of(request) if request is not None else None

    def visible_runs(request) -> list[dict]:
        return runs_visible(runs, registry, user(request))

    def run_for(run_id: str | None, request) -> dict | None:
        return run_visible(runs, registry, run_id, user(request))

    def pickers(request, value: str | None = None):
        """The past-runs and comparison dropdowns; comparison defaults: the two newest finished runs."""
        recs = visible_runs(request)
        choices = [(run_label(r), r["id"]) for r in recs]
        done = [r["id"] for r in recs if r["status"] == "done"]
        return (gr.update(choices=choices, value=value), gr.update(choices=choices, value=done[1] if len(done) > 1 else None),
                gr.update(choices=choices, value=done[0] if done else None))

    def show(rec: dict | None, request):
        """Status, report, files and the timer for one run."""
        if rec is None:
            return status_markdown(runs, None), "", None, gr.Timer(active=False)
        files = None
        if rec["status"] == "done":
            files = downloads(runs, rec["id"], exports)
            for f in files:
                owners.add(f, user(request) or "", rec.get("kb_id"))
        return (status_markdown(runs, rec), report_html(runs, rec), files, gr.Timer(active=rec["status"] in ACTIVE))

    def on_load(request: gr.Request):
        bases = registry.visible(user(request))
        kb = gr.update(choices=[(b.name, b.id) for b in bases], value=bases[0].id if bases else None)
        recs = visible_runs(request)
        active = next((r for r in recs if r["status"] in ACTIVE), None)
        return (kb, *pickers(request, active["id"] if active else None), active["id"] if active else None,
                *show(active, request))

    def on_refresh(kb_id, run_id, a_id, b_id, request: gr.Request):
        """Switching to the tab: bases and runs created meanwhile appear; what is chosen stays chosen."""
        bases = registry.visible(user(request))
        ids = [b.id for b in bases]
        choices = [(run_label(r), r["id"]) for r in visible_runs(request)]
        keep = {c[1] for c in choices}
        return (gr.update(choices=[(b.name, b.id) for b in bases], value=kb_id if kb_id in ids else (ids[0] if ids else None)),
                *(gr.update(choices=choices, value=v if v in keep else None) for v in (run_id, a_id, b_id)))

    def on_start(file, kb_id, configs, request: gr.Request):
        def refuse(msg):
            return (f"**未开始**：{msg}", gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), gr.update())

        if not file:
            return refuse("请先上传数据集文件（.jsonl / .csv / .xlsx）。")
        path = Path(file if isinstance(file, str) else file.name)
        try:
            kb = registry.get(kb_id, user(request))
            rec = runs.start(path, path.name, kb.id, kb.name, registry.settings_for(kb), list(configs or []), user(request))
        except (KBError, EvalError) as e:
            return refuse(str(e))
        status, report, files, timer = show(rec, request)
        return (status, rec["id"], report, files, timer, *pickers(request, rec["id"]))

    def on_tick(run_id, request: gr.Request):
        rec = run_for(run_id, request)
        if rec is None or rec["status"] in ACTIVE:
            return (status_markdown(runs, rec), gr.update(), gr.update(), gr.Timer(active=rec is not None),
                    gr.update(), gr.update(), gr.update())
        return (*show(rec, request), *pickers(request, rec["id"]))

    def on_open(run_id, request: gr.Request):
        rec = run_for(run_id, request)
        return (rec["id"] if rec else None, *show(rec, request))

    def on_compare(a_id, b_id, request: gr.Request):
        a, b = run_for(a_id, request), run_for(b_id, request)
        if a is None or b is None:
            return "请选择两次评测（A 与 B）。", gr.update(value=[])
        if a["status"] != "done" or b["status"] != "done":
            return "只能比较已完成的评测。", gr.update(value=[])
        text, table = compare_view(runs, a, b)
        return text, gr.update(value=table)

    with gr.Tab("评测", id="eval") as tab:
        gr.Markdown("上传问答对数据集（`.jsonl` / `.csv` / `.xlsx`，列名 id、question、answer、evidence、source、must_include、type，"
                    "见 evals/README.md；也可以上传反馈导出的 JSONL），在所选知识库上评测检索与回答。"
                    "评测在后台逐个运行，不影响问答；历史评测都会保留，可任选两次对比。")
        with gr.Row():
            with gr.Column(scale=2):
                upload = gr.File(label="数据集", file_types=list(DATASET_TYPES), type="filepath", elem_id="eval-upload")
            with gr.Column(scale=2):
                kb = gr.Dropdown(choices=[], label="知识库", elem_id="eval-kb")
                configs = gr.CheckboxGroup([(CONFIG_LABELS[c], c) for c in CONFIGS], value=["hybrid"], label="检索配置（可多选对比）",
                                           elem_id="eval-configs")
                start = gr.Button("开始评测", variant="primary", elem_id="eval-start")
        status = gr.Markdown(status_markdown(runs, None), elem_id="eval-status")
        current = gr.State(None)
        timer = gr.Timer(2.0, active=False)
        past = gr.Dropdown(choices=[], label="历史评测（选择以打开）", elem_id="eval-runs")
        report = gr.HTML("", elem_id="eval-report")
        files = protect_output(gr.File(label="下载：results.jsonl、metrics.json、report.html、outcomes.xlsx（逐题结果）",
                                       file_count="multiple", interactive=False, elem_id="eval-files"), owners)
        gr.Markdown("### 对比两次评测")
        with gr.Row():
            cmp_a = gr.Dropdown(choices=[], label="A（较早）", elem_id="eval-cmp-a")
            cmp_b = gr.Dropdown(choices=[], label="B（较新）", elem_id="eval-cmp-b")
            cmp_btn = gr.Button("对比", elem_id="eval-cmp-btn")
        cmp_text = gr.Markdown(elem_id="eval-cmp-summary")
        cmp = gr.Dataframe(headers=CMP_HEADERS, value=[], interactive=False, wrap=True, elem_id="eval-cmp")

    view = [status, report, files, timer]
    gr.on(None, on_load, None, [kb, past, cmp_a, cmp_b, current, *view], show_progress="hidden")
    tab.select(on_refresh, [kb, current, cmp_a, cmp_b], [kb, past, cmp_a, cmp_b], show_progress="hidden")
    start.click(on_start, [upload, kb, configs], [status, current, report, files, timer, past, cmp_a, cmp_b])
    timer.tick(on_tick, current, [*view, past, cmp_a, cmp_b], show_progress="hidden")
    past.input(on_open, past, [current, *view])
    cmp_btn.click(on_compare, [cmp_a, cmp_b], [cmp_text, cmp])
    return tab
