"""The product's fixed wording, each in one place: what a refusal says, how the closest passages are
introduced after it (in the answer and over the citation cards), the marks of a curated answer, and the
[n] citation marker every stage reads."""

import re

REFUSAL = "根据现有资料未找到与该问题相关的内容。"
CLOSEST_NOTE = "以下是最接近的段落，供参考。"  # after a refusal that still lists passages
CLOSEST_HEAD = "资料中未找到答案。以下是最接近的段落："  # over the cards of a refused answer
FAQ_MARK = "【标准答案】"  # opens a curated answer
DOC_MARK = "【资料依据】"  # the document answer after it
CITATION = re.compile(r"\[(\d+)\]")  # an answer's [n] marker


def with_curated(curated: str, where: str, document: str = "") -> str:
    """A curated answer (标准答案) with its source, then the document answer that backs it, if any: the one
    joined form every output shows (chat, API, `kexie ask`, eval runs, saved conversations)."""
    head = f"{FAQ_MARK}{curated}\n（来源：{where}）"
    return f"{head}\n\n{DOC_MARK}{document}" if document else head
