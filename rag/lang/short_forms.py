"""The short forms staff write for long names (科学技术普及法 -> 科普法). Two tables on purpose: one spells
a document's name the short way, the other brings two questions to one comparison form."""

from __future__ import annotations

# How staff shorten a law's name: 科学技术普及法 -> 科普法, 科学技术进步法 -> 科技进步法 (longest first: 科学技术
# must not take 科学技术普及's place).
NAME_SHORT_FORMS = (("科学技术普及", "科普"), ("科学技术协会", "科协"), ("科学技术", "科技"))
# For comparing two questions: also 中华人民共和国, which questions leave out, goes.
COMPARISON_SHORT_FORMS = (("中华人民共和国", ""), ("科学技术协会", "科协"), ("科学技术普及", "科普"), ("科学技术", "科技"))


def short_spellings(name: str) -> list[str]:
    """The name with each long form that occurs in it shortened, one spelling per long form."""
    return [name.replace(long, short) for long, short in NAME_SHORT_FORMS if long in name]


def shortened(text: str) -> str:
    """The text with every long form in its short form (the comparison form's spelling)."""
    for long, short in COMPARISON_SHORT_FORMS:
        text = text.replace(long, short)
    return text
