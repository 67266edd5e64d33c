"""Markdown and self-contained HTML evaluation reports with plots."""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

METRICS = ["hit@1", "hit@3", "hit@5", "hit@10", "mrr", "ndcg@10"]


def _plots(metrics: dict) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    for f in ("Noto Sans CJK SC", "Noto Sans CJK JP", "WenQuanYi Zen Hei", "SimHei"):
        if any(f == x.name for x in font_manager.fontManager.ttflist):
            plt.rcParams["font.sans-serif"] = [f]
            break
    comp = metrics.get("comparison", {})
    out: dict[str, bytes] = {}
    if comp:
        names = list(comp)
        fig, ax = plt.subplots(figsize=(8, 3.6))
        width = 0.8 / len(names)
        for i, n in enumerate(names):
            ax.bar([j + i * width for j in range(len(METRICS))], [comp[n][m] for m in METRICS], width, label=n)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(METRICS))], METRICS)
        ax.set_ylim(0, 1)
        ax.set_title("Retrieval metrics per configuration")
        ax.legend(fontsize=8)
        out["metrics.png"] = _png(fig)
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for n in names:
            ax.plot([1, 3, 5, 10], [comp[n][f"hit@{k}"] for k in (1, 3, 5, 10)], marker="o", label=n)
        ax.set_xlabel("k")
        ax.set_ylabel("hit@k")
        ax.set_ylim(0, 1)
        ax.set_title("hit@k curves")
        ax.legend(fontsize=8)
        out["hitk.png"] = _png(fig)
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.bar(names, [comp[n]["latency_p50_ms"] for n in names], label="p50")
        ax.bar(names, [comp[n]["latency_p95_ms"] - comp[n]["latency_p50_ms"] for n in names],
               bottom=[comp[n]["latency_p50_ms"] for n in names], alpha=0.5, label="p95")
        ax.set_ylabel("ms per query")
        ax.set_title("Retrieval latency")
        ax.legend(fontsize=8)
        out["latency.png"] = _png(fig)
    return out


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _table(rows: list[list], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(metrics: dict, title: str, images: list[str]) -> str:
    comp = metrics.get("comparison", {})
    parts = [f"# 评测报告：{title}", f"生成时间：{time.strftime('%Y-%m-%d %H:%M')}；问题 {metrics['questions']} 个（可回答 {metrics['answerable']} 个）", ""]
    parts.append("## 检索（各配置）")
    parts.append(_table([[n] + [f"{c[m]:.3f}" for m in METRICS] + [c["latency_p50_ms"], c["latency_p95_ms"]] for n, c in comp.items()],
                        ["配置"] + METRICS + ["p50 ms", "p95 ms"]))
    if "answer" in metrics:
        a = metrics["answer"]
        parts += ["", "## 回答", _table([[k, v] for k, v in a.items() if k != "latency_ms"], ["指标", "值"]), "",
                  "### 各阶段耗时（毫秒）",
                  _table([[k, v["p50"], v["p95"]] for k, v in a["latency_ms"].items()], ["阶段", "p50", "p95"])]
    if metrics.get("per_type"):
        parts += ["", "## 按题型", _table([[k, v["n"], v["accuracy"], v["refusal_accuracy"]] for k, v in sorted(metrics["per_type"].items())],
                                            ["题型", "数量", "回答准确率", "拒答准确率"])]
    for img in images:
        parts += ["", f"![{img}]({img})"]
    fails = metrics.get("failures", {}).get(metrics.get("config") or "", [])
    if fails:
        parts += ["", f"## 检索失败的问题（{metrics.get('config')}，前 5 条未命中）",
                  _table([[f["id"], f["type"], f["question"], "<br>".join(f["retrieved"])] for f in fails], ["id", "题型", "问题", "检索到的前 3 条"])]
    af = metrics.get("answer_failures", [])
    if af:
        parts += ["", "## 回答未通过的问题",
                  _table([[f["id"], f["type"], f["question"], "、".join(f["must_include"]), "拒答" if f["refused"] else f["answer"]] for f in af],
                         ["id", "题型", "问题", "必须包含", "回答"])]
    return "\n".join(parts) + "\n"


def write_report(out: Path, metrics: dict, title: str) -> None:
    imgs = _plots(metrics)
    for name, data in imgs.items():
        (out / name).write_bytes(data)
    md = markdown(metrics, title, list(imgs))
    (out / "report.md").write_text(md, encoding="utf-8")
    (out / "report.html").write_text(to_html(md, imgs, title), encoding="utf-8")


def to_html(md: str, imgs: dict[str, bytes], title: str) -> str:
    """A small Markdown subset (headings, tables, images) rendered to one self-contained page."""
    body = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                if not set(lines[i]) <= set("|-"):
                    rows.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            head, *rest = rows
            cell = lambda c: html.escape(c).replace("&lt;br&gt;", "<br>")  # noqa: E731
            body.append("<table><tr>" + "".join(f"<th>{cell(c)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rest) + "</table>")
            continue
        if line.startswith("!["):
            name = line[line.index("(") + 1 : -1]
            b64 = base64.b64encode(imgs[name]).decode()
            body.append(f"<img alt='{html.escape(name)}' src='data:image/png;base64,{b64}'>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
        i += 1
    style = ("body{font-family:'Noto Sans CJK SC',sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;color:#1f2328}"
             "table{border-collapse:collapse;margin:8px 0;font-size:14px}td,th{border:1px solid #d0d7de;padding:4px 8px;vertical-align:top}"
             "th{background:#f6f8fa}img{max-width:100%;margin:8px 0;border:1px solid #eee}")
    return f"<!doctype html><html lang='zh'><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>"
