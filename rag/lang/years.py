"""Years as the documents and questions write them. Different forms on purpose, each named for its use."""

from __future__ import annotations

import re

YEAR = r"(?:19|20)\d{2}"
# A year anywhere, as file names write it ("科学技术普及法2024修订.txt", "2023_工作报告").
BARE = re.compile(rf"(?<!\d)({YEAR})(?!\d)")
# A year a question asks about: written with 年, 年度 or 版 ("2023年", "2023 年度", "2024版"); a bare
# four-digit figure in a question is a number, not a year.
STATED = re.compile(rf"(?<!\d)({YEAR})(?:年|\s*年度|\s*版)")
# A follow-up's whole subject ("那2023年呢" -> "2023年") and the year it replaces in the previous question.
SUBJECT = re.compile(rf"({YEAR})年?")
# A revision year in a file name ("2024修订", "2018年修正").
REVISED = re.compile(rf"(?<!\d)({YEAR})\s*年?\s*(修订|修正|修改)")
