"""List items and headings as the documents number them: "1." "2、" "（一）" "(3)" "一、" "第三章", and
the enumerations questions and answers use ("一是", "第二"). Different forms on purpose, each named for its use."""

from __future__ import annotations

import re

from rag.lang.text import CN_NUMERAL

# The numerals headings and item markers use (a subset of CN_NUMERAL: no 两, 千, 万, 亿).
HEADING_NUMERAL = "一二三四五六七八九十百零〇"

# An item's number at the start of a sentence, with the space after it.
ITEM = re.compile(r"^\s*(?:[（(][一二三四五六七八九十\d]+[）)]|\d+(?:[.．](?!\d)|、)|[一二三四五六七八九十]+、)\s*")  # "12.5万" is a figure

# A numbered heading's level, tried in order: 一、 > （一） > 1. > (1).
HEADING_LEVELS = [
    (2, re.compile(rf"^[{HEADING_NUMERAL}]+[、.．]")),
    (3, re.compile(rf"^[（(][{HEADING_NUMERAL}]+[）)]")),
    (4, re.compile(r"^\d+[.、．](?!\d)")),
    (5, re.compile(r"^[（(]\d+[）)]")),
]

# A line that opens a block of its own (a heading, a chapter/article, a numbered or bulleted item): never
# the rest of a sentence that a line or page break cut.
BLOCK_START = re.compile(
    r"^(#{1,6}\s|第[一二三四五六七八九十百零〇\d]+[编章节条]|[一二三四五六七八九十]+[、.．]|（[一二三四五六七八九十\d]+）|\(\d+\)|\d+[.、．)]|[■●◆▲★※·•\-*]\s?)"
)

# A list item's own marker before a figure ("1. " "2、" "(3)"): not a figure the passage states.
FIGURE_ITEM = re.compile(r"^\s*(?:\d{1,2}[.、．)）]|[（(]\d{1,2}[）)])\s*")

# The points of an answer ("1." "（二）" "三、" "一是"), wherever a clause starts.
POINT = re.compile(rf"(?:^|(?<=[\s；;。，,]))\s*(?:\d+[.、．)]|[（(]?[{CN_NUMERAL}]+[）)、]|[{CN_NUMERAL}]是)")

# The parts of a question that asks several things ("一是…二是…", "（1）…（2）…", "第一…第二…").
QUESTION_PART = re.compile(r"(?:^|[\s，,。；;：:？?])(?:第[一二三四五六]|[一二三四五六]是|[（(][1-6一二三四五六][)）]|[1-6][.、．])[，,、：:\s]*")
