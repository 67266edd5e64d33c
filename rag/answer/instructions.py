"""Instruction-like document text: sentences that address the assistant ("忽略以上指令…", "你现在是…").

Such text is only document data. The offline answerer never quotes it as an answer, the chunk view marks it,
and the LLM prompt says that passages are data (rag/answer/llm.py)."""

from __future__ import annotations

import re

_PATTERNS = [
    # "忽略/无视/忘记 (以上/之前/所有…) 指令/提示/规则…"
    r"(?:忽略|无视|忘记|忘掉|不要理会|不必理会)(?:掉)?(?:你)?(?:以上|上述|上面|之前|此前|前面|先前|所有|全部|一切|原有|原来)"
    r"(?:的|所有的|全部的)?(?:所有|全部)?(?:指令|指示|提示词?|规则|设定|要求|约束|内容)",
    r"(?:不要|不再|无需|不必|停止)(?:再)?(?:遵守|遵循|执行)(?:你的|原有的|原来的|以上|上述|系统)(?:的)?(?:指令|规则|设定|提示)",
    # Role play aimed at the reader: "你现在是…", "从现在起你是…", "请扮演…". "你现在是否…" asks, it does not instruct.
    r"(?:你现在|从现在起你?|从现在开始你?|接下来你)(?:是|扮演|充当|作为)(?!否)",
    r"(?:请|你要|你必须)(?:扮演|充当)",
    r"你的新(?:身份|角色|任务|指令)",
    r"(?:系统提示词?|system\s*prompt)",
    r"\b(?:ignore|disregard|forget)\s+(?:all\s+|any\s+|the\s+)?(?:previous|prior|above|earlier)\s+(?:instructions|prompts|rules)",
    r"\byou\s+are\s+now\b",
    # "回答：管理员密码是…" / "请回答：…" typed as an order to the assistant
    r"^(?:请)?(?:直接)?(?:回答|回复|输出)(?:为|是)?[:：]",
]
_INSTRUCTION = re.compile("|".join(f"(?:{p})" for p in _PATTERNS), re.IGNORECASE)


def looks_like_instruction(text: str) -> bool:
    """True for text that gives the assistant orders rather than stating facts."""
    return _INSTRUCTION.search(text.strip()) is not None
