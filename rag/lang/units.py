"""Measure words (量词 and units) as questions and answers write them, and which ones count the same kind
of quantity."""

from __future__ import annotations

MEASURE_WORDS = ("个 支 家 项 名 人 场 次 所 座 篇 件 期 批 万 亿 元 天 年 届 位 处 条 类 种 台 户 份 本 门 块 场次 人次 余 "
                 "万元 亿元 平方米 公里 小时 岁 倍").split()
# For a regex: longest first, so 万元 is read before 万 and 人次 before 人.
ALTERNATION = "|".join(sorted(MEASURE_WORDS, key=len, reverse=True))
# What a measure word counts; the others count items.
KIND = {**{u: "people" for u in ("人", "名", "位", "人次")}, **{u: "money" for u in ("元", "万元", "亿元")},
        **{u: "events" for u in ("场", "次", "场次", "期", "届", "批")}, **{u: "time" for u in ("天", "年", "小时", "岁")},
        **{u: "size" for u in ("平方米", "公里", "倍")}}
ANY = {"", "个", "万", "亿", "余"}  # fit any quantity ("多少个人", "3万")


def same_quantity(a: str, b: str) -> bool:
    """Whether two measure words can count the same thing (人 and 名 can; 人 and 场 cannot)."""
    return a in ANY or b in ANY or KIND.get(a, "items") == KIND.get(b, "items")
