"""List items as the documents number them: "1." "2、" "（一）" "(3)" "一、"."""

from __future__ import annotations

import re

# An item's number at the start of a sentence, with the space after it.
ITEM = re.compile(r"^\s*(?:[（(][一二三四五六七八九十\d]+[）)]|\d+(?:[.．](?!\d)|、)|[一二三四五六七八九十]+、)\s*")  # "12.5万" is a figure
